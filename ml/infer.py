"""Batched inference: RGB uint8 images of any size in, foreground probability maps out."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ml.data import resize_for_model, to_device_batch, to_tensor_batch


def inference_model(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """``model`` for inference: eval mode, every BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel scale and shift, so it can be folded into the
    preceding convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``): one
    operation instead of two and one pass less over every feature map. The networks here build
    every such pair as a ``Conv2d`` followed by a ``BatchNorm2d`` inside an ``nn.Sequential``
    (torchvision's ``Conv2dNormActivation``), which is what is folded; the BatchNorm's place is
    taken by ``nn.Identity``. The outputs equal the original's up to float32 rounding (about
    1e-5 on the logits).

    By default ``model`` itself is left as it was (it is copied first), so it can still be
    fine-tuned. ``inplace=True`` folds ``model`` itself and returns it: for a model loaded only to
    be served, which saves the copy (for the U-Net about 40 ms of a run's start).
    """
    folded = model.eval() if inplace else copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if type(conv) is torch.nn.Conv2d and type(bn) is torch.nn.BatchNorm2d and bn.track_running_stats:
                # the folded weights replace the convolution's own (fuse_conv_bn_eval would deep-copy it first)
                weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
                conv.weight, conv.bias = weight, bias
                setattr(module, bn_name, torch.nn.Identity())
    return folded


def compile_for_cpu(model: torch.nn.Module, input_size: int, batch_size: int, threads: int | None = None) -> torch.nn.Module:
    """``model`` compiled by Inductor (``torch.compile``) for batches of ``(batch_size, 3, input_size, input_size)``.

    The weights are frozen into the compiled graph as constants (Inductor's ``freezing``), which
    lets it lay out the convolution weights for oneDNN once and fuse each convolution with its
    activation; elementwise operations are fused into generated C++ loops. On the project's 2-core
    Intel Xeon the U-Net's forward pass at 4 x 256 px ran 1.6-1.7x faster, two lanes side by side
    (2026-12-03), with logits within 5e-5 of eager. Compiling took 25 s on 2 cores with Inductor's
    on-disk cache empty and 12-19 s with it warm, so it pays off only over thousands of images.

    The model is compiled and run once here, on zeros made under ``torch.inference_mode``, with
    ``threads`` PyTorch threads (the number each caller's thread will run it with; the calling
    thread's count is restored after). Only batches like them use the compiled code: of exactly
    this shape, and themselves made under ``torch.inference_mode`` (as ``predict_probabilities``
    makes them). Any other batch fails Dynamo's guards and compiles again, without freezing (a
    tensor made outside inference mode carries the ``ADInplaceOrView`` dispatch key): run other
    shapes through ``model``. Raises whatever Inductor raises when it cannot compile (no C++
    compiler, for instance). ``model`` must be in eval mode on the CPU and is left unchanged.
    """
    import torch._inductor.config as inductor_config

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        compiled = torch.compile(model, dynamic=False)
        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled(torch.zeros(batch_size, 3, input_size, input_size))  # compiles now, frozen, for inference tensors
    finally:
        torch.set_num_threads(previous)
    return compiled


class ProbabilityHead(torch.nn.Module):
    """Wraps the segmentation network so the exported graph maps images to foreground probabilities."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(images)["out"])


#: Model-input pixels per forward pass on the CPU: 4 images at 256 px, 7 at 192, 1 at 512.
CPU_BATCH_PIXELS = 4 * 256 * 256


def cpu_batch_size(input_size: int) -> int:
    """Images per forward pass on the CPU at ``input_size``: as many as keep every activation well under 64 MiB.

    glibc gives each thread but the main one its own malloc arena, made of heaps of at most 64 MiB.
    A block that does not fit in one is mapped with ``mmap`` on every allocation and unmapped on
    every free, whatever ``mallopt`` says, so the kernel zero-fills its pages afresh each time.
    The U-Net's widest activations are 32 channels at full input resolution, 8 MiB per image at
    256 px. At 8 images, two 64 MiB tensors per forward pass took that path. In a lane thread,
    8 images at 256 px page-faulted 4,100-4,300 times per image and spent 6-7 ms per image in the
    kernel, 35-37 ms per image in all. 2 to 7 images took 29-31 ms with under 220 faults per image
    (2026-12-03, 2-core Intel Xeon, one thread).
    """
    return max(1, min(16, CPU_BATCH_PIXELS // max(1, int(input_size)) ** 2))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device holding the model's parameters (CPU for a parameterless module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_probabilities(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    input_size: int,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    half: bool = False,
    pad_last: bool | None = None,
) -> np.ndarray:
    """Foreground probabilities (N, input_size, input_size) float32 in [0, 1] for RGB uint8 images.

    ``device`` defaults to where the model already is; ``half`` uses float16 autocast on CUDA and is ignored elsewhere.
    ``batch_size`` defaults to 16 images per forward pass on CUDA and ``cpu_batch_size(input_size)`` on the CPU.
    ``pad_last`` (default: on CUDA) fills a last, short pass up to ``batch_size`` with copies of its
    last image, so that every pass has one shape: CUDA picks and loads kernels per input shape, and
    the first pass at a new one took 3-4 s on an H200 (2026-12-04), some 200 passes' worth.
    """
    device = model_device(model) if device is None else torch.device(device)
    if batch_size is None:
        batch_size = 16 if device.type == "cuda" else cpu_batch_size(input_size)
    # only when needed: model.to(...).eval() walks every parameter and module, 2.3 ms per call
    # for the U-Net, which ai_outputs makes for every chunk (0.6 ms per image at 4 per chunk)
    if model_device(model) != device:
        model.to(device)
    if model.training:  # eval() sets every submodule; a model in eval mode is left as it is
        model.eval()
    # CPU float16 is slower than float32 on most CPUs, so half precision is CUDA only.
    use_half = half and device.type == "cuda"
    if pad_last is None:
        pad_last = device.type == "cuda"
    out = np.empty((len(images), input_size, input_size), dtype=np.float32)
    with torch.inference_mode():
        # Resizing one batch at a time keeps memory bounded by batch_size, not by len(images).
        for start in range(0, len(images), batch_size):
            chunk = [resize_for_model(image, input_size) for image in images[start : start + batch_size]]
            count = len(chunk)
            if pad_last and count < batch_size:
                chunk += [chunk[-1]] * (batch_size - count)
            if device.type == "cuda":
                # uint8 pixels in page-locked memory, sent without blocking, normalised on the GPU
                batch = to_device_batch(chunk, device)
            else:
                batch = to_tensor_batch(chunk).to(device)
            autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if use_half else contextlib.nullcontext()
            with autocast:
                logits = model(batch)["out"][:, 0]
            out[start : start + count] = torch.sigmoid(logits[:count].float()).cpu().numpy()
    return out
