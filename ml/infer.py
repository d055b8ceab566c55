"""Batched inference: RGB uint8 images of any size in, foreground probability maps out."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from ml.data import resize_for_model, to_tensor_batch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device holding the model's parameters (CPU for a parameterless module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_probabilities(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    input_size: int,
    device: str | torch.device | None = None,
    batch_size: int = 16,
    half: bool = False,
) -> np.ndarray:
    """Foreground probabilities (N, input_size, input_size) float32 in [0, 1] for RGB uint8 images.

    ``device`` defaults to where the model already is; ``half`` uses float16 autocast on CUDA and is ignored elsewhere.
    """
    device = model_device(model) if device is None else torch.device(device)
    model.to(device).eval()
    # CPU float16 is slower than float32 on most CPUs, so half precision is CUDA only.
    use_half = half and device.type == "cuda"
    out = np.empty((len(images), input_size, input_size), dtype=np.float32)
    with torch.inference_mode():
        # Resizing one batch at a time keeps memory bounded by batch_size, not by len(images).
        for start in range(0, len(images), batch_size):
            chunk = [resize_for_model(image, input_size) for image in images[start : start + batch_size]]
            batch = to_tensor_batch(chunk)
            if device.type == "cuda":
                # Page-locked host memory lets the copy to the GPU run asynchronously.
                batch = batch.pin_memory()
            batch = batch.to(device, non_blocking=True)
            autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if use_half else contextlib.nullcontext()
            with autocast:
                logits = model(batch)["out"][:, 0]
            out[start : start + len(chunk)] = torch.sigmoid(logits.float()).cpu().numpy()
    return out
