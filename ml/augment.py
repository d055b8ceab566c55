"""Albumentations pipelines for training (photographic variation) and evaluation (resize only)."""

from __future__ import annotations

import albumentations as A
import cv2


def train_augmentation(size: int, seed: int | None = None) -> A.Compose:
    """Mask-aware training augmentation ending at (size, size): flips, scale-and-crop, studio-light variation.

    ``seed`` makes the sequence of augmentations reproducible (albumentations ignores global seeds).
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            # Inference squeezes the whole photo into the square input, so crops keep most of
            # the frame (products are rarely cut off) and mildly vary the aspect ratio.
            A.RandomResizedCrop(
                size=(size, size),
                scale=(0.5, 1.0),
                ratio=(0.75, 1.333),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                area_for_downscale="image",
                p=1.0,
            ),
            # Supplier photos differ in exposure and white balance; hue stays small because
            # colour itself is part of what separates a product from a backdrop.
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03, p=0.8),
            A.OneOf(
                [
                    A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)),
                    A.MotionBlur(blur_limit=(3, 5)),
                ],
                p=0.25,
            ),
            # Cast shadows are background: the mask must not follow them.
            A.RandomShadow(
                shadow_roi=(0.0, 0.3, 1.0, 1.0),
                num_shadows_limit=(1, 2),
                shadow_dimension=5,
                shadow_intensity_range=(0.2, 0.5),
                p=0.3,
            ),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.25),
        ],
        seed=seed,
    )


def eval_transform(size: int) -> A.Compose:
    """Deterministic resize to (size, size): area averaging when shrinking the image, nearest for the mask."""
    return A.Compose(
        [
            A.Resize(
                height=size,
                width=size,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                # Same resampling as ml.data.resize_for_model, so validation sees what inference sees.
                area_for_downscale="image",
            )
        ]
    )
