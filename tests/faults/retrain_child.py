"""Not a test: the retraining job in a process of its own, for the SIGKILL fault (test_training_killed.py).

Usage: ``python retrain_child.py '<TrainingConfig as JSON>'`` with HITL_HOME, DAGSTER_HOME,
MLFLOW_TRACKING_URI and HITL_MLFLOW_ARTIFACTS set. Runs ``retrain_job``'s ``segmentation_model``
step, as the nightly schedule would, against the persistent Dagster instance, on the
``correction_dataset`` table already in the object store; exit 0 when the run succeeded.
"""

import json
import sys

import dagster as dg

from hitl_assets.cli import prepare_environment

prepare_environment()

from hitl_assets.definitions import build_definitions  # noqa: E402  (after the environment is set)

config = json.loads(sys.argv[1])
defs = build_definitions()
with dg.DagsterInstance.get() as instance:
    result = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("segmentation_model")], run_config={"ops": {"segmentation_model": {"config": config}}}, tags={"hitl/fault": "sigkill"}, raise_on_error=False
    )
print(json.dumps({"success": result.success, "run_id": result.run_id}), flush=True)
sys.exit(0 if result.success else 1)
