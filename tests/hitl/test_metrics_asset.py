"""hitl_metrics on a constructed history: intervals, kappa, reviewer flags, gold scoring, drift, plots, CSV."""

import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from hitl_assets.assets.metrics import MetricsConfig, correction_drift, gold_scores, hitl_metrics, review_pairs
from hitl_assets.assets.routing import mark_gold, review_task_rows
from ml.imageio import encode_png
from resources.tables import read_table, write_table

Z = 1.959963984540054


def mask(rows: int, cols: int) -> bytes:
    m = np.zeros((8, 8), dtype=np.uint8)
    m[:rows, :cols] = 255
    return encode_png(m)


def queue(batch: str, category: str, n: int, route: str, audit: bool = False, double: bool = False, prefix: str | None = None) -> pd.DataFrame:
    ids = [f"{prefix or batch + '-' + category}-{i}" for i in range(n)]
    return pd.DataFrame({
        "image_id": ids, "category": category, "route": route, "audit": audit, "double_review": double,
        "reasons": "" if route == "auto_approve" else "low_confidence", "policy_version": "p1", "model_version": "3",
        "confidence": 0.9, "boundary_uncertainty": 0.1, "mask_area_fraction": 0.25, "connected_components": 1, "colour_distance": 5.0,
        "file": [f"{i}.png" for i in ids], "sku": ids, "width": 8, "height": 8, "image_key": [f"originals/{i}.png" for i in ids],
        "mask_key": [f"outputs/{i}/mask.png" for i in ids], "composite_key": [f"outputs/{i}/composite.jpg" for i in ids],
    })


def decide(review_store, batch: str, answer) -> None:
    """``answer(task) -> (reviewer, decision)``; corrections get a stored corrected mask key."""
    for task in review_store.tasks(batch=batch).to_dict("records"):
        reviewer, decision = answer(task)
        key = f"corrections/{task['image_id']}/{task['slot']}.png" if decision == "correct" else ""
        review_store.record_decision(task["id"], reviewer, decision, seconds=5.0 + task["slot"], corrected_mask_key=key)


@pytest.fixture
def history(object_store, review_store):
    """Three batches.

    b1: 30 shoes auto-approved, 20 of them audited: 1 audit corrected (a false negative);
        20 bags escalated, bob corrects 2; 10 garments escalated and double-reviewed by ann (slot 0) and bob (slot 1):
        both approve 5, ann approves/bob corrects 1, ann corrects/bob approves 1, both correct 3.
    b2: 20 bags escalated, rubber approves all.
    b3: 20 bags escalated, 12 corrected (ann even, bob odd); 6 re-sent gold images (truth known from b1), auto-approved,
        each with a hidden gold task: rubber approves all though the AI masks are far from the truth.
    """
    b1 = pd.concat([
        queue("b1", "shoe", 20, "auto_approve", audit=True),
        queue("b1", "shoe", 10, "auto_approve", prefix="b1-shoe-unaudited"),
        queue("b1", "bag", 20, "escalate"),
        queue("b1", "garment", 10, "escalate", double=True),
    ], ignore_index=True)
    b2 = queue("b2", "bag", 20, "escalate")
    gold = queue("b3", "garment", 6, "auto_approve", prefix="gold")
    truth = pd.DataFrame({"image_id": gold["image_id"], "truth_mask_key": [f"corrections/{i}/truth.png" for i in gold["image_id"]]})
    b3 = pd.concat([queue("b3", "bag", 20, "escalate"), mark_gold(gold, truth, 1.0)], ignore_index=True)
    b3["gold"] = b3["gold"].fillna(False).astype(bool)
    # masks: garment AI masks 4x4 (16 px), corrections 4x5 (20 px, containing them): IoU 0.8
    for image_id in b1.loc[b1["category"] == "garment", "image_id"]:
        object_store.put_bytes(f"outputs/{image_id}/mask.png", mask(4, 4))
        for slot in (0, 1):
            object_store.put_bytes(f"corrections/{image_id}/{slot}.png", mask(4, 5))
    # gold: AI mask 2x2 (4 px), truth 4x4 (16 px): IoU 0.25, so a reviewer should not approve
    for image_id, key in zip(truth["image_id"], truth["truth_mask_key"]):
        object_store.put_bytes(f"outputs/{image_id}/mask.png", mask(2, 2))
        object_store.put_bytes(key, mask(4, 4))
    write_table(object_store, "correction_dataset", pd.DataFrame({
        "image_id": truth["image_id"], "batch": "b1", "split": "gold", "mask_key": truth["truth_mask_key"], "category": "garment",
    }))

    for name, frame in (("b1", b1), ("b2", b2), ("b3", b3)):
        write_table(object_store, "review_queue", frame, name)
        review_store.create_tasks(review_task_rows(name, frame))

    garment_plan = {0: ("approve", "approve"), 5: ("approve", "correct"), 6: ("correct", "approve"), 7: ("correct", "correct"),
                    8: ("correct", "correct"), 9: ("correct", "correct")}

    def b1_answer(task):
        index = int(task["image_id"].rsplit("-", 1)[1])
        if task["category"] == "shoe":
            return "ann", "correct" if index == 0 else "approve"
        if task["category"] == "bag":
            return "bob", "correct" if index < 2 else "approve"
        plan = garment_plan.get(index, garment_plan[0])
        return ("ann", "bob")[task["slot"]], plan[task["slot"]]

    decide(review_store, "b1", b1_answer)
    decide(review_store, "b2", lambda task: ("rubber", "approve"))

    def b3_answer(task):
        if task["kind"] == "gold":
            return "rubber", "approve"
        index = int(task["image_id"].rsplit("-", 1)[1])
        return ("ann", "bob")[index % 2], "correct" if index < 12 else "approve"

    decide(review_store, "b3", b3_answer)
    return b1, b2, b3


