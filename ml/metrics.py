"""Mask quality metrics shared by evaluation, the replayed reviewer and the metrics asset."""

from __future__ import annotations

import numpy as np


def as_foreground(mask: np.ndarray) -> np.ndarray:
    """Boolean foreground of a mask given as bool, 0/1 or 0/255 values."""
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    return mask >= (128 if mask.max(initial=0) > 1 else 1)


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two same-sized masks; two empty masks agree perfectly (1.0)."""
    if pred.shape[:2] != truth.shape[:2]:
        raise ValueError(f"mask shapes differ: {pred.shape[:2]} vs {truth.shape[:2]}")
    p, t = as_foreground(pred), as_foreground(truth)
    union = np.count_nonzero(p | t)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t) / union)


def automation_at_fn(risk: np.ndarray, needs_correction: np.ndarray, max_fn_rate: float = 0.01) -> float:
    """Largest share of items that can be auto-approved, lowest risk first, with at most ``max_fn_rate``
    of the auto-approved needing a correction (an oracle bound: it uses the items' true outcomes)."""
    risk = np.asarray(risk, dtype=float)
    bad = np.asarray(needs_correction, dtype=bool)
    if len(risk) == 0:
        return 0.0
    order = np.argsort(risk, kind="stable")
    misses = np.cumsum(bad[order])
    approved = np.arange(1, len(risk) + 1)
    ok = misses <= max_fn_rate * approved
    return float(approved[ok].max() / len(risk)) if ok.any() else 0.0
