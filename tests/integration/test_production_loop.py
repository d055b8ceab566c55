"""The whole graph for a batch with every part on its production backend, configured by environment only.

Object store on the S3-compatible server, review store on PostgreSQL, MLflow through a real tracking
server (PostgreSQL) with artifacts on S3, and the Dagster instance on PostgreSQL built from
deploy/dagster.postgres.yaml. The resources come from ``resources_from_env()``: the same code as the
embedded defaults, only the environment differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import mlflow
import pytest
import torch

from hitl_assets.cli import demo_training_config
from hitl_assets.definitions import build_definitions
from hitl_assets.loop import LoopRunner, drop_into_inbox, ensure_champion, run_round
from hitl_assets.partitions import INBOX_PREFIX
from ml.reviewer import ReplayConfig
from ml.synthetic import write_catalog
from resources import resources_from_env
from resources.tables import read_table

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Production:
    runner: LoopRunner
    resources: dict
    home: Path
    round_row: dict
    mlflow_bucket: str
    work: Path


@pytest.fixture(scope="module")
def production(servers, make_database, make_bucket, mlflow_server, dagster_pg_instance, tmp_path_factory):
    work = tmp_path_factory.mktemp("production")
    env = {
        "HITL_HOME": str(work / "home"),  # nothing may land here: every store is a server
        "HITL_S3_BUCKET": make_bucket("objects"),
        "HITL_S3_PREFIX": "hitl",
        "HITL_S3_ENDPOINT_URL": servers.s3_endpoint_url,
        "HITL_REVIEW_DB_URL": make_database("review"),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "HITL_MLFLOW_ARTIFACTS": mlflow_server.artifacts,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        resources = resources_from_env()
        defs = build_definitions(resources)
        runner = LoopRunner(defs, dagster_pg_instance, work / "cursors.json", run_config={"retrain_job": demo_training_config(fast=True)})
        store = resources["object_store"]
        # Another batch's published images share the string prefix "published/batch-a": they must survive.
        store.put_bytes("published/batch-ab/keep.jpg", b"not this batch's")

        ensure_champion(runner)
        catalog = work / "catalog"
        write_catalog(catalog, 10, seed=7, max_side=256)
        (catalog / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        row = run_round(runner, 1, "batch-a", catalog / "images", catalog / "masks", catalog / "catalog.csv", ReplayConfig(seed=1))
        yield Production(runner, resources, Path(env["HITL_HOME"]), row, mlflow_server.bucket, work)


def test_every_part_is_on_its_production_backend(production, servers, mlflow_server):
    resources = production.resources
    assert resources["object_store"].is_s3 and resources["object_store"].endpoint_url == servers.s3_endpoint_url
    assert resources["review_store"].engine.dialect.name == "postgresql"
    assert resources["model_registry"].tracking_uri == mlflow_server.url
    instance = production.runner.instance
    assert {type(instance.run_storage).__name__, type(instance.event_log_storage).__name__, type(instance.schedule_storage).__name__} == {
        "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage",
    }
    assert not production.home.exists(), f"something was written under HITL_HOME: {list(production.home.rglob('*'))[:5]}"


def test_one_round_of_the_loop_on_production_backends(production):
    store, reviews, registry = (production.resources[k] for k in ("object_store", "review_store", "model_registry"))
    row = production.round_row
    assert row["images"] == 10

    raw = read_table(store, "raw_images", "batch-a")
    assert (raw["status"] == "accepted").sum() == 10
    assert store.exists("quarantine/batch-a/broken.png.reason.json")
    assert store._s3().head_object(Bucket=store.bucket, Key="hitl/tables/raw_images/batch-a.parquet")  # under the prefix

    queue = read_table(store, "review_queue", "batch-a")
    tasks = reviews.tasks(batch="batch-a")
    needs_review = queue[(queue["route"] == "escalate") | queue["audit"]]
    assert set(tasks["image_id"]) == set(needs_review["image_id"])
    assert (tasks["status"] == "decided").all()
    assert len(reviews.latest_decisions(batch="batch-a")) == len(tasks)

    # The publish location on S3 holds exactly the approved images; the neighbouring batch is untouched.
    published = read_table(store, "published_images", "batch-a")
    approved = published[published["final_status"].str.startswith("approved")]
    assert {e.key for e in store.list("published/batch-a/")} == set(approved["published_key"])
    assert store.get_bytes("published/batch-ab/keep.jpg") == b"not this batch's"

    dataset = read_table(store, "correction_dataset")
    assert len(dataset) == len(set(needs_review["image_id"]))
    metrics = read_table(store, "hitl_metrics")
    assert metrics.loc[metrics.level == "overall", "images"].iloc[0] == 10

    runs = production.runner.instance.get_runs()
    assert runs and all(run.is_success for run in runs)
    assert {r.job_name for r in runs} >= {"ingest_job", "review_complete_job", "retrain_job", "catalog_job"}
    assert registry.champion_version() is not None


def test_models_are_logged_registered_and_loaded_through_the_tracking_server(production, servers, mlflow_server):
    registry = production.resources["model_registry"]
    client = registry.client()
    versions = client.search_model_versions(f"name='{registry.model_name}'")
    assert len(versions) == 2 and all(v.tags.get("promotion") in ("promoted", "rejected") for v in versions)
    experiment = mlflow.get_experiment_by_name(registry.experiment_name)
    assert experiment.artifact_location == mlflow_server.artifacts
    runs = mlflow.search_runs(experiment_names=[registry.experiment_name])
    assert {"metrics.gold_iou", "params.dataset_version"} <= set(runs.columns)

    # The weights live on S3, under the experiment's artifact location.
    s3 = boto3.client("s3", endpoint_url=servers.s3_endpoint_url)
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_server.bucket) for item in page.get("Contents", [])]
    champion = registry.champion_version()
    assert any(key.endswith(f"{champion.run_id}/artifacts/weights/state_dict.pt") for key in keys), keys[:10]

    loaded = registry.load_champion()
    assert loaded.version == str(champion.version)
    with torch.no_grad():
        out = loaded.model(torch.zeros(1, 3, loaded.input_size, loaded.input_size))
    assert out["out"].shape[-1] == loaded.input_size

    # People move the champion by hand through the same server; every change is recorded.
    registry.promote("1", "integration: back to the bootstrap", actor="ci")
    assert str(registry.champion_version().version) == "1"
    assert registry.champion_history()[0]["actor"] == "ci"


def test_a_launched_run_uses_the_multiprocess_executor_configured_by_environment(production):
    """Like the daemon: a run launched from the code location (not in-process), its steps in subprocesses.

    The subprocesses import ``hitl_assets.definitions`` afresh and build every resource from the
    environment alone, then write to the same S3 bucket, PostgreSQL databases and MLflow server.
    """
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    runner, store = production.runner, production.resources["object_store"]  # the fixture's environment is still set
    catalog = production.work / "catalog-b"
    write_catalog(catalog, 4, seed=11, max_side=192)
    drop_into_inbox(runner, catalog / "images", "batch-b", catalog / "catalog.csv")
    assert "batch-b" in store.list_folders(INBOX_PREFIX)

    sensor = runner.defs.resolve_sensor_def("inbox_sensor")
    cursor = None
    for _ in range(2):  # first sight, then unchanged: the batch is complete
        with dg.build_sensor_context(
            instance=runner.instance, instance_ref=runner.instance.get_ref(), cursor=cursor, resources=dict(runner.defs.resources), definitions=runner.defs
        ) as context:
            result = sensor.evaluate_tick(context)
        cursor = result.cursor
    (request,) = result.run_requests
    for partitions in result.dynamic_partitions_requests:
        runner.instance.add_dynamic_partitions(partitions.partitions_def_name, list(partitions.partition_keys))

    job = ReconstructableRepository.for_module("hitl_assets.definitions", "defs", working_directory=str(REPO)).get_reconstructable_job("ingest_job")
    with dg.execute_job(job, instance=runner.instance, tags={**request.tags, "dagster/partition": request.partition_key}) as result:
        assert result.success
        run_id = result.run_id
        events = runner.instance.all_logs(run_id)
    assert any("Multiprocess executor" in (event.message or "") for event in events)
    queue = read_table(store, "review_queue", "batch-b")
    assert len(queue) == 4
    assert runner.instance.get_run_by_id(run_id).tags["dagster/partition"] == "batch-b"
