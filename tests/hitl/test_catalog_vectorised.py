"""The catalog-level steps, vectorised for scale (issue 8), give exactly what the per-row versions gave."""

import numpy as np
import pandas as pd
import pytest

from hitl_assets.assets.dataset import dataset_items, dataset_version
from hitl_assets.assets.metrics import MetricsConfig, QUEUE_COLUMNS, _final_mask, image_outcomes, metrics_tables, review_pairs, summarise
from hitl_assets.assets.publish import final_status
from hitl_assets.assets.routing import GOLD_KIND, GOLD_SLOT, _task_row, review_task_rows
from hitl_assets.rescore import mark_rescored
from resources.tables import read_partitions, read_table, write_table


def _queue(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"img-{i}" for i in range(n)], "batch": "b1", "sku": [f"SKU{i % 7}" for i in range(n)],
        "category": rng.choice(["shoe", "bag", "garment"], n), "file": [f"{i}.jpg" for i in range(n)],
        "image_key": [f"originals/b1/{i}.jpg" for i in range(n)], "mask_key": [f"outputs/img-{i}/v3/mask.png" for i in range(n)],
        "composite_key": [f"outputs/img-{i}/v3/composite.jpg" for i in range(n)], "width": rng.integers(100, 900, n),
        "height": rng.integers(100, 900, n), "reasons": rng.choice(["", "low_confidence", "low_confidence;fragmented_mask"], n),
        "policy_version": "abc123", "model_version": "3", "confidence": rng.random(n), "boundary_uncertainty": rng.random(n) / 7,
        "mask_area_fraction": rng.random(n), "connected_components": rng.integers(1, 6, n), "colour_distance": rng.random(n) * 20,
        "route": rng.choice(["escalate", "auto_approve"], n), "audit": rng.random(n) < 0.3, "double_review": rng.random(n) < 0.4,
        "gold": rng.random(n) < 0.2,
    })


def _reference_task_rows(batch: str, queue: pd.DataFrame) -> list[dict]:
    """The per-row implementation review_task_rows replaced."""
    wanted = queue[(queue["route"] == "escalate") | queue["audit"]]
    rows = []
    for item in wanted.to_dict("records"):
        kind = "escalation" if item["route"] == "escalate" else "audit"
        for slot in range(2 if item["double_review"] else 1):
            rows.append(_task_row(batch, item, kind, slot, str(slot)))
    if "gold" in queue.columns:
        for item in queue[queue["gold"].fillna(False).astype(bool)].to_dict("records"):
            rows.append(_task_row(batch, item, GOLD_KIND, GOLD_SLOT, GOLD_KIND))
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_review_task_rows_match_the_per_row_version(seed):
    queue = _queue(60, seed)
    assert review_task_rows("b1", queue) == _reference_task_rows("b1", queue)


def test_review_task_rows_edge_cases():
    queue = _queue(10)
    assert review_task_rows("b1", queue.iloc[:0]) == []
    no_gold = queue.drop(columns="gold")
    assert review_task_rows("b1", no_gold) == _reference_task_rows("b1", no_gold)
    rows = review_task_rows("b1", queue)
    assert len({r["task_key"] for r in rows}) == len(rows)
    assert all(isinstance(r["slot"], int) and isinstance(r["width"], int) for r in rows)


def _decisions(queue: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame.from_records(review_task_rows("b1", queue))
    n = len(rows)
    decision = rng.choice(["approve", "correct", "reject"], n, p=[0.6, 0.3, 0.1])
    blank = rng.random(n) < 0.1  # a correction event without a key must not hide an earlier one
    corrected = pd.Series([("" if blank[i] else f"corrections/{i}.png") if decision[i] == "correct" else None for i in range(n)], dtype=object)
    return rows.assign(
        task_id=np.arange(n), event_id=rng.permutation(n) + 1, reviewer=rng.choice(["ann", "bob", "cy"], n), decision=decision,
        corrected_mask_key=corrected, failure_mode=None, note="", seconds=rng.random(n) * 30,
        decided_at=pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 40, unit="s"),
    )


