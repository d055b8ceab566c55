"""MLflow tracking and model registry: where segmentation models are logged, versioned and promoted."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ml.calibration import Calibrator

if TYPE_CHECKING:  # torch is imported where a model is loaded or logged: sensors and the code location run without it
    import torch

CHAMPION_ALIAS = "champion"
WEIGHTS_ARTIFACT = "weights/state_dict.pt"
CALIBRATOR_ARTIFACT = "calibration/calibrator.json"


def _serving_requirements() -> list[str]:
    """What loading a logged model needs, pinned to this environment: MLflow's PyTorch flavour's own
    (torch, cloudpickle) and the pyfunc interface's numpy and pandas. Stated, because MLflow would
    otherwise infer them by loading the model in a child process: 15-20 s of every log_model on
    2 cores (2026-12-04), for the same list (it found tqdm too, imported by a dependency)."""
    from importlib.metadata import version

    import mlflow.pytorch

    return [*mlflow.pytorch.get_default_pip_requirements(), f"numpy=={version('numpy')}", f"pandas=={version('pandas')}"]


@dataclass
class ChampionModel:
    """The model behind the ``champion`` alias, loaded from its state dict."""

    version: str
    model: torch.nn.Module
    input_size: int  # the square input it serves at (the version's ``input_size`` tag)
    gold_iou: float | None
    run_id: str
    calibrator: Calibrator | None = None


class ModelRegistry(dg.ConfigurableResource):
    """MLflow tracking store and registry: a local SQLite file by default, a server by URI."""

    tracking_uri: str = "sqlite:///.hitl/mlflow.db"
    artifact_location: str = ".hitl/mlartifacts"
    experiment_name: str = "hitl-segmentation"
    model_name: str = "hitl-segmentation"

    @classmethod
    def from_env(cls) -> "ModelRegistry":
        """Configure from MLFLOW_TRACKING_URI, HITL_MLFLOW_ARTIFACTS, HITL_MLFLOW_EXPERIMENT, HITL_MODEL_NAME."""
        home = os.path.abspath(os.environ.get("HITL_HOME", ".hitl"))
        return cls(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{os.path.join(home, 'mlflow.db')}"),
            artifact_location=os.environ.get("HITL_MLFLOW_ARTIFACTS", os.path.join(home, "mlartifacts")),
            experiment_name=os.environ.get("HITL_MLFLOW_EXPERIMENT", "hitl-segmentation"),
            model_name=os.environ.get("HITL_MODEL_NAME", "hitl-segmentation"),
        )

    def _artifact_uri(self) -> str:
        # A bare relative path would land wherever the process happens to run; pin it.
        from urllib.parse import urlparse

        if len(urlparse(self.artifact_location).scheme) > 1:  # s3://, file://, mlflow-artifacts:/ (not C:\)
            return self.artifact_location
        return Path(self.artifact_location).resolve().as_uri()

    def activate(self) -> str:
        """Point the mlflow client at this store and ensure the experiment exists; returns its id."""
        import mlflow

        if self.tracking_uri.startswith("sqlite:///"):
            db_path = self.tracking_uri[len("sqlite:///") :]
            os.makedirs(os.path.dirname(os.path.abspath(db_path)) or ".", exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            experiment_id = mlflow.create_experiment(self.experiment_name, artifact_location=self._artifact_uri())
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    def client(self):
        """An MlflowClient bound to this store."""
        from mlflow import MlflowClient

        self.activate()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def champion_version(self):
        """The ModelVersion behind the ``champion`` alias, or None when there is none yet."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            return client.get_model_version_by_alias(self.model_name, CHAMPION_ALIAS)
        except MlflowException:
            return None

    def load_version(self, version: str, device: str = "cpu") -> ChampionModel:
        """Load a registered version's weights (state dict, ``weights_only``) into the architecture."""
        import mlflow

        from ml.model import load_model_bytes

        client = self.client()
        model_version = client.get_model_version(self.model_name, str(version))
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=model_version.run_id, artifact_path=WEIGHTS_ARTIFACT, dst_path=tmp, tracking_uri=self.tracking_uri
            )
            data = Path(path).read_bytes()
        tags = model_version.tags or {}
        calibrator = None
        if tags.get("calibrated") == "true":
            # A version's own run holds its calibrator, unless a later retraining refreshed it (adopt_calibrator).
            calibrator_run = tags.get("calibrator_run_id") or model_version.run_id
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=calibrator_run, artifact_path=CALIBRATOR_ARTIFACT, dst_path=tmp, tracking_uri=self.tracking_uri
                )
                calibrator = Calibrator.from_json(Path(path).read_text())
        gold = tags.get("gold_iou")
        return ChampionModel(
            version=str(model_version.version),
            # Versions logged before architectures were recorded carry no tag: load_model_bytes reads the keys.
            model=load_model_bytes(data, device=device, architecture=tags.get("architecture") or None),
            input_size=int(tags.get("input_size", 192)),
            gold_iou=float(gold) if gold not in (None, "") else None,
            run_id=model_version.run_id,
            calibrator=calibrator,
        )

    def load_champion(self, device: str = "cpu") -> ChampionModel | None:
        """The current champion, loaded, or None when no model has been promoted yet."""
        version = self.champion_version()
        return None if version is None else self.load_version(version.version, device=device)

    def log_model(self, model, input_size: int, tags: dict[str, str]) -> str:
        """Log a model to the active run and register a new version; returns the version number.

        Two forms are logged: the state dict (what the pipeline loads with ``weights_only``, and what
        fine-tuning starts from) and MLflow's PyTorch flavour in the ``pt2`` (torch.export) format,
        which carries a tensor signature and loads without unpickling.
        """
        import mlflow
        import numpy as np
        import torch

        from ml.infer import ProbabilityHead
        from ml.model import state_dict_bytes

        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "state_dict.pt"
            weights.write_bytes(state_dict_bytes(model))
            mlflow.log_artifact(str(weights), artifact_path="weights")
        exportable = ProbabilityHead(model).eval().to("cpu")
        example = np.random.default_rng(0).standard_normal((2, 3, input_size, input_size)).astype(np.float32)
        with torch.no_grad():
            info = mlflow.pytorch.log_model(
                exportable,
                name="model",
                input_example=example,
                serialization_format="pt2",
                registered_model_name=self.model_name,
                await_registration_for=60,
                pip_requirements=_serving_requirements(),
            )
        version = str(info.registered_model_version)
        client = self.client()
        from ml.model import architecture_of

        for key, value in {"input_size": str(input_size), "architecture": architecture_of(model), **tags}.items():
            client.set_model_version_tag(self.model_name, version, key, str(value))
        return version

    def promote(self, version: str, reason: str, actor: str) -> str | None:
        """Move ``champion`` to ``version`` and record who, why and what it replaced; returns the previous champion."""
        import time

        client = self.client()
        client.get_model_version(self.model_name, str(version))  # fails clearly on an unknown version
        previous = self.champion_version()
        previous_version = str(previous.version) if previous is not None else None
        client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, str(version))
        self.tag_version(version, {
            "previous_champion": previous_version or "none", "promoted_by": actor, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "champion_reason": reason,
        })
        self.record_event("promote", version, previous_version, reason, actor)
        return previous_version

    def rollback(self, reason: str, actor: str) -> tuple[str, str]:
        """Give ``champion`` back to the version it replaced; returns (from_version, to_version)."""
        current = self.champion_version()
        if current is None:
            raise ValueError(f"registered model {self.model_name!r} has no champion to roll back")
        previous = (current.tags or {}).get("previous_champion", "none")
        if previous in ("", "none"):
            raise ValueError(f"champion v{current.version} replaced no earlier version: nothing to roll back to")
        client = self.client()
        client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, previous)
        self.tag_version(str(current.version), {"rolled_back": "true", "rollback_reason": reason})
        self.record_event("rollback", previous, str(current.version), reason, actor)
        return str(current.version), previous

    def record_event(self, action: str, version: str, replaced: str | None, reason: str, actor: str) -> None:
        """An MLflow run per champion change, so the history is searchable beside the training runs."""
        import mlflow

        self.activate()
        with mlflow.start_run(run_name=f"{action}-v{version}", nested=mlflow.active_run() is not None):
            mlflow.set_tags({"hitl.action": action, "hitl.model_version": str(version), "hitl.replaced_version": replaced or "none", "hitl.actor": actor})
            mlflow.log_params({"action": action, "to_version": str(version), "from_version": replaced or "none", "actor": actor, "reason": reason[:500]})

    def champion_history(self) -> "list[dict]":
        """Every recorded champion change, newest first."""
        import mlflow

        self.activate()
        runs = mlflow.search_runs(experiment_names=[self.experiment_name], filter_string="tags.`hitl.action` != ''", order_by=["start_time DESC"])
        return [
            {"action": r["tags.hitl.action"], "version": r["tags.hitl.model_version"], "replaced": r["tags.hitl.replaced_version"], "actor": r["tags.hitl.actor"], "at": str(r["start_time"])}
            for _, r in runs.iterrows()
        ]

    def adopt_calibrator(self, version: str, run_id: str, reason: str) -> None:
        """Serve ``version`` with the needs-correction calibrator logged by training run ``run_id``.

        For a champion that keeps its place: the retraining that fitted the calibrator on the
        latest review history (the champion's own outputs and their verdicts) produced a
        challenger that was rejected, but the calibrator itself is the champion's best.
        """
        self.client().get_run(run_id)  # fails clearly on an unknown run
        self.tag_version(version, {"calibrated": "true", "calibrator_run_id": run_id, "calibrator_reason": reason})

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a registered version (promotion outcome and reason, gold metrics)."""
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(self.model_name, str(version), key, str(value))