def test_hitl_metrics_on_a_constructed_history(history, hitl_resources, object_store):
    result = dg.materialize([hitl_metrics], resources=hitl_resources)
    assert result.success
    table = read_table(object_store, "hitl_metrics")
    overall = table[table["level"] == "overall"].iloc[0]
    # images: b1 60, b2 20, b3 26 = 106; auto-approved: 30 shoes + 6 gold re-sends = 36
    assert overall["images"] == 106 and overall["auto_approved"] == 36
    assert overall["automation_rate"] == pytest.approx(36 / 106)
    # the hidden gold decisions are not reviews of those images: they stay auto-approved, unreviewed
    assert overall["reviewed_images"] == 20 + 20 + 10 + 20 + 20

    # false negatives from the 20 audits, 1 corrected: Wilson(1, 20)
    #   centre = (1 + z^2/2) / (20 + z^2) = 2.920729 / 23.841459 = 0.122505
    #   half   = z / (20 + z^2) * sqrt(1 * 19 / 20 + z^2 / 4) = 0.082208 * 1.382163 = 0.113624  -> [0.008881, 0.236131]
    centre = (1 + Z * Z / 2) / (20 + Z * Z)
    half = Z / (20 + Z * Z) * np.sqrt(19 / 20 + Z * Z / 4)
    assert overall["audited"] == 20 and overall["audit_failures"] == 1 and overall["false_negative_rate"] == 0.05
    assert (overall["fn_low"], overall["fn_high"]) == pytest.approx((centre - half, centre + half))
    assert (overall["fn_low"], overall["fn_high"]) == pytest.approx((0.008881, 0.236131), abs=1e-6)
    categories = table[table["level"] == "category"].set_index("key")
    assert categories.loc["shoe", "fn_high"] == pytest.approx(overall["fn_high"])
    assert (categories.loc["bag", "fn_low"], categories.loc["bag", "fn_high"]) == (0.0, 1.0)  # no audits: nothing is known

    # agreement: p_o = 8/10, p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52 -> kappa = 0.28 / 0.48 = 0.583333
    # mask IoU: 5 both-approve pairs 1.0, 2 mixed pairs 16/20 = 0.8, 3 both-correct pairs 1.0 -> 9.6 / 10 = 0.96
    assert overall["pairs"] == 10 and overall["kappa"] == pytest.approx(0.28 / 0.48)
    assert overall["mean_pair_iou"] == pytest.approx(0.96)
    assert categories.loc["garment", "kappa"] == pytest.approx(0.28 / 0.48)

    reviewers = table[table["level"] == "reviewer"].set_index("key")
    # rubber approved every gold item whose AI mask was far from the truth: 0 of 6 right, Wilson high 3.84/9.84 = 0.39;
    # and approves 26 of 26 against 57 of 80 for the others (Fisher p = 0.0008)
    assert reviewers.loc["rubber", "gold_items"] == 6 and reviewers.loc["rubber", "gold_accuracy"] == 0.0
    assert reviewers.loc["rubber", "gold_high"] == pytest.approx(Z * Z / (6 + Z * Z))
    assert reviewers.loc["rubber", "gold_mask_iou"] == pytest.approx(0.25)
    assert reviewers["flagged"].to_dict() == {"ann": False, "bob": False, "rubber": True}
    assert "gold accuracy 0%" in reviewers.loc["rubber", "flag_reasons"] and "approves 100%" in reviewers.loc["rubber", "flag_reasons"]
    assert reviewers.loc["ann", "pairs"] == 10 and reviewers.loc["ann", "pair_agreement"] == pytest.approx(0.8)

    # time series levels are all there
    assert {"overall", "day", "batch", "category", "batch_category", "reviewer", "fatigue"} <= set(table["level"])
    batches = table[table["level"] == "batch"]
    assert batches["key"].tolist() == ["b1", "b2", "b3"]

    # drift: bag 2/20 and 0/20 before, 12/20 in b3: jump 0.60 - 0.05 = 0.55 -> warning (not an error)
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 1 and checks[0].check_name == "correction_rate_drift"
    assert not checks[0].passed and checks[0].severity == dg.AssetCheckSeverity.WARN

    metadata = result.asset_materializations_for_node("hitl_metrics")[0].metadata
    assert "[0.89%, 23.61%]" in metadata["false_negative_interval"].value
    assert metadata["drifting_categories"].value == ["bag"]
    assert metadata["reviewers_flagged"].value == ["rubber"]
    for name in ("rates", "false_negatives", "reviewers", "fatigue", "drift"):
        assert metadata[f"plot_{name}"].value.startswith(f"![{name}](data:image/png;base64,")
        assert object_store.get_bytes(f"metrics/latest/{name}.png").startswith(b"\x89PNG")
    exported = pd.read_csv(io.BytesIO(object_store.get_bytes("metrics/latest/hitl_metrics.csv")))
    assert len(exported) == len(table)
    flags = pd.read_csv(io.BytesIO(object_store.get_bytes("metrics/latest/reviewers.csv")))
    assert flags.set_index("reviewer")["flagged"].to_dict() == {"ann": False, "bob": False, "rubber": True}

    # a second run reuses the cached mask IoUs and gives the same table
    again = dg.materialize([hitl_metrics], resources=hitl_resources)
    assert again.success
    pd.testing.assert_frame_equal(read_table(object_store, "hitl_metrics"), table)


