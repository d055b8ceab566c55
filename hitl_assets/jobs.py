"""Jobs: the steps of the loop that sensors and schedules launch."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=["raw_images", "ai_outputs", "review_queue"],
    description="A new batch: validate, run the champion model, route by the tolerance policy.",
)
review_complete_job = dg.define_asset_job(
    "review_complete_job",
    selection=["review_decisions", "published_images"],
    description="A fully reviewed batch: snapshot the decisions and publish what was approved.",
)
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=["correction_dataset", "segmentation_model"],
    description="Build the correction dataset and retrain; promotes only a model that beats the champion.",
)
catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=["hitl_metrics"],
    description="Nightly catalog metrics: automation, corrections, review time, audit false negatives.",
)
