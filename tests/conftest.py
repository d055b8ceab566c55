"""Shared fixtures: every test gets its own embedded stores under a temporary folder."""

from __future__ import annotations

import os

import pytest
import torch

import numpy as np
import pandas as pd

from resources import ModelRegistry, ObjectStore, ParquetIOManager, ReviewStore, TolerancePolicy

# Two cores: keep torch from oversubscribing them when pytest runs alongside data loading.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def object_store(tmp_path) -> ObjectStore:
    return ObjectStore(root=str(tmp_path / "objects"))


@pytest.fixture
def review_store(tmp_path) -> ReviewStore:
    return ReviewStore(url=f"sqlite:///{tmp_path / 'review.db'}")


@pytest.fixture
def model_registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "mlartifacts"))


@pytest.fixture(scope="module")
def champion_registry(tmp_path_factory) -> ModelRegistry:
    """A registry whose champion is an untrained (but real) U-Net at 64 px, one per test module.

    For tests that only read the champion: logging a model (torch.export, MLflow's serving check)
    takes 10-15 s on 2 cores, so a module's tests share one.
    """
    import mlflow

    from ml.model import build_model

    root = tmp_path_factory.mktemp("registry")
    registry = ModelRegistry(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_location=str(root / "mlartifacts"))
    registry.activate()
    torch.manual_seed(0)
    with mlflow.start_run(run_name="test-champion"):
        version = registry.log_model(build_model().eval(), input_size=64, tags={"gold_iou": "0.5"})
    registry.promote(version, "test champion", actor="tests")
    return registry


@pytest.fixture
def hitl_resources(object_store, review_store, model_registry) -> dict:
    """The full resource set of the definitions, on temporary embedded stores."""
    return {
        "object_store": object_store,
        "review_store": review_store,
        "model_registry": model_registry,
        "tolerance_policy": TolerancePolicy(),
        "io_manager": ParquetIOManager(object_store=object_store),
    }


@pytest.fixture
def instance():
    """A temporary persistent Dagster instance (sensors need one with a ref to resolve dynamic partitions)."""
    import dagster as dg

    with dg.instance_for_test() as test_instance:
        yield test_instance


def _review_history(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Quality signals of ``n`` reviewed items and whether each needed a correction (low confidence usually did)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, n)
    frame = pd.DataFrame({
        "confidence": confidence, "boundary_uncertainty": rng.uniform(0, 0.5, n), "mask_area_fraction": rng.uniform(0.05, 0.6, n),
        "connected_components": rng.integers(1, 4, n), "colour_distance": rng.uniform(0, 30, n),
    })
    needs = rng.uniform(size=n) < 1 / (1 + np.exp(12 * (confidence - 0.7)))
    return frame, needs


@pytest.fixture
def review_history():
    """A factory of seeded synthetic review histories: ``review_history(n=400, seed=0) -> (signals, needs_correction)``."""
    return _review_history
