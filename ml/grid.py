"""Prediction grid: image, truth, champion and challenger side by side, for people comparing models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def prediction_grid(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], columns: dict[str, Sequence[np.ndarray]], titles: Sequence[str] = ()):
    """A matplotlib figure with one row per sample: the image, its truth mask, then each model's mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images)
    names = ["image", "truth", *columns]
    figure, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 2.2 * rows), squeeze=False)
    for row in range(rows):
        panels = [images[row], truths[row], *(masks[row] for masks in columns.values())]
        for col, panel in enumerate(panels):
            axis = axes[row][col]
            axis.imshow(panel, cmap=None if panel.ndim == 3 else "gray", vmin=0, vmax=255 if panel.dtype == np.uint8 else 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(names[col], fontsize=9)
            if col == 0 and row < len(titles):
                axis.set_ylabel(titles[row], fontsize=7)
    figure.tight_layout()
    return figure
