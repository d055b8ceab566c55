"""Fault: the Dagster daemon is restarted, once between ticks and once killed mid-tick (SIGKILL).

The real sensor daemon code (``execute_sensor_iteration``, see ``daemon_tick.py``) runs the
product's definitions against a persistent sqlite Dagster instance; every daemon life opens the
instance afresh, so only what Dagster stored (sensor cursors, ticks, runs, dynamic partitions)
carries over. The inbox sensor must resume from its stored cursor: every complete inbox folder
becomes exactly one batch and one ingest run, none lost, none created twice.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resources import ObjectStore

pytestmark = pytest.mark.faults

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("daemon_tick", HERE / "daemon_tick.py")
daemon = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(daemon)

DEFS = '''
"""The product's definitions on this test's stores (what a deployment's environment would configure)."""
from hitl_assets.definitions import build_definitions
from resources import ModelRegistry, ObjectStore, ParquetIOManager, ReviewStore, TolerancePolicy

ROOT = {root!r}
store = ObjectStore(root=ROOT + "/objects")
defs = build_definitions({{
    "object_store": store,
    "review_store": ReviewStore(url="sqlite:///" + ROOT + "/review.db"),
    "model_registry": ModelRegistry(tracking_uri="sqlite:///" + ROOT + "/mlflow.db", artifact_location=ROOT + "/mlartifacts"),
    "tolerance_policy": TolerancePolicy(),
    "io_manager": ParquetIOManager(object_store=store),
}})
'''


def drop(store: ObjectStore, batch: str, n: int) -> None:
    for i in range(n):
        store.put_bytes(f"inbox/{batch}/{i}.png", f"{batch}-{i}".encode())  # content is irrelevant here: no run executes


def test_daemon_restarted_sensor_cursor_resumes_no_batch_lost_or_doubled(tmp_path, fault_report):
    import dagster as dg

    root = tmp_path / "stores"
    root.mkdir()
    defs_file = tmp_path / "hitl_defs.py"
    defs_file.write_text(DEFS.format(root=str(root)))
    dagster_dir = str(tmp_path / "dagster_home")
    Path(dagster_dir).mkdir()
    store = ObjectStore(root=str(root / "objects"))
    t0 = time.time()

    drop(store, "drop-a", 3)
    daemon.tick(dagster_dir, str(defs_file), t0)  # life 1: first sight of drop-a (cursor: its signature)
    # life 1 ends (a restart between ticks); meanwhile another folder arrives
    drop(store, "drop-b", 2)

    # life 2: drop-a is unchanged since the stored cursor: the daemon creates its run, then is SIGKILLed mid-tick
    crashed = subprocess.run(
        [sys.executable, str(HERE / "daemon_tick.py"), dagster_dir, str(defs_file), str(t0 + 31), "--crash-after-run-created"],
        capture_output=True, text=True, timeout=300,
    )
    with dg.instance_for_test(temp_dir=dagster_dir, overrides=daemon.RUN_LAUNCHER) as instance:
        runs_after_crash = [r.tags.get("hitl/batch") for r in instance.get_runs()]

    # lives 3, 4 and 5: the interrupted tick is resumed, drop-b is seen twice, then nothing is left to do
    for k in (2, 3, 4):
        daemon.tick(dagster_dir, str(defs_file), t0 + 31 * k)

    with dg.instance_for_test(temp_dir=dagster_dir, overrides=daemon.RUN_LAUNCHER) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "ingest_job"]
        batches = sorted(r.tags.get("hitl/batch") for r in runs)
        partitions = sorted(instance.get_dynamic_partitions("batches"))
        run_keys = sorted(r.tags.get("dagster/run_key") for r in runs)
    expected = ["drop-a", "drop-b"]
    lost = len([b for b in expected if b not in batches]) + len([b for b in expected if b not in partitions])
    duplicated = len(batches) - len(set(batches))
    survived = crashed.returncode == -9 and runs_after_crash == ["drop-a"] and batches == expected and partitions == expected
    fault_report("dagster_daemon_restarted", survived=survived and lost == 0 and duplicated == 0, lost=lost, duplicated=duplicated)

    assert crashed.returncode == -9, crashed.stdout[-2000:] + crashed.stderr[-4000:]  # killed mid-tick, after the run was created
    assert runs_after_crash == ["drop-a"]
    assert batches == expected and partitions == expected, (batches, partitions)
    assert run_keys == ["ingest:drop-a", "ingest:drop-b"]
    assert lost == 0 and duplicated == 0
