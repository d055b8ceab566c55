"""hitl_metrics: how the loop is doing, with error bars.

Per day, batch, category (and batch x category) and overall: automation rate, correction
rate, review seconds per item, the audit false-negative rate of auto-approval with its 95 %
interval, and reviewer agreement on double-reviewed items (Cohen's kappa on approve versus
not, mean IoU of the two reviewers' final masks). Per reviewer: decisions, speed, agreement,
accuracy on items whose truth is known (hidden gold checks and re-sent gold images), fatigue
over a session, and a ``flagged`` column for a reviewer far from consensus. A drift check
warns when a category's correction rate jumps in the latest batches (a sign of new product
types). Plots are PNG files under ``metrics/latest/`` in the object store (for the review
app's admin page) and inline in the materialization's metadata; the tables are exported as CSV
next to them.

The false-negative rate is estimated from **audits only**: the audit sample is a stable-hash
random draw of auto-approved items, so it is an unbiased sample of what people never see.
Escalated items are not evidence about auto-approval.
"""


import base64
import io
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.assets.publish import final_status
from ml.stats import (
    cohens_kappa,
    linear_slope,
    proportion_difference_pvalue,
    proportion_increase_pvalue,
    proportion_interval,
)
from resources.object_store import ObjectStore
from resources.policy import TolerancePolicy
from resources.review_store import ReviewStore
from resources.tables import read_partitions, read_table, table_partitions

METRICS_PREFIX = "metrics/latest"
IOU_CACHE_KEY = "metrics/cache/mask_iou.parquet"
GOLD_KIND = "gold"

METRIC_COLUMNS = [
    "images", "auto_approved", "escalated", "automation_rate", "reviewed_images", "corrected", "rejected",
    "correction_rate", "review_seconds_per_item", "audited", "audit_failures", "false_negative_rate",
    "fn_low", "fn_high",
]
QUEUE_COLUMNS = ["image_id", "batch", "category", "route", "audit", "double_review", "gold", "model_version", "policy_version"]
AGREEMENT_COLUMNS = ["pairs", "pair_agreement", "kappa", "mask_pairs", "mean_pair_iou"]
REVIEWER_COLUMNS = [
    "reviewer", "decisions", "review_seconds_per_item", "approve_rate", "pairs", "pair_agreement", "agreement_low",
    "agreement_high", "kappa", "mask_pairs", "mean_pair_iou", "gold_items", "gold_accuracy", "gold_low", "gold_high",
    "gold_mask_iou", "sessions", "fatigue_seconds_per_100", "seconds_early", "seconds_late", "accuracy_early",
    "accuracy_late", "fatigue_accuracy_drift", "flagged", "flag_reasons",
]
DRIFT_COLUMNS = [
    "category", "recent_batches", "recent_reviewed", "recent_corrected", "recent_rate", "baseline_batches",
    "baseline_reviewed", "baseline_corrected", "baseline_rate", "jump", "p_value", "drifted",
]


class MetricsConfig(dg.Config):
    """Interval method and the limits behind the drift warning and the reviewer flags."""

    interval: str = "wilson"  # or "clopper-pearson"
    confidence: float = 0.95
    drift_window_batches: int = 1  # the latest batches of a category ...
    drift_baseline_batches: int = 3  # ... compared with this many batches before them
    drift_min_jump: float = 0.15  # correction rate rise (absolute) that counts as a jump ...
    drift_p_value: float = 0.05  # ... when a one-sided Fisher exact test also says so
    drift_min_items: int = 10  # reviewed items needed on each side
    session_gap_minutes: float = 30.0  # a longer pause starts a new review session
    gold_iou_threshold: float = 0.92  # an AI mask this close to the truth should be approved
    min_scored_items: int = 5  # evidence a reviewer needs before a flag is raised
    min_gold_accuracy: float = 0.9  # flag: gold accuracy's upper bound below this
    min_agreement: float = 0.7  # flag: agreement with co-reviewers' upper bound below this
    min_pair_iou: float = 0.8  # flag: mean IoU with co-reviewers' masks below this
    outlier_p_value: float = 0.01  # flag: approve rate differs from all other reviewers' ...
    outlier_min_gap: float = 0.2  # ... by at least this much, and Fisher p below outlier_p_value


# ----------------------------------------------------------------------------- per image