def test_drift_needs_both_a_jump_and_evidence():
    status = pd.DataFrame({
        "category": ["bag"] * 4, "batch": ["b1", "b2", "b3", "b4"],
        "reviewed": [20, 20, 20, 4], "corrected": [2, 2, 12, 4],
    }).loc[lambda d: d.index.repeat(1)]
    # expand to one row per image
    rows = []
    for r in status.itertuples():
        rows += [{"category": r.category, "batch": r.batch, "reviewed": True, "corrected": i < r.corrected} for i in range(r.reviewed)]
    frame = pd.DataFrame(rows)
    order = pd.DataFrame({"batch": ["b1", "b2", "b3", "b4"], "order": [0, 1, 2, 3]})
    config = MetricsConfig()
    # latest batch b4 has only 4 reviewed items (< drift_min_items 10): no claim, even at 100 %
    assert not correction_drift(frame, order, config)["drifted"].any()
    # a two-batch window (b3 + b4: 16/24) against b1, b2 (4/40): jump 0.567, Fisher p tiny -> drift
    drift = correction_drift(frame, order, MetricsConfig(drift_window_batches=2)).iloc[0]
    assert drift["drifted"] and drift["jump"] == pytest.approx(16 / 24 - 4 / 40)
    # the same jump is not flagged when the minimum jump is set above it
    assert not correction_drift(frame, order, MetricsConfig(drift_window_batches=2, drift_min_jump=0.6))["drifted"].any()


