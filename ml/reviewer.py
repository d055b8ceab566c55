"""The replayed reviewer: answers a review task from a ground-truth mask, like a person would.

Pure decision logic (no database, no Dagster). The demo, the tests, the benchmarks and users
evaluating the loop on their own labelled data all drive the review store with it:

* the AI mask agrees with the truth (IoU >= ``iou_threshold``) -> ``approve``;
* otherwise -> ``correct``, with the truth as the corrected mask and a failure mode
  diagnosed from where the errors are (:func:`failure_mode`);
* a truth mask with no foreground (no product in the picture) -> ``reject``;
* with probability ``error_rate`` the reviewer errs on approve/correct: approves a bad mask
  or "corrects" a good one (with the truth);
* time spent: ``seconds_per_item`` times log-normal jitter (mean 1, relative sd about
  ``seconds_jitter``), 2.5x for a correction and 1.5x for a rejection, always > 0.

Every call draws exactly two numbers from ``rng`` (error, then jitter), so a run with a
given seed is reproducible and changing ``error_rate`` does not shift the timing stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ml.metrics import as_foreground, mask_iou

__all__ = ["ReplayConfig", "ReplayAnswer", "answer_task", "failure_mode", "DIAGNOSED_FAILURE_MODES"]

DIAGNOSED_FAILURE_MODES = ("edge_halo", "missing_part", "background_residue")

CORRECTION_TIME_FACTOR = 2.5
REJECTION_TIME_FACTOR = 1.5
_MIN_SECONDS = 0.05

# diagnosis runs on masks reduced to at most this many pixels on the longer side
_DIAGNOSIS_MAX_SIDE = 1024
# the "thin band" around the truth outline: this share of the image diagonal (at least 2 px)
_BAND_FRACTION_OF_DIAGONAL = 0.015
# edge_halo: at least this share of the wrong pixels lie in the band ...
_HALO_MIN_IN_BAND = 0.7
# ... and they are spread along at least this share of the outline (a localised miss of a
# thin part, e.g. a strap, is also near the outline but is a missing part, not a halo)
_HALO_MIN_OUTLINE_COVERAGE = 0.3


@dataclass(frozen=True)
class ReplayConfig:
    """How the replayed reviewer behaves."""

    iou_threshold: float = 0.92
    seconds_per_item: float = 6.0
    seconds_jitter: float = 0.3
    error_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not self.seconds_per_item > 0:
            raise ValueError(f"seconds_per_item must be > 0, got {self.seconds_per_item}")
        if not self.seconds_jitter >= 0:
            raise ValueError(f"seconds_jitter must be >= 0, got {self.seconds_jitter}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")

    def rng(self) -> np.random.Generator:
        """A fresh generator seeded from ``seed``."""
        return np.random.default_rng(self.seed)


@dataclass(frozen=True)
class ReplayAnswer:
    """One replayed review decision."""

    decision: str  # "approve" | "correct" | "reject"
    corrected_mask: np.ndarray | None  # uint8 0/255 at the truth's size when decision == "correct"
    failure_mode: str | None
    seconds: float
    iou: float


def _size(mask: np.ndarray) -> str:
    return f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim >= 2 else str(mask.shape)


def answer_task(
    ai_mask: np.ndarray,
    truth_mask: np.ndarray,
    config: ReplayConfig,
    rng: np.random.Generator,
) -> ReplayAnswer:
    """Review ``ai_mask`` against ``truth_mask`` (same size; bool, 0/1 or 0/255)."""
    ai_mask = np.asarray(ai_mask)
    truth_mask = np.asarray(truth_mask)
    if ai_mask.ndim != 2 or truth_mask.ndim != 2:
        raise ValueError(f"masks must be 2-D, got AI mask {ai_mask.shape} and truth mask {truth_mask.shape}")
    if ai_mask.shape != truth_mask.shape:
        raise ValueError(
            f"AI mask size {_size(ai_mask)} differs from truth mask size {_size(truth_mask)} (width x height)"
        )
    errs = rng.random() < config.error_rate
    jitter = rng.standard_normal()
    sigma = math.sqrt(math.log1p(config.seconds_jitter**2))  # log-normal with mean 1, cv = jitter
    base = config.seconds_per_item * math.exp(sigma * jitter - sigma * sigma / 2.0)

    truth = as_foreground(truth_mask)
    iou = mask_iou(ai_mask, truth)
    if not truth.any():
        return ReplayAnswer("reject", None, None, max(_MIN_SECONDS, base * REJECTION_TIME_FACTOR), iou)

    good = iou >= config.iou_threshold
    if good != errs:  # a good mask approved, or (an error) a bad one approved
        return ReplayAnswer("approve", None, None, max(_MIN_SECONDS, base), iou)
    corrected = np.where(truth, np.uint8(255), np.uint8(0))
    return ReplayAnswer(
        "correct",
        corrected,
        failure_mode(ai_mask, truth),
        max(_MIN_SECONDS, base * CORRECTION_TIME_FACTOR),
        iou,
    )


# ----------------------------------------------------------------------------- diagnosis


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disc of ``radius`` pixels."""
    if radius <= 0:
        return mask.copy()
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 ships with albumentations
        out = mask.copy()
        for _ in range(radius):  # 3x3 steps: a square instead of a disc
            grown = out.copy()
            grown[1:, :] |= out[:-1, :]
            grown[:-1, :] |= out[1:, :]
            grown[:, 1:] |= out[:, :-1]
            grown[:, :-1] |= out[:, 1:]
            out = grown
        return out
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (the image border is not an outline)."""
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def failure_mode(ai_mask: np.ndarray, truth_mask: np.ndarray) -> str | None:
    """Diagnose what is wrong with ``ai_mask`` from the pattern of its errors.

    * ``edge_halo``: the wrong pixels lie mostly (>= 70 %) in a thin band around the truth
      outline (1.5 % of the image diagonal, at least 2 px) and run along a good part
      (>= 30 %) of it: a rim of background kept, or of product lost, all around;
    * otherwise ``missing_part`` if more product pixels were missed than background pixels
      were kept, else ``background_residue``.

    ``None`` when the masks agree exactly. Large masks are diagnosed at a reduced size.
    """
    ai = as_foreground(np.asarray(ai_mask))
    truth = as_foreground(np.asarray(truth_mask))
    if ai.shape != truth.shape:
        raise ValueError(f"AI mask size {_size(ai)} differs from truth mask size {_size(truth)} (width x height)")
    step = max(1, math.ceil(max(ai.shape) / _DIAGNOSIS_MAX_SIDE))
    if step > 1:
        ai, truth = ai[::step, ::step], truth[::step, ::step]
    missed = truth & ~ai
    extra = ai & ~truth
    n_missed, n_extra = int(np.count_nonzero(missed)), int(np.count_nonzero(extra))
    if n_missed + n_extra == 0:
        return None
    outline = _outline(truth)
    if outline.any():
        radius = max(2, round(_BAND_FRACTION_OF_DIAGONAL * math.hypot(*truth.shape)))
        wrong = missed | extra
        band = _dilate(outline, radius)
        in_band = np.count_nonzero(wrong & band) / (n_missed + n_extra)
        coverage = np.count_nonzero(outline & _dilate(wrong, radius)) / np.count_nonzero(outline)
        if in_band >= _HALO_MIN_IN_BAND and coverage >= _HALO_MIN_OUTLINE_COVERAGE:
            return "edge_halo"
    return "missing_part" if n_missed > n_extra else "background_residue"
