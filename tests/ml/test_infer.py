"""Batch sizes of CPU inference: every activation stays well under glibc's 64 MiB thread heaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ml.infer import cpu_batch_size, inference_model, model_device, predict_probabilities
from ml.model import ARCHITECTURES, build_model


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.nbytes = max(self.nbytes, tensor.nbytes)
        return out


def test_cpu_batch_size_holds_about_four_256px_images_of_pixels():
    assert [cpu_batch_size(s) for s in (256, 192, 320, 512, 1024)] == [4, 7, 2, 1, 1]
    assert cpu_batch_size(64) == 16  # capped


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("size", [192, 256])
def test_no_activation_reaches_a_thread_heap_at_the_cpu_batch_size(architecture, size):
    torch.manual_seed(0)
    model = inference_model(build_model(architecture=architecture), inplace=True)
    batch = torch.rand(cpu_batch_size(size), 3, size, size)
    largest = _LargestOutput()
    with torch.inference_mode(), largest:
        model(batch)
    # a thread's malloc arena grows in 64 MiB heaps; a block that does not fit is mapped afresh on
    # every pass (unet_small's 48 MiB at 4 x 256 px was measured: no page faults after the first pass)
    assert largest.nbytes <= 48 * 2**20, f"{largest.nbytes / 2**20:.0f} MiB"


def test_predict_probabilities_defaults_to_the_cpu_batch_size(monkeypatch):
    torch.manual_seed(0)
    model = build_model().eval()
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: seen.append(len(x)) or forward(x))
    images = [np.full((40, 40, 3), 128, np.uint8)] * 5
    monkeypatch.setattr("ml.infer.CPU_BATCH_PIXELS", 2 * 32 * 32)
    assert predict_probabilities(model, images, input_size=32).shape == (5, 32, 32)
    assert seen == [2, 2, 1]


def test_a_padded_last_pass_keeps_one_shape_and_the_same_probabilities(monkeypatch):
    torch.manual_seed(0)
    model = build_model().eval()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(5)]
    plain = predict_probabilities(model, images, input_size=32, batch_size=3)  # the CPU's default: no padding
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: seen.append(tuple(x.shape)) or forward(x))
    padded = predict_probabilities(model, images, input_size=32, batch_size=3, pad_last=True)
    assert seen == [(3, 3, 32, 32), (3, 3, 32, 32)] and padded.shape == (5, 32, 32)
    np.testing.assert_allclose(padded, plain, atol=1e-6)


def test_predict_probabilities_puts_a_training_model_in_eval_mode_and_leaves_it_on_its_device():
    torch.manual_seed(0)
    model = build_model().train()
    images = [np.full((40, 40, 3), 128, np.uint8)] * 2
    first = predict_probabilities(model, images, input_size=32)
    assert not model.training and all(not m.training for m in model.modules())
    assert model_device(model) == torch.device("cpu")
    # in eval mode BatchNorm uses its running statistics: the same answer each time
    np.testing.assert_array_equal(predict_probabilities(model, images, input_size=32), first)