def image_outcomes(queue: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per routed image with its final status and the flags the rates are counted from.

    Hidden gold tasks are not part of an image's review: they are left out here.
    """
    if len(decisions) and "kind" in decisions.columns:
        decisions = decisions[decisions["kind"].astype(str) != GOLD_KIND]
    status = final_status(queue, decisions)
    per_image = (
        decisions["decision"].eq("correct").groupby(decisions["image_id"]).any().rename("human_corrected").to_frame()
        if len(decisions) else pd.DataFrame({"human_corrected": pd.Series(dtype=bool)})
    )
    status = status.merge(per_image, left_on="image_id", right_index=True, how="left")
    status["reviewed"] = status["final_status"].isin(["approved_human", "approved_corrected", "rejected"])
    status["corrected"] = status["reviewed"] & status["human_corrected"].fillna(False).astype(bool)
    status["rejected_flag"] = status["final_status"] == "rejected"
    status["auto"] = status["route"] == "auto_approve"
    status["audited"] = status["auto"] & status["audit"].astype(bool) & status["reviewed"]
    # An audited auto-approval that a reviewer had to correct or reject is a false negative of the policy.
    status["audit_failure"] = status["audited"] & (status["corrected"] | status["rejected_flag"])
    return status


def summarise(status: pd.DataFrame, decisions: pd.DataFrame, by: list[str], method: str = "wilson", confidence: float = 0.95) -> pd.DataFrame:
    """The rates of :data:`METRIC_COLUMNS` per group of ``status`` (from :func:`image_outcomes`)."""
    if status.empty:
        return pd.DataFrame(columns=[*by, *METRIC_COLUMNS])
    grouped = status.groupby(by, dropna=False)
    out = pd.DataFrame({
        "images": grouped.size(),
        "auto_approved": grouped["auto"].sum(),
        "escalated": grouped.size() - grouped["auto"].sum(),
        "reviewed_images": grouped["reviewed"].sum(),
        "corrected": grouped["corrected"].sum(),
        "rejected": grouped["rejected_flag"].sum(),
        "audited": grouped["audited"].sum(),
        "audit_failures": grouped["audit_failure"].sum(),
    })
    out["automation_rate"] = out["auto_approved"] / out["images"]
    out["correction_rate"] = (out["corrected"] / out["reviewed_images"]).where(out["reviewed_images"] > 0)
    out["false_negative_rate"] = (out["audit_failures"] / out["audited"]).where(out["audited"] > 0)
    low, high = proportion_interval(out["audit_failures"].to_numpy(float), out["audited"].to_numpy(float), method, confidence)
    out["fn_low"], out["fn_high"] = low, high  # no audits: [0, 1], nothing is known
    if len(decisions):
        decisions = decisions[decisions["kind"].astype(str) != GOLD_KIND] if "kind" in decisions.columns else decisions
        # each decision takes its image's group from ``status`` (one hash lookup, no join of every column)
        first = ~status["image_id"].duplicated()
        position = pd.Index(status.loc[first, "image_id"]).get_indexer(decisions["image_id"])
        hit = position >= 0
        seconds = pd.DataFrame({c: status.loc[first, c].to_numpy()[position[hit]] for c in by})
        seconds["seconds"] = decisions["seconds"].to_numpy()[hit]
        out["review_seconds_per_item"] = seconds.groupby(by, dropna=False)["seconds"].mean()
    else:
        out["review_seconds_per_item"] = float("nan")
    return out.reset_index()[[*by, *METRIC_COLUMNS]]


def loop_metrics(queue: pd.DataFrame, decisions: pd.DataFrame, by: list[str], method: str = "wilson", confidence: float = 0.95) -> pd.DataFrame:
    """Per group: automation rate, correction rate among reviewed images, seconds per review, audit false-negative rate and its interval."""
    if queue.empty:
        return pd.DataFrame(columns=[*by, *METRIC_COLUMNS])
    return summarise(image_outcomes(queue, decisions), decisions, by, method, confidence)


# ----------------------------------------------------------------------------- agreement


def _final_mask(row: dict | pd.Series, side: str = "") -> str:
    """The mask a reviewer stands behind: the correction, the AI mask they approved, none for a reject."""
    decision = row[f"decision{side}"]
    if decision == "correct":
        return str(row[f"corrected_mask_key{side}"] or "")
    if decision == "approve":
        return str(row[f"mask_key{side}"] or "")
    return ""


def _final_masks(decision: pd.Series, corrected: pd.Series, mask: pd.Series) -> np.ndarray:
    """:func:`_final_mask` for whole columns at once."""
    corrected = corrected.fillna("").astype(str).to_numpy()
    mask = mask.fillna("").astype(str).to_numpy()
    return np.where(decision.eq("correct").to_numpy(), corrected, np.where(decision.eq("approve").to_numpy(), mask, "")).astype(object)


def review_pairs(decisions: pd.DataFrame) -> pd.DataFrame:
    """One row per double-reviewed image (per batch) whose two slots are both decided.

    Columns: batch, image_id, category, reviewer_a/_b, decision_a/_b, approve_a/_b, mask_a/_b
    (each reviewer's final mask key, "" for a reject), agree (same approve-versus-not).
    """
    columns = ["batch", "image_id", "category", "reviewer_a", "reviewer_b", "decision_a", "decision_b", "approve_a", "approve_b", "mask_a", "mask_b", "agree"]
    if decisions.empty:
        return pd.DataFrame(columns=columns)
    d = decisions[decisions["kind"].astype(str) != GOLD_KIND] if "kind" in decisions.columns else decisions
    d = d[d["slot"].isin([0, 1])]
    a = d[d["slot"] == 0]
    b = d[d["slot"] == 1]
    keep = ["batch", "image_id", "category", "reviewer", "decision", "mask_key", "corrected_mask_key"]
    pairs = a[keep].merge(b[keep], on=["batch", "image_id"], suffixes=("_a", "_b"))
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs["category"] = pairs["category_a"]
    pairs["approve_a"] = pairs["decision_a"] == "approve"
    pairs["approve_b"] = pairs["decision_b"] == "approve"
    pairs["mask_a"] = _final_masks(pairs["decision_a"], pairs["corrected_mask_key_a"], pairs["mask_key_a"])
    pairs["mask_b"] = _final_masks(pairs["decision_b"], pairs["corrected_mask_key_b"], pairs["mask_key_b"])
    pairs["agree"] = pairs["approve_a"] == pairs["approve_b"]
    return pairs[columns]


def agreement_metrics(pairs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: pairs, share agreeing on approve-versus-not, Cohen's kappa, mean IoU of the two final masks."""
    if pairs.empty:
        return pd.DataFrame(columns=[*by, *AGREEMENT_COLUMNS])
    rows = []
    for key, group in pairs.groupby(by, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ious = group["iou"].dropna() if "iou" in group.columns else pd.Series(dtype=float)
        rows.append({
            **dict(zip(by, key)),
            "pairs": len(group),
            "pair_agreement": float(group["agree"].mean()),
            "kappa": cohens_kappa(group["approve_a"].to_numpy(), group["approve_b"].to_numpy()),
            "mask_pairs": len(ious),
            "mean_pair_iou": float(ious.mean()) if len(ious) else float("nan"),
        })
    return pd.DataFrame(rows, columns=[*by, *AGREEMENT_COLUMNS])


class MaskIoU:
    """IoU of two stored masks, remembered in the object store (mask objects never change once written)."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.cache: dict[tuple[str, str], float] = {}
        self.new = 0
        try:
            frame = pd.read_parquet(io.BytesIO(store.get_bytes(IOU_CACHE_KEY)))
            self.cache = {(a, b): float(v) for a, b, v in zip(frame["key_a"], frame["key_b"], frame["iou"])}
        except (FileNotFoundError, KeyError, ValueError, OSError):
            self.cache = {}

    def __call__(self, key_a: str, key_b: str) -> float:
        if not key_a or not key_b:
            return float("nan")
        key = (key_a, key_b) if key_a <= key_b else (key_b, key_a)
        if key not in self.cache:
            self.cache[key] = self._compute(*key)
            self.new += 1
        return self.cache[key]

    def _compute(self, key_a: str, key_b: str) -> float:
        from ml.imageio import decode_mask
        from ml.metrics import mask_iou

        try:
            a = decode_mask(self.store.get_bytes(key_a), key_a)
            b = decode_mask(self.store.get_bytes(key_b), key_b)
        except (FileNotFoundError, ValueError):
            return float("nan")
        if a.shape[:2] != b.shape[:2]:
            import cv2

            b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_NEAREST)
        return mask_iou(a, b)

    def save(self) -> None:
        if not self.new:
            return
        frame = pd.DataFrame([(a, b, v) for (a, b), v in self.cache.items()], columns=["key_a", "key_b", "iou"])
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.store.put_bytes(IOU_CACHE_KEY, buffer.getvalue(), "application/vnd.apache.parquet")
        self.new = 0


# ----------------------------------------------------------------------------- gold and reviewers


def gold_scores(decisions: pd.DataFrame, truth: pd.DataFrame, iou: Callable[[str, str], float], iou_threshold: float = 0.92) -> pd.DataFrame:
    """Every decision on an image whose true mask is known from another batch's review, scored.

    ``truth``: image_id, truth_mask_key, truth_batch (the correction dataset's gold split).
    Hidden ``gold`` tasks and ordinary tasks on re-sent gold images both count; a decision in
    the batch the truth came from does not (it may be the truth itself).
    ``should_approve``: the AI mask is within ``iou_threshold`` of the truth. ``correct``: the
    reviewer approved exactly when they should have. ``mask_iou``: the reviewer's final mask
    against the truth (NaN for a reject).
    """
    columns = ["event_id", "reviewer", "batch", "image_id", "kind", "decision", "should_approve", "correct", "mask_iou"]
    if decisions.empty or truth.empty:
        return pd.DataFrame(columns=columns)
    scored = decisions.merge(truth, on="image_id", how="inner")
    scored = scored[scored["batch"].astype(str) != scored["truth_batch"].astype(str)]
    if scored.empty:
        return pd.DataFrame(columns=columns)
    ai_iou = np.array([iou(m, t) for m, t in zip(scored["mask_key"], scored["truth_mask_key"])], dtype=float)
    scored["should_approve"] = ai_iou >= iou_threshold
    scored["correct"] = (scored["decision"] == "approve") == scored["should_approve"]
    finals = _final_masks(scored["decision"], scored["corrected_mask_key"], scored["mask_key"])
    scored["mask_iou"] = np.array([iou(m, t) for m, t in zip(finals, scored["truth_mask_key"])], dtype=float)
    return scored[columns].reset_index(drop=True)


def session_positions(decisions: pd.DataFrame, gap_minutes: float = 30.0) -> pd.DataFrame:
    """Each reviewer's decisions in time order, numbered within sessions (a pause over ``gap_minutes`` starts one)."""
    if decisions.empty:
        return decisions.assign(session=pd.Series(dtype=int), position=pd.Series(dtype=int))
    d = decisions.copy()
    d["decided_at"] = pd.to_datetime(d["decided_at"], utc=True, format="mixed")
    d = d.sort_values(["reviewer", "decided_at", "event_id"])
    gap = d.groupby("reviewer")["decided_at"].diff() > pd.Timedelta(minutes=gap_minutes)
    d["session"] = gap.astype(int).groupby(d["reviewer"]).cumsum()
    d["position"] = d.groupby(["reviewer", "session"]).cumcount() + 1
    return d


def _scored_decisions(decisions: pd.DataFrame, pairs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Per decision that can be judged: 1 if right (gold) or agreeing with the co-reviewer (double review)."""
    parts = []
    if len(scores):
        parts.append(scores[["event_id", "correct"]].rename(columns={"correct": "right"}))
    if len(pairs) and len(decisions):
        keyed = decisions.set_index(["batch", "image_id", "slot"])["event_id"]
        for slot in (0, 1):
            index = pd.MultiIndex.from_arrays([pairs["batch"], pairs["image_id"], np.full(len(pairs), slot)])
            events = keyed.reindex(index).to_numpy()
            parts.append(pd.DataFrame({"event_id": events, "right": pairs["agree"].to_numpy()}))
    if not parts:
        return pd.DataFrame(columns=["event_id", "right"])
    out = pd.concat(parts, ignore_index=True).dropna(subset=["event_id"])
    out["event_id"] = out["event_id"].astype(int)
    return out.groupby("event_id", as_index=False)["right"].mean()


def reviewer_metrics(
    decisions: pd.DataFrame, pairs: pd.DataFrame, scores: pd.DataFrame, config: MetricsConfig, break_after_items: int = 50
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per reviewer (with flags) and per reviewer x session block (fatigue), from all their decisions."""
    if decisions.empty:
        return pd.DataFrame(columns=REVIEWER_COLUMNS), pd.DataFrame(columns=["reviewer", "block", "decisions", "review_seconds_per_item", "scored", "accuracy"])
    timed = session_positions(decisions, config.session_gap_minutes)
    right = _scored_decisions(decisions, pairs, scores)
    timed = timed.merge(right, on="event_id", how="left")
    timed["late"] = timed["position"] > break_after_items
    timed["block"] = (timed["position"] - 1) // break_after_items
    sides = []
    if len(pairs):
        for me, other in (("a", "b"), ("b", "a")):
            sides.append(pd.DataFrame({
                "reviewer": pairs[f"reviewer_{me}"].to_numpy(), "approve": pairs[f"approve_{me}"].to_numpy(),
                "other_approve": pairs[f"approve_{other}"].to_numpy(), "agree": pairs["agree"].to_numpy(),
                "iou": pairs["iou"].to_numpy() if "iou" in pairs.columns else np.full(len(pairs), np.nan),
            }))
    by_pair = pd.concat(sides, ignore_index=True) if sides else pd.DataFrame(columns=["reviewer", "approve", "other_approve", "agree", "iou"])
    approve = decisions["decision"] == "approve"
    # per-reviewer slices and counts computed once (not one scan of every table per reviewer)
    pairs_of = dict(tuple(by_pair.groupby("reviewer"))) if len(by_pair) else {}
    scores_of = dict(tuple(scores.groupby("reviewer"))) if len(scores) else {}
    decided_by = decisions["reviewer"].value_counts()
    approved_by = decisions.loc[approve, "reviewer"].value_counts()
    total_decided, total_approved = len(decisions), int(approve.sum())
    rows = []
    for reviewer, mine in timed.groupby("reviewer"):
        pair_rows = pairs_of.get(reviewer, by_pair.iloc[:0])
        gold = scores_of.get(reviewer, scores.iloc[:0])
        n_pairs, agree = len(pair_rows), int(pair_rows["agree"].sum()) if len(pair_rows) else 0
        a_low, a_high = proportion_interval(agree, n_pairs, config.interval, config.confidence)
        n_gold, gold_right = len(gold), int(gold["correct"].sum()) if len(gold) else 0
        g_low, g_high = proportion_interval(gold_right, n_gold, config.interval, config.confidence)
        ious = pair_rows["iou"].dropna()
        early, late = mine[~mine["late"]], mine[mine["late"]]
        acc_early = float(early["right"].mean()) if early["right"].notna().any() else float("nan")
        acc_late = float(late["right"].mean()) if late["right"].notna().any() else float("nan")
        rows.append({
            "reviewer": reviewer,
            "decisions": len(mine),
            "review_seconds_per_item": float(mine["seconds"].mean()),
            "approve_rate": float((mine["decision"] == "approve").mean()),
            "pairs": n_pairs,
            "pair_agreement": agree / n_pairs if n_pairs else float("nan"),
            "agreement_low": a_low if n_pairs else float("nan"),
            "agreement_high": a_high if n_pairs else float("nan"),
            "kappa": cohens_kappa(pair_rows["approve"].to_numpy(), pair_rows["other_approve"].to_numpy()) if n_pairs else float("nan"),
            "mask_pairs": len(ious),
            "mean_pair_iou": float(ious.mean()) if len(ious) else float("nan"),
            "gold_items": n_gold,
            "gold_accuracy": gold_right / n_gold if n_gold else float("nan"),
            "gold_low": g_low if n_gold else float("nan"),
            "gold_high": g_high if n_gold else float("nan"),
            "gold_mask_iou": float(gold["mask_iou"].mean()) if n_gold and gold["mask_iou"].notna().any() else float("nan"),
            "sessions": int(mine["session"].nunique()),
            "fatigue_seconds_per_100": linear_slope(mine["position"], mine["seconds"]) * 100.0,
            "seconds_early": float(early["seconds"].mean()) if len(early) else float("nan"),
            "seconds_late": float(late["seconds"].mean()) if len(late) else float("nan"),
            "accuracy_early": acc_early,
            "accuracy_late": acc_late,
            "fatigue_accuracy_drift": acc_late - acc_early,
        })
    table = pd.DataFrame(rows)
    reasons = []
    for row in table.to_dict("records"):
        why = []
        if row["gold_items"] >= config.min_scored_items and row["gold_high"] < config.min_gold_accuracy:
            why.append(f"gold accuracy {row['gold_accuracy']:.0%} (at most {row['gold_high']:.0%}) below {config.min_gold_accuracy:.0%}")
        if row["pairs"] >= config.min_scored_items and row["agreement_high"] < config.min_agreement:
            why.append(f"agrees with co-reviewers on {row['pair_agreement']:.0%} (at most {row['agreement_high']:.0%}) below {config.min_agreement:.0%}")
        if row["mask_pairs"] >= config.min_scored_items and row["mean_pair_iou"] < config.min_pair_iou:
            why.append(f"mask IoU with co-reviewers {row['mean_pair_iou']:.2f} below {config.min_pair_iou:.2f}")
        n_mine = int(decided_by.get(row["reviewer"], 0))
        n_others = total_decided - n_mine
        if n_mine >= config.min_scored_items and n_others >= config.min_scored_items:
            k_mine = int(approved_by.get(row["reviewer"], 0))
            k_others = total_approved - k_mine
            gap = k_mine / n_mine - k_others / n_others
            if abs(gap) >= config.outlier_min_gap and proportion_difference_pvalue(k_mine, n_mine, k_others, n_others) < config.outlier_p_value:
                why.append(f"approves {k_mine / n_mine:.0%} of items, other reviewers {k_others / n_others:.0%}")
        reasons.append("; ".join(why))
    table["flag_reasons"] = reasons
    table["flagged"] = table["flag_reasons"] != ""
    fatigue = timed.groupby(["reviewer", "block"]).agg(
        decisions=("event_id", "size"), review_seconds_per_item=("seconds", "mean"), scored=("right", "count"), accuracy=("right", "mean"),
    ).reset_index()
    fatigue["positions"] = [f"{b * break_after_items + 1}-{(b + 1) * break_after_items}" for b in fatigue["block"]]
    return table[REVIEWER_COLUMNS], fatigue


# ----------------------------------------------------------------------------- drift


def batch_order(store: ObjectStore, tasks: pd.DataFrame) -> pd.DataFrame:
    """Per routed batch: when it was first routed (earliest task, else its review_queue table) and its UTC day."""
    entries = {e.key.rsplit("/", 1)[-1].removesuffix(".parquet"): e.modified for e in store.list("tables/review_queue/") if e.key.endswith(".parquet")}
    frame = pd.DataFrame({"batch": list(entries), "routed_at": pd.to_datetime(list(entries.values()), unit="s", utc=True)})
    if len(tasks):
        first = pd.to_datetime(tasks.groupby("batch")["created_at"].min(), utc=True, format="mixed")
        frame["routed_at"] = [min(t, first[b]) if b in first.index and pd.notna(first[b]) else t for b, t in zip(frame["batch"], frame["routed_at"])]
    frame = frame.sort_values(["routed_at", "batch"]).reset_index(drop=True)
    frame["day"] = frame["routed_at"].dt.strftime("%Y-%m-%d")
    frame["order"] = np.arange(len(frame))
    return frame


def correction_drift(status: pd.DataFrame, order: pd.DataFrame, config: MetricsConfig) -> pd.DataFrame:
    """Per category: the latest ``drift_window_batches`` batches against the ``drift_baseline_batches`` before them."""
    if status.empty:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    ranks = dict(zip(order["batch"], order["order"]))
    per = status.groupby(["category", "batch"]).agg(reviewed=("reviewed", "sum"), corrected=("corrected", "sum")).reset_index()
    per = per[per["reviewed"] > 0]
    per["order"] = per["batch"].map(ranks).fillna(len(ranks)).astype(int)
    rows = []
    for category, group in per.sort_values(["order", "batch"]).groupby("category"):
        recent = group.tail(config.drift_window_batches)
        baseline = group.iloc[: max(0, len(group) - config.drift_window_batches)].tail(config.drift_baseline_batches)
        n_r, k_r = int(recent["reviewed"].sum()), int(recent["corrected"].sum())
        n_b, k_b = int(baseline["reviewed"].sum()), int(baseline["corrected"].sum())
        rate_r = k_r / n_r if n_r else float("nan")
        rate_b = k_b / n_b if n_b else float("nan")
        p = proportion_increase_pvalue(k_r, n_r, k_b, n_b)
        jump = rate_r - rate_b if n_r and n_b else float("nan")
        drifted = bool(
            n_r >= config.drift_min_items and n_b >= config.drift_min_items and jump >= config.drift_min_jump and p < config.drift_p_value
        )
        rows.append({
            "category": category, "recent_batches": ",".join(recent["batch"]), "recent_reviewed": n_r, "recent_corrected": k_r,
            "recent_rate": rate_r, "baseline_batches": ",".join(baseline["batch"]), "baseline_reviewed": n_b,
            "baseline_corrected": k_b, "baseline_rate": rate_b, "jump": jump, "p_value": p, "drifted": drifted,
        })
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


# ----------------------------------------------------------------------------- plots


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _figure(width: float = 7.0, height: float = 3.2, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(1, cols, figsize=(width, height), squeeze=False)


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _errorbars(ax, x, rate, low, high, **kwargs):
    rate, low, high = (np.asarray(v, dtype=float) for v in (rate, low, high))
    ok = np.isfinite(rate)
    if ok.any():
        ax.errorbar(np.asarray(x)[ok], rate[ok], yerr=[rate[ok] - low[ok], high[ok] - rate[ok]], fmt="o", capsize=4, **kwargs)


def metrics_plots(per_batch: pd.DataFrame, per_category: pd.DataFrame, overall: pd.DataFrame, reviewers: pd.DataFrame,
                  fatigue: pd.DataFrame, batch_category: pd.DataFrame, drift: pd.DataFrame) -> dict[str, bytes]:
    """PNG plots: rates per batch, false negatives per category, reviewers, fatigue, drift."""
    plots = {}
    fig, axes = _figure()
    ax = axes[0][0]
    x = np.arange(len(per_batch))
    if len(per_batch):
        ax.plot(x, per_batch["automation_rate"], "-o", label="automation rate")
        ax.plot(x, per_batch["correction_rate"], "-s", label="correction rate")
        _errorbars(ax, x, per_batch["false_negative_rate"], per_batch["fn_low"], per_batch["fn_high"], color="tab:red", label="false negatives (95% CI)")
        ax.set_xticks(x, per_batch["batch"], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("per batch")
    _legend(ax, fontsize=7, loc="best")
    plots["rates"] = _png(fig)

    fig, axes = _figure()
    ax = axes[0][0]
    fn = pd.concat([per_category.assign(label=per_category["category"]), overall.assign(label="overall")], ignore_index=True)
    x = np.arange(len(fn))
    if len(fn):
        audited = fn["audited"].to_numpy(float)
        rate = np.where(audited > 0, fn["false_negative_rate"].to_numpy(float), np.nan)
        _errorbars(ax, x, rate, fn["fn_low"], fn["fn_high"], color="tab:red")
        for xi, n in zip(x, audited):
            if n == 0:
                ax.vlines(xi, 0, 1, colors="lightgrey", linewidth=6)
            ax.annotate(f"n={int(n)}", (xi, 1.0), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, fn["label"], fontsize=8)
    ax.set_ylim(-0.02, 1.08)
    ax.set_ylabel("false-negative rate")
    ax.set_title("auto-approved items a reviewer corrected or rejected (audits, 95% CI; grey: no audits)", fontsize=9)
    plots["false_negatives"] = _png(fig)

    fig, axes = _figure(cols=2)
    ax, ax2 = axes[0]
    x = np.arange(len(reviewers))
    if len(reviewers):
        colours = ["tab:red" if f else "tab:blue" for f in reviewers["flagged"]]
        _errorbars(ax, x - 0.1, reviewers["pair_agreement"], reviewers["agreement_low"], reviewers["agreement_high"], color="tab:blue", label="agreement")
        _errorbars(ax, x + 0.1, reviewers["gold_accuracy"], reviewers["gold_low"], reviewers["gold_high"], color="tab:green", label="gold accuracy")
        ax.set_xticks(x, reviewers["reviewer"], rotation=20, ha="right", fontsize=8)
        for tick, colour in zip(ax.get_xticklabels(), colours):
            tick.set_color(colour)
        ax2.bar(x, reviewers["review_seconds_per_item"], color=colours)
        ax2.set_xticks(x, reviewers["reviewer"], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reviewers (red: flagged)", fontsize=9)
    _legend(ax, fontsize=7)
    ax2.set_title("seconds per item", fontsize=9)
    plots["reviewers"] = _png(fig)

    fig, axes = _figure(cols=2)
    ax, ax2 = axes[0]
    for reviewer, group in fatigue.groupby("reviewer") if len(fatigue) else []:
        ax.plot(group["positions"], group["review_seconds_per_item"], "-o", label=str(reviewer))
        scored = group[group["scored"] > 0]
        if len(scored):
            ax2.plot(scored["positions"], scored["accuracy"], "-o", label=str(reviewer))
    ax.set_title("seconds per item by position in session", fontsize=9)
    ax2.set_title("agreement / gold accuracy by position", fontsize=9)
    ax2.set_ylim(-0.02, 1.02)
    for a in (ax, ax2):
        a.tick_params(axis="x", labelsize=8)
        _legend(a, fontsize=7)
    plots["fatigue"] = _png(fig)

    fig, axes = _figure()
    ax = axes[0][0]
    drifted = set(drift.loc[drift["drifted"], "category"]) if len(drift) else set()
    if len(batch_category):
        order = list(dict.fromkeys(per_batch["batch"]))
        for category, group in batch_category.groupby("category"):
            group = group.set_index("batch").reindex(order)
            style = "-o" if category not in drifted else "-X"
            ax.plot(np.arange(len(order)), group["correction_rate"], style, linewidth=3 if category in drifted else 1.2,
                    label=f"{category} (drift)" if category in drifted else str(category))
        ax.set_xticks(np.arange(len(order)), order, rotation=20, ha="right", fontsize=8)
        _legend(ax, fontsize=7, ncol=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("correction rate per category", fontsize=9)
    plots["drift"] = _png(fig)
    return plots


def _image_md(name: str, png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def _md(frame: pd.DataFrame, empty: str = "none yet") -> dg.MetadataValue:
    if frame.empty:
        return dg.MetadataValue.md(empty)
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].round(3)
    return dg.MetadataValue.md(shown.to_markdown(index=False))


def _float(value) -> float:
    return float(value) if value is not None and pd.notna(value) else float("nan")


def _gold_truth(store: ObjectStore) -> pd.DataFrame:
    try:
        dataset = read_table(store, "correction_dataset")
    except FileNotFoundError:
        return pd.DataFrame(columns=["image_id", "truth_mask_key", "truth_batch"])
    gold = dataset[dataset["split"] == "gold"].drop_duplicates("image_id", keep="last")
    return pd.DataFrame({"image_id": gold["image_id"], "truth_mask_key": gold["mask_key"], "truth_batch": gold["batch"]})


def _levels(parts: list[tuple[str, pd.DataFrame, list[str]]]) -> pd.DataFrame:
    frames = []
    for level, frame, by in parts:
        if frame.empty:
            continue
        f = frame.copy()
        f["level"] = level
        key = f[by[0]].astype(str) if by else "all"
        for column in by[1:]:
            key = key + "/" + f[column].astype(str)
        f["key"] = key
        frames.append(f)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["level", "key"])
    front = ["level", "key", "day", "batch", "category", "reviewer"]
    for column in front:
        if column not in table.columns:
            table[column] = pd.NA
    return table[front + [c for c in table.columns if c not in front]]


def metrics_tables(
    queue: pd.DataFrame, all_decisions: pd.DataFrame, order: pd.DataFrame, truth: pd.DataFrame,
    iou: Callable[[str, str], float], config: MetricsConfig, break_after_items: int = 50,
) -> dict[str, pd.DataFrame]:
    """Every table of ``hitl_metrics`` from the routed images, the latest decisions, the batch order and the gold truth.

    Pure pandas (no store, no plots): linear in the number of images and decisions.
    Keys: status, pairs, scores, per_batch, per_day, per_category, batch_category, overall,
    reviewers, fatigue, drift and ``table`` (all levels in one frame, as the asset outputs).
    """
    method, confidence = config.interval, config.confidence
    # Only the routing columns the metrics read: at a million images the other columns (keys, signals) are most of the memory.
    queue = queue[[c for c in QUEUE_COLUMNS if c in queue.columns]] if len(queue) else queue
    decisions = all_decisions[all_decisions["kind"] != GOLD_KIND] if len(all_decisions) else all_decisions
    status = image_outcomes(queue, decisions) if len(queue) else pd.DataFrame()
    if len(status):
        status = status.merge(order[["batch", "day"]], on="batch", how="left")
        status["day"] = status["day"].fillna("unknown")
        status["scope"] = "all"
    decisions = decisions.merge(order[["batch", "day"]], on="batch", how="left") if len(decisions) else decisions

    pairs = review_pairs(all_decisions)
    if len(pairs):
        pairs["iou"] = np.array([iou(a, b) for a, b in zip(pairs["mask_a"], pairs["mask_b"])], dtype=float)
        pairs = pairs.merge(order[["batch", "day"]], on="batch", how="left")
        pairs["scope"] = "all"
    scores = gold_scores(all_decisions, truth, iou, config.gold_iou_threshold)

    def level(by: list[str]) -> pd.DataFrame:
        if status.empty:
            return pd.DataFrame(columns=[*by, *METRIC_COLUMNS, *AGREEMENT_COLUMNS])
        rates = summarise(status, decisions, by, method, confidence)
        agreement = agreement_metrics(pairs, by) if len(pairs) else pd.DataFrame(columns=[*by, *AGREEMENT_COLUMNS])
        return rates.merge(agreement, on=by, how="left")

    per_batch = level(["batch"])
    if len(per_batch):
        per_batch = per_batch.merge(order[["batch", "day", "order"]], on="batch", how="left").sort_values(["order", "batch"]).drop(columns="order")
    per_day = level(["day"])
    per_category = level(["category"])
    batch_category = level(["batch", "category"])
    overall = level(["scope"])
    reviewers, fatigue = reviewer_metrics(all_decisions, pairs, scores, config, break_after_items)
    drift = correction_drift(status, order, config) if len(status) else pd.DataFrame(columns=DRIFT_COLUMNS)
    table = _levels([
        ("overall", overall.drop(columns="scope", errors="ignore"), []),
        ("day", per_day, ["day"]),
        ("batch", per_batch, ["batch"]),
        ("category", per_category, ["category"]),
        ("batch_category", batch_category, ["batch", "category"]),
        ("reviewer", reviewers, ["reviewer"]),
        ("fatigue", fatigue, ["reviewer", "positions"]),
    ])
    return {
        "status": status, "pairs": pairs, "scores": scores, "per_batch": per_batch, "per_day": per_day,
        "per_category": per_category, "batch_category": batch_category, "overall": overall, "reviewers": reviewers,
        "fatigue": fatigue, "drift": drift, "table": table,
    }


# ----------------------------------------------------------------------------- the asset


@dg.asset(
    group_name="metrics",
    deps=["review_queue", "review_decisions"],
    check_specs=[dg.AssetCheckSpec(
        "correction_rate_drift", asset="hitl_metrics",
        description="Warns when a category's correction rate jumps in its latest batches against the batches before (a sign of new product types).",
    )],
)
def hitl_metrics(context: dg.AssetExecutionContext, config: MetricsConfig, object_store: ObjectStore, review_store: ReviewStore, tolerance_policy: TolerancePolicy):
    """Automation, corrections, review time, false negatives with 95 % intervals, agreement, reviewer accuracy, fatigue and drift."""
    method, confidence = config.interval, config.confidence
    queue = read_partitions(object_store, "review_queue", columns=QUEUE_COLUMNS) if table_partitions(object_store, "review_queue") else pd.DataFrame()
    all_decisions = review_store.latest_decisions()
    if len(queue) and len(all_decisions):
        batch_of = queue[["image_id", "batch"]].drop_duplicates("image_id", keep="last")
        missing = ~all_decisions["batch"].isin(set(queue["batch"]))
        if missing.any():  # tasks of batches whose queue table is gone: attribute by image
            all_decisions.loc[missing, "batch"] = all_decisions.loc[missing, "image_id"].map(batch_of.set_index("image_id")["batch"])
    order = batch_order(object_store, review_store.tasks())
    try:
        policy = tolerance_policy.load()
    except ValueError as err:  # metrics still run on history made under an earlier, valid policy
        context.log.warning(f"tolerance policy unreadable, using default review settings: {err}")
        policy = None
    break_after = policy.review.break_after_items if policy is not None else 50
    iou = MaskIoU(object_store)
    tables = metrics_tables(queue, all_decisions, order, _gold_truth(object_store), iou, config, break_after)
    iou.save()
    status, pairs, scores, drift = tables["status"], tables["pairs"], tables["scores"], tables["drift"]
    per_batch, per_day, per_category = tables["per_batch"], tables["per_day"], tables["per_category"]
    batch_category, overall, reviewers, fatigue, table = (
        tables["batch_category"], tables["overall"], tables["reviewers"], tables["fatigue"], tables["table"]
    )

    plots = metrics_plots(per_batch, per_category, overall, reviewers, fatigue, batch_category, drift)
    keys = {}
    for name, png in plots.items():
        keys[name] = object_store.put_bytes(f"{METRICS_PREFIX}/{name}.png", png, "image/png")
    for name, frame in (("hitl_metrics", table), ("reviewers", reviewers), ("drift", drift), ("gold_scores", scores)):
        keys[f"{name}_csv"] = object_store.put_bytes(f"{METRICS_PREFIX}/{name}.csv", frame.to_csv(index=False).encode("utf-8"), "text/csv")

    o = overall.iloc[0] if len(overall) else pd.Series(dtype=object)
    audited = int(o.get("audited", 0)) if len(o) else 0
    fn_text = (
        f"{_float(o.get('false_negative_rate')):.2%} [{_float(o.get('fn_low')):.2%}, {_float(o.get('fn_high')):.2%}] "
        f"({int(o.get('audit_failures', 0))} of {audited} audited auto-approvals needed a correction; {method} {confidence:.0%} interval)"
        if audited else f"no estimate yet [0.00%, 100.00%] (0 audited auto-approvals; {method} {confidence:.0%} interval)"
    )
    show = ["images", "automation_rate", "correction_rate", "review_seconds_per_item", "audited", "false_negative_rate", "fn_low", "fn_high", "pairs", "kappa", "mean_pair_iou"]
    drifted = drift[drift["drifted"]] if len(drift) else drift
    unknown_categories = sorted(set(status["category"].astype(str)) - set(policy.known_categories)) if len(status) and policy is not None else []
    metadata = {
        "batches": len(per_batch),
        "images": int(o.get("images", 0)) if len(o) else 0,
        "automation_rate": _float(o.get("automation_rate")) if len(o) else 0.0,
        "correction_rate": _float(o.get("correction_rate")) if len(o) else float("nan"),
        "false_negative_rate": _float(o.get("false_negative_rate")) if len(o) else float("nan"),
        "false_negative_interval": fn_text,
        "fn_low": _float(o.get("fn_low")) if len(o) else 0.0,
        "fn_high": _float(o.get("fn_high")) if len(o) else 1.0,
        "review_seconds_per_item": _float(o.get("review_seconds_per_item")) if len(o) else float("nan"),
        "kappa": _float(o.get("kappa")) if len(o) else float("nan"),
        "mean_pair_iou": _float(o.get("mean_pair_iou")) if len(o) else float("nan"),
        "double_reviewed_pairs": int(len(pairs)),
        "gold_scored_decisions": int(len(scores)),
        "reviewers_flagged": dg.MetadataValue.json(reviewers.loc[reviewers["flagged"], "reviewer"].tolist() if len(reviewers) else []),
        "drifting_categories": dg.MetadataValue.json(drifted["category"].tolist() if len(drifted) else []),
        "categories_not_in_policy": dg.MetadataValue.json(unknown_categories),
        "per_batch": _md(per_batch[["batch", "day", *show]] if len(per_batch) else per_batch, "no batches yet"),
        "per_day": _md(per_day[["day", *show]] if len(per_day) else per_day, "no batches yet"),
        "per_category": _md(per_category[["category", *show]] if len(per_category) else per_category, "no batches yet"),
        "reviewers": _md(reviewers[["reviewer", "decisions", "review_seconds_per_item", "approve_rate", "pairs", "pair_agreement", "kappa", "mean_pair_iou", "gold_items", "gold_accuracy", "fatigue_seconds_per_100", "fatigue_accuracy_drift", "flagged", "flag_reasons"]] if len(reviewers) else reviewers, "no decisions yet"),
        "drift": _md(drift, "no reviewed batches yet"),
        **{f"plot_{name}": _image_md(name, png) for name, png in plots.items()},
        "exports": dg.MetadataValue.json({name: f"{object_store.describe()}/{key}" for name, key in keys.items()}),
    }
    yield dg.Output(table, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="correction_rate_drift",
        passed=drifted.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drifting_categories": dg.MetadataValue.json(drifted["category"].tolist() if len(drifted) else []),
            "window": f"latest {config.drift_window_batches} batch(es) against the {config.drift_baseline_batches} before; jump >= {config.drift_min_jump:.0%}, Fisher p < {config.drift_p_value}",
            "drift": _md(drift, "no reviewed batches yet"),
        },
    )
