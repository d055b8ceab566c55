"""Learning-curve calibration replay: how each choice of signals would have ranked the curve's rounds.

Reads what ``benchmarks/learning_curve.py`` left behind (its HITL_HOME, the review history and
every round's outputs and true masks). For every round r from 2 on, it fits the needs-correction
calibrator on the review history of rounds 1 .. r-1 (what the loop had when round r was routed),
once on each of ``ml.calibration.FEATURE_SETS`` and once with the signals ``fit_calibrator``
selects, ranks round r's items by each, and reports the automation achievable at a false-negative
rate of at most 1 % (the learning curve's oracle bound) beside ranking by raw confidence. Nothing
is trained; it takes seconds (``make bench`` runs it right after the learning curve). Writes
``$HITL_HOME/bench/learning_curve_calibration.json``.

    .venv/bin/python benchmarks/learning_curve_calibration.py [--home .hitl/bench/learning_curve_home]
"""

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve() / "bench"  # where learning_curve.py writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=BENCH / "learning_curve_home", help="the learning curve's HITL_HOME")
    parser.add_argument("--out", type=Path, default=BENCH / "learning_curve_calibration.json")
    args = parser.parse_args()
    home = args.home.resolve()
    if not (home / "catalog").is_dir():
        parser.error(f"{home}: no learning-curve run here (run benchmarks/learning_curve.py first)")
    os.environ["HITL_HOME"] = str(home)

    import numpy as np

    from hitl_assets.assets.training import review_history
    from ml.calibration import FEATURE_SETS, fit_calibrator
    from ml.imageio import decode_mask
    from ml.metrics import automation_at_fn, mask_iou
    from ml.reviewer import ReplayConfig
    from resources import ObjectStore, ReviewStore
    from resources.tables import read_table

    store = ObjectStore(root=str(home / "objects"))
    signals, labels = review_history(store, ReviewStore.from_env())
    rounds = sorted((p.name for p in (home / "catalog").iterdir() if p.name.startswith("curve-")), key=lambda b: int(b.split("-")[1]))
    bar = ReplayConfig().iou_threshold
    rows = []
    for index, batch in enumerate(rounds[1:], start=1):
        outputs = read_table(store, "ai_outputs", batch)
        masks = home / "catalog" / batch / "masks"
        needs = np.array([mask_iou(decode_mask(store.get_bytes(r.mask_key)), decode_mask((masks / r.file).read_bytes())) < bar for r in outputs.itertuples()])
        earlier = signals["batch"].isin(rounds[:index]).to_numpy()
        history, outcomes = signals[earlier], labels[earlier]
        row = {"round": index + 1, "history_items": int(earlier.sum()), "needs_correction_share": round(float(needs.mean()), 4),
               "by_confidence": round(automation_at_fn(1.0 - outputs["confidence"].to_numpy(dtype=float), needs), 4)}
        for features in FEATURE_SETS:
            calibrator = fit_calibrator(history, outcomes, features=features)
            row[f"by_{'+'.join(features)}"] = round(automation_at_fn(calibrator.predict(outputs), needs), 4) if calibrator else None
        selected = fit_calibrator(history, outcomes)
        row["selected_signals"] = "+".join(selected.features) if selected else None
        row["by_selected"] = round(automation_at_fn(selected.predict(outputs), needs), 4) if selected else None
        row["history_log_loss"] = selected.selection if selected else None
        row["history_automation_at_fn_1pct"] = selected.ranking if selected else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
