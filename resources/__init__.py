"""Dagster resources: object store, review store, model registry, tolerance policy, table IO manager.

Every resource is a ConfigurableResource whose ``from_env`` reads environment variables with
working embedded defaults under ``HITL_HOME`` (default ``.hitl``); no code change moves a
deployment from the embedded defaults to production servers.
"""

from resources.model_registry import ModelRegistry
from resources.object_store import ObjectStore
from resources.policy import TolerancePolicy
from resources.review_store import ReviewStore
from resources.tables import ParquetIOManager


def resources_from_env() -> dict:
    """All resources the definitions need, configured from the environment."""
    object_store = ObjectStore.from_env()
    return {
        "object_store": object_store,
        "review_store": ReviewStore.from_env(),
        "model_registry": ModelRegistry.from_env(),
        "tolerance_policy": TolerancePolicy.from_env(),
        "io_manager": ParquetIOManager(object_store=object_store),
    }


__all__ = ["ModelRegistry", "ObjectStore", "ParquetIOManager", "ReviewStore", "TolerancePolicy", "resources_from_env"]