def _reference_human(decisions: pd.DataFrame) -> pd.DataFrame:
    decisions = decisions[decisions["kind"] != "gold"]
    return decisions.sort_values("event_id").groupby("image_id").agg(
        any_reject=("decision", lambda d: bool((d == "reject").any())),
        any_correct=("decision", lambda d: bool((d == "correct").any())),
        corrected_mask_key=("corrected_mask_key", lambda k: next((x for x in reversed(list(k)) if x), "")),
        decisions=("decision", "count"),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_final_status_matches_the_per_image_version(seed):
    queue = _queue(80, seed)
    decisions = _decisions(queue, seed)
    status = final_status(queue, decisions)
    reference = queue.merge(_reference_human(decisions), left_on="image_id", right_index=True, how="left")
    assert list(status["image_id"]) == list(reference["image_id"])
    assert (status["corrected_mask_key"].to_numpy() == reference["corrected_mask_key"].fillna("").to_numpy()).all()
    assert (status["decisions"].fillna(0).to_numpy() == reference["decisions"].fillna(0).to_numpy()).all()
    for column in ("any_reject", "any_correct"):
        assert (status[column].fillna(False).astype(bool).to_numpy() == reference[column].fillna(False).astype(bool).to_numpy()).all()
    assert set(status["final_status"]) <= {"approved_auto", "approved_human", "approved_corrected", "rejected", "pending"}
    assert final_status(queue, decisions.iloc[:0])["final_status"].isin(["approved_auto", "pending"]).all()


def test_outcomes_rates_and_pairs_are_consistent():
    queue = _queue(120, 3)
    decisions = _decisions(queue, 3)
    status = image_outcomes(queue, decisions)
    per_image = decisions[decisions["kind"] != "gold"].groupby("image_id")["decision"].apply(lambda d: (d == "correct").any())
    expected = status["image_id"].map(per_image).fillna(False).astype(bool) & status["reviewed"]
    assert (status["corrected"] == expected).all()
    rates = summarise(status, decisions, ["category"])
    assert (rates["escalated"] == rates["images"] - rates["auto_approved"]).all()
    pairs = review_pairs(decisions)
    merged = pairs.merge(decisions[decisions["slot"] == 0], left_on=["batch", "image_id"], right_on=["batch", "image_id"])
    assert list(pairs["mask_a"]) == [_final_mask(r) for r in merged.to_dict("records")]


def test_metrics_tables_need_only_the_routing_columns():
    queue = _queue(100, 4)
    decisions = _decisions(queue, 4)
    order = pd.DataFrame({"batch": ["b1"], "routed_at": [pd.Timestamp("2026-01-01", tz="UTC")], "day": ["2026-01-01"], "order": [0]})
    truth = pd.DataFrame({"image_id": ["img-1", "img-2"], "truth_mask_key": ["t1", "t2"], "truth_batch": ["b0", "b0"]})
    iou = lambda a, b: 1.0 if a and b else float("nan")  # noqa: E731
    full = metrics_tables(queue, decisions, order, truth, iou, MetricsConfig())
    slim = metrics_tables(queue[QUEUE_COLUMNS], decisions, order, truth, iou, MetricsConfig())
    pd.testing.assert_frame_equal(full["table"], slim["table"])
    assert int(full["overall"]["images"].iloc[0]) == len(queue)


def test_dataset_items_and_version_are_unchanged_by_vectorising():
    queue = _queue(50, 5)
    decisions = _decisions(queue, 5)
    items = dataset_items(decisions)
    non_gold = decisions[decisions["kind"] != "gold"]
    rejected = set(non_gold.loc[non_gold["decision"] == "reject", "image_id"])
    assert set(items["image_id"]) == set(non_gold["image_id"]) - rejected
    frame = items.assign(mask_digest="d", split=np.where(np.arange(len(items)) % 3 == 0, "gold", "train"))
    import hashlib

    lines = sorted(f"{r.image_id}:{r.mask_digest}:{r.split}" for r in frame.itertuples())
    assert dataset_version(frame) == hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def test_mark_rescored_matches_by_image():
    current = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "route": ["auto_approve", "auto_approve", "escalate", "auto_approve"],
                            "reasons": ["", "", "low_confidence", ""], "model_version": ["2", "2", "2", "1"]})
    previous = pd.DataFrame({"image_id": ["a", "b", "b", "c", "d"], "route": ["escalate", "auto_approve", "escalate", "escalate", "escalate"],
                             "model_version": ["1", "1", "1", "1", "1"]})
    out = mark_rescored(previous, current)
    # b: the latest previous row counts (escalated); d: same model, nothing re-scored
    assert out["rescored"].tolist() == [True, True, False, False]
    assert out["reasons"].tolist() == ["rescored", "rescored", "low_confidence", ""]


