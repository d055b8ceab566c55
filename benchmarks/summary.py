"""One table of every benchmark's figures: reads every JSON file under ``$HITL_HOME/bench`` (run last by `make bench`).

Known files (pipeline, catalog_scale, training_speed, learning_curve, faults, review_load, serving_size,
gpu_serving) get their headline figures and goals; any other file (other benchmarks) gets its
top-level numbers, or its last row if it is a list of rows.

    .venv/bin/python benchmarks/summary.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import bench_dir, table  # noqa: E402

HEADERS = ["benchmark", "figure", "value", "goal"]


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def pipeline_rows(r: dict) -> list[list]:
    rows = [
        ["pipeline", f"bare forward ({r.get('device')}, {r.get('images')} images" + (f", {r['architecture']}" if r.get("architecture") else "") + (f", {r['champion']}" if r.get("champion") else "") + ")", f"{r['bare_forward_ips']:.1f} img/s", ""],
        ["pipeline", "ai_outputs through Dagster", f"{r['pipeline_ips']:.1f} img/s", ""],
        ["pipeline", "ratio", f"{r['ratio']:.3f}", f">= 0.8: {_ok(r['ratio'] >= 0.8)}"],
        ["pipeline", "peak RSS", f"{r['peak_rss_mib']:.0f} MiB", ""],
    ]
    if len(r.get("pair_ratios") or ()) > 1:  # the fastest runs make the ratio; each pair's own shows the noise
        pairs = ", ".join(f"{x:.3f}" for x in r["pair_ratios"])
        rows.insert(3, ["pipeline", f"  ratio of each (bare, ai_outputs) pair: {pairs}", f"median {r['ratio_median_pair']:.3f}", ""])
    for name, seconds in (r.get("stages") or {}).items():
        rows.append(["pipeline", f"  stage {name} (summed over threads)", f"{seconds:.2f} s", ""])
    if r.get("large_image_seconds") is not None:
        beyond = r.get("large_image_beyond_model_mib")
        rows.append(["pipeline", "6000x4000 photo, mean", f"{r['large_image_seconds']:.2f} s", f"< 3 s: {_ok(r['large_image_seconds'] < 3)}"])
        rows.append(["pipeline", "6000x4000 photos, peak RSS (beyond the model)", f"{r['large_image_peak_rss_mib']:.0f} MiB ({beyond:.0f})",
                     f"< 1.5 GiB beyond: {_ok(beyond is not None and beyond < 1536)}"])
    streaming = r.get("streaming") or []
    for s in streaming:
        rows.append(["pipeline", f"streaming {s['images']:,} images, peak RSS", f"{s['peak_rss_mib']:.0f} MiB", ""])
    if len(streaming) >= 2:
        growth = streaming[-1]["peak_rss_mib"] - streaming[0]["peak_rss_mib"]
        rows[-1][3] = f"flat ({growth:+.0f} MiB): {_ok(growth < 0.1 * streaming[0]['peak_rss_mib'])}"
    c = r.get("compiled")
    if c:  # the model compiled by Inductor (compile_model "on"), beside the eager figures above
        even = f", pays off from {c['break_even_images']:,.0f} images" if c.get("break_even_images") else ""
        rows += [
            ["pipeline", "compiled model: bare forward", f"{c['bare_forward_ips']:.1f} img/s", ""],
            ["pipeline", f"compiled model: ai_outputs steady state ({c['speedup_steady']:.2f}x eager), ratio {c['ratio_steady']:.3f}",
             f"{c['pipeline_steady_ips']:.1f} img/s", ""],
            ["pipeline", f"compiled model: compiling{even}", f"{c['compile_seconds']:.1f} s", ""],
        ]
    return rows


def catalog_rows(rows_in: list[dict]) -> list[list]:
    rows = []
    for r in rows_in:
        goal = ""
        if r["rows"] >= 1_000_000:
            growth = r.get("growth_vs_tenth")
            ok = r["seconds"] < 30 and r["peak_rss_mib"] < 2048 and (growth is None or growth <= 12)
            goal = f"< 30 s, < 2 GiB, <= 12x 100k ({growth:.1f}x): {_ok(ok)}" if growth is not None else f"< 30 s, < 2 GiB: {_ok(ok)}"
        cpu = r.get("cpu_seconds")
        cpu_text = f" ({cpu:.2f} s CPU)" if isinstance(cpu, (int, float)) and cpu == cpu else ""
        rows.append(["catalog_scale", f"{r['step']} @ {r['rows']:,} rows", f"{r['seconds']:.2f} s{cpu_text}, {r['peak_rss_mib']:.0f} MiB", goal])
    return rows


def training_rows(r: dict) -> list[list]:
    to = r.get("to_gold_iou_0.85") or {}
    rows = [["training_speed", f"epoch @256 px per 1000 images ({r.get('device')})", f"{r['seconds_per_epoch_per_1000_images_256px']:.1f} s", ""]]
    if to:
        value = f"{to['seconds_to_target']:.0f} s" if to.get("reached") else f"not reached (best {to['best_gold_iou']:.3f})"
        arch = f", {to['architecture']}" if to.get("architecture") else ""
        rows.append(["training_speed", f"from scratch to gold IoU 0.85 (budget {to['budget_seconds']:.0f} s{arch})", value, ""])
    return rows


def generic_rows(name: str, data) -> list[list]:
    if isinstance(data, list):
        if not data:
            return [[name, "rows", "0", ""]]
        last = data[-1]
        data = last if isinstance(last, dict) else {"last": last}
        name = f"{name} (last row)"
    if not isinstance(data, dict):
        return [[name, "value", str(data)[:60], ""]]
    rows = []
    for key, value in data.items():
        if isinstance(value, bool) or isinstance(value, (int, float, str)) and not (isinstance(value, str) and len(value) > 60):
            rows.append([name, key, f"{value:.4g}" if isinstance(value, float) else str(value), ""])
        if len(rows) >= 12:
            break
    return rows


def learning_curve_rows(rows_in: list[dict]) -> list[list]:
    rows = [["learning_curve", f"round {r['round']}",
             f"gold IoU {r['gold_iou']}, corrections {r['correction_rate']:.0%}, automation@FN1% {r['automation_at_fn_1pct']:.0%}"
             + (f", fixed hold-out IoU {r['holdout_iou']}" if r.get("holdout_iou") is not None else ""), ""]
            for r in rows_in]
    if rows_in:  # the goal is judged on the last round
        last = rows_in[-1]
        ok = last["gold_iou"] is not None and last["gold_iou"] >= 0.90 and last["automation_at_fn_1pct"] >= 0.70
        rows[-1][3] = f"last round: IoU >= 0.90, automation >= 70 %: {_ok(ok)}"
    return rows


def faults_rows(rows_in: list[dict]) -> list[list]:
    return [["faults", r["scenario"], f"survived {r['survived']}, lost {r['lost']}, duplicated {r['duplicated']}",
             _ok(bool(r["survived"]) and not r["lost"] and not r["duplicated"])] for r in rows_in]


def review_load_rows(r: dict) -> list[list]:
    rows = [["review_load", f"{action} ({count})", f"p50 {r['p50_ms'][action]:.0f} ms, p99 {r['p99_ms'][action]:.0f} ms", ""]
            for action, count in r["actions"].items()]
    rows.append(["review_load", f"{r.get('reviewers')} reviewers, {r.get('store')} store", f"lost {r['lost']}, duplicated {r['duplicated']}",
                 f"nothing lost or duplicated: {_ok(r['lost'] == 0 and r['duplicated'] == 0)}"])
    return rows


def serving_size_rows(r: dict) -> list[list]:
    rows = []
    for row in r["sizes"]:
        served = " (served)" if row["size"] == r.get("serves_at") else ""
        automation = ", ".join(f"{share:.0%}" for share in row["automation_at_fn_1pct_by_confidence_per_round"])
        rows.append(["serving_size", f"{r['champion']} at {row['size']} px ({row['scale']:.2f}x its training size){served}",
                     f"delivered IoU {row['delivered_iou']}, corrections {row['needs_correction_share']:.0%}, automation@FN1% by round {automation}", ""])
    return rows


def gpu_serving_rows(r: dict) -> list[list]:
    rows = [
        ["gpu_serving", f"bare forward ({r['device']}, {r['cpu_count']} CPU cores, {r['images']} images, {r['architecture']})", f"{r['bare_forward_ips']:.0f} img/s", ""],
        ["gpu_serving", "ai_outputs' CUDA serving (worker processes, no Dagster), fastest run", f"{r['pipeline_ips']:.0f} img/s", ""],
        ["gpu_serving", "ratio", f"{r['ratio']:.3f}", f">= 0.8: {_ok(r['ratio'] >= 0.8)}"],
    ]
    if r.get("large_image_seconds") is not None:
        rows.append(["gpu_serving", "6000x4000 photo, fastest run's mean", f"{r['large_image_seconds']:.3f} s", f"< 3 s: {_ok(r['large_image_seconds'] < 3)}"])
    return rows


KNOWN = {
    "pipeline": pipeline_rows,
    "catalog_scale": catalog_rows,
    "training_speed": training_rows,
    "learning_curve": learning_curve_rows,
    "faults": faults_rows,
    "review_load": review_load_rows,
    "serving_size": serving_size_rows,
    "gpu_serving": gpu_serving_rows,
}


def summary(directory: Path) -> str:
    rows: list[list] = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            rows.append([path.stem, "unreadable", str(err)[:60], ""])
            continue
        try:
            rows += KNOWN[path.stem](data) if path.stem in KNOWN else generic_rows(path.stem, data)
        except (KeyError, TypeError, ValueError) as err:  # a file of an older format: show what can be shown
            rows += generic_rows(path.stem, data) or [[path.stem, "unexpected format", str(err)[:60], ""]]
    return table(rows, HEADERS) if rows else f"no benchmark results under {directory}"


def main() -> None:
    directory = bench_dir()
    print(f"== benchmark summary ({directory})")
    print(summary(directory))


if __name__ == "__main__":
    main()
