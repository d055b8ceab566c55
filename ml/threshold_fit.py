"""Fit per-category tolerance thresholds from review history (what ``hitl policy fit`` runs).

The question a threshold answers: which AI outputs may be published without a human look?
For each category the fit searches candidate thresholds on the chosen quality signals and
proposes the ones that **maximise the automation rate** (share of the category's items
auto-approved) while the **upper bound of the 95 % interval of the false-negative rate**
(share of auto-approved items that a person would have had to correct or reject) stays at
or under the target. Thresholds not being fitted keep the base policy's values and still
apply: an item that breaks any of them is escalated whatever the fitted ones say.

Selection bias, and how it is handled
-------------------------------------
Only items a person reviewed have a label. Under the policy in force when the history was
made, every escalated item is reviewed, but auto-approved items are reviewed only when they
were drawn for an **audit** (``audit_rate``, a stable hash of the image id: a random sample).
The reviewed items are therefore not a random sample of the catalog: they over-represent what
the old policy found doubtful. Counting them as they are would estimate the false-negative
rate of a looser threshold mostly from items the old policy escalated. So each labelled item
is weighted by the inverse of its stratum's labelling rate (post-stratification by category
and old route): an escalated item stands for itself (weight about 1), an audited
auto-approved item stands for all the auto-approved items of its category that nobody looked
at (weight ``auto-approved / audited``). The false-negative rate of a candidate is the
weighted share of labelled items it would auto-approve that needed correction (a Hajek
estimator), and its interval uses Kish's effective sample size; with equal weights (no
audits involved) this is exactly ``k / n`` and the plain Wilson or Clopper-Pearson interval.
The audits are what make the estimate honest for items the old policy auto-approved: with
few audits their weights are large and the interval is wide, as it should be. Items whose
region of the signal space was never reviewed have no labels at all; no fit can say anything
about them, which is why candidates that auto-approve unlabelled items only are infeasible.

Labels are also tied to a model version: a person judged one mask. A decision counts only
for the routing row of the same model version (a batch re-scored by a newer champion has new
masks and new signals; the old verdict does not transfer). Hidden ``gold`` review tasks are
not part of the routing sample and are left out.

Search: per fitted signal, candidate thresholds are the observed values (rounded outward to 4
decimals so the written YAML is exactly what was evaluated), thinned to quantiles when there
are many, plus the base policy's value and the strictest legal value. The joint grid over all
fitted signals is evaluated at once from a cumulative histogram of each item's first passing
candidate, so fitting two or three signals together costs no more than a few array passes.
By default the model's own uncertainty is fitted (``min_confidence`` and
``max_boundary_uncertainty``), plus ``max_needs_correction_probability`` when the history
carries the calibrated probability. The trade-off table lists every candidate when one
threshold is fitted, and the frontier (for each reachable automation, the candidate with the
lowest bound) when several are.

No Dagster import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.policy import AUTO_APPROVE, FITTABLE_THRESHOLDS, PROBABILITY_COLUMN, Policy, ThresholdOverrides, Thresholds, route
from ml.stats import proportion_interval, zero_failure_sample_size

__all__ = [
    "NEEDS_CORRECTION_DECISIONS",
    "review_history",
    "default_fit_fields",
    "evaluate_policy",
    "fit_thresholds",
    "FitResult",
]

NEEDS_CORRECTION_DECISIONS = ("correct", "reject")
_DECIMALS = 4
_MAX_GRID_CELLS = 200_000
_RANGES: dict[str, tuple[float, float]] = {
    "min_confidence": (0.0, 1.0),
    "max_boundary_uncertainty": (0.0, 1.0),
    "min_area_fraction": (0.0, 1.0),
    "max_area_fraction": (0.0, 1.0),
    "max_components": (1.0, math.inf),
    "max_colour_distance": (0.0, math.inf),
    "max_needs_correction_probability": (0.0, 1.0),
}


# ----------------------------------------------------------------------------- history


def review_history(queue: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per routed image (per batch) with its human outcome where it has one, and a weight.

    ``queue``: the ``review_queue`` rows of all batches (signals, ``route``, ``audit``, ``batch``).
    ``decisions``: latest decision per review task (``ReviewStore.latest_decisions()``).

    Adds ``labelled`` (a person decided on this image's mask), ``needs_correction`` (a person
    corrected or rejected it; False where unlabelled) and ``weight`` (the inverse labelling rate
    of the item's stratum, category x old route, for labelled items; 0 otherwise).
    """
    if queue.empty:
        return pd.DataFrame(columns=[*queue.columns, "labelled", "needs_correction", "weight"])
    keys = ["batch", "image_id"] if "batch" in queue.columns else ["image_id"]
    history = queue.drop_duplicates(keys, keep="last").reset_index(drop=True).copy()
    labels = _outcomes(history, decisions, keys)
    history = history.merge(labels, left_on=keys, right_index=True, how="left")
    history["labelled"] = history["labelled"].fillna(False).astype(bool)
    history["needs_correction"] = history["needs_correction"].fillna(False).astype(bool)
    stratum = [history["category"].astype(str), history["route"].astype(str)]
    size = history.groupby(stratum)["image_id"].transform("size").astype(float)
    labelled = history.groupby(stratum)["labelled"].transform("sum").astype(float)
    history["weight"] = np.where(history["labelled"], size / labelled.where(labelled > 0, 1.0), 0.0)
    return history


