"""Synthetic review tasks (images, AI masks, composites in the object store): for tests, benchmarks and demos."""

from __future__ import annotations

import json

import numpy as np

from ml.imageio import encode_jpeg, encode_png
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore

REASONS = ("low_confidence", "boundary_uncertain", "fragmented_mask", "colour_off_standard")


def synthetic_images(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ellipse "product" on a gradient background: (rgb, ai_mask, composite), the mask deliberately a bit off."""
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    rx, ry = width * rng.uniform(0.2, 0.3), height * rng.uniform(0.2, 0.3)
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    colour = rng.integers(40, 220, size=3)
    background = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 180)], axis=-1)
    rgb = np.where(inside[..., None], colour, background).astype(np.uint8)
    ai = ((xx - cx) / (rx * 1.08)) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0  # a halo on the sides
    composite = np.where(ai[..., None], rgb, 255).astype(np.uint8)
    return rgb, (ai * 255).astype(np.uint8), composite


def seed_review_tasks(
    store: ReviewStore,
    objects: ObjectStore,
    count: int,
    *,
    batch: str = "synthetic",
    width: int = 320,
    height: int = 240,
    double_every: int = 0,
    gold_every: int = 0,
    seed: int = 0,
    distinct_images: int = 8,
) -> int:
    """Create ``count`` images' review tasks (plus a second slot for every ``double_every``-th image and a
    hidden gold task for every ``gold_every``-th); images are shared between tasks, ``distinct_images`` of them."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(max(1, min(distinct_images, count))):
        rgb, ai, composite = synthetic_images(width, height, rng)
        base = f"review-synthetic/{batch}/{i}"
        keys.append((
            objects.put_bytes(f"{base}/original.jpg", encode_jpeg(rgb), "image/jpeg"),
            objects.put_bytes(f"{base}/mask.png", encode_png(ai), "image/png"),
            objects.put_bytes(f"{base}/composite.jpg", encode_jpeg(composite), "image/jpeg"),
        ))
    rows = []
    for i in range(count):
        image_key, mask_key, composite_key = keys[i % len(keys)]
        image_id = f"img{seed:03d}{i:06d}"
        common = {
            "batch": batch, "image_id": image_id, "sku": f"SKU-{i:05d}", "category": ("garment", "shoe", "bag", "bottle")[i % 4],
            "file": f"{image_id}.jpg", "image_key": image_key, "mask_key": mask_key, "composite_key": composite_key,
            "width": width, "height": height, "reasons": REASONS[i % len(REASONS)] if i % 5 else "",
            "signals": json.dumps({"confidence": round(float(rng.uniform(0.5, 0.95)), 3), "boundary_uncertainty": round(float(rng.uniform(0, 0.5)), 3), "components": int(rng.integers(1, 4))}),
            "policy_version": "synthetic", "model_version": "0",
        }
        kind = "escalation" if common["reasons"] else "audit"
        slots = 2 if double_every and i % double_every == 0 else 1
        for slot in range(slots):
            rows.append({**common, "task_key": f"{batch}:{image_id}:{slot}", "kind": kind, "slot": slot})
        if gold_every and i % gold_every == gold_every - 1:
            rows.append({**common, "task_key": f"{batch}:{image_id}:gold", "kind": "gold", "slot": 2, "reasons": ""})
    return store.create_tasks(rows)
