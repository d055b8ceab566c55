"""Serving size: how the learning curve's champion does on its rounds' photos at several input sizes.

A fully convolutional network can run at another size than it was trained at. Training crops keep
50-100 % of the frame (``ml.augment.train_augmentation``), so the network learns products larger
than they appear when the whole photo is squeezed into the same input; served a little larger than
it was trained, it sees them at the scale it learned (Touvron et al., "Fixing the train-test
resolution discrepancy", 2019). ``TrainingConfig.inference_scale`` sets the size the nightly model
is registered to serve at; this benchmark is how that choice was made and how to check it for
another champion.

Reads what ``benchmarks/learning_curve.py`` left behind (its HITL_HOME: the champion, every round's
photos and true masks). For each size it runs the champion on every round's photos as
``ai_outputs`` does (the probability map, its confidence, the delivered mask after edge refinement
guided by the photo) and reports per round the share of delivered masks that miss the replayed
reviewer's IoU bar (they would need a correction) and the automation achievable at a
false-negative rate of at most 1 % when ranked by confidence, and over all rounds the model's and
the delivered mask's IoU per category. Nothing is trained. Writes ``$HITL_HOME/bench/serving_size.json``.

    .venv/bin/python benchmarks/serving_size.py [--home .hitl/bench/learning_curve_home] [--scales 1,1.3333,1.6667]
"""

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve() / "bench"  # where learning_curve.py writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=BENCH / "learning_curve_home", help="the learning curve's HITL_HOME")
    parser.add_argument("--scales", default="1,1.3333,1.6667", help="serving sizes as multiples of the champion's training size")
    parser.add_argument("--out", type=Path, default=BENCH / "serving_size.json")
    args = parser.parse_args()
    home = args.home.resolve()
    if not (home / "catalog").is_dir() or not (home / "mlflow.db").exists():
        parser.error(f"{home}: no learning-curve run here (run benchmarks/learning_curve.py first)")
    os.environ["HITL_HOME"] = str(home)

    import cv2
    import numpy as np
    import pandas as pd

    from ml.imageio import decode_mask, load_rgb
    from ml.infer import inference_model, predict_probabilities
    from ml.metrics import as_foreground, automation_at_fn, mask_iou
    from ml.postprocess import binary_mask, refine_alpha
    from ml.quality import quality_signals
    from ml.reviewer import ReplayConfig
    from resources import ModelRegistry

    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=str(home / "mlartifacts"))
    champion = registry.load_champion()
    if champion is None:
        parser.error(f"{home}: no champion in its registry")
    tags = registry.client().get_model_version(registry.model_name, champion.version).tags
    trained_at = int(tags.get("train_input_size", champion.input_size))
    sizes = sorted({round(trained_at * float(scale)) for scale in args.scales.split(",")})
    model = inference_model(champion.model)
    bar = ReplayConfig().iou_threshold
    rounds = sorted((p for p in (home / "catalog").iterdir() if p.name.startswith("curve-")), key=lambda p: int(p.name.split("-")[1]))
    print(f"champion v{champion.version}, trained at {trained_at} px, registered to serve at {champion.input_size} px; sizes {sizes}", flush=True)

    per_item, rows = [], []
    for folder in rounds:
        files = sorted(path.name for path in (folder / "images").iterdir())
        photos = [load_rgb((folder / "images" / name).read_bytes(), name) for name in files]
        truths = [as_foreground(decode_mask((folder / "masks" / name).read_bytes())) for name in files]
        categories = pd.read_csv(folder / "catalog.csv").set_index("file")["category"].reindex(files).astype(str).tolist()
        for size in sizes:
            started = time.perf_counter()
            probabilities = predict_probabilities(model, photos, size, batch_size=8)
            items = []
            for photo, probability, truth, category in zip(photos, probabilities, truths, categories):
                height, width = truth.shape
                model_mask = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
                delivered = binary_mask(refine_alpha(probability, height, width, photo)) > 0
                items.append({"round": int(folder.name.split("-")[1]), "size": size, "category": category,
                              "confidence": quality_signals(probability)["confidence"],
                              "model_iou": mask_iou(model_mask, truth), "delivered_iou": mask_iou(delivered, truth)})
            frame = pd.DataFrame(items)
            needs = (frame["delivered_iou"] < bar).to_numpy()
            rows.append({
                "round": int(folder.name.split("-")[1]), "size": size, "images": len(frame),
                "model_iou": round(float(frame["model_iou"].mean()), 4), "delivered_iou": round(float(frame["delivered_iou"].mean()), 4),
                "needs_correction_share": round(float(needs.mean()), 4),
                "automation_at_fn_1pct_by_confidence": round(automation_at_fn(1.0 - frame["confidence"].to_numpy(), needs, 0.01), 4),
                "seconds": round(time.perf_counter() - started, 1),
            })
            per_item.append(frame)
            print(json.dumps(rows[-1]), flush=True)

    every = pd.concat(per_item, ignore_index=True) if per_item else pd.DataFrame(columns=["size", "category", "model_iou", "delivered_iou"])
    every["needs_correction"] = every["delivered_iou"] < bar
    by_size = []
    for size, group in every.groupby("size"):
        in_rounds = [row for row in rows if row["size"] == size]
        by_size.append({
            "size": int(size), "scale": round(size / trained_at, 4), "images": len(group),
            "model_iou": round(float(group["model_iou"].mean()), 4), "delivered_iou": round(float(group["delivered_iou"].mean()), 4),
            "needs_correction_share": round(float(group["needs_correction"].mean()), 4),
            "automation_at_fn_1pct_by_confidence_per_round": [row["automation_at_fn_1pct_by_confidence"] for row in in_rounds],
            "per_category": {
                str(category): {"model_iou": round(float(g["model_iou"].mean()), 4), "delivered_iou": round(float(g["delivered_iou"].mean()), 4),
                                "needs_correction_share": round(float(g["needs_correction"].mean()), 4), "n": len(g)}
                for category, g in group.groupby("category")
            },
        })
    result = {"champion": f"v{champion.version}", "trained_at": trained_at, "serves_at": champion.input_size, "iou_bar": bar, "sizes": by_size, "rounds": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in by_size:
        print(f"{row['size']} px: model IoU {row['model_iou']}, delivered {row['delivered_iou']}, needs correction {row['needs_correction_share']:.1%}, "
              f"automation@FN1% by round {row['automation_at_fn_1pct_by_confidence_per_round']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
