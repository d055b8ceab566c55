"""hitl_metrics: how the loop is doing: automation, corrections, review time, audit false negatives."""

import dagster as dg
import pandas as pd

from hitl_assets.assets.publish import final_status
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore
from resources.tables import read_partitions

METRIC_COLUMNS = [
    "images", "auto_approved", "escalated", "automation_rate", "reviewed_images", "corrected", "rejected",
    "correction_rate", "review_seconds_per_item", "audited", "audit_failures", "false_negative_rate",
]


def loop_metrics(queue: pd.DataFrame, decisions: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: automation rate, correction rate among reviewed images, seconds per review, audit false-negative rate."""
    if queue.empty:
        return pd.DataFrame(columns=[*by, *METRIC_COLUMNS])
    status = final_status(queue, decisions)
    per_image = decisions.groupby("image_id").agg(
        human_corrected=("decision", lambda d: bool((d == "correct").any())),
        human_rejected=("decision", lambda d: bool((d == "reject").any())),
    ) if len(decisions) else pd.DataFrame(columns=["human_corrected", "human_rejected"])
    status = status.merge(per_image, left_on="image_id", right_index=True, how="left")
    status["reviewed"] = status["final_status"].isin(["approved_human", "approved_corrected", "rejected"])
    status["corrected"] = status["reviewed"] & status["human_corrected"].fillna(False).astype(bool)
    status["rejected_flag"] = status["final_status"] == "rejected"
    status["auto"] = status["route"] == "auto_approve"
    status["audited"] = status["auto"] & status["audit"].astype(bool) & status["reviewed"]
    # An audited auto-approval that a reviewer had to correct or reject is a false negative of the policy.
    status["audit_failure"] = status["audited"] & (status["corrected"] | status["rejected_flag"])
    grouped = status.groupby(by)
    out = pd.DataFrame({
        "images": grouped.size(),
        "auto_approved": grouped["auto"].sum(),
        "escalated": grouped["auto"].apply(lambda s: int((~s).sum())),
        "reviewed_images": grouped["reviewed"].sum(),
        "corrected": grouped["corrected"].sum(),
        "rejected": grouped["rejected_flag"].sum(),
        "audited": grouped["audited"].sum(),
        "audit_failures": grouped["audit_failure"].sum(),
    })
    out["automation_rate"] = out["auto_approved"] / out["images"]
    out["correction_rate"] = (out["corrected"] / out["reviewed_images"]).where(out["reviewed_images"] > 0)
    out["false_negative_rate"] = (out["audit_failures"] / out["audited"]).where(out["audited"] > 0)
    if len(decisions):
        seconds = decisions.merge(status[["image_id", *[c for c in by if c != "image_id"]]].drop_duplicates("image_id"), on="image_id", how="inner", suffixes=("_d", ""))
        out["review_seconds_per_item"] = seconds.groupby(by)["seconds"].mean()
    else:
        out["review_seconds_per_item"] = float("nan")
    return out.reset_index()[[*by, *METRIC_COLUMNS]]


@dg.asset(group_name="metrics", deps=["review_queue", "review_decisions"])
def hitl_metrics(context: dg.AssetExecutionContext, object_store: ObjectStore, review_store: ReviewStore) -> dg.Output[pd.DataFrame]:
    """Correction rate, automation rate, review seconds per item and audit false-negative rate, per batch and per category."""
    queue = read_partitions(object_store, "review_queue")
    decisions = review_store.latest_decisions()
    if len(queue) and "batch" in decisions.columns:
        decisions = decisions.drop(columns=["batch"]).merge(queue[["image_id", "batch"]].drop_duplicates("image_id"), on="image_id", how="left")
    per_batch = loop_metrics(queue, decisions, ["batch"]).assign(level="batch")
    per_category = loop_metrics(queue, decisions, ["category"]).assign(level="category")
    overall = loop_metrics(queue.assign(scope="all"), decisions, ["scope"]).assign(level="overall")
    table = pd.concat([per_batch, per_category, overall], ignore_index=True)
    overall_row = overall.iloc[0] if len(overall) else None
    show = ["batch", "images", "automation_rate", "correction_rate", "review_seconds_per_item", "false_negative_rate"]
    return dg.Output(
        table,
        metadata={
            "batches": len(per_batch),
            "automation_rate": float(overall_row["automation_rate"]) if overall_row is not None else 0.0,
            "correction_rate": float(overall_row["correction_rate"]) if overall_row is not None and pd.notna(overall_row["correction_rate"]) else 0.0,
            "false_negative_rate": float(overall_row["false_negative_rate"]) if overall_row is not None and pd.notna(overall_row["false_negative_rate"]) else 0.0,
            "per_batch": dg.MetadataValue.md(per_batch[show].round(3).to_markdown(index=False) if len(per_batch) else "no batches yet"),
            "per_category": dg.MetadataValue.md(per_category[["category", *show[1:]]].round(3).to_markdown(index=False) if len(per_category) else "no batches yet"),
        },
    )
