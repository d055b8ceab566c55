"""review_queue: the tolerance policy applied to every AI output: auto-approve or escalate, with reasons."""

import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.partitions import batches
from hitl_assets.rescore import mark_rescored
from ml.policy import route, sample_uniform
from resources.object_store import ObjectStore
from resources.policy import TolerancePolicy
from resources.tables import read_table

GOLD_KIND = "gold"  # hidden known-truth check; looks like an audit to the reviewer
GOLD_SLOT = 2


def _task_row(batch: str, item: dict, kind: str, slot: int, key: str) -> dict:
    signals = {name: round(float(item[name]), 4) for name in ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")}
    return {
        "task_key": f"{batch}:{item['image_id']}:{key}",
        "batch": batch,
        "image_id": item["image_id"],
        "kind": kind,
        "slot": slot,
        "sku": str(item["sku"]),
        "category": str(item["category"]),
        "file": str(item["file"]),
        "image_key": item["image_key"],
        "mask_key": item["mask_key"],
        "composite_key": item["composite_key"],
        "width": int(item["width"]),
        "height": int(item["height"]),
        "reasons": item["reasons"],
        "signals": pd.Series(signals).to_json(),
        "policy_version": item["policy_version"],
        "model_version": str(item["model_version"]),
    }


def review_task_rows(batch: str, queue: pd.DataFrame) -> list[dict]:
    """Review tasks for a routed batch: escalated and audit items, two slots for double review, hidden gold checks.

    A gold item (``gold`` column, see :func:`mark_gold`) gets one more task of kind ``gold``
    (slot 2): to the reviewer it looks like an audit; its answer is scored against the known truth.
    """
    wanted = queue[(queue["route"] == "escalate") | queue["audit"]]
    rows = []
    for item in wanted.to_dict("records"):
        kind = "escalation" if item["route"] == "escalate" else "audit"
        for slot in range(2 if item["double_review"] else 1):
            rows.append(_task_row(batch, item, kind, slot, str(slot)))
    if "gold" in queue.columns:
        for item in queue[queue["gold"].fillna(False).astype(bool)].to_dict("records"):
            rows.append(_task_row(batch, item, GOLD_KIND, GOLD_SLOT, GOLD_KIND))
    return rows


def gold_truth(object_store: ObjectStore, batch: str) -> pd.DataFrame:
    """Images whose true mask is known from an earlier batch's review: the correction dataset's gold split.

    Columns ``image_id`` and ``truth_mask_key``; empty before the first correction dataset.
    Items reviewed in ``batch`` itself are left out (a re-scored batch must not check people
    against their own answers).
    """
    try:
        dataset = read_table(object_store, "correction_dataset")
    except FileNotFoundError:
        return pd.DataFrame({"image_id": pd.Series(dtype=str), "truth_mask_key": pd.Series(dtype=str)})
    gold = dataset[(dataset["split"] == "gold") & (dataset["batch"].astype(str) != batch)]
    return gold.drop_duplicates("image_id", keep="last")[["image_id", "mask_key"]].rename(columns={"mask_key": "truth_mask_key"})


def mark_gold(queue: pd.DataFrame, truth: pd.DataFrame, gold_check_rate: float) -> pd.DataFrame:
    """Columns ``gold`` and ``gold_truth_key``: known-truth items that no person would otherwise see.

    An item is a gold check when its image has a known truth mask, the policy auto-approves it
    without an audit, and its stable hash draw is under ``gold_check_rate``. Known-truth items
    that are escalated or audited need no extra task: the metrics score those reviews against
    the truth as they are.
    """
    queue = queue.copy()
    truth_keys = truth.set_index("image_id")["truth_mask_key"] if len(truth) else pd.Series(dtype=str)
    known = queue["image_id"].isin(truth_keys.index)
    unseen = (queue["route"] == "auto_approve") & ~queue["audit"].astype(bool)
    drawn = sample_uniform(queue["image_id"], "gold") < gold_check_rate if len(queue) else np.zeros(0, dtype=bool)
    queue["gold"] = (known & unseen & drawn).astype(bool)
    queue["gold_truth_key"] = queue["image_id"].map(truth_keys).where(queue["gold"], "").fillna("").astype(str)
    return queue


@dg.asset(
    partitions_def=batches,
    group_name="routing",
    check_specs=[dg.AssetCheckSpec("every_item_routed", asset="review_queue", description="Each AI output got a route, escalations carry reason codes, and the policy version is recorded.")],
)
def review_queue(context: dg.AssetExecutionContext, ai_outputs: pd.DataFrame, tolerance_policy: TolerancePolicy, object_store: ObjectStore):
    """Auto-approve or escalate each image under the YAML tolerance policy; audit, double-review and hidden gold samples chosen here."""
    policy = tolerance_policy.load()
    try:  # a re-run after a new champion: what the previous model escalated and this one does not is 'rescored'
        previous = read_table(object_store, "review_queue", context.partition_key)
    except FileNotFoundError:
        previous = None
    queue = mark_rescored(previous, route(ai_outputs, policy))
    queue = mark_gold(queue, gold_truth(object_store, context.partition_key), policy.gold_check_rate)
    escalated = queue["route"] == "escalate"
    reasons = queue.loc[escalated, "reasons"].str.split(";").explode().value_counts()
    yield dg.Output(
        queue,
        metadata={
            "policy": policy.name,
            "policy_version": policy.version,
            "images": len(queue),
            "auto_approved": int((~escalated).sum()),
            "escalated": int(escalated.sum()),
            "automation_rate": float((~escalated).mean()) if len(queue) else 0.0,
            "audit_items": int(queue["audit"].sum()),
            "double_review_items": int(queue["double_review"].sum()),
            "gold_checks": int(queue["gold"].sum()),
            "rescored": int(queue["rescored"].sum()),
            "escalation_reasons": dg.MetadataValue.json({str(k): int(v) for k, v in reasons.items()}),
        },
    )
    yield dg.AssetCheckResult(
        check_name="every_item_routed",
        passed=bool(
            len(queue) == len(ai_outputs)
            and queue["route"].isin(["auto_approve", "escalate"]).all()
            and (queue.loc[escalated, "reasons"] != "").all()
            and (queue["policy_version"] == policy.version).all()
        ),
    )
