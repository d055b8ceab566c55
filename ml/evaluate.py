"""Model evaluation at full mask resolution: IoU, boundary F-score and MAE, per sample and per category."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from ml.infer import predict_probabilities
from ml.metrics import as_foreground, mask_iou
from ml.postprocess import binary_mask, refine_alpha

_CHUNK = 16  # images predicted at a time: bounds memory when masks are full-size photos


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour; the image frame does not count as background."""
    mask = mask.astype(np.uint8)
    # cv2.erode pads with the maximum by default, so an object cut by the frame gets no
    # boundary along the frame: that edge is not a cut-out decision.
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    return (mask > 0) & (eroded == 0)


def boundary_f_score(pred: np.ndarray, truth: np.ndarray, tolerance_px: int = 2) -> float:
    """F1 of boundary pixels, each matched if the other mask's boundary lies within ``tolerance_px``; both empty -> 1.0."""
    if pred.shape[:2] != truth.shape[:2]:
        raise ValueError(f"mask shapes differ: {pred.shape[:2]} vs {truth.shape[:2]}")
    pred_edge = _boundary(as_foreground(pred))
    truth_edge = _boundary(as_foreground(truth))
    pred_count, truth_count = np.count_nonzero(pred_edge), np.count_nonzero(truth_edge)
    if pred_count == 0 and truth_count == 0:
        return 1.0
    if pred_count == 0 or truth_count == 0:
        return 0.0
    size = 2 * tolerance_px + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    truth_near = cv2.dilate(truth_edge.astype(np.uint8), disk) > 0
    pred_near = cv2.dilate(pred_edge.astype(np.uint8), disk) > 0
    precision = np.count_nonzero(pred_edge & truth_near) / pred_count
    recall = np.count_nonzero(truth_edge & pred_near) / truth_count
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def evaluate_model(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    input_size: int,
    categories: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Score the model against ground-truth masks at each mask's own resolution.

    ``iou``, ``boundary_f`` and ``mae`` score the model itself: its probability map upsampled
    bilinearly, thresholded at 0.5. ``product_iou`` scores the mask the pipeline delivers for the
    same prediction (``ml.postprocess``: edge refinement guided by the photo, then the binary
    mask), i.e. what a reviewer and a customer see.

    Returns per-sample rows (index, category, iou, product_iou, boundary_f, mae) and a summary
    with overall means and ``per_category`` {category: {"iou", "product_iou", "boundary_f", "mae", "n"}}.
    """
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if categories is not None and len(categories) != len(images):
        raise ValueError(f"{len(images)} images but {len(categories)} categories")
    rows = []
    for start in range(0, len(images), _CHUNK):
        probabilities = predict_probabilities(model, images[start : start + _CHUNK], input_size, device=device)
        for offset, probability in enumerate(probabilities):
            index = start + offset
            truth = as_foreground(masks[index])
            height, width = truth.shape[:2]
            # Scored where the product is used: at full resolution, not the model's input size.
            full = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
            pred = full >= 0.5
            image = images[index]
            guide = image if image.shape[:2] == (height, width) else None  # refinement follows the photo's edges when sizes agree
            product = binary_mask(refine_alpha(probability, height, width, guide)) > 0
            rows.append(
                {
                    "index": index,
                    "category": categories[index] if categories is not None else "all",
                    "iou": mask_iou(pred, truth),
                    "product_iou": mask_iou(product, truth),
                    "boundary_f": boundary_f_score(pred, truth),
                    "mae": float(np.abs(full - truth.astype(np.float32)).mean()),
                }
            )
    frame = pd.DataFrame(rows, columns=["index", "category", "iou", "product_iou", "boundary_f", "mae"])
    per_category = {
        str(category): {
            "iou": float(group["iou"].mean()),
            "product_iou": float(group["product_iou"].mean()),
            "boundary_f": float(group["boundary_f"].mean()),
            "mae": float(group["mae"].mean()),
            "n": int(len(group)),
        }
        for category, group in frame.groupby("category", sort=True)
    }
    summary = {
        "iou": float(frame["iou"].mean()) if len(frame) else float("nan"),
        "product_iou": float(frame["product_iou"].mean()) if len(frame) else float("nan"),
        "boundary_f": float(frame["boundary_f"].mean()) if len(frame) else float("nan"),
        "mae": float(frame["mae"].mean()) if len(frame) else float("nan"),
        "n": int(len(frame)),
        "per_category": per_category,
    }
    return frame, summary
