"""Drive the loop through Dagster itself: sensors' logic, jobs from the definitions, runs in the instance.

This is what the demo and ``hitl replay`` use: every step is a real sensor evaluation or job run,
so it all shows up in the Dagster UI afterwards, exactly as if the daemon had done it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from hitl_assets.partitions import INBOX_PREFIX
from hitl_assets.replay import replay_reviews
from ml.reviewer import ReplayConfig
from resources.tables import read_table


@dataclass
class LoopRunner:
    """Evaluates sensors and executes the jobs they request against a persistent Dagster instance."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursor_file: Path
    run_config: dict = field(default_factory=dict)  # job name -> run config

    def resource(self, key: str):
        return self.defs.resources[key]

    def _cursors(self) -> dict:
        return json.loads(self.cursor_file.read_text()) if self.cursor_file.exists() else {}

    def tick(self, sensor_name: str) -> list[dg.DagsterRun]:
        """Evaluate one sensor tick, apply its partition requests, execute its run requests; returns the runs."""
        sensor = self.defs.resolve_sensor_def(sensor_name)
        cursors = self._cursors()
        with dg.build_sensor_context(
            instance=self.instance, instance_ref=self.instance.get_ref(), cursor=cursors.get(sensor_name), resources=dict(self.defs.resources), definitions=self.defs
        ) as context:
            data = sensor.evaluate_tick(context)
        for request in data.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        runs = [self.execute(sensor.job_name, r.partition_key, r.tags, r.asset_selection) for r in data.run_requests or []]
        cursors[sensor_name] = data.cursor
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        self.cursor_file.write_text(json.dumps(cursors, indent=1))
        return runs

    def execute(self, job_name: str, partition_key: str | None = None, tags: dict | None = None, asset_selection=None) -> dg.DagsterRun:
        """Run a job from the definitions in-process, recorded in the instance; raises if it fails."""
        job = self.defs.resolve_job_def(job_name)
        result = job.execute_in_process(
            instance=self.instance, partition_key=partition_key, run_config=self.run_config.get(job_name, {}), tags=tags or {},
            asset_selection=list(asset_selection) if asset_selection else None, raise_on_error=True,
        )
        return result.dagster_run


def drop_into_inbox(runner: LoopRunner, images_dir: str | Path, batch: str, manifest: str | Path | None = None) -> int:
    """Copy a folder of images (and its catalog.csv) into the inbox as a new batch folder; returns files copied."""
    store = runner.resource("object_store")
    count = 0
    for path in sorted(Path(images_dir).iterdir()):
        if path.is_file():
            store.put_bytes(f"{INBOX_PREFIX}/{batch}/{path.name}", path.read_bytes())
            count += 1
    if manifest is not None and Path(manifest).is_file():
        store.put_bytes(f"{INBOX_PREFIX}/{batch}/catalog.csv", Path(manifest).read_bytes())
    return count


def champion_summary(runner: LoopRunner) -> tuple[str, float | None]:
    """The champion's version and its gold IoU from the latest retraining's evaluation (same gold set as the challenger)."""
    records = runner.instance.fetch_materializations(dg.AssetKey("segmentation_model"), limit=1).records
    if records:
        metadata = records[0].asset_materialization.metadata
        if "champion_gold_iou" in metadata:
            return str(metadata["champion_version"].value), float(metadata["champion_gold_iou"].value)
    version = runner.resource("model_registry").champion_version()
    if version is None:
        return "", None
    gold = (version.tags or {}).get("gold_iou")
    return str(version.version), float(gold) if gold else None


def run_round(runner: LoopRunner, round_number: int, batch: str, images_dir: Path, masks_dir: Path, manifest: Path | None, replay: ReplayConfig) -> dict:
    """One turn of the loop: inbox -> ingest -> review tasks -> replayed review -> publish -> retrain -> metrics."""
    store = runner.resource("object_store")
    drop_into_inbox(runner, images_dir, batch, manifest)
    runner.tick("inbox_sensor")  # first sight: remembers the folder's signature
    runs = runner.tick("inbox_sensor")  # unchanged since: the batch is complete, ingest runs
    if not runs:
        raise RuntimeError(f"inbox sensor did not start a run for batch {batch!r}")
    runner.tick("review_task_sensor")
    replay_reviews(runner.resource("review_store"), store, masks_dir, replay, batch=batch)
    runner.tick("review_completion_sensor")
    runner.execute("retrain_job", tags={"hitl/round": str(round_number)})
    runner.tick("rescore_sensor")  # a new champion re-scores whatever is still waiting for people
    runner.tick("review_task_sensor")
    runner.execute("catalog_job", tags={"hitl/round": str(round_number)})
    queue = read_table(store, "review_queue", batch)
    published = read_table(store, "published_images", batch)
    reviewed = published["final_status"].isin(["approved_human", "approved_corrected", "rejected"])
    corrected = (published["final_status"] == "approved_corrected") & reviewed
    audited = (published["route"] == "auto_approve") & published["audit"].astype(bool) & reviewed
    missed = audited & published["final_status"].isin(["approved_corrected", "rejected"])
    version, gold_iou = champion_summary(runner)
    return {
        "round": round_number,
        "batch": batch,
        "images": int(len(queue)),
        "automation_rate": round(float((queue["route"] == "auto_approve").mean()), 4) if len(queue) else 0.0,
        "correction_rate": round(float(corrected.sum() / reviewed.sum()), 4) if reviewed.any() else 0.0,
        "fn_rate": round(float(missed.sum() / audited.sum()), 4) if audited.any() else None,
        "gold_iou": round(gold_iou, 4) if gold_iou is not None else None,
        "model_version": version,
    }


def ensure_champion(runner: LoopRunner) -> None:
    """With no champion yet, run the retraining job once: it bootstraps on the synthetic catalog."""
    if runner.resource("model_registry").champion_version() is None:
        runner.execute("retrain_job", tags={"hitl/round": "bootstrap"})


DEMO_COLUMNS = ["round", "images", "automation_rate", "correction_rate", "gold_iou", "model_version"]


def format_table(rows: list[dict], columns: list[str] = DEMO_COLUMNS) -> str:
    """The per-round summary as a plain text table."""
    frame = pd.DataFrame(rows)[columns]
    return frame.to_string(index=False)
