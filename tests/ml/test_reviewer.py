"""ml.reviewer: the replayed reviewer approves good masks, corrects bad ones and says why."""

from __future__ import annotations

import numpy as np
import pytest

from ml.metrics import mask_iou
from ml.reviewer import ReplayAnswer, ReplayConfig, answer_task, failure_mode

H, W = 240, 320


def _truth() -> np.ndarray:
    """A product: an ellipse body with a thin handle, 0/255."""
    y, x = np.mgrid[0:H, 0:W]
    body = ((x - 160) / 80.0) ** 2 + ((y - 140) / 70.0) ** 2 <= 1.0
    handle = (np.abs(x - 160) <= 4) & (y >= 40) & (y < 75)
    return np.where(body | handle, 255, 0).astype(np.uint8)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    fg = mask > 0
    out = fg.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= np.roll(np.roll(fg, dy, axis=0), dx, axis=1)
    return np.where(out, 255, 0).astype(np.uint8)


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    return 255 - _dilate(255 - mask, r)


def _halo(truth: np.ndarray) -> np.ndarray:
    return _dilate(truth, 5)


def _missing_part(truth: np.ndarray) -> np.ndarray:
    ai = truth.copy()
    ai[:, 175:] = 0  # the right part of the product is cut away
    return ai


def _residue(truth: np.ndarray) -> np.ndarray:
    ai = truth.copy()
    ai[5:50, 5:80] = 255  # a piece of background far from the product
    ai[200:235, 270:315] = 255
    return ai


def _answer(ai, truth, seed=0, **kw) -> ReplayAnswer:
    return answer_task(ai, truth, ReplayConfig(**kw), np.random.default_rng(seed))


def test_perfect_mask_is_approved():
    truth = _truth()
    ans = _answer(truth.copy(), truth)
    assert ans.decision == "approve"
    assert ans.corrected_mask is None and ans.failure_mode is None
    assert ans.iou == 1.0 and ans.seconds > 0


def test_nearly_perfect_mask_is_approved():
    truth = _truth()
    ai = _dilate(truth, 1)
    assert mask_iou(ai, truth) >= 0.92
    assert _answer(ai, truth).decision == "approve"


@pytest.mark.parametrize(
    "make_ai, expected",
    [(_missing_part, "missing_part"), (_residue, "background_residue"), (_halo, "edge_halo")],
)
def test_bad_mask_is_corrected_with_truth_and_diagnosed(make_ai, expected):
    truth = _truth()
    ai = make_ai(truth)
    ans = _answer(ai, truth)
    assert ans.iou < 0.92
    assert ans.decision == "correct"
    assert ans.failure_mode == expected
    assert ans.corrected_mask is not None
    assert ans.corrected_mask.dtype == np.uint8 and ans.corrected_mask.shape == truth.shape
    assert (ans.corrected_mask == truth).all()
    assert failure_mode(ai, truth) == expected


def test_halo_widths_and_eroded_rim():
    truth = _truth()
    for r in (2, 5, 8):
        assert failure_mode(_dilate(truth, r), truth) == "edge_halo", r
    assert failure_mode(_erode(truth, 5), truth) == "edge_halo"


def test_background_attached_below_the_product_is_residue():
    truth = _truth()
    ai = truth.copy()
    ai[200:225, 100:220] = 255  # e.g. the studio shadow kept under the product
    assert failure_mode(ai, truth) == "background_residue"


def test_missing_thin_part_is_not_a_halo():
    truth = _truth()
    ai = truth.copy()
    ai[30:75, 150:171] = 0  # the handle is gone, the body is perfect
    assert failure_mode(ai, truth) == "missing_part"


def test_masks_of_any_encoding():
    truth = _truth()
    ai = _residue(truth)
    assert failure_mode(ai > 0, truth // 255) == "background_residue"
    assert failure_mode(truth > 0, truth) is None


def test_empty_truth_is_rejected():
    truth = np.zeros((H, W), np.uint8)
    ans = _answer(_truth(), truth)
    assert ans.decision == "reject" and ans.corrected_mask is None and ans.seconds > 0


def test_error_rate_one_flips_decisions():
    truth = _truth()
    good = _answer(truth.copy(), truth, error_rate=1.0)
    assert good.decision == "correct" and (good.corrected_mask == truth).all()
    bad = _answer(_missing_part(truth), truth, error_rate=1.0)
    assert bad.decision == "approve" and bad.corrected_mask is None


def test_error_rate_is_a_rate():
    truth = _truth()
    rng = np.random.default_rng(7)
    cfg = ReplayConfig(error_rate=0.2)
    decisions = [answer_task(truth, truth, cfg, rng).decision for _ in range(2000)]
    assert abs(decisions.count("correct") / 2000 - 0.2) < 0.03


def test_seconds_positive_deterministic_and_longer_for_corrections():
    truth = _truth()
    bad = _missing_part(truth)
    cfg = ReplayConfig(seconds_per_item=6.0, seconds_jitter=0.3)
    a = [answer_task(truth, truth, cfg, np.random.default_rng(s)).seconds for s in range(300)]
    b = [answer_task(truth, truth, cfg, np.random.default_rng(s)).seconds for s in range(300)]
    assert a == b
    assert all(s > 0 for s in a)
    assert 5.0 < np.mean(a) < 7.0 and np.std(a) > 0.5
    c = [answer_task(bad, truth, cfg, np.random.default_rng(s)).seconds for s in range(300)]
    assert np.mean(c) > 2 * np.mean(a)
    # same seed, same draws: a correction takes exactly 2.5x the approval's time
    assert c[0] == pytest.approx(a[0] * 2.5)
    # a heavy jitter still never gives zero or negative time
    wild = ReplayConfig(seconds_per_item=0.5, seconds_jitter=5.0)
    assert min(answer_task(truth, truth, wild, np.random.default_rng(s)).seconds for s in range(300)) > 0


def test_size_mismatch_names_both_sizes():
    truth = _truth()
    with pytest.raises(ValueError) as info:
        _answer(truth[:, :300], truth)
    assert "300x240" in str(info.value) and "320x240" in str(info.value)


def test_config_validation():
    for bad in (dict(iou_threshold=0), dict(error_rate=1.5), dict(seconds_per_item=0), dict(seconds_jitter=-1)):
        with pytest.raises(ValueError):
            ReplayConfig(**bad)
    assert ReplayConfig(seed=3).rng().random() == np.random.default_rng(3).random()


def test_large_masks_are_diagnosed_quickly():
    import time

    truth = np.kron(_truth(), np.ones((12, 12), np.uint8))  # 3840 x 2880
    ai = _missing_part(truth[::12, ::12]).repeat(12, axis=0).repeat(12, axis=1)
    start = time.perf_counter()
    assert failure_mode(ai, truth) == "missing_part"
    assert time.perf_counter() - start < 2.0
