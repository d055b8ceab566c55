"""review_queue: the tolerance policy applied to every AI output: auto-approve or escalate, with reasons."""

import dagster as dg
import pandas as pd

from hitl_assets.partitions import batches
from hitl_assets.rescore import mark_rescored
from ml.policy import route
from resources.object_store import ObjectStore
from resources.policy import TolerancePolicy
from resources.tables import read_table


def review_task_rows(batch: str, queue: pd.DataFrame) -> list[dict]:
    """Review tasks for a routed batch: escalated and audit items, two slots for double review."""
    wanted = queue[(queue["route"] == "escalate") | queue["audit"]]
    rows = []
    for item in wanted.to_dict("records"):
        kind = "escalation" if item["route"] == "escalate" else "audit"
        signals = {name: round(float(item[name]), 4) for name in ("confidence", "boundary_uncertainty", "mask_area_fraction", "connected_components", "colour_distance")}
        for slot in range(2 if item["double_review"] else 1):
            rows.append(
                {
                    "task_key": f"{batch}:{item['image_id']}:{slot}",
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
            )
    return rows


@dg.asset(
    partitions_def=batches,
    group_name="routing",
    check_specs=[dg.AssetCheckSpec("every_item_routed", asset="review_queue", description="Each AI output got a route, escalations carry reason codes, and the policy version is recorded.")],
)
def review_queue(context: dg.AssetExecutionContext, ai_outputs: pd.DataFrame, tolerance_policy: TolerancePolicy, object_store: ObjectStore):
    """Auto-approve or escalate each image under the YAML tolerance policy; audit and double-review samples chosen here."""
    policy = tolerance_policy.load()
    try:  # a re-run after a new champion: what the previous model escalated and this one does not is 'rescored'
        previous = read_table(object_store, "review_queue", context.partition_key)
    except FileNotFoundError:
        previous = None
    queue = mark_rescored(previous, route(ai_outputs, policy))
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
