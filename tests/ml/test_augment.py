"""Augmentation keeps image and mask aligned; data helpers produce model-ready tensors."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from ml.augment import eval_transform, train_augmentation
from ml.data import MEAN, STD, SegmentationSamples, resize_for_model, to_device_batch, to_tensor_batch

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _red_product_on_blue(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An off-centre red shape on blue: the mask is exactly 'where the image is red'."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BLUE
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 3, height // 2), (width // 5, height // 3), 20, 0, 360, 255, -1)
    cv2.rectangle(mask, (width // 2, height // 5), (4 * width // 5, height // 3), 255, -1)
    image[mask > 0] = RED
    return image, mask


def _geometric_only(size: int, seed: int) -> A.Compose:
    """The training pipeline's geometric steps alone, so colour can identify the product exactly."""
    steps = [t for t in train_augmentation(size).transforms if isinstance(t, (A.HorizontalFlip, A.RandomResizedCrop))]
    assert len(steps) == 2, "train_augmentation should flip and scale-and-crop"
    return A.Compose(steps, seed=seed)


@pytest.mark.parametrize("seed", range(8))
def test_geometric_steps_keep_mask_on_the_product(seed):
    image, mask = _red_product_on_blue(300, 220)
    out = _geometric_only(96, seed)(image=image, mask=mask)
    red = out["image"][..., 0].astype(int) > out["image"][..., 2].astype(int)
    fg = out["mask"] > 0
    # Interpolated edge pixels may differ; everything else must agree.
    assert np.mean(red == fg) > 0.97


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_keeps_alignment_and_size(seed):
    image, mask = _red_product_on_blue(260, 340)
    out = train_augmentation(128, seed=seed)(image=image, mask=mask)
    assert out["image"].shape == (128, 128, 3) and out["image"].dtype == np.uint8
    assert out["mask"].shape == (128, 128)
    assert set(np.unique(out["mask"])) <= {0, 255}
    fg = out["mask"] > 0
    # Away from edges (blur) red stays red-dominant under jitter, shadows and noise.
    interior = cv2.erode(fg.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    exterior = cv2.erode((~fg).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    red_minus_blue = out["image"][..., 0].astype(int) - out["image"][..., 2].astype(int)
    assert interior.any() and exterior.any()
    assert np.mean(red_minus_blue[interior] > 0) > 0.98
    assert np.mean(red_minus_blue[exterior] < 0) > 0.98


def test_seeded_augmentation_is_reproducible():
    image, mask = _red_product_on_blue(200, 200)
    a = train_augmentation(64, seed=3)(image=image, mask=mask)
    b = train_augmentation(64, seed=3)(image=image, mask=mask)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])


def test_eval_transform_resizes_deterministically():
    image, mask = _red_product_on_blue(300, 200)
    out = eval_transform(64)(image=image, mask=mask)
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
    assert set(np.unique(out["mask"])) <= {0, 255}
    assert np.array_equal(out["image"], resize_for_model(image, 64))
    again = eval_transform(64)(image=image, mask=mask)
    assert np.array_equal(out["mask"], again["mask"])


@pytest.mark.parametrize("shape", [(500, 300, 3), (64, 64, 3), (40, 50, 3)])
def test_resize_for_model(shape):
    out = resize_for_model(np.zeros(shape, np.uint8), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_to_tensor_batch_normalises():
    mean_colour = np.round(np.asarray(MEAN) * 255).astype(np.uint8)
    images = [np.broadcast_to(mean_colour, (32, 32, 3)).copy() for _ in range(3)]
    batch = to_tensor_batch(images)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    assert batch.abs().max() < 0.02
    with pytest.raises(ValueError):
        to_tensor_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_to_tensor_batch_matches_the_training_samples_exactly():
    """Inference batches and training samples get the very float32 values of (x - 255 mean) / (255 std), channels first."""
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((24, 40), np.uint8) for _ in images]
    mean, std = np.asarray(MEAN, np.float32) * np.float32(255.0), np.asarray(STD, np.float32) * np.float32(255.0)
    expected = torch.from_numpy(np.stack([((image.astype(np.float32) - mean) / std).transpose(2, 0, 1) for image in images]))
    samples = SegmentationSamples(images, masks)
    batch = to_tensor_batch(images)
    assert torch.equal(batch, expected) and batch.is_contiguous()
    # views (a flipped photo) give the values of their copies
    assert torch.equal(to_tensor_batch([image[::-1, ::-1] for image in images]), to_tensor_batch([image[::-1, ::-1].copy() for image in images]))
    assert torch.equal(torch.stack([samples[i][0] for i in range(3)]), expected)


def test_the_device_batch_has_the_values_of_the_host_batch():
    """to_device_batch (CUDA serving: uint8 across, normalised there) gives to_tensor_batch's very values;
    here on the CPU, and on a GPU where there is one."""
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    images[1] = images[1][::-1]  # a view
    expected = to_tensor_batch(images)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        batch = to_device_batch(images, torch.device(device))
        assert batch.shape == expected.shape and batch.dtype == torch.float32
        assert torch.equal(batch.cpu(), expected)
    with pytest.raises(ValueError, match="one shape"):
        to_device_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], torch.device("cpu"))


def test_segmentation_samples_yield_model_tensors():
    pairs = [_red_product_on_blue(h, w) for h, w in [(300, 200), (150, 260)]]
    dataset = SegmentationSamples([p[0] for p in pairs], [p[1] for p in pairs], transform=train_augmentation(64, seed=0))
    assert len(dataset) == 2
    for index in range(2):
        image, mask = dataset[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}


def test_segmentation_samples_reject_mismatched_pairs():
    image, mask = _red_product_on_blue(100, 100)
    with pytest.raises(ValueError):
        SegmentationSamples([image], [mask[:50]])
    with pytest.raises(ValueError):
        SegmentationSamples([image, image], [mask])
