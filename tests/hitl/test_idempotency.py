"""Idempotency: materialising every asset again, or re-running a failed run, leaves the same state.

One full turn of the loop through Dagster (inbox -> ingest -> review tasks -> replayed reviews ->
decisions -> publish -> correction dataset -> retraining -> metrics), then every asset is
materialised a second time (with every sensor re-read from scratch), one of those runs first
failing half-way through and being re-run. The object store (every object's bytes), every table,
the review store (tasks and decision events) and the champion are compared before and after: no
duplicate review task, decision, published file or dataset row, and nothing changed.
"""

from __future__ import annotations

import hashlib
import io

import mlflow
import pandas as pd
import pytest
import torch

from hitl_assets.cli import demo_training_config
from hitl_assets.definitions import build_definitions
from hitl_assets.loop import LoopRunner, drop_into_inbox
from hitl_assets.replay import replay_reviews
from ml.model import build_model
from ml.reviewer import ReplayConfig
from ml.synthetic import write_catalog
from resources import ObjectStore, ParquetIOManager

BATCH = "idem-1"
BREAK = {"after": -1}  # writes under outputs/ allowed before the store breaks; negative: never (resources are frozen)


class BreakingStore(ObjectStore):
    """The same local store, whose writes of model outputs start failing after ``BREAK["after"]`` of them."""

    def put_bytes(self, key, data, content_type=None):
        if BREAK["after"] >= 0 and key.startswith("outputs/"):
            if BREAK["after"] == 0:
                raise OSError(5, "Input/output error (injected)")
            BREAK["after"] -= 1
        return super().put_bytes(key, data, content_type)


def training_config() -> dict:
    config = demo_training_config(fast=True)
    # Never promote: the second pass must see the same champion for its outputs to be comparable at all.
    config["ops"]["segmentation_model"]["config"].update(input_size=64, fine_tune_seconds=2.0, max_epochs=1, promotion_margin=1.0, grid_samples=2)
    return config


def snapshot(resources: dict) -> dict:
    store, reviews, registry = resources["object_store"], resources["review_store"], resources["model_registry"]
    objects, tables = {}, {}
    for entry in store.list(""):
        data = store.get_bytes(entry.key)
        if entry.key.startswith("tables/"):
            tables[entry.key] = pd.read_parquet(io.BytesIO(data))
        else:
            objects[entry.key] = hashlib.sha256(data).hexdigest()
    champion = registry.champion_version()
    return {
        "objects": objects,
        "tables": tables,
        "tasks": reviews.tasks().drop(columns=["claimed_at"], errors="ignore"),
        "events": reviews.events(),
        "champion": str(champion.version) if champion else None,
    }


VOLATILE = {"hitl_metrics": {"computed_at", "generated_at"}}


def compare_tables(first: dict, second: dict) -> list[str]:
    problems = []
    if set(first) != set(second):
        problems.append(f"tables differ: {sorted(set(first) ^ set(second))}")
    for key in sorted(set(first) & set(second)):
        a, b = first[key], second[key]
        name = key.split("/")[1]
        drop = [c for c in VOLATILE.get(name, ()) if c in a.columns]
        try:
            pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True), b.drop(columns=drop).reset_index(drop=True), check_dtype=False)
        except AssertionError as err:
            problems.append(f"{key}: {str(err).splitlines()[0:3]}")
    return problems


@pytest.fixture
def loop(tmp_path, hitl_resources, instance):
    BREAK["after"] = -1
    store = BreakingStore(root=hitl_resources["object_store"].root)
    resources = {**hitl_resources, "object_store": store, "io_manager": ParquetIOManager(object_store=store)}
    registry = resources["model_registry"]
    registry.activate()
    torch.manual_seed(0)
    with mlflow.start_run(run_name="idempotency-champion"):
        version = registry.log_model(build_model().eval(), input_size=64, tags={"gold_iou": "0.5"})
    registry.promote(version, "test champion", actor="tests")
    runner = LoopRunner(build_definitions(resources), instance, tmp_path / "cursors.json", run_config={"retrain_job": training_config()})
    return runner, resources


def test_materialising_every_asset_twice_and_rerunning_a_failed_run_leaves_the_same_state(tmp_path, loop):
    runner, resources = loop
    catalog = tmp_path / "catalog"
    write_catalog(catalog, 8, seed=3, max_side=128)
    drop_into_inbox(runner, catalog / "images", BATCH, catalog / "catalog.csv")
    runner.tick("inbox_sensor")
    assert runner.tick("inbox_sensor")
    runner.tick("review_task_sensor")
    replay_reviews(resources["review_store"], resources["object_store"], catalog / "masks", ReplayConfig(seed=2), batch=BATCH)
    assert runner.tick("review_completion_sensor")
    runner.execute("retrain_job")
    runner.execute("catalog_job")
    first = snapshot(resources)
    assert len(first["tasks"]) and len(first["events"]) and any(k.startswith("published/") for k in first["objects"])
    assert len(first["tables"]["tables/correction_dataset/_all.parquet"])

    # Every asset again. The ingest run first fails half-way through writing model outputs, and is re-run.
    BREAK["after"] = 4
    with pytest.raises(OSError, match="injected"):
        runner.execute("ingest_job", BATCH)
    BREAK["after"] = -1
    runner.execute("ingest_job", BATCH)
    runner.cursor_file.unlink()  # every sensor re-reads everything from scratch
    runner.tick("inbox_sensor")
    assert not runner.tick("inbox_sensor")  # a known batch is never ingested twice
    runner.tick("review_task_sensor")
    runner.execute("review_complete_job", BATCH)
    runner.execute("retrain_job")
    runner.execute("catalog_job")
    second = snapshot(resources)

    assert second["champion"] == first["champion"]
    assert set(second["objects"]) == set(first["objects"]), sorted(set(second["objects"]) ^ set(first["objects"]))
    changed = [k for k in first["objects"] if first["objects"][k] != second["objects"][k]]
    assert changed == []
    assert compare_tables(first["tables"], second["tables"]) == []
    pd.testing.assert_frame_equal(first["tasks"], second["tasks"])  # no duplicate or changed review task
    pd.testing.assert_frame_equal(first["events"], second["events"])  # no decision recorded twice
    dataset = second["tables"]["tables/correction_dataset/_all.parquet"]
    assert not dataset.duplicated(subset=["image_id"]).any()
    published = second["tables"][f"tables/published_images/{BATCH}.parquet"]
    on_disk = sorted(k for k in second["objects"] if k.startswith(f"published/{BATCH}/"))
    assert on_disk == sorted(published.loc[published["published_key"] != "", "published_key"])
