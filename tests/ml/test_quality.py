"""Quality signals from the model-resolution probability map."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.quality import SIGNALS, as_probability_map, quality_signals, quality_signals_batch


def square(size: int = 320, lo: int = 80, hi: int = 240) -> np.ndarray:
    p = np.zeros((size, size), np.float32)
    p[lo:hi, lo:hi] = 1.0
    return p


def test_signals_are_named_and_typed():
    s = quality_signals(square())
    assert tuple(s) == SIGNALS
    assert all(isinstance(s[k], float) for k in SIGNALS if k != "connected_components")
    assert isinstance(s["connected_components"], int)


def test_crisp_map_is_confident_with_sharp_edges():
    s = quality_signals(square())
    assert s["confidence"] == pytest.approx(1.0, abs=1e-6)
    assert s["boundary_uncertainty"] == pytest.approx(0.0, abs=1e-6)
    assert s["connected_components"] == 1


def test_blurry_map_is_less_confident_with_fuzzier_edges():
    crisp = quality_signals(square())
    soft = quality_signals(cv2.GaussianBlur(square(), (0, 0), 2))
    softer = quality_signals(cv2.GaussianBlur(square(), (0, 0), 5))
    assert softer["confidence"] < soft["confidence"] < crisp["confidence"]
    assert crisp["boundary_uncertainty"] < soft["boundary_uncertainty"] < softer["boundary_uncertainty"]
    assert soft["boundary_uncertainty"] > 0.2
    assert 0.0 <= softer["boundary_uncertainty"] <= 1.0


def test_map_of_halves_scores_zero_confidence():
    s = quality_signals(np.full((200, 200), 0.5, np.float32))
    assert s["confidence"] == pytest.approx(0.0, abs=1e-6)
    assert s["boundary_uncertainty"] == pytest.approx(1.0)


def test_uncertain_object_is_not_drowned_by_easy_background():
    """A small object with a fuzzy interior must score low although 97 % of the map is crisp background."""
    p = np.zeros((320, 320), np.float32)
    p[150:200, 150:200] = 0.6
    s = quality_signals(p)
    assert s["confidence"] < 0.5  # the whole-map mean would be above 0.95
    assert s["boundary_uncertainty"] > 0.5


def test_two_blobs_counted_and_specks_ignored():
    p = np.zeros((320, 320), np.float32)
    p[20:100, 20:100] = 1.0
    p[180:300, 150:300] = 1.0
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, 320, size=(12, 2)):  # stray 3x3 specks: 9 px < 0.2 % of 102400 px
        if p[max(0, y - 3) : y + 6, max(0, x - 3) : x + 6].any():
            continue
        p[y : y + 3, x : x + 3] = 1.0
    s = quality_signals(p)
    assert s["connected_components"] == 2
    assert quality_signals(p, min_component_fraction=0.0)["connected_components"] > 2
    assert quality_signals(np.zeros((64, 64), np.float32))["connected_components"] == 0


def test_area_fraction():
    assert quality_signals(square())["mask_area_fraction"] == pytest.approx(0.25)
    p = np.zeros((100, 200), np.float32)
    p[:, :50] = 0.9
    p[:, 50:60] = 0.49  # below the 0.5 threshold
    assert quality_signals(p)["mask_area_fraction"] == pytest.approx(0.25)
    assert quality_signals(np.zeros((10, 10), np.float32))["mask_area_fraction"] == 0.0


def test_batch_matches_single():
    maps = np.stack([square(), cv2.GaussianBlur(square(), (0, 0), 3), np.zeros((320, 320), np.float32)])
    batch = quality_signals_batch(maps)
    assert len(batch) == 3
    for got, p in zip(batch, maps):
        assert got == quality_signals(p)
    assert quality_signals_batch(maps[:, None]) == batch  # (N, 1, h, w) from a model


def test_components_are_counted_past_what_16_bit_labels_hold():
    # isolated pixels on every other row and column: 300 x 300 = 90,000 8-connected components
    p = np.zeros((600, 600), np.float32)
    p[::2, ::2] = 1.0
    assert quality_signals(p, min_component_fraction=0.0)["connected_components"] == 90_000
    small = np.zeros((256, 256), np.float32)
    small[::2, ::2] = 1.0  # 16,384: the 16-bit labels' case
    assert quality_signals(small, min_component_fraction=0.0)["connected_components"] == 128 * 128


def test_probability_map_in_range_is_served_as_is_and_anything_else_is_clipped():
    rng = np.random.default_rng(0)
    p = rng.random((64, 48), dtype=np.float32)
    p[0, 0], p[0, 1] = 0.0, 1.0
    same = as_probability_map(p[None])  # (1, h, w), as a batch of one
    assert np.shares_memory(same, p) and same.shape == p.shape and same.flags.c_contiguous
    for bad, want in ((np.nan, 0.0), (-np.inf, 0.0), (np.inf, 1.0), (-0.25, 0.0), (1.5, 1.0)):
        q = p.copy()
        q[3, 4] = bad
        out = as_probability_map(q)
        assert out[3, 4] == want and not np.shares_memory(out, q)
        assert np.array_equal(np.delete(out.ravel(), 3 * 48 + 4), np.delete(p.ravel(), 3 * 48 + 4))
        assert np.isnan(q[3, 4]) or q[3, 4] == bad  # the caller's map is left as it was
    strided = as_probability_map(np.asfortranarray(p))
    assert strided.flags.c_contiguous and np.array_equal(strided, p)
    assert as_probability_map(p.astype(np.float64)).dtype == np.float32
