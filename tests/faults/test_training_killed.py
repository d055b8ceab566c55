"""Fault: retraining killed with SIGKILL midway (an OOM kill, a node lost).

A real ``retrain_job`` runs in a subprocess against a real MLflow sqlite store and a persistent
Dagster instance. Once its MLflow run has logged a training epoch, the process gets SIGKILL. The
champion alias, the registered versions and the promotion history must be exactly as before; no
version from the killed run may exist, let alone be promoted; and the next retraining (same
stores, a fresh process) succeeds and leaves the champion on a fully logged version.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources import ModelRegistry, ObjectStore

pytestmark = pytest.mark.faults

CHILD = Path(__file__).with_name("retrain_child.py")
REPO = Path(__file__).resolve().parents[2]
SMALL = {"input_size": 64, "batch_size": 4, "synthetic_replay_images": 8, "synthetic_gold_images": 6, "min_gold_images": 4, "grid_samples": 2, "patience": 50}


def registry_state(registry: ModelRegistry) -> dict:
    client = registry.client()
    versions = client.search_model_versions(f"name='{registry.model_name}'")
    model = client.get_registered_model(registry.model_name)
    return {
        "versions": sorted((int(v.version), v.run_id, v.status, tuple(sorted(v.tags.items()))) for v in versions),
        "aliases": {k: str(v) for k, v in dict(model.aliases).items()},
        "history": registry.champion_history(),
    }


def write_corrections(store: ObjectStore) -> None:
    """A small correction dataset (what reviewers' corrections become), so that retraining has something to learn."""
    import numpy as np
    import pandas as pd

    from ml.imageio import encode_png
    from ml.synthetic import generate_catalog
    from resources.tables import write_table

    rows = []
    for i, item in enumerate(generate_catalog(8, seed=5, max_side=128)):
        image_key = store.put_bytes(f"samples/c{i}.png", encode_png(item.image))
        mask_key = store.put_bytes(f"samples/c{i}-mask.png", encode_png((np.asarray(item.mask) > 0).astype(np.uint8) * 255))
        rows.append({"image_id": f"c{i}", "batch": "faults", "sku": f"sku-{i}", "category": item.category, "split": "gold" if i >= 6 else "train",
                     "source": "corrected", "mask_digest": f"digest-{i}", "event_id": i + 1, "policy_version": "p1",
                     "sample_image_key": image_key, "sample_mask_key": mask_key, "dataset_version": "faults-v1"})
    write_table(store, "correction_dataset", pd.DataFrame(rows))


def epochs_logged(db: Path) -> int:
    """Training epochs logged by a run still RUNNING (read-only look at MLflow's sqlite store)."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        try:
            row = conn.execute(
                "select count(*) from metrics m join runs r on r.run_uuid = m.run_uuid where r.status = 'RUNNING' and m.key = 'train_loss'"
            ).fetchone()
        except sqlite3.OperationalError:  # tables not created yet, or the writer holds a lock
            return 0
    return int(row[0])


def test_training_killed_with_sigkill_midway_leaves_the_registry_untouched(tmp_path, fault_report):
    import mlflow
    import torch

    from ml.model import build_model

    home = tmp_path / "home"
    db = tmp_path / "mlflow.db"
    env = {
        **os.environ, "HITL_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"), "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        "HITL_MLFLOW_ARTIFACTS": str(tmp_path / "mlartifacts"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
    }
    registry = ModelRegistry(tracking_uri=env["MLFLOW_TRACKING_URI"], artifact_location=env["HITL_MLFLOW_ARTIFACTS"])
    registry.activate()
    torch.manual_seed(0)
    with mlflow.start_run(run_name="champion-before-the-fault"):
        champion = registry.log_model(build_model().eval(), input_size=64, tags={"gold_iou": "0.0"})
    registry.promote(champion, "the champion before the fault", actor="tests")
    before = registry_state(registry)
    write_corrections(ObjectStore(root=str(home / "objects")))

    # A long fine-tune, killed once it has logged an epoch.
    long_run = {**SMALL, "max_epochs": 200, "fine_tune_seconds": 300.0}
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps(long_run)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 150
    try:
        while epochs_logged(db) < 1 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        midway = child.poll() is None and epochs_logged(db) >= 1
        child.kill()  # SIGKILL: no handler, no cleanup, no atexit
    finally:
        child.kill()
        output = child.communicate(timeout=60)[0].decode(errors="replace")
    killed = child.returncode == -9
    after_kill = registry_state(registry)
    with sqlite3.connect(db) as conn:
        left_running = conn.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]

    # The next retraining in a fresh process succeeds.
    next_run = subprocess.run([sys.executable, str(CHILD), json.dumps({**SMALL, "max_epochs": 1, "fine_tune_seconds": 3.0})],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    after = registry_state(registry)
    new_versions = [v for v in after["versions"] if v not in before["versions"]]
    champion_now = after["aliases"].get("champion")
    finished_runs = {v[1] for v in after["versions"]}
    client = registry.client()
    champion_runs = [v[1] for v in after["versions"] if str(v[0]) == champion_now]
    champion_run_status = client.get_run(champion_runs[0]).info.status if champion_runs else "missing"

    untouched = after_kill == before
    survived = (
        midway and killed and untouched and left_running == 1 and next_run.returncode == 0 and len(new_versions) == 1
        and champion_run_status == "FINISHED" and len(finished_runs) == len(after["versions"])
    )
    # Lost: a champion or version that the kill removed; duplicated: versions registered beyond the one expected.
    lost = len([v for v in before["versions"] if v not in after["versions"]]) + (0 if champion_now else 1)
    duplicated = max(len(new_versions) - 1, 0) + len([v for v in after_kill["versions"] if v not in before["versions"]])
    fault_report("training_killed_sigkill_midway", survived=survived, lost=lost, duplicated=duplicated)

    assert midway and killed, output[-3000:]
    assert untouched, (before, after_kill)  # champion alias, versions, tags and promotion history exactly as before
    assert left_running == 1  # the killed MLflow run stays RUNNING: never registered, never promoted
    assert next_run.returncode == 0, next_run.stdout[-3000:] + next_run.stderr[-3000:]
    assert len(new_versions) == 1 and champion_run_status == "FINISHED"
    assert champion_now in (champion, str(new_versions[0][0]))
    assert lost == 0 and duplicated == 0
