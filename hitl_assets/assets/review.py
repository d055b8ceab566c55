"""review_decisions: the batch's human decisions, read from the review store (latest event per task)."""

import dagster as dg
import pandas as pd

from hitl_assets.partitions import batches
from resources.review_store import ReviewStore


@dg.asset(partitions_def=batches, group_name="review", deps=["review_queue"])
def review_decisions(context: dg.AssetExecutionContext, review_store: ReviewStore) -> dg.Output[pd.DataFrame]:
    """Snapshot of the batch's decisions: approve / reject / corrected mask, failure mode, reviewer, seconds spent."""
    decisions = review_store.latest_decisions(batch=context.partition_key)
    decisions["decided_at"] = decisions["decided_at"].astype(str)
    tasks = review_store.tasks(batch=context.partition_key)
    counts = decisions["decision"].value_counts().to_dict()
    return dg.Output(
        decisions,
        metadata={
            "decisions": len(decisions),
            "tasks": len(tasks),
            "open_tasks": int(tasks["status"].isin(["open", "claimed"]).sum()),
            "approved": int(counts.get("approve", 0)),
            "corrected": int(counts.get("correct", 0)),
            "rejected": int(counts.get("reject", 0)),
            "mean_review_seconds": float(decisions["seconds"].mean()) if len(decisions) else 0.0,
            "reviewers": dg.MetadataValue.json(decisions["reviewer"].value_counts().to_dict()),
            "review_store": review_store.describe(),
        },
    )
