"""Quality signals of a segmentation, computed from the model-resolution probability map.

The tolerance policy routes each AI output to auto-approval or human review by thresholds on
these signals (plus the colour distance from ``ml.postprocess``). They are cheap: the map is
the model's input size (a few hundred pixels square), never the full-resolution photo.

Definitions (``p`` is the probability map clipped to [0, 1], ``F = p >= 0.5`` the predicted
foreground, ``r`` the band radius: 1.5 % of the map's longer side, at least 2 pixels,
``U = 0.2 < p < 0.8`` the uncertain pixels):

``confidence`` (0..1, high = sure)
    mean of ``|2p - 1|`` over ``dilate(F, r) | (p > 0.2)``: the predicted foreground, a band
    of ``r`` pixels around it and any other pixel the model half-believes is foreground.
    Large, easy background areas are left out so they cannot drown out an uncertain object;
    when that region is empty (nothing predicted at all) the whole map is used. A map of
    crisp 0/1 values scores 1, a map of 0.5s scores 0.

``boundary_uncertainty`` (0..1, high = fuzzy edges)
    ``|U| / |B | U|`` where ``B = dilate(F, r) & ~erode(F, r)`` is the boundary band of the
    predicted foreground: the share of the boundary zone (widened by every uncertain pixel,
    wherever it is) that the model is unsure about. Crisp edges give 0; an object whose
    edges are blurred over the whole band, or a map with no confident pixel at all, gives
    values near 1.

``mask_area_fraction`` (0..1)
    ``|F| / (h * w)``: the share of the image predicted as product.

``connected_components`` (int)
    the number of 8-connected components of ``F`` larger than ``min_component_fraction`` of
    the image (default 0.2 %); smaller specks are noise and are not counted. One product
    usually gives 1; 0 means nothing was found; more suggests a split or stray detections.

No Dagster import here: this is pure ML code.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["SIGNALS", "as_probability_map", "quality_signals", "quality_signals_batch"]

SIGNALS = ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components")

_UNCERTAIN_LOW = 0.2
_UNCERTAIN_HIGH = 0.8
_BAND_FRACTION = 0.015


def as_probability_map(prob: np.ndarray) -> np.ndarray:
    """float32 (h, w) probability map in [0, 1] (NaN and -inf as 0, +inf as 1); leading or trailing unit axes are dropped.

    A contiguous float32 map already in [0, 1] (a sigmoid's output, the usual case) is returned
    as it is, not copied: callers read it and do not write to it.
    """
    p = np.asarray(prob, dtype=np.float32)
    while p.ndim > 2 and (p.shape[0] == 1 or p.shape[-1] == 1):  # (1, h, w), (1, 1, h, w), (h, w, 1)
        p = p[0] if p.shape[0] == 1 else p[..., 0]
    if p.ndim != 2:
        raise ValueError(f"probability map must be 2-D (h, w), got shape {np.shape(prob)}")
    # min and max are SIMD passes that carry a NaN through (and NaN >= 0 is False), so any NaN or
    # value outside [0, 1] takes the clipping below: at 256 px 16 us against 100 us for clipping,
    # whose fmax has no SIMD loop (2026-12-04, 2-core AMD EPYC); ai_outputs makes two such calls per image
    if p.size and p.min() >= 0.0 and p.max() <= 1.0:
        return np.ascontiguousarray(p)
    # clipped to [0, 1] in two passes: fmax ignores NaN (NaN and -inf become 0), minimum caps +inf at 1
    out = np.fmax(p, np.float32(0.0))
    return np.minimum(out, np.float32(1.0), out=out)


@functools.lru_cache(maxsize=None)
def _band_kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def quality_signals(prob: np.ndarray, min_component_fraction: float = 0.002) -> dict[str, float]:
    """The quality signals of one probability map (h, w); see the module docstring for definitions.

    Returns a dict keyed by ``SIGNALS`` (in that order): floats, and an int for
    ``connected_components``.
    """
    p = as_probability_map(prob)
    h, w = p.shape
    n = h * w
    fg = (p >= 0.5).view(np.uint8)
    half_believed = (p > _UNCERTAIN_LOW).view(np.uint8)
    uncertain = half_believed & (p < _UNCERTAIN_HIGH).view(np.uint8)

    kernel = _band_kernel(max(2, round(_BAND_FRACTION * max(h, w))))
    dilated = cv2.dilate(fg, kernel)
    eroded = cv2.erode(fg, kernel)  # the image border does not count as an edge

    region = dilated | half_believed
    certainty = np.abs(p - np.float32(0.5))  # |2p - 1| / 2
    n_region = cv2.countNonZero(region)
    # cv2.mean sums in float64 over the masked pixels, without gathering them into a copy
    confidence = 2.0 * (cv2.mean(certainty, mask=region)[0] if n_region else float(certainty.mean()))

    band = (dilated > eroded) | uncertain
    n_band = int(np.count_nonzero(band))
    boundary_uncertainty = float(np.count_nonzero(uncertain) / n_band) if n_band else 0.0

    n_fg = int(np.count_nonzero(fg))
    components = 0
    if n_fg:
        # BBDT with 16-bit labels where they cannot overflow (8-connected components number at most
        # ceil(h/2) * ceil(w/2)): 0.19 ms at 256 px against 0.49 for OpenCV's default (Spaghetti,
        # 32-bit labels), the same components (2026-12-02, 2-core AMD EPYC)
        labels = cv2.CV_16U if ((h + 1) // 2) * ((w + 1) // 2) < 2**16 else cv2.CV_32S
        _, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(fg, 8, labels, cv2.CCL_BBDT)
        areas = stats[1:, cv2.CC_STAT_AREA]
        components = int(np.count_nonzero(areas > float(min_component_fraction) * n))

    return {
        "confidence": confidence,
        "boundary_uncertainty": boundary_uncertainty,
        "mask_area_fraction": n_fg / n,
        "connected_components": components,
    }


def quality_signals_batch(probs: np.ndarray, min_component_fraction: float = 0.002) -> list[dict[str, float]]:
    """``quality_signals`` for each map of a batch (N, h, w) (or (N, 1, h, w))."""
    arr = np.asarray(probs)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"probability maps must be (N, h, w), got shape {np.shape(probs)}")
    return [quality_signals(p, min_component_fraction) for p in arr]
