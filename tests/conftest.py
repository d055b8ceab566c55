"""Shared fixtures: every test gets its own embedded stores under a temporary folder."""

from __future__ import annotations

import os

import pytest
import torch

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
