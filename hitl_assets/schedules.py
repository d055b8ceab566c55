"""Schedules: nightly retraining and the nightly catalog job, unattended."""

import dagster as dg

from hitl_assets.jobs import catalog_job, retrain_job

nightly_retraining = dg.ScheduleDefinition(
    name="nightly_retraining",
    job=retrain_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild the correction dataset and fine-tune the champion; promotion only if it beats it on gold.",
)
nightly_catalog = dg.ScheduleDefinition(
    name="nightly_catalog",
    job=catalog_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Recompute the loop's metrics across every batch.",
)
