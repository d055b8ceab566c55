import pandas as pd
from click.testing import CliRunner

from hitl_assets.cli import main
from hitl_assets.replay import replay_reviews
from ml.imageio import decode_mask, encode_png
from ml.reviewer import ReplayConfig
from ml.synthetic import write_catalog


def test_hitl_seed_writes_images_masks_and_catalog(tmp_path):
    result = CliRunner().invoke(main, ["seed", "--n", "12", "--out", str(tmp_path / "cat"), "--max-side", "128"])
    assert result.exit_code == 0, result.output
    catalog = pd.read_csv(tmp_path / "cat" / "catalog.csv")
    assert list(catalog.columns[:3]) == ["file", "sku", "category"] and len(catalog) == 12
    images = sorted(p.name for p in (tmp_path / "cat" / "images").iterdir())
    masks = sorted(p.name for p in (tmp_path / "cat" / "masks").iterdir())
    assert images == masks == sorted(catalog["file"])


def test_replayed_reviewer_approves_good_masks_and_corrects_bad_ones(tmp_path, object_store, review_store):
    catalog = write_catalog(tmp_path / "cat", 4, seed=5, max_side=128)
    rows = []
    for i, file in enumerate(catalog["file"]):
        truth = decode_mask((tmp_path / "cat" / "masks" / file).read_bytes())
        ai = truth if i % 2 == 0 else truth * 0  # half the AI masks are perfect, half empty
        object_store.put_bytes(f"outputs/{i}/mask.png", encode_png(ai))
        rows.append({"task_key": f"b:{i}:0", "batch": "b", "image_id": str(i), "kind": "escalation", "slot": 0, "file": file,
                     "image_key": f"originals/{i}.png", "mask_key": f"outputs/{i}/mask.png"})
    rows.append({**rows[0], "task_key": "b:0:1", "slot": 1})  # double review of image 0
    review_store.create_tasks(rows)
    summary = replay_reviews(review_store, object_store, tmp_path / "cat" / "masks", ReplayConfig(seed=3))
    assert summary.decided == 5 and summary.by_decision == {"approve": 3, "correct": 2}
    decisions = review_store.latest_decisions(batch="b")
    double = decisions[decisions.image_id == "0"]
    assert sorted(double["reviewer"]) == ["replay-a", "replay-b"]  # two different people
    fixed = decisions[decisions.decision == "correct"]
    for row in fixed.itertuples():
        truth = decode_mask((tmp_path / "cat" / "masks" / row.file).read_bytes())
        assert (decode_mask(object_store.get_bytes(row.corrected_mask_key)) == truth).all()
        assert row.failure_mode == "missing_part" and row.seconds > 0


def test_hitl_replay_runs_rounds_on_labelled_images(tmp_path, monkeypatch):
    import json

    write_catalog(tmp_path / "labelled", 8, seed=21, max_side=128)
    monkeypatch.setenv("HITL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster_home"))
    out = tmp_path / "replay.json"
    result = CliRunner().invoke(main, [
        "replay", "--images", str(tmp_path / "labelled" / "images"), "--masks", str(tmp_path / "labelled" / "masks"),
        "--catalog", str(tmp_path / "labelled" / "catalog.csv"), "--rounds", "2", "--out", str(out), "--fast",
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"round", "gold_iou", "automation_rate", "correction_rate", "fn_rate", "model_version"}
    assert all(0.0 <= r["gold_iou"] <= 1.0 for r in rows)
    assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()


def test_hitl_replay_refuses_two_training_budgets_at_once(tmp_path):
    write_catalog(tmp_path / "labelled", 2, seed=21, max_side=64)
    result = CliRunner().invoke(main, [
        "replay", "--images", str(tmp_path / "labelled" / "images"), "--masks", str(tmp_path / "labelled" / "masks"),
        "--rounds", "1", "--out", str(tmp_path / "r.json"), "--fast", "--nightly",
    ])
    assert result.exit_code == 2 and "--fast and --nightly" in result.output
    assert not (tmp_path / "r.json").exists()
