"""Calibrated quality signals: the probability that an AI output needs a human correction.

A logistic regression on the quality signals, fitted on review history (an item needed correction
when a reviewer corrected or rejected it). Stored as plain JSON coefficients, so loading it never
unpickles anything. Labels exist only for reviewed items, so the fit sees mostly escalations plus
the audit sample of auto-approvals: the reliability curve shows how far that can be trusted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

FEATURES = ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")


def feature_matrix(signals: pd.DataFrame, features: tuple[str, ...] = FEATURES) -> np.ndarray:
    """Signals as a float matrix; component counts enter as log(1 + n) so one stray speck is not ten."""
    columns = []
    for name in features:
        values = pd.to_numeric(signals[name], errors="coerce").to_numpy(dtype=np.float64)
        columns.append(np.log1p(np.clip(values, 0, None)) if name == "connected_components" else values)
    return np.nan_to_num(np.column_stack(columns), nan=0.0)


@dataclass
class Calibrator:
    """Standardised logistic regression on the quality signals, as JSON-safe numbers."""

    features: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    n_samples: int
    positives: int

    def predict(self, signals: pd.DataFrame) -> np.ndarray:
        """Probability that each item needs a correction."""
        x = (feature_matrix(signals, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coef) + self.intercept)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Calibrator":
        data = json.loads(text)
        data["features"] = tuple(data["features"])
        return cls(**data)


def fit_calibrator(signals: pd.DataFrame, needs_correction: np.ndarray, min_samples: int = 20, min_per_outcome: int = 5) -> Calibrator | None:
    """Fit on reviewed items; None when there are too few items, or too few of either outcome, to fit anything honest."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(needs_correction, dtype=int)
    if len(labels) < min_samples or min(int(labels.sum()), int(len(labels) - labels.sum())) < min_per_outcome:
        return None
    x = feature_matrix(signals)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, labels)
    return Calibrator(
        features=FEATURES, mean=mean.tolist(), scale=scale.tolist(), coef=model.coef_[0].tolist(),
        intercept=float(model.intercept_[0]), n_samples=int(len(labels)), positives=int(labels.sum()),
    )


def cross_validated_probabilities(signals: pd.DataFrame, needs_correction: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities, for an honest reliability curve on the same history."""
    labels = np.asarray(needs_correction, dtype=int)
    out = np.full(len(labels), np.nan)
    order = np.random.default_rng(seed).permutation(len(labels))
    for fold in range(folds):
        held = order[fold::folds]
        train = np.setdiff1d(order, held)
        calibrator = fit_calibrator(signals.iloc[train], labels[train], min_samples=10, min_per_outcome=2)
        out[held] = calibrator.predict(signals.iloc[held]) if calibrator else labels[train].mean() if len(train) else np.nan
    return out


def reliability_curve(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per probability bin: mean predicted probability, observed rate and count (empty bins dropped)."""
    probabilities = np.asarray(probabilities, dtype=float)
    outcomes = np.asarray(outcomes, dtype=float)
    index = np.clip((probabilities * bins).astype(int), 0, bins - 1)
    frame = pd.DataFrame({"bin": index, "predicted": probabilities, "observed": outcomes})
    curve = frame.groupby("bin").agg(mean_predicted=("predicted", "mean"), observed_rate=("observed", "mean"), count=("observed", "size"))
    return curve.reset_index()


def expected_calibration_error(curve: pd.DataFrame) -> float:
    """Count-weighted mean gap between predicted and observed rates."""
    if curve.empty:
        return float("nan")
    weights = curve["count"] / curve["count"].sum()
    return float((weights * (curve["mean_predicted"] - curve["observed_rate"]).abs()).sum())
