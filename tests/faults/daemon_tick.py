"""Not a test: one iteration of the real Dagster sensor daemon, for the daemon-restart fault.

``tick(dagster_dir, defs_file, now)`` opens the persistent Dagster instance stored in
``dagster_dir`` (sqlite: runs, dynamic partitions, sensor ticks and cursors), loads the product's
definitions from ``defs_file`` and runs ``dagster._daemon.sensor.execute_sensor_iteration`` (the
code the ``dagster-daemon`` process runs every few seconds) with the clock at ``now``. Each call
is a daemon life of its own: instance and workspace are opened and closed again, so nothing
survives between calls except what the instance stored.

As a script (``python daemon_tick.py DAGSTER_DIR DEFS_FILE NOW --crash-after-run-created``), the
daemon is SIGKILLed by Dagster's own crash hook right after it has created a run and before it
has launched it or finished the tick: a daemon dying mid-tick.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_LAUNCHER = {"run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}


def tick(dagster_dir: str, defs_file: str, now: float, crash_after_run_created: bool = False) -> None:
    import dagster as dg
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    flags = {"inbox_sensor": {"RUN_CREATED": signal.SIGKILL}} if crash_after_run_created else None
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(python_file=defs_file, attribute="defs", working_directory=str(REPO)), location_name="hitl_assets"
    )
    with dg.instance_for_test(temp_dir=dagster_dir, overrides=RUN_LAUNCHER) as instance:
        with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as context:
            with freeze_time(now):
                list(execute_sensor_iteration(context, logging.getLogger("faults.daemon"), threadpool_executor=None,
                                              submit_threadpool_executor=None, debug_crash_flags=flags))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    tick(sys.argv[1], sys.argv[2], float(sys.argv[3]), "--crash-after-run-created" in sys.argv[4:])
