"""Model experiments at a fixed number of optimizer steps (not run by `make bench`).

Bootstraps a model from scratch on the synthetic catalog exactly as the `segmentation_model`
asset does (240 images at twice the input size, the training augmentation, AdamW), but stops
after ``--steps`` optimizer steps rather than on the clock, so runs compare fairly on a shared
machine. Scores gold IoU per category at full resolution on a round-like catalog (seed 101, 512 px),
and the share of gold items at IoU >= 0.92 (what the replayed reviewer approves untouched).

    .venv/bin/python benchmarks/_model_experiments.py --arch unet_mobilenet_v3_large --size 256 --steps 300
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="unet_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", default="constant")
    parser.add_argument("--boundary", type=float, default=0.0)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--gold", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default="/tmp/hitl_experiments")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hitl_assets.assets.training import SYNTHETIC_BOOTSTRAP_SEED, split_validation, synthetic_samples
    from ml.augment import eval_transform, train_augmentation
    from ml.data import SegmentationSamples
    from ml.evaluate import evaluate_model
    from ml.model import build_model
    from ml.train import TrainConfig, fit, seed_everything

    tag = args.tag or f"{args.arch}-{args.size}-{args.steps}-{args.schedule}-lr{args.lr}-b{args.boundary}"
    images, masks, _ = synthetic_samples(args.images, SYNTHETIC_BOOTSTRAP_SEED, args.size * 2)
    train_idx, val_idx = split_validation(len(images), 0.15, 0)
    gold_images, gold_masks, gold_categories = synthetic_samples(args.gold, 101, 512)

    seed_everything(0)
    model = build_model(architecture=args.arch)
    config = TrainConfig(
        input_size=args.size, batch_size=args.batch, max_epochs=10_000, patience=10_000, learning_rate=args.lr,
        max_steps=args.steps, lr_schedule=args.schedule, boundary_weight=args.boundary, device="cpu",
        channels_last=args.channels_last,
    )
    train_set = SegmentationSamples([images[i] for i in train_idx], [masks[i] for i in train_idx], train_augmentation(args.size, seed=0))
    val_set = SegmentationSamples([images[i] for i in val_idx], [masks[i] for i in val_idx], eval_transform(args.size))
    started = time.perf_counter()
    history = []
    result = fit(model, train_set, val_set, config, on_epoch=lambda s: (history.append(round(s.val_iou, 3)), print(tag, s, flush=True)))
    seconds = time.perf_counter() - started
    frame, summary = evaluate_model(result.model, gold_images, gold_masks, args.size, gold_categories, device="cpu")
    row = {
        "tag": tag, **vars(args), "train_seconds": round(seconds, 1), "best_val_iou": round(result.best_val_iou, 4),
        "best_epoch": result.best_epoch, "val_history": history, "gold_iou": round(summary["iou"], 4),
        "gold_boundary_f": round(summary["boundary_f"], 4), "share_iou_ge_0.92": round(float((frame["iou"] >= 0.92).mean()), 4),
        "per_category": {c: round(v["iou"], 4) for c, v in summary["per_category"].items()},
    }
    print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(row, indent=1))
    torch.save(result.model.state_dict(), out / f"{tag}.pt")


if __name__ == "__main__":
    main()
