"""``hitl policy``: validate a tolerance policy, and fit its thresholds from review history."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import click
import pandas as pd

from ml.policy import FITTABLE_THRESHOLDS, PolicyError, default_policy_path, effective_thresholds, load_policy, policy_yaml
from ml.stats import INTERVAL_METHODS

_TABLE_COLUMNS = ["automation_rate", "labelled", "failures", "fn_rate", "fn_low", "fn_high"]


@click.group()
def policy() -> None:
    """Tolerance policy: validate it, fit its thresholds from review history."""


def _load_history():
    """Routed items of every batch and the latest human decisions, from the configured stores."""
    os.environ.setdefault("HITL_HOME", str(Path(".hitl").resolve()))
    from ml.threshold_fit import review_history
    from resources import ObjectStore, ReviewStore
    from resources.tables import read_partitions, table_partitions

    store = ObjectStore.from_env()
    if not table_partitions(store, "review_queue"):
        raise click.ClickException(f"no routed batches in {store.describe()} (HITL_HOME={os.environ['HITL_HOME']}): nothing to learn from yet")
    reviews = ReviewStore.from_env()
    url = reviews.url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise click.ClickException(f"no review store at {reviews.describe()}")
    queue = read_partitions(store, "review_queue")
    return review_history(queue, reviews.latest_decisions()), store, reviews


def _percent(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.1%}"


def _format(frame: pd.DataFrame, threshold_columns: list[str]) -> str:
    shown = pd.DataFrame()
    for column in threshold_columns:
        shown[column] = frame[column].map(lambda v: "unset" if v is None or pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)))
    shown["automation"] = frame["automation_rate"].map(_percent)
    shown["auto/items"] = [f"{int(a)}/{int(n)}" for a, n in zip(frame["auto_approved"], frame["images"])]
    shown["labelled"] = frame["labelled"].astype(int)
    shown["fn"] = frame["failures"].astype(int)
    shown["fn_rate"] = frame["fn_rate"].map(_percent)
    shown["fn_95%_upper"] = frame["fn_high"].map(_percent)
    if "feasible" in frame.columns:
        shown["ok"] = frame["feasible"].map({True: "yes", False: "no"})
        shown[" "] = [("<- proposed" if c else "") + (" (current)" if cur else "") for c, cur in zip(frame["chosen"], frame["current"])]
    return shown.to_string(index=False)


def _thin(table: pd.DataFrame, rows: int) -> pd.DataFrame:
    """At most about ``rows`` rows, evenly spread, always keeping the ends, the proposed and the current candidate."""
    if len(table) <= rows:
        return table
    import numpy as np

    keep = set(np.linspace(0, len(table) - 1, max(2, rows)).round().astype(int).tolist())
    keep |= set(np.flatnonzero((table["chosen"] | table["current"]).to_numpy()).tolist())
    return table.iloc[sorted(keep)]


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--history/--no-history", default=False, help="Also replay the stored review history through it (HITL_HOME).")
@click.option("--target-fn", default=0.01, show_default=True, help="False-negative target the history check compares against.")
def check(file: str, history: bool, target_fn: float) -> None:
    """Validate FILE; exit 1 naming every bad field. Prints the version and the thresholds per category."""
    try:
        parsed = load_policy(file)
    except PolicyError as err:
        click.echo(str(err), err=True)
        raise SystemExit(1) from None
    click.echo(f"{file}: valid tolerance policy {parsed.name!r}, version {parsed.version}")
    click.echo(f"audit_rate {parsed.audit_rate}, double_review_rate {parsed.double_review_rate}, gold_check_rate {parsed.gold_check_rate}")
    table = effective_thresholds(parsed)
    table = table.astype(object).where(table.notna(), "unset")
    click.echo(table.to_string(index=False))
    if history:
        from ml.threshold_fit import evaluate_policy

        frame, _, _ = _load_history()
        result = evaluate_policy(frame, parsed)
        click.echo(f"\non the review history ({len(frame)} routed items):")
        click.echo(_format(result, ["category"]))
        overall = result[result["category"] == "*"].iloc[0]
        if overall["automation_rate"] <= 0.05:
            click.echo(f"warning: this policy would escalate nearly everything (automation {overall['automation_rate']:.1%})", err=True)
        loose = result[(result["category"] != "*") & (result["auto_approved"] > 0) & (result["fn_high"] > target_fn)]
        if len(loose):
            click.echo(f"warning: false negatives may exceed {target_fn:.1%} in: " + ", ".join(f"{r.category} (up to {r.fn_high:.1%})" for r in loose.itertuples()), err=True)


@policy.command()
@click.option("--target-fn", required=True, type=float, help="Highest acceptable false-negative rate (e.g. 0.01): the 95% upper bound must stay under it.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Where to write the proposed policy YAML.")
@click.option("--base", "base_file", default=None, type=click.Path(exists=True, dir_okay=False), help="Policy to start from (default: $HITL_POLICY or the packaged default).")
@click.option("--fit", "fields", multiple=True, type=click.Choice(sorted(FITTABLE_THRESHOLDS)), help="Threshold to fit (repeat, up to 3; default: min_confidence and max_boundary_uncertainty, plus max_needs_correction_probability when the history has it).")
@click.option("--method", default="wilson", show_default=True, type=click.Choice(list(INTERVAL_METHODS)), help="Interval for the false-negative rate.")
@click.option("--confidence", default=0.95, show_default=True, help="Interval confidence level.")
@click.option("--rows", default=12, show_default=True, help="Trade-off rows printed per category.")
@click.option("--min-automation", default=0.05, show_default=True, help="Warn when the proposed policy automates this share or less.")
def fit(target_fn: float, out_file: str, base_file: str | None, fields: tuple[str, ...], method: str, confidence: float, rows: int, min_automation: float) -> None:
    """Propose per-category thresholds: the most automation with the 95% upper bound of the false-negative rate at most --target-fn; prints the trade-off table."""
    from ml.threshold_fit import fit_thresholds

    if not 0.0 < target_fn < 1.0:
        raise click.BadParameter("must be between 0 and 1 (a rate, e.g. 0.01)", param_hint="--target-fn")
    base_path = base_file or os.environ.get("HITL_POLICY") or str(default_policy_path())
    try:
        base = load_policy(base_path)
    except PolicyError as err:
        raise click.ClickException(str(err)) from None
    history, store, reviews = _load_history()
    try:
        result = fit_thresholds(history, base, target_fn, fields or None, method, confidence, min_automation=min_automation)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    labelled = int(history["labelled"].sum())
    click.echo(
        f"review history: {len(history)} routed item(s) in {history['batch'].nunique()} batch(es), {labelled} with a human outcome "
        f"({int(history['needs_correction'].sum())} needed correction); base policy {base.name!r} {base.version} from {base_path}"
    )
    click.echo(
        f"fitting {', '.join(result.fields)} per category: maximise automation with the {confidence:.0%} {method} upper bound "
        f"of the false-negative rate <= {target_fn:.2%}. Labels are weighted by stratum (category x old route) so audits stand for "
        f"the auto-approved items nobody reviewed."
    )
    if len(result.fields) > 1:
        click.echo("trade-off rows: for each reachable automation, the candidate thresholds with the lowest false-negative bound.")
    for category, table in result.tradeoff.groupby("category", sort=False):
        chosen = result.chosen.set_index("category").loc[category]
        blocked = int(chosen.get("blocked_by_other_thresholds", 0) or 0)
        note = f"; {blocked} item(s) break thresholds not being fitted" if blocked else ""
        click.echo(f"\n== {category}: {chosen['status']}{note}")
        click.echo(_format(_thin(table.reset_index(drop=True), rows), list(result.fields)))
    untouched = result.chosen[result.chosen["status"].str.startswith("no history")]
    if len(untouched):
        click.echo(f"\nno history, thresholds unchanged: {', '.join(untouched['category'])}")

    summary = result.proposed_eval.merge(result.base_eval, on="category", suffixes=("", "_current"))
    click.echo("\nproposed against current policy, replayed on the history (category * = all):")
    lines = pd.DataFrame({
        "category": summary["category"],
        "automation": summary["automation_rate"].map(_percent),
        "fn_rate": summary["fn_rate"].map(_percent),
        "fn_95%_upper": summary["fn_high"].map(_percent),
        "current_automation": summary["automation_rate_current"].map(_percent),
        "current_fn_rate": summary["fn_rate_current"].map(_percent),
        "current_fn_95%_upper": summary["fn_high_current"].map(_percent),
    })
    click.echo(lines.to_string(index=False))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Fitted by `hitl policy fit --target-fn {target_fn}` on {stamp} from {base.name} {base.version}\n"
        f"history: {len(history)} routed items, {labelled} labelled ({store.describe()}, {reviews.describe()})\n"
        f"fitted: {', '.join(result.fields)}; {method} {confidence:.0%} upper bound of the false-negative rate <= {target_fn}\n"
        f"automation on the history: {result.automation_rate:.1%} (current policy: "
        f"{float(result.base_eval.loc[result.base_eval['category'] == '*', 'automation_rate'].iloc[0]):.1%})"
    )
    text = policy_yaml(result.policy, header)
    checked = load_policy_text(text, out_file)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(text, encoding="utf-8")
    click.echo(f"\nwrote {out_file}: policy {checked.name!r} version {checked.version} (validated)")
    click.echo(f"use it for the next runs: HITL_POLICY={Path(out_file).resolve()}   (check it: hitl policy check {out_file})")


def load_policy_text(text: str, source: str):
    """Validate the text about to be written (a fitted policy must parse back, or nothing is written)."""
    from ml.policy import parse_policy

    try:
        return parse_policy(text, source=source)
    except PolicyError as err:  # pragma: no cover - a bug in the fit, never a user error
        raise click.ClickException(f"the fitted policy does not validate, not written:\n{err}") from None
