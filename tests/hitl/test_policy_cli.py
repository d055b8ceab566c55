"""``hitl policy check`` and ``hitl policy fit`` on files and on a constructed review history."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from hitl_assets.assets.routing import review_task_rows
from hitl_assets.cli import main
from ml.policy import default_policy_path, load_policy, route
from resources import ObjectStore, ReviewStore
from resources.tables import write_table

Z2 = 1.959963984540054**2


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HITL_HOME with the embedded stores; no other configuration leaks in."""
    for name in ("HITL_OBJECT_ROOT", "HITL_S3_BUCKET", "HITL_REVIEW_DB_URL", "HITL_POLICY", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HITL_HOME", str(tmp_path / ".hitl"))
    return tmp_path / ".hitl"


def queue_rows(batch: str, category: str, confidences: list[float], start: int = 0) -> pd.DataFrame:
    n = len(confidences)
    ids = [f"{category}-{start + i}" for i in range(n)]
    signals = pd.DataFrame({
        "image_id": ids, "category": category, "confidence": confidences, "boundary_uncertainty": 0.1,
        "mask_area_fraction": 0.3, "connected_components": 1, "colour_distance": 5.0,
        "file": [f"{i}.png" for i in ids], "sku": ids, "width": 8, "height": 8,
        "image_key": [f"originals/{i}.png" for i in ids], "mask_key": [f"outputs/{i}/mask.png" for i in ids],
        "composite_key": [f"outputs/{i}/composite.jpg" for i in ids], "model_version": "3",
    })
    return signals


def write_history(home, batches: dict[str, pd.DataFrame], bad: set[str], policy) -> None:
    """Route each batch with ``policy``, store the queue, create its tasks and decide them (bad ids corrected)."""
    store = ObjectStore(root=str(home / "objects"))
    reviews = ReviewStore(url=f"sqlite:///{home / 'review.db'}")
    for batch, frame in batches.items():
        queue = route(frame, policy)
        write_table(store, "review_queue", queue, batch)
        reviews.create_tasks(review_task_rows(batch, queue))
        for task in reviews.tasks(batch=batch).to_dict("records"):
            if task["image_id"] in bad:
                reviews.record_decision(task["id"], "rev-a", "correct", seconds=10.0, corrected_mask_key=f"corrections/{task['image_id']}.png")
            else:
                reviews.record_decision(task["id"], "rev-a", "approve", seconds=4.0)


def strict_policy(tmp_path):
    """The default policy, with audits off and everything escalated (min_confidence 1.0)."""
    raw = yaml.safe_load(default_policy_path().read_text())
    raw["defaults"]["min_confidence"] = 1.0
    raw["categories"] = {}
    raw["audit_rate"] = 0.0
    raw["double_review_rate"] = 0.0
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_check_accepts_the_default_policy():
    result = CliRunner().invoke(main, ["policy", "check", str(default_policy_path())])
    assert result.exit_code == 0, result.output
    policy = load_policy(default_policy_path())
    assert f"version {policy.version}" in result.output
    assert "jewellery" in result.output and "max_needs_correction_probability" in result.output


@pytest.mark.parametrize(("change", "named"), [
    (lambda raw: raw["defaults"].update(min_confidense=0.9), "defaults.min_confidense: unknown key"),
    (lambda raw: raw["categories"].update(shoe={"min_confidence": 1.5}), "categories.shoe.min_confidence: Input should be less than or equal to 1"),
    (lambda raw: raw["categories"].update(hats={"min_confidence": 0.9}), "categories.hats: unknown category 'hats'"),
    (lambda raw: raw.update(gold_check_rate=-1), "gold_check_rate:"),
])
def test_check_rejects_a_bad_policy_naming_the_field(tmp_path, change, named):
    raw = yaml.safe_load(default_policy_path().read_text())
    change(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["policy", "check", str(path)])
    assert result.exit_code == 1
    assert named in result.output and str(path) in result.output


def test_check_of_a_missing_file_fails(tmp_path):
    result = CliRunner().invoke(main, ["policy", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_fit_without_history_fails_clearly(home, tmp_path):
    result = CliRunner().invoke(main, ["policy", "fit", "--target-fn", "0.05", "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code != 0 and "no routed batches" in result.output
    assert not (tmp_path / "p.yaml").exists()


def test_fit_prints_the_tradeoff_and_writes_a_policy_the_next_run_uses(home, tmp_path):
    base_path = strict_policy(tmp_path)
    base = load_policy(base_path)
    # two batches of shoes, all escalated under the strict base and all reviewed:
    #   40 at confidence 0.99 (fine), 10 at 0.90 (1 corrected), 10 at 0.80 (5 corrected), 40 at 0.50 (corrected)
    b1 = pd.concat([queue_rows("b1", "shoe", [0.99] * 20), queue_rows("b1", "shoe", [0.90] * 10, start=20)], ignore_index=True)
    b2 = pd.concat([
        queue_rows("b2", "shoe", [0.99] * 20, start=30), queue_rows("b2", "shoe", [0.80] * 10, start=50),
        queue_rows("b2", "shoe", [0.50] * 40, start=60),
    ], ignore_index=True)
    bad = {"shoe-20"} | {f"shoe-{i}" for i in range(50, 55)} | {f"shoe-{i}" for i in range(60, 100)}
    write_history(home, {"b1": b1, "b2": b2}, bad, base)

    out = tmp_path / "fitted.yaml"
    result = CliRunner().invoke(main, [
        "policy", "fit", "--target-fn", "0.10", "--out", str(out), "--base", str(base_path), "--fit", "min_confidence",
    ])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "100 routed item(s) in 2 batch(es), 100 with a human outcome (46 needed correction)" in text
    assert "== shoe: fitted" in text
    # hand computation: t = 0.99 auto-approves 40 clean items, Wilson high = 3.841459 / 43.841459 = 8.8 %;
    # t = 0.90 adds 10 with 1 correction: high 10.5 % > 10 % -> 0.99 is proposed
    proposed_line = next(line for line in text.splitlines() if "<- proposed" in line)
    assert proposed_line.split()[:3] == ["0.99", "40.0%", "40/100"] and f"{Z2 / (40 + Z2):.1%}" in proposed_line
    assert any(line.split()[:2] == ["0.9", "50.0%"] and "10.5%" in line for line in text.splitlines())
    assert "wrote" in text and "HITL_POLICY=" in text

    fitted = load_policy(out)  # valid
    assert fitted.thresholds_for("shoe").min_confidence == 0.99
    assert fitted.defaults.min_confidence == 1.0  # only the fitted category changed
    check = CliRunner().invoke(main, ["policy", "check", str(out)])
    assert check.exit_code == 0 and fitted.version in check.output
    # the next run routes with it: the 0.99 shoes are auto-approved, the rest escalated
    routed = route(queue_rows("b3", "shoe", [0.995, 0.95, 0.5], start=200), fitted)
    assert routed["route"].tolist() == ["auto_approve", "escalate", "escalate"]
    assert routed["policy_version"].eq(fitted.version).all()

    # replaying the history through the fitted policy from `check --history`
    replay = CliRunner().invoke(main, ["policy", "check", str(out), "--history", "--target-fn", "0.10"])
    assert replay.exit_code == 0, replay.output
    assert "40/100" in replay.output


def test_fit_warns_when_nearly_everything_escalates(home, tmp_path):
    base_path = strict_policy(tmp_path)
    batch = queue_rows("b1", "bag", [0.99] * 10)
    write_history(home, {"b1": batch}, set(), load_policy(base_path))
    out = tmp_path / "fitted.yaml"
    result = CliRunner().invoke(main, ["policy", "fit", "--target-fn", "0.01", "--out", str(out), "--base", str(base_path)])
    assert result.exit_code == 0, result.output
    # 10 clean items: Wilson high = 3.841459 / 13.841459 = 27.8 % > 1 %; 381 would be needed
    assert "would escalate nearly everything" in result.output and "381 labelled" in result.output
    assert load_policy(out).thresholds_for("bag").min_confidence == 1.0
