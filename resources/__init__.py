"""Dagster resources: object store, review store, model registry, tolerance policy, table IO manager.

Every resource is a ConfigurableResource whose ``from_env`` reads environment variables with
working embedded defaults under ``HITL_HOME`` (default ``.hitl``); no code change moves a
deployment from the embedded defaults to production servers.
"""

from importlib import import_module

# Imported on first use: the review app needs the review store without torch and MLflow
# (which the model registry pulls in), and starts several seconds faster for it.
_HOMES = {
    "ModelRegistry": "resources.model_registry",
    "ObjectStore": "resources.object_store",
    "TolerancePolicy": "resources.policy",
    "ReviewStore": "resources.review_store",
    "ParquetIOManager": "resources.tables",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'resources' has no attribute {name!r}")


def resources_from_env() -> dict:
    """All resources the definitions need, configured from the environment."""
    from resources.model_registry import ModelRegistry
    from resources.object_store import ObjectStore
    from resources.policy import TolerancePolicy
    from resources.review_store import ReviewStore
    from resources.tables import ParquetIOManager

    object_store = ObjectStore.from_env()
    return {
        "object_store": object_store,
        "review_store": ReviewStore.from_env(),
        "model_registry": ModelRegistry.from_env(),
        "tolerance_policy": TolerancePolicy.from_env(),
        "io_manager": ParquetIOManager(object_store=object_store),
    }


__all__ = ["ModelRegistry", "ObjectStore", "ParquetIOManager", "ReviewStore", "TolerancePolicy", "resources_from_env"]
