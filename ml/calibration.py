"""Calibrated quality signals: the probability that an AI output needs a human correction.

A logistic regression on the quality signals, fitted on review history (an item needed correction
when a reviewer corrected or rejected it). Stored as plain JSON coefficients, so loading it never
unpickles anything. Labels exist only for reviewed items, so the fit sees mostly escalations plus
the audit sample of auto-approvals: the reliability curve shows how far that can be trusted.

Which signals enter is chosen on the same history by cross-validation, over nested sets from
confidence alone to all five. Each set's out-of-fold probabilities are scored twice: by log loss,
and by how far down the ranking the history's least risky items can be taken with at most 1 % of
them needing a correction (the confident end, where auto-approval happens). The simplest set
within one standard error of the best log loss wins (the one-standard-error rule), unless it
ranks the confident end worse than confidence alone, which then wins. Fitted on a few hundred
escalations, the extra signals had a better log loss and yet ranked the next round's confident
end far worse than confidence alone (README, "Learning curve"): a better fit on average is not
a safer auto-approval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

FEATURES = ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")
#: The nested signal sets the fit chooses between, simplest first.
FEATURE_SETS = (("confidence",), ("confidence", "boundary_uncertainty"), FEATURES)
#: The false-negative rate at which the confident end of a ranking is judged.
SELECTION_FN_RATE = 0.01


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
    #: per signal set tried (keyed "a+b+c"): out-of-fold log loss, and the share of the history its out-of-fold
    #: ranking auto-approves at a 1 % false-negative rate (both empty for calibrators stored before the selection)
    selection: dict[str, float] = field(default_factory=dict)
    ranking: dict[str, float] = field(default_factory=dict)

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


def _enough(labels: np.ndarray, min_samples: int, min_per_outcome: int) -> bool:
    positives = int(labels.sum())
    return len(labels) >= min_samples and min(positives, len(labels) - positives) >= min_per_outcome


def _fit(signals: pd.DataFrame, labels: np.ndarray, features: tuple[str, ...]) -> Calibrator:
    from sklearn.linear_model import LogisticRegression

    x = feature_matrix(signals, features)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, labels)
    return Calibrator(
        features=tuple(features), mean=mean.tolist(), scale=scale.tolist(), coef=model.coef_[0].tolist(),
        intercept=float(model.intercept_[0]), n_samples=int(len(labels)), positives=int(labels.sum()),
    )


def _folds(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(n)
    return [(np.setdiff1d(order, order[k::folds]), order[k::folds]) for k in range(folds)]


def _out_of_fold(signals: pd.DataFrame, labels: np.ndarray, features: tuple[str, ...], folds: int, seed: int) -> np.ndarray:
    out = np.full(len(labels), np.nan)
    for train, held in _folds(len(labels), folds, seed):
        if _enough(labels[train], 10, 2):
            out[held] = _fit(signals.iloc[train], labels[train], features).predict(signals.iloc[held])
        else:  # too little in this fold to fit: the fold's base rate
            out[held] = labels[train].mean() if len(train) else np.nan
    return out


def select_features(signals: pd.DataFrame, labels: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[tuple[str, ...], dict[str, float], dict[str, float]]:
    """The signal set to fit (see the module's docstring), with every set's out-of-fold log loss and confident-end ranking score."""
    from ml.metrics import automation_at_fn

    labels = np.asarray(labels, dtype=int)
    losses, ranking = {}, {}
    for features in FEATURE_SETS:
        p = np.clip(_out_of_fold(signals, labels, features, folds, seed), 1e-6, 1 - 1e-6)
        losses[features] = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))  # per item
        ranking[features] = automation_at_fn(p, labels.astype(bool), SELECTION_FN_RATE)
    best = min(losses, key=lambda f: losses[f].mean())
    bar = losses[best].mean() + losses[best].std(ddof=1) / np.sqrt(len(labels))
    chosen = next(f for f in FEATURE_SETS if losses[f].mean() <= bar)
    baseline = FEATURE_SETS[0]
    if ranking[chosen] < ranking[baseline]:
        chosen = baseline
    name = "+".join
    return (chosen, {name(f): round(float(v.mean()), 5) for f, v in losses.items()},
            {name(f): round(float(v), 4) for f, v in ranking.items()})


def fit_calibrator(signals: pd.DataFrame, needs_correction: np.ndarray, min_samples: int = 20, min_per_outcome: int = 5,
                   features: tuple[str, ...] | None = None) -> Calibrator | None:
    """Fit on reviewed items, on ``features`` or the signals :func:`select_features` chooses; None when there are
    too few items, or too few of either outcome, to fit anything honest."""
    labels = np.asarray(needs_correction, dtype=int)
    if not _enough(labels, min_samples, min_per_outcome):
        return None
    selection, ranking = {}, {}
    if features is None:
        features, selection, ranking = select_features(signals, labels)
    calibrator = _fit(signals, labels, features)
    calibrator.selection, calibrator.ranking = selection, ranking
    return calibrator


def cross_validated_probabilities(signals: pd.DataFrame, needs_correction: np.ndarray, folds: int = 5, seed: int = 0,
                                  features: tuple[str, ...] = FEATURES) -> np.ndarray:
    """Out-of-fold probabilities of a calibrator on ``features``, for an honest reliability curve on the same history."""
    return _out_of_fold(signals, np.asarray(needs_correction, dtype=int), tuple(features), folds, seed)


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
