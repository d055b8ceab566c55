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