def test_read_table_columns(object_store):
    write_table(object_store, "review_queue", pd.DataFrame({"image_id": ["a"], "route": ["escalate"], "extra": [1]}), "b1")
    assert list(read_table(object_store, "review_queue", "b1", columns=["image_id", "route", "gold"]).columns) == ["image_id", "route"]
    frame = read_partitions(object_store, "review_queue", columns=["image_id"])
    assert list(frame.columns) == ["image_id", "batch"] and frame["batch"].tolist() == ["b1"]


def test_mark_gold_draws_only_known_unseen_items_as_before():
    from hitl_assets.assets.routing import mark_gold
    from ml.policy import sample_uniform

    queue = _queue(300, 6).drop(columns="gold")
    truth = pd.DataFrame({"image_id": queue["image_id"].iloc[::3].to_numpy(), "truth_mask_key": [f"t{i}" for i in range(100)]})
    marked = mark_gold(queue, truth, 0.5)
    keys = truth.set_index("image_id")["truth_mask_key"]
    expected = (queue["image_id"].isin(keys.index) & (queue["route"] == "auto_approve") & ~queue["audit"]
                & (sample_uniform(queue["image_id"], "gold") < 0.5))
    assert (marked["gold"] == expected).all() and marked["gold"].any()
    assert (marked["gold_truth_key"] == queue["image_id"].map(keys).where(expected, "").fillna("")).all()
    assert "gold" not in queue.columns  # the caller's frame is left alone
    assert not mark_gold(queue, truth.iloc[:0], 1.0)["gold"].any()


def test_dataset_version_is_the_hash_of_the_sorted_lines():
    import hashlib

    def by_python(frame):
        lines = sorted(f"{r.image_id}:{r.mask_digest}:{r.split}" for r in frame.itertuples())
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]

    # ids that sort differently as ids and as lines, non-ASCII ids, object and string columns
    frame = pd.DataFrame({"image_id": ["a-b", "a", "é", "z:1", "Z", "ä", "a:b"], "mask_digest": ["d1", "d2", "d3", "d4", "d5", "d6", "d7"],
                          "split": ["train", "gold", "train", "train", "gold", "train", "gold"]})
    assert dataset_version(frame) == by_python(frame)
    assert dataset_version(frame.astype(object)) == by_python(frame)
    assert dataset_version(frame.sample(frac=1.0, random_state=3)) == dataset_version(frame)  # row order does not matter
    assert dataset_version(frame.iloc[:0]) == hashlib.sha256(b"").hexdigest()[:12]
    assert dataset_version(frame.assign(mask_digest=["x", *frame["mask_digest"][1:]])) != dataset_version(frame)
    with pytest.raises(ValueError, match="must be set"):
        dataset_version(frame.assign(split=[None, *frame["split"][1:]]))