def test_pairs_and_gold_scores_by_hand():
    decisions = pd.DataFrame([
        {"batch": "b", "image_id": "x", "category": "bag", "kind": "escalation", "slot": 0, "reviewer": "a", "decision": "approve", "mask_key": "ai/x", "corrected_mask_key": "", "event_id": 1},
        {"batch": "b", "image_id": "x", "category": "bag", "kind": "escalation", "slot": 1, "reviewer": "b", "decision": "reject", "mask_key": "ai/x", "corrected_mask_key": "", "event_id": 2},
        {"batch": "b", "image_id": "y", "category": "bag", "kind": "escalation", "slot": 0, "reviewer": "a", "decision": "correct", "mask_key": "ai/y", "corrected_mask_key": "c/y", "event_id": 3},
        {"batch": "b", "image_id": "g", "category": "bag", "kind": "gold", "slot": 2, "reviewer": "b", "decision": "correct", "mask_key": "ai/g", "corrected_mask_key": "c/g", "event_id": 4},
        {"batch": "old", "image_id": "g", "category": "bag", "kind": "escalation", "slot": 0, "reviewer": "a", "decision": "correct", "mask_key": "ai/g", "corrected_mask_key": "truth/g", "event_id": 5},
    ])
    pairs = review_pairs(decisions)
    assert pairs[["image_id", "reviewer_a", "reviewer_b", "mask_a", "mask_b", "agree"]].values.tolist() == [["x", "a", "b", "ai/x", "", False]]
    ious = {("ai/g", "truth/g"): 0.5, ("c/g", "truth/g"): 0.95}
    truth = pd.DataFrame({"image_id": ["g"], "truth_mask_key": ["truth/g"], "truth_batch": ["old"]})
    scores = gold_scores(decisions, truth, lambda a, b: ious.get((a, b), float("nan")), 0.92)
    # only the gold task in batch b is scored (the decision in 'old' made the truth): AI IoU 0.5 < 0.92, so
    # correcting was right, and the corrected mask is 0.95 from the truth
    assert scores[["event_id", "should_approve", "correct", "mask_iou"]].values.tolist() == [[4, False, True, 0.95]]


def test_gold_checks_are_chosen_for_unseen_known_truth_items(object_store):
    from hitl_assets.assets.routing import gold_truth

    assert gold_truth(object_store, "b2").empty  # no correction dataset yet
    write_table(object_store, "correction_dataset", pd.DataFrame({
        "image_id": ["g1", "g2", "g3", "t1"], "batch": ["b1", "b1", "b2", "b1"], "split": ["gold", "gold", "gold", "train"],
        "mask_key": ["m/g1", "m/g2", "m/g3", "m/t1"],
    }))
    truth = gold_truth(object_store, "b2")
    assert truth.set_index("image_id")["truth_mask_key"].to_dict() == {"g1": "m/g1", "g2": "m/g2"}  # g3's truth came from b2 itself
    frame = pd.concat([
        queue("b2", "bag", 1, "auto_approve", prefix="g1"), queue("b2", "bag", 1, "escalate", prefix="g2"),
        queue("b2", "bag", 1, "auto_approve", prefix="g3"), queue("b2", "bag", 1, "auto_approve", prefix="t1"),
    ], ignore_index=True)
    frame["image_id"] = ["g1", "g2", "g3", "t1"]
    marked = mark_gold(frame, truth, 1.0).set_index("image_id")
    # g1: known truth, auto-approved unseen -> gold check; g2 escalated (its review is scored as it is); g3, t1: no truth
    assert marked["gold"].to_dict() == {"g1": True, "g2": False, "g3": False, "t1": False}
    assert marked.loc["g1", "gold_truth_key"] == "m/g1" and marked.loc["t1", "gold_truth_key"] == ""
    tasks = review_task_rows("b2", marked.reset_index())
    assert [(t["image_id"], t["kind"], t["slot"], t["task_key"]) for t in tasks] == [("g2", "escalation", 0, "b2:g2:0"), ("g1", "gold", 2, "b2:g1:gold")]
    assert not mark_gold(frame, truth, 0.0)["gold"].any()  # rate 0: no gold checks
