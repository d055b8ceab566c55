"""Learning curve: rounds of the loop on the synthetic catalog, through Dagster, as the demo runs them.

Per round: the champion's gold IoU after retraining, the correction rate among reviewed images, and
the automation rate achievable at a false-negative rate of at most 1% (an oracle bound computed
from the round's true masks, ranking items by the calibrated P(needs correction) when the champion
has a calibrator, else by 1 - confidence). The gold set grows with every round's hold-out, so the
same champion can score differently from round to round; every round's champion is therefore also
scored on one fixed synthetic hold-out (``--holdout`` images): ``holdout_iou`` (the model's mask),
``holdout_product_iou`` (the delivered mask) and ``holdout_share_at_iou_bar`` (the share of
delivered masks at the replayed reviewer's IoU bar). Writes .hitl/bench/learning_curve.json.

    .venv/bin/python benchmarks/learning_curve.py [--rounds 5] [--images 120]

The training budget is the nightly one the product ships (``TrainingConfig``'s defaults: the U-Net, a
30-minute bootstrap on 1,000 images, 10-minute fine-tunes, served at 4/3 of its training size;
45-90 minutes for 5 rounds on 2 CPU cores), which is what the issue's goal is judged on. ``--demo``
takes the demo's budget instead (``hitl_assets.cli.demo_training_config``: LRASPP, 150 s bootstrap,
80 s fine-tunes; about 16 minutes), ``--fast`` a tiny one (a smoke test of the benchmark itself),
and single settings can be overridden, e.g.:

    .venv/bin/python benchmarks/learning_curve.py --demo --bootstrap-seconds 2400 --fine-tune-seconds 600 --architecture unet_small

Any other ``TrainingConfig`` field is set with ``--set KEY=VALUE`` (repeatable; the value is read as
JSON, else as a string), e.g. ``--set max_epochs=1000 --set patience=1000`` so that a long budget is
not cut short by the demo's epoch cap.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: Seed of the fixed synthetic hold-out every round's champion is also scored on (no other catalog uses it).
HOLDOUT_SEED = 7777


def score_on_holdout(model, input_size: int, holdout: list, iou_bar: float) -> dict:
    """A champion's scores on the fixed hold-out: unlike the growing gold set, the same images every round."""
    from ml.evaluate import evaluate_model

    frame, summary = evaluate_model(model, [i.image for i in holdout], [i.mask for i in holdout], input_size, [i.category for i in holdout])
    return {
        "holdout_iou": round(float(summary["iou"]), 4),
        "holdout_product_iou": round(float(summary["product_iou"]), 4),
        "holdout_share_at_iou_bar": round(float((frame["product_iou"] >= iou_bar).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--fast", action="store_true", help="tiny training budget (smoke test of the benchmark itself)")
    parser.add_argument("--demo", action="store_true", help="the demo's budget (LRASPP, minutes) instead of the nightly defaults")
    parser.add_argument("--nightly", action="store_true", help="the nightly defaults (TrainingConfig: half-hour U-Net bootstrap, ten-minute fine-tunes); the default")
    parser.add_argument("--bootstrap-seconds", type=float, help="training budget of the first model (default: the chosen budget's)")
    parser.add_argument("--fine-tune-seconds", type=float, help="training budget of each nightly fine-tune (default: the chosen budget's)")
    parser.add_argument("--bootstrap-images", type=int, help="synthetic images the first model trains on (default: the chosen budget's)")
    parser.add_argument("--architecture", help="network the bootstrap builds (default: the chosen budget's)")
    parser.add_argument("--holdout", type=int, default=120, help="fixed synthetic hold-out images every round's champion is scored on (0: none)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainingConfig field (repeatable; VALUE is read as JSON, else as a string)")
    args = parser.parse_args()
    if sum((args.fast, args.demo, args.nightly)) > 1:
        parser.error("--fast, --demo and --nightly are different training budgets: choose one")
    extra = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        try:
            extra[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            extra[key.strip()] = value

    bench_dir = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve() / "bench"
    home = bench_dir / "learning_curve_home"
    if home.exists():
        shutil.rmtree(home)
    os.environ["HITL_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    from hitl_assets.cli import demo_training_config, nightly_training_config, prepare_environment

    prepare_environment()
    import dagster as dg

    from hitl_assets.assets.training import TrainingConfig
    from hitl_assets.definitions import build_definitions
    from hitl_assets.loop import LoopRunner, ensure_champion, run_round
    from ml.imageio import decode_mask
    from ml.metrics import automation_at_fn, mask_iou
    from ml.reviewer import ReplayConfig
    from ml.synthetic import generate_catalog, write_catalog
    from resources.tables import read_table

    training = demo_training_config(args.fast) if (args.fast or args.demo) else nightly_training_config()
    overrides = {"bootstrap_seconds": args.bootstrap_seconds, "fine_tune_seconds": args.fine_tune_seconds,
                 "bootstrap_images": args.bootstrap_images, "architecture": args.architecture}
    settings = training["ops"]["segmentation_model"]["config"]
    settings.update({key: value for key, value in overrides.items() if value is not None})
    settings.update(extra)
    effective = TrainingConfig(**settings).model_dump()  # what the runs train with, defaults included
    print(f"training settings: {json.dumps(effective)}", flush=True)
    runner = LoopRunner(build_definitions(), dg.DagsterInstance.get(), home / "sensor_cursors.json", run_config={"retrain_job": training})
    store = runner.resource("object_store")
    threshold = ReplayConfig().iou_threshold
    holdout = list(generate_catalog(args.holdout, seed=HOLDOUT_SEED, max_side=256 if args.fast else 512))
    started = time.perf_counter()
    ensure_champion(runner)
    rows = []
    for round_number in range(1, args.rounds + 1):
        batch = f"curve-{round_number}"
        catalog = home / "catalog" / batch
        write_catalog(catalog, args.images, seed=args.seed + round_number, max_side=256 if args.fast else 512)
        row = run_round(runner, round_number, batch, catalog / "images", catalog / "masks", catalog / "catalog.csv", ReplayConfig(seed=round_number))
        outputs = read_table(store, "ai_outputs", batch)
        needs = np.array([
            mask_iou(decode_mask(store.get_bytes(r.mask_key)), decode_mask((catalog / "masks" / r.file).read_bytes())) < threshold
            for r in outputs.itertuples()
        ])
        probability = outputs["needs_correction_probability"].to_numpy(dtype=float)
        risk = probability if np.isfinite(probability).all() else 1.0 - outputs["confidence"].to_numpy(dtype=float)
        scores = {}
        if holdout:
            champion = runner.resource("model_registry").load_champion()
            scores = score_on_holdout(champion.model, champion.input_size, holdout, threshold)
        rows.append({
            "round": round_number,
            "gold_iou": row["gold_iou"],
            "correction_rate": row["correction_rate"],
            "automation_at_fn_1pct": round(automation_at_fn(risk, needs, 0.01), 4),
            # the same items ranked by raw confidence alone: shows what the calibrator adds or costs
            "automation_at_fn_1pct_by_confidence": round(automation_at_fn(1.0 - outputs["confidence"].to_numpy(dtype=float), needs, 0.01), 4),
            "automation_rate": row["automation_rate"],
            "needs_correction_share": round(float(needs.mean()), 4),
            "ranked_by": "calibrated" if np.isfinite(probability).all() else "confidence",
            "model_version": row["model_version"],
            **scores,
            "elapsed_seconds": round(time.perf_counter() - started, 1),
            "training": effective,
        })
        print(json.dumps(rows[-1]), flush=True)
    bench_dir.mkdir(parents=True, exist_ok=True)
    out = bench_dir / "learning_curve.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
