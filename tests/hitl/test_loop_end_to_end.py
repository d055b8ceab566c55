"""The whole graph in-process for a small batch, driven through the sensors' logic like the demo."""

import dagster as dg
import mlflow
import pandas as pd
import pytest

from hitl_assets.assets.training import TrainingConfig
from hitl_assets.cli import demo_training_config
from hitl_assets.definitions import build_definitions
from hitl_assets.loop import LoopRunner, ensure_champion, run_round
from ml.imageio import decode_mask
from ml.model import UNET
from ml.reviewer import ReplayConfig
from ml.synthetic import write_catalog
from resources.tables import read_table


@pytest.fixture
def runner(tmp_path, hitl_resources, instance):
    defs = build_definitions(hitl_resources)
    return LoopRunner(defs, instance, tmp_path / "cursors.json", run_config={"retrain_job": demo_training_config(fast=True)})


def test_one_round_of_the_loop(tmp_path, runner, hitl_resources):
    store, reviews, registry = hitl_resources["object_store"], hitl_resources["review_store"], hitl_resources["model_registry"]
    ensure_champion(runner)
    assert str(registry.champion_version().version) == "1"

    catalog = tmp_path / "catalog"
    write_catalog(catalog, 10, seed=7, max_side=256)
    (catalog / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    row = run_round(runner, 1, "batch-a", catalog / "images", catalog / "masks", catalog / "catalog.csv", ReplayConfig(seed=1))

    raw = read_table(store, "raw_images", "batch-a")
    assert (raw["status"] == "accepted").sum() == 10
    broken = raw[raw["file"] == "broken.png"].iloc[0]
    assert broken["status"] == "quarantined" and broken["reason"]
    assert store.exists("quarantine/batch-a/broken.png.reason.json")

    outputs = read_table(store, "ai_outputs", "batch-a")
    first = outputs.iloc[0]
    assert decode_mask(store.get_bytes(first["mask_key"])).shape == (first["height"], first["width"])
    assert set(outputs["category"]) == {"garment", "shoe", "bag", "bottle", "jewellery"}

    queue = read_table(store, "review_queue", "batch-a")
    tasks = reviews.tasks(batch="batch-a")
    needs_review = queue[(queue["route"] == "escalate") | queue["audit"]]
    assert set(tasks["image_id"]) == set(needs_review["image_id"])
    assert (tasks["status"] == "decided").all()

    published = read_table(store, "published_images", "batch-a")
    approved = published[published["final_status"].str.startswith("approved")]
    on_disk = {e.key for e in store.list("published/batch-a/")}
    assert on_disk == set(approved["published_key"])
    assert not published.loc[~published["final_status"].str.startswith("approved"), "published_key"].astype(bool).any()

    dataset = read_table(store, "correction_dataset")
    assert len(dataset) == len(set(needs_review["image_id"]))
    assert not set(dataset.loc[dataset.split == "gold", "image_id"]) & set(dataset.loc[dataset.split == "train", "image_id"])

    # Retraining logged a second version; the champion alias points at whichever won.
    client = registry.client()
    versions = client.search_model_versions(f"name='{registry.model_name}'")
    assert len(versions) == 2
    assert all(v.tags.get("promotion") in ("promoted", "rejected") for v in versions)
    runs = mlflow.search_runs(experiment_names=[registry.experiment_name])
    assert {"metrics.gold_iou", "metrics.train_loss", "params.dataset_version"} <= set(runs.columns)

    metrics = read_table(store, "hitl_metrics")
    assert metrics.loc[metrics.level == "overall", "images"].iloc[0] == 10
    assert row["images"] == 10 and row["model_version"] == str(registry.champion_version().version)

    # People can move the champion by hand; every change is recorded.
    registry.promote("1", "test: back to the bootstrap", actor="tester")
    assert registry.promote("2", "test: forward again", actor="tester") == "1"
    assert registry.rollback("test: v2 looked wrong", actor="tester") == ("2", "1")
    assert str(registry.champion_version().version) == "1"
    assert client.get_model_version(registry.model_name, "2").tags["rolled_back"] == "true"
    history = registry.champion_history()
    assert [h["action"] for h in history[:3]] == ["rollback", "promote", "promote"] and history[0]["actor"] == "tester"

    # Every asset check that ran passed or warned, none errored.
    for run in runner.instance.get_runs():
        assert run.is_success


def test_ingest_without_a_champion_fails_clearly(tmp_path, runner, hitl_resources):
    store = hitl_resources["object_store"]
    write_catalog(tmp_path / "c", 2, seed=3, max_side=128)
    for path in (tmp_path / "c" / "images").iterdir():
        store.put_bytes(f"inbox/b0/{path.name}", path.read_bytes())
    runner.instance.add_dynamic_partitions("batches", ["b0"])
    with pytest.raises(dg.Failure, match="no champion segmentation model"):
        runner.execute("ingest_job", "b0")


def test_the_nightly_default_bootstraps_the_unet_and_the_pipeline_runs_on_it(tmp_path, hitl_resources, instance):
    """Without the demo's architecture, loading and serving settings the bootstrap builds TrainingConfig's default
    network, trains it channels_last with DataLoader workers (and no mixed precision on the CPU), registers it to serve at 4/3 of its training size,
    and every asset serves it at that size."""
    config = demo_training_config(fast=True)
    for nightly_default in ("architecture", "channels_last", "loader_workers", "inference_scale"):
        del config["ops"]["segmentation_model"]["config"][nightly_default]
    runner = LoopRunner(build_definitions(hitl_resources), instance, tmp_path / "cursors.json", run_config={"retrain_job": config})
    ensure_champion(runner)
    registry = hitl_resources["model_registry"]
    champion = registry.load_champion()
    assert champion.model.architecture == UNET == TrainingConfig().architecture
    bootstrap = mlflow.get_run(champion.run_id).data.params
    assert (bootstrap["channels_last"], bootstrap["loader_workers"]) == ("True", "2")
    # mixed precision "auto": float16 on CUDA only, so this CPU run trained in float32 and says so
    assert bootstrap["mixed_precision"] == "off"
    trained_at = config["ops"]["segmentation_model"]["config"]["input_size"]
    assert champion.input_size == round(trained_at * 4 / 3) == int(bootstrap["inference_size"]) > trained_at
    assert registry.client().get_model_version(registry.model_name, champion.version).tags["train_input_size"] == str(trained_at)

    catalog = tmp_path / "catalog"
    write_catalog(catalog, 4, seed=11, max_side=256)
    row = run_round(runner, 1, "batch-u", catalog / "images", catalog / "masks", catalog / "catalog.csv", ReplayConfig(seed=1))
    outputs = read_table(hitl_resources["object_store"], "ai_outputs", "batch-u")
    assert len(outputs) == 4 and set(outputs["model_version"].astype(str)) == {"1"}
    assert runner.instance.get_latest_materialization_event(dg.AssetKey("ai_outputs")).asset_materialization.metadata["input_size"].value == champion.input_size
    assert row["images"] == 4
    # the fine-tune kept the champion's architecture
    assert registry.load_version("2").model.architecture == UNET
