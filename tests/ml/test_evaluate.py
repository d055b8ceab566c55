"""Inference and full-resolution evaluation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ml.evaluate import boundary_f_score, evaluate_model
from ml.infer import predict_probabilities
from ml.model import build_model


class _RedDetector(torch.nn.Module):
    """A stand-in 'model' that calls a pixel foreground when it is redder than it is blue."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return {"out": self.gain * (x[:, :1] - x[:, 2:3])}


def _red_on_blue(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 4), 15, 0, 360, 255, -1)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (20, 20, 220)
    image[mask > 0] = (220, 20, 20)
    return image, mask


def test_predict_probabilities_shape_and_range():
    torch.manual_seed(0)
    images = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i, (h, w) in enumerate([(90, 60), (64, 64), (200, 300)])]
    probabilities = predict_probabilities(build_model(), images, input_size=64, batch_size=2, half=True)
    assert probabilities.shape == (3, 64, 64) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    assert predict_probabilities(build_model(), [], input_size=64).shape == (0, 64, 64)


def test_evaluate_model_scores_at_full_resolution_per_category():
    pairs = [_red_on_blue(h, w) for h, w in [(400, 300), (300, 400), (250, 250)]]
    frame, summary = evaluate_model(
        _RedDetector(), [p[0] for p in pairs], [p[1] for p in pairs], input_size=64, categories=["bag", "shoe", "bag"]
    )
    assert list(frame.columns) == ["index", "category", "iou", "product_iou", "boundary_f", "mae"]
    assert frame["index"].tolist() == [0, 1, 2]
    # A 64 px prediction upsampled to each photo's size still follows the true outline.
    assert (frame["iou"] > 0.95).all()
    assert (frame["boundary_f"] > 0.6).all()
    assert (frame["mae"] < 0.05).all()
    assert set(summary["per_category"]) == {"bag", "shoe"}
    assert summary["per_category"]["bag"]["n"] == 2 and summary["per_category"]["shoe"]["n"] == 1
    assert summary["iou"] == pytest.approx(frame["iou"].mean())
    assert summary["per_category"]["bag"]["iou"] == pytest.approx(frame.loc[[0, 2], "iou"].mean())


def test_product_iou_scores_the_mask_the_pipeline_delivers():
    from ml.metrics import mask_iou
    from ml.postprocess import postprocess

    pairs = [_red_on_blue(h, w) for h, w in [(400, 300), (333, 500)]]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    # A coarse 16 px prediction: upsampled alone its edges are blocky, refined they follow the photo.
    frame, summary = evaluate_model(_RedDetector(), images, masks, input_size=16)
    probabilities = predict_probabilities(_RedDetector(), images, input_size=16)
    for row, image, mask, probability in zip(frame.itertuples(), images, masks, probabilities):
        assert row.product_iou == pytest.approx(mask_iou(postprocess(image, probability).mask, mask))
    assert (frame["product_iou"] > frame["iou"]).all()
    assert summary["product_iou"] == pytest.approx(frame["product_iou"].mean())
    assert summary["per_category"]["all"]["product_iou"] == pytest.approx(summary["product_iou"])


def test_evaluate_model_without_categories():
    image, mask = _red_on_blue(120, 160)
    frame, summary = evaluate_model(build_model(), [image], [mask], input_size=64)
    assert frame["category"].tolist() == ["all"] and summary["per_category"]["all"]["n"] == 1
    assert 0.0 <= summary["iou"] <= 1.0 and 0.0 <= summary["mae"] <= 1.0


def test_boundary_f_score():
    _, mask = _red_on_blue(120, 160)
    assert boundary_f_score(mask, mask) == 1.0
    assert boundary_f_score(np.zeros_like(mask), np.zeros_like(mask)) == 1.0
    assert boundary_f_score(np.zeros_like(mask), mask) == 0.0
    # Within tolerance a one-pixel shift is not an error; a large one is.
    assert boundary_f_score(np.roll(mask, 1, axis=1), mask, tolerance_px=2) == 1.0
    shifted = boundary_f_score(np.roll(mask, 6, axis=1), mask, tolerance_px=2)
    assert 0.0 < shifted < 1.0
    assert boundary_f_score(np.roll(mask, 12, axis=1), mask) < shifted
