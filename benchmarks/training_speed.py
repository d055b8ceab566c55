"""Training throughput: seconds per epoch per 1,000 images at 256 px, and time to gold IoU 0.85 from scratch.

Measured through ``ml.train``'s public functions (``train_one_epoch``, ``fit``) and ``ml.model.build_model``
(the network the nightly bootstrap builds, ``TrainingConfig().architecture``, unless ``--architecture``
names another), on the synthetic catalog, each measurement in its own subprocess:

* ``epoch``: one training epoch of ``--epoch-images`` images at 256 px (AdamW, batch 8, the
  training augmentation), with the data loaded in the main process and in 2 DataLoader workers, and
  with channels_last memory format; the fastest setting is the headline figure. On CUDA the loader
  pins memory, and a fourth setting adds float16 mixed precision with loss scaling (``ml.train``'s
  ``mixed_precision``, "auto" in the nightly settings: float16 on CUDA, float32 on the CPU, where
  this CPU has no half-precision arithmetic and float16 ran 7x slower).
* ``to_iou``: ``fit`` from a randomly initialised model at the nightly input size with the
  nightly settings (``TrainingConfig``: batch size, bootstrap learning rate, cosine schedule over
  the budget) on ``--train-images`` synthetic images (default: the bootstrap's 1,000); after
  every epoch the model is scored on a fixed synthetic gold set (not counted as training time). It stops at gold IoU >= 0.85 or at
  ``--budget`` seconds (default: the nightly bootstrap's, ``TrainingConfig().bootstrap_seconds``,
  30 minutes, so the figure is what a bootstrap on this machine needs), and reports the seconds to
  the target or, honestly, the best IoU reached. A shorter budget also shortens the cosine
  schedule, so it measures another schedule, not an earlier point of this one.

Writes ``$HITL_HOME/bench/training_speed.json``.

    .venv/bin/python benchmarks/training_speed.py            # about 15 minutes on 2 cores (up to 35 if 0.85 is never reached)
    .venv/bin/python benchmarks/training_speed.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import bench_dir, emit, machine, peak_rss_mib, run_phase, table, write_json  # noqa: E402

SCRIPT = Path(__file__).resolve()
TARGET_IOU = 0.85


def phase_epoch(params: dict) -> dict:
    """Seconds for one training epoch at ``size`` px, per 1,000 images, for each loader setting."""
    import torch
    from torch.utils.data import DataLoader

    from hitl_assets.assets.training import TrainingConfig
    from ml.augment import train_augmentation
    from ml.data import SegmentationSamples
    from ml.model import build_model, select_device
    from ml.synthetic import generate_catalog
    from ml.train import autocast_dtype, loss_scaler, seed_everything, train_one_epoch

    size, n, batch = params["size"], params["images"], 8
    device = select_device("auto")
    items = list(generate_catalog(n, seed=21, max_side=size * 2))
    dataset = SegmentationSamples([i.image for i in items], [i.mask for i in items], train_augmentation(size, seed=0))
    settings = {}
    architecture = params.get("architecture") or TrainingConfig().architecture
    runs = [(*setting, "off") for setting in params["settings"]]
    if device.type == "cuda":
        runs.append((f"{runs[-1][0]}_float16", runs[-1][1], runs[-1][2], "float16"))
    for name, workers, channels_last, mixed_precision in runs:
        amp_dtype = autocast_dtype(mixed_precision, device)
        scaler = loss_scaler(amp_dtype, device)
        seed_everything(0)
        model = build_model(architecture=architecture).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        started = time.perf_counter()
        loss = train_one_epoch(model, loader, optimizer, device, channels_last=channels_last, amp_dtype=amp_dtype, scaler=scaler)
        seconds = time.perf_counter() - started
        settings[name] = {"seconds_per_1000": seconds / (len(loader) * batch) * 1000, "loss": loss}
    best = min(settings, key=lambda k: settings[k]["seconds_per_1000"])
    return {"size": size, "images": n, "architecture": architecture, "device": str(device), "settings": settings, "best_setting": best,
            "seconds_per_epoch_per_1000": settings[best]["seconds_per_1000"], "peak_rss_mib": peak_rss_mib()}


class _Reached(Exception):
    pass


def phase_to_iou(params: dict) -> dict:
    """Seconds of training from a randomly initialised model to gold IoU >= target (``ml.train.fit``)."""
    from hitl_assets.assets.training import TrainingConfig
    from ml.augment import eval_transform, train_augmentation
    from ml.data import SegmentationSamples
    from ml.evaluate import evaluate_model
    from ml.model import build_model, select_device
    from ml.synthetic import generate_catalog
    from ml.train import TrainConfig, fit, seed_everything

    nightly = TrainingConfig()
    size, target = nightly.input_size, params["target"]
    budget = params.get("max_seconds") or nightly.bootstrap_seconds
    device = select_device("auto")
    side = size * 2
    train_images = params.get("train_images") or nightly.bootstrap_images
    train_items = list(generate_catalog(train_images, seed=31, max_side=side))
    val_items = list(generate_catalog(params["val_images"], seed=32, max_side=side))
    gold_items = list(generate_catalog(params["gold_images"], seed=33, max_side=side))
    seed_everything(0)
    model = build_model(architecture=params.get("architecture") or nightly.architecture)
    train = SegmentationSamples([i.image for i in train_items], [i.mask for i in train_items], train_augmentation(size, seed=0))
    val = SegmentationSamples([i.image for i in val_items], [i.mask for i in val_items], eval_transform(size))
    config = TrainConfig(input_size=size, batch_size=nightly.batch_size, max_epochs=10_000, learning_rate=nightly.bootstrap_learning_rate,
                         patience=10_000, max_seconds=budget, seed=0, device=str(device), lr_schedule=nightly.lr_schedule,
                         boundary_weight=nightly.boundary_weight, channels_last=nightly.channels_last, num_workers=nightly.loader_workers,
                         mixed_precision=nightly.mixed_precision)
    curve: list[tuple[float, float]] = []
    training = 0.0  # seconds of training (and validation) only: the gold evaluations are the benchmark's
    started = time.perf_counter()

    def on_epoch(stats) -> None:
        nonlocal training
        training += stats.seconds
        _, scores = evaluate_model(model.eval(), [i.image for i in gold_items], [i.mask for i in gold_items], size,
                                   [i.category for i in gold_items], device=device)
        model.train()
        curve.append((round(training, 1), round(float(scores["iou"]), 4)))
        if scores["iou"] >= target:
            raise _Reached

    reached = False
    try:
        fit(model, train, val, config, on_epoch=on_epoch)
    except _Reached:
        reached = True
    best = max(curve, key=lambda point: point[1]) if curve else (float("nan"), float("nan"))
    return {
        "architecture": model.architecture, "input_size": size, "target_iou": target, "reached": reached, "seconds_to_target": curve[-1][0] if reached else None,
        "best_gold_iou": best[1], "best_at_seconds": best[0], "epochs": len(curve), "curve": curve, "budget_seconds": budget,
        "train_images": train_images, "gold_images": params["gold_images"],
        "wall_seconds": time.perf_counter() - started, "device": str(device), "peak_rss_mib": peak_rss_mib(),
    }


PHASES = {"epoch": phase_epoch, "to_iou": phase_to_iou}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and a 30 s budget")
    parser.add_argument("--epoch-images", type=int, help="images in the timed epoch (default 128)")
    parser.add_argument("--train-images", type=int, help="synthetic training images for the run to IoU 0.85 (default: the nightly bootstrap's, 1,000)")
    parser.add_argument("--budget", type=float, help="training seconds allowed to reach gold IoU 0.85 (default: the nightly bootstrap's, 1,800)")
    parser.add_argument("--architecture", help="network to train (default: the one the nightly bootstrap builds, TrainingConfig().architecture)")
    parser.add_argument("--out", type=Path, help="JSON path (default $HITL_HOME/bench/training_speed.json)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        emit(PHASES[args.phase](json.loads(args.params)))
        return {}
    quick = args.quick
    out_path = args.out or bench_dir() / "training_speed.json"
    settings = [["workers0", 0, False], ["workers2", 2, False], ["workers2_channels_last", 2, True]]
    print("[training_speed] one epoch at 256 px", flush=True)
    epoch = run_phase(SCRIPT, "epoch", {"size": 256, "images": args.epoch_images or (32 if quick else 128), "settings": settings, "architecture": args.architecture})
    budget = args.budget or (30.0 if quick else None)  # None: the nightly bootstrap's budget, read in the phase
    print(f"[training_speed] from scratch to gold IoU {TARGET_IOU} (budget {f'{budget:.0f} s' if budget else 'of the nightly bootstrap'})", flush=True)
    to_iou = run_phase(SCRIPT, "to_iou", {"target": TARGET_IOU, "max_seconds": budget, "train_images": args.train_images or (48 if quick else None),
                                          "val_images": 16 if quick else 40, "gold_images": 16 if quick else 40, "architecture": args.architecture})
    report = {
        "seconds_per_epoch_per_1000_images_256px": epoch["seconds_per_epoch_per_1000"],
        "epoch": epoch,
        "to_gold_iou_0.85": to_iou,
        "seconds_to_gold_iou_0.85": to_iou["seconds_to_target"],
        "best_gold_iou": to_iou["best_gold_iou"],
        "device": epoch["device"],
        "machine": machine(),
        "quick": quick,
        "command": "make bench  (or: .venv/bin/python benchmarks/training_speed.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])) + ")",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out_path, report)
    rows = [[f"epoch @256 px, {name}", f"{v['seconds_per_1000']:.1f} s / 1000 img", ""] for name, v in epoch["settings"].items()]
    rows.append([f"to gold IoU {TARGET_IOU} from scratch", f"{to_iou['seconds_to_target']:.0f} s" if to_iou["reached"] else "not reached",
                 f"best {to_iou['best_gold_iou']:.3f} at {to_iou['best_at_seconds']:.0f} s of a {to_iou['budget_seconds']:.0f} s budget, "
                 f"{to_iou['train_images']} images at {to_iou['input_size']} px, {to_iou['architecture']}"])
    print(table(rows, ["training", "value", "notes"]))
    print(f"[training_speed] wrote {out_path}")
    return report


if __name__ == "__main__":
    main()