def _outcomes(history: pd.DataFrame, decisions: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    empty = pd.DataFrame(columns=["labelled", "needs_correction"])
    if decisions is None or decisions.empty:
        return empty
    d = decisions
    if "kind" in d.columns:
        d = d[d["kind"].astype(str) != "gold"]
    keys = [k for k in keys if k in d.columns]
    if "model_version" in d.columns and "model_version" in history.columns:
        routed = history.drop_duplicates(keys, keep="last").set_index(keys)["model_version"].astype(str)
        task_model = d["model_version"].fillna("").astype(str)
        routed_model = pd.Series(routed.reindex(pd.MultiIndex.from_frame(d[keys]) if len(keys) > 1 else d[keys[0]]).to_numpy(), index=d.index)
        d = d[(task_model == "") | (task_model == routed_model.astype(str))]
    if d.empty:
        return empty
    grouped = d.groupby(keys)["decision"]
    return pd.DataFrame({
        "labelled": grouped.size() > 0,
        "needs_correction": grouped.agg(lambda s: bool(s.isin(NEEDS_CORRECTION_DECISIONS).any())),
    })


def default_fit_fields(history: pd.DataFrame) -> tuple[str, ...]:
    """The model's own uncertainty: ``min_confidence`` and ``max_boundary_uncertainty``, plus
    ``max_needs_correction_probability`` when the history carries that probability."""
    fields: tuple[str, ...] = ("min_confidence", "max_boundary_uncertainty")
    if PROBABILITY_COLUMN in history.columns and pd.to_numeric(history[PROBABILITY_COLUMN], errors="coerce").notna().any():
        fields += ("max_needs_correction_probability",)
    return fields


# ----------------------------------------------------------------------------- evaluation


def _estimate(auto: np.ndarray, history: pd.DataFrame, method: str, confidence: float) -> dict:
    labelled = history["labelled"].to_numpy(bool) & auto
    w = history["weight"].to_numpy(float)[labelled]
    y = history["needs_correction"].to_numpy(bool)[labelled]
    return _rates(
        images=len(history), auto=int(auto.sum()), n=int(labelled.sum()), k=int(y.sum()),
        w_sum=float(w.sum()), wy_sum=float((w * y).sum()), w2_sum=float((w * w).sum()), method=method, confidence=confidence,
    )


def _rates(images, auto, n, k, w_sum, wy_sum, w2_sum, method, confidence):
    """Automation and the weighted false-negative rate with its interval (arrays or scalars)."""
    images, auto, w_sum, wy_sum, w2_sum = (np.asarray(v, dtype=float) for v in (images, auto, w_sum, wy_sum, w2_sum))
    with np.errstate(divide="ignore", invalid="ignore"):
        fn = np.where(w_sum > 0, wy_sum / w_sum, np.nan)
        n_eff = np.where(w2_sum > 0, w_sum * w_sum / w2_sum, 0.0)
        k_eff = np.where(w_sum > 0, np.nan_to_num(fn) * n_eff, 0.0)
        automation = np.where(images > 0, auto / images, 0.0)
    low, high = proportion_interval(np.minimum(k_eff, n_eff), n_eff, method, confidence)
    out = {
        "images": images, "auto_approved": auto, "automation_rate": automation, "labelled": np.asarray(n), "failures": np.asarray(k),
        "fn_rate": fn, "fn_low": np.asarray(low), "fn_high": np.asarray(high),
    }
    if np.ndim(auto) == 0:
        out = {key: (int(v) if key in ("images", "auto_approved", "labelled", "failures") else float(v)) for key, v in out.items()}
    return out


def evaluate_policy(history: pd.DataFrame, policy: Policy, method: str = "wilson", confidence: float = 0.95) -> pd.DataFrame:
    """What ``policy`` would have done to the history: per category and overall (category ``*``).

    Columns: category, images, auto_approved, automation_rate, labelled (labelled items it
    auto-approves), failures (of those, needing correction), fn_rate (weighted), fn_low, fn_high.
    """
    if history.empty:
        return pd.DataFrame(columns=["category", "images", "auto_approved", "automation_rate", "labelled", "failures", "fn_rate", "fn_low", "fn_high"])
    signals = history.drop(columns=[c for c in ("route", "reasons", "audit", "double_review", "policy_version") if c in history.columns])
    auto = route(signals, policy)["route"].to_numpy(dtype=object) == AUTO_APPROVE
    rows = []
    categories = history["category"].astype(str)
    for category in sorted(categories.unique()):
        mask = (categories == category).to_numpy()
        rows.append({"category": category, **_estimate(auto[mask], history[mask], method, confidence)})
    rows.append({"category": "*", **_estimate(auto, history, method, confidence)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- fitting


@dataclass
class FitResult:
    """What the fit proposes, and the evidence for it."""

    policy: Policy
    base: Policy
    target_fn: float
    fields: tuple[str, ...]
    method: str
    confidence: float
    chosen: pd.DataFrame  # per category: fitted thresholds, automation, false negatives and bounds, status
    tradeoff: pd.DataFrame  # per category and candidate of the first fitted field (the others at their chosen values)
    proposed_eval: pd.DataFrame  # evaluate_policy(history, policy)
    base_eval: pd.DataFrame  # evaluate_policy(history, base)
    warnings: list[str] = field(default_factory=list)

    @property
    def automation_rate(self) -> float:
        """Overall automation rate of the proposed policy on the history."""
        row = self.proposed_eval[self.proposed_eval["category"] == "*"]
        return float(row["automation_rate"].iloc[0]) if len(row) else 0.0


def _passes(values: np.ndarray, threshold: float | None, direction: str) -> np.ndarray:
    if threshold is None:
        return np.ones(len(values), dtype=bool)
    return values >= threshold if direction == "min" else values <= threshold


def _column(items: pd.DataFrame, column: str) -> np.ndarray | None:
    if column not in items.columns:
        return None
    return pd.to_numeric(items[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _candidates(name: str, values: np.ndarray, base_value: float | None, max_candidates: int) -> np.ndarray:
    """Candidate thresholds for one field, strictest first (rounded outward, thinned to quantiles)."""
    direction = FITTABLE_THRESHOLDS[name][1]
    low, high = _RANGES[name]
    finite = values[np.isfinite(values)]
    scale = 10.0**_DECIMALS
    if name == "max_components":
        rounded = np.ceil(finite)
    elif direction == "min":
        rounded = np.floor(finite * scale + 1e-9) / scale  # the item at v still passes v rounded down
    else:
        rounded = np.ceil(finite * scale - 1e-9) / scale
    rounded = np.clip(rounded, low, high)
    uniq, counts = np.unique(rounded, return_counts=True)
    if len(uniq) > max_candidates:  # keep quantiles of the items, so each step moves a similar share of them
        cumulative = np.cumsum(counts) / counts.sum()
        picks = np.searchsorted(cumulative, np.linspace(0, 1, max_candidates), side="left")
        uniq = np.unique(uniq[np.clip(picks, 0, len(uniq) - 1)])
    strictest = high if direction == "min" else low
    extra = [strictest] + ([float(base_value)] if base_value is not None else [])
    out = np.unique(np.concatenate([uniq, np.asarray(extra, dtype=float)]))
    out = out[np.isfinite(out)]
    return out[::-1] if direction == "min" else out  # strictest first


def _first_pass(values: np.ndarray, candidates: np.ndarray, direction: str) -> np.ndarray:
    """Index of the strictest candidate each item passes (len(candidates) when none, NaN never passes)."""
    k = len(candidates)
    if direction == "min":  # candidates descending; item passes t_j iff v >= t_j
        ascending = candidates[::-1]
        passed = np.searchsorted(ascending, values, side="right")  # how many candidates are <= v
        first = k - passed
    else:  # candidates ascending; item passes t_j iff v <= t_j
        first = np.searchsorted(candidates, values, side="left")
    return np.where(np.isfinite(values), first, k).astype(np.int64)


def _grid_sums(ranks: list[np.ndarray], sizes: list[int], weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For every combination of candidate indices: the sum of each weight over items passing all of them."""
    shape = tuple(s + 1 for s in sizes)  # last index: never passes
    flat = np.ravel_multi_index(tuple(ranks), shape) if ranks else np.zeros(len(next(iter(weights.values()))), dtype=np.int64)
    out = {}
    for name, w in weights.items():
        grid = np.bincount(flat, weights=w, minlength=int(np.prod(shape))).reshape(shape)
        for axis in range(grid.ndim):
            grid = np.cumsum(grid, axis=axis)
        out[name] = grid[tuple(slice(0, s) for s in sizes)]
    return out


def fit_thresholds(
    history: pd.DataFrame,
    base: Policy,
    target_fn: float,
    fields: tuple[str, ...] | list[str] | None = None,
    method: str = "wilson",
    confidence: float = 0.95,
    max_candidates: int = 40,
    min_automation: float = 0.05,
) -> FitResult:
    """Propose per-category thresholds on ``fields`` for the categories the base policy knows.

    For each category with history, over the joint grid of candidates: maximise the number of
    auto-approved items subject to ``fn_high <= target_fn`` (a candidate that auto-approves
    nothing is always allowed). Ties go to the lower bound, then to the candidate nearest the
    base policy. With no history a category keeps the base thresholds. See the module
    docstring for how reviewed-only labels are weighted.
    """
    if not 0.0 < target_fn < 1.0:
        raise ValueError(f"target false-negative rate must be in (0, 1), got {target_fn}")
    fields = tuple(fields) if fields else default_fit_fields(history)
    unknown = [f for f in fields if f not in FITTABLE_THRESHOLDS]
    if unknown:
        raise ValueError(f"cannot fit {', '.join(unknown)}; fittable thresholds: {', '.join(FITTABLE_THRESHOLDS)}")
    if len(set(fields)) != len(fields) or not 1 <= len(fields) <= 3:
        raise ValueError(f"fit one to three different thresholds at a time, got {', '.join(fields)}")
    per_field = max(2, min(max_candidates, int(_MAX_GRID_CELLS ** (1.0 / len(fields)))))

    warnings: list[str] = []
    chosen_rows, tradeoff_frames = [], []
    overrides = {name: o.model_dump(exclude_none=True) for name, o in base.categories.items()}
    categories = history["category"].astype(str) if len(history) else pd.Series(dtype=str)
    strangers = sorted(set(categories) - set(base.known_categories))
    if strangers:
        warnings.append(f"categories not in the policy's known_categories use the defaults and are not fitted: {', '.join(strangers)}")

    for category in base.known_categories:
        items = history[(categories == category).to_numpy()] if len(history) else history
        current = base.thresholds_for(category)
        if items.empty:
            chosen_rows.append({"category": category, **{f: getattr(current, f) for f in fields}, "status": "no history: unchanged"})
            continue
        fitted, row, table = _fit_category(items, current, fields, target_fn, method, confidence, per_field)
        chosen_rows.append({"category": category, **row})
        tradeoff_frames.append(table.assign(category=category))
        overrides.setdefault(category, {}).update(fitted)

    for category, values in list(overrides.items()):  # drop overrides equal to the defaults
        overrides[category] = {k: v for k, v in values.items() if getattr(base.defaults, k) != v}
    proposed = Policy.model_validate({
        **base.model_dump(),
        "name": base.name if base.name.endswith("-fitted") else f"{base.name}-fitted",
        "categories": {c: ThresholdOverrides(**v) for c, v in overrides.items() if v},
    })
    proposed_eval = evaluate_policy(history, proposed, method, confidence)
    base_eval = evaluate_policy(history, base, method, confidence)

    automation = float(proposed_eval.loc[proposed_eval["category"] == "*", "automation_rate"].iloc[0]) if len(proposed_eval) else 0.0
    if automation <= min_automation:
        needed = zero_failure_sample_size(target_fn, method, confidence)
        warnings.append(
            f"the proposed policy would escalate nearly everything: automation {automation:.1%} of {len(history)} item(s) in the history. "
            f"With a {target_fn:.2%} target, a threshold may auto-approve only when at least {needed} labelled item(s) it passes "
            f"(reviewed or audited) were all fine; review or audit more, or relax the target."
        )
    loose = base_eval[(base_eval["category"] != "*") & (base_eval["auto_approved"] > 0) & (base_eval["fn_high"] > target_fn)]
    if len(loose):
        warnings.append(
            "the base policy is too loose for the target in: "
            + ", ".join(f"{r.category} (false negatives up to {r.fn_high:.1%})" for r in loose.itertuples())
        )
    chosen = pd.DataFrame(chosen_rows)
    tradeoff = pd.concat(tradeoff_frames, ignore_index=True) if tradeoff_frames else pd.DataFrame()
    if len(tradeoff):
        tradeoff = tradeoff[["category", *[c for c in tradeoff.columns if c != "category"]]]
    return FitResult(proposed, base, target_fn, fields, method, confidence, chosen, tradeoff, proposed_eval, base_eval, warnings)


def _fit_category(items, current: Thresholds, fields, target_fn, method, confidence, per_field):
    n_items = len(items)
    other_ok = np.ones(n_items, dtype=bool)
    for name, (column, direction) in FITTABLE_THRESHOLDS.items():
        if name in fields:
            continue
        values = _column(items, column)
        threshold = getattr(current, name)
        if values is None:
            if column == PROBABILITY_COLUMN:
                continue  # route() ignores the probability threshold when the column is absent
            values = np.full(n_items, np.nan)
        other_ok &= _passes(values, threshold, direction)

    grids, ranks = [], []
    for name in fields:
        column, direction = FITTABLE_THRESHOLDS[name]
        values = _column(items, column)
        if values is None:
            values = np.full(n_items, np.nan)
        candidates = _candidates(name, values, getattr(current, name), per_field)
        grids.append(candidates)
        ranks.append(_first_pass(values, candidates, direction))
    sizes = [len(c) for c in grids]

    labelled = items["labelled"].to_numpy(bool) & other_ok
    w = np.where(labelled, items["weight"].to_numpy(float), 0.0)
    y = items["needs_correction"].to_numpy(bool) & labelled
    sums = _grid_sums(ranks, sizes, {
        "auto": other_ok.astype(float), "n": labelled.astype(float), "k": y.astype(float),
        "w": w, "wy": w * y, "w2": w * w,
    })
    rates = _rates(n_items, sums["auto"], np.rint(sums["n"]).astype(int), np.rint(sums["k"]).astype(int), sums["w"], sums["wy"], sums["w2"], method, confidence)
    auto, high = rates["auto_approved"], rates["fn_high"]
    feasible = (auto == 0) | ((sums["w"] > 0) & (high <= target_fn + 1e-12))

    index = np.indices(sizes)
    valid = np.ones(sizes, dtype=bool)
    if "min_area_fraction" in fields and "max_area_fraction" in fields:  # min > max is not a legal policy
        i, j = fields.index("min_area_fraction"), fields.index("max_area_fraction")
        valid = grids[i][index[i]] <= grids[j][index[j]]
    base_index = []
    for name, g in zip(fields, grids):
        value = getattr(current, name)
        hits = np.flatnonzero(np.isclose(g, float(value))) if value is not None else np.array([], dtype=int)
        base_index.append(int(hits[0]) if len(hits) else len(g) - 1)  # unset (not applied) is the loosest
    distance = sum(np.abs(index[a] - base_index[a]) for a in range(len(fields)))
    if (feasible & valid).any():
        eligible, status = feasible & valid, "fitted"
        primary = -auto[eligible]  # most automation
    else:
        eligible, status = valid, "target not reachable: least automation"
        primary = auto[eligible]
    # then the lowest bound, then the candidate nearest the base policy
    order = np.lexsort((distance[eligible], high[eligible], primary))
    best = tuple(axis[eligible][order[0]] for axis in index)
    fitted = {}
    for name, g, at in zip(fields, grids, best):
        value = float(g[at])
        fitted[name] = int(value) if name == "max_components" else value
    if status == "fitted" and auto[best] == 0:
        status = "nothing can be auto-approved within the target"

    row = {**fitted, **{key: (value[best] if np.ndim(value) else value) for key, value in rates.items()}, "status": status}
    for key in ("images", "auto_approved", "labelled", "failures"):
        row[key] = int(row[key])

    # the trade-off: for each reachable number of auto-approved items, the candidate with the lowest bound
    flat = np.flatnonzero(valid.ravel())
    a, h, dist = auto.ravel()[flat], high.ravel()[flat], distance.ravel()[flat]
    order = np.lexsort((dist, h, a))
    first = np.ones(len(order), dtype=bool)
    first[1:] = a[order][1:] != a[order][:-1]
    best_flat = int(np.ravel_multi_index(best, sizes))
    base_flat = int(np.ravel_multi_index(tuple(base_index), sizes))
    if len(fields) == 1:  # one threshold: every candidate, strictest first
        picks = flat.tolist()
    else:  # several: the frontier, least automation first
        frontier = set(flat[order[first]].tolist())
        picks = sorted(frontier | {best_flat, base_flat}, key=lambda f: (auto.ravel()[f], high.ravel()[f]))
    table = pd.DataFrame({name: g[np.unravel_index(picks, sizes)[a_]] for a_, (name, g) in enumerate(zip(fields, grids))})
    for key, value in rates.items():
        table[key] = value.ravel()[picks] if np.ndim(value) else value
    table["feasible"] = (feasible & valid).ravel()[picks]
    table["chosen"] = [f == best_flat for f in picks]
    table["current"] = [f == base_flat for f in picks]
    if "max_components" in table.columns:
        table["max_components"] = table["max_components"].astype(int)
    row["blocked_by_other_thresholds"] = int(n_items - other_ok.sum())
    return fitted, row, table
