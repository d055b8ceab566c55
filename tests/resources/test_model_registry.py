"""The MLflow model registry resource: a champion that keeps its place can adopt a newer calibrator."""

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException

from ml.calibration import fit_calibrator
from ml.model import build_model
from resources.model_registry import CALIBRATOR_ARTIFACT


def test_a_champion_adopts_the_calibrator_of_a_rejected_challengers_run(model_registry, review_history):
    torch.manual_seed(0)
    model_registry.activate()
    with mlflow.start_run(run_name="bootstrap"):
        first = model_registry.log_model(build_model().eval(), 64, tags={"gold_iou": "0.8", "calibrated": "false"})
    model_registry.promote(first, "bootstrap", actor="test")
    assert model_registry.load_champion().calibrator is None

    frame, needs = review_history()
    calibrator = fit_calibrator(frame, needs)
    with mlflow.start_run(run_name="fine-tune") as run:
        mlflow.log_text(calibrator.to_json(), CALIBRATOR_ARTIFACT)
        second = model_registry.log_model(build_model().eval(), 64, tags={"gold_iou": "0.7", "calibrated": "true"})
    model_registry.tag_version(second, {"promotion": "rejected"})

    model_registry.adopt_calibrator(first, run.info.run_id, "refreshed by the retraining that logged v2 (rejected)")
    champion = model_registry.load_champion()
    assert champion.version == first
    assert np.allclose(champion.calibrator.predict(frame), calibrator.predict(frame))
    tags = model_registry.client().get_model_version(model_registry.model_name, first).tags
    assert tags["calibrator_run_id"] == run.info.run_id and "rejected" in tags["calibrator_reason"]
    # the challenger still loads its own calibrator from its own run
    assert model_registry.load_version(second).calibrator is not None


def test_adopting_a_calibrator_from_an_unknown_run_fails_and_changes_nothing(model_registry):
    model_registry.activate()
    with mlflow.start_run(run_name="bootstrap"):
        version = model_registry.log_model(build_model().eval(), 64, tags={"calibrated": "false"})
    with pytest.raises(MlflowException):
        model_registry.adopt_calibrator(version, "0" * 32, "typo")
    assert model_registry.load_version(version).calibrator is None


def test_a_logged_version_loads_from_mlflow_and_states_its_pinned_requirements(model_registry):
    """What an ML engineer loads from the registry: the pt2 model, serving the same probabilities as the
    state dict the pipeline loads, with requirements pinned to this environment (stated, not inferred)."""
    from importlib.metadata import version as installed

    import mlflow.pyfunc

    torch.manual_seed(0)
    model_registry.activate()
    with mlflow.start_run(run_name="bootstrap"):
        version = model_registry.log_model(build_model().eval(), 64, tags={"gold_iou": "0.8"})
    uri = f"models:/{model_registry.model_name}/{version}"
    requirements = mlflow.pyfunc.get_model_dependencies(uri)
    with open(requirements) as lines:
        pinned = {line.split("==")[0]: line.strip().split("==")[1] for line in lines if "==" in line}
    for package in ("mlflow", "torch", "numpy", "pandas", "cloudpickle"):
        assert pinned[package] == installed(package)

    images = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    served = mlflow.pyfunc.load_model(uri).predict(images)
    with torch.no_grad():
        expected = torch.sigmoid(model_registry.load_version(version).model.eval()(torch.from_numpy(images))["out"]).numpy()
    assert np.allclose(served, expected, atol=1e-5)
