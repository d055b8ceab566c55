"""The whole product on one screen: assets, checks, jobs, sensors, schedules and resources."""

import dagster as dg

from hitl_assets.assets.dataset import correction_dataset
from hitl_assets.assets.inference import ai_outputs
from hitl_assets.assets.ingest import raw_images
from hitl_assets.assets.metrics import hitl_metrics
from hitl_assets.assets.publish import published_images
from hitl_assets.assets.review import review_decisions
from hitl_assets.assets.routing import review_queue
from hitl_assets.assets.training import segmentation_model
from hitl_assets.jobs import catalog_job, ingest_job, retrain_job, review_complete_job
from hitl_assets.schedules import nightly_catalog, nightly_retraining
from hitl_assets.sensors import inbox_sensor, rescore_sensor, review_completion_sensor, review_task_sensor
from resources import resources_from_env



def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The product's definitions; resources default to the environment's (embedded defaults under .hitl/)."""
    return dg.Definitions(
        assets=[
            # per batch: inbox -> model -> policy -> people -> publish
            raw_images, ai_outputs, review_queue, review_decisions, published_images,
            # across batches: corrections -> retraining -> measurement
            correction_dataset, segmentation_model, hitl_metrics,
        ],
        jobs=[ingest_job, review_complete_job, retrain_job, catalog_job],
        sensors=[inbox_sensor, review_task_sensor, review_completion_sensor, rescore_sensor],
        schedules=[nightly_retraining, nightly_catalog],
        resources=resources if resources is not None else resources_from_env(),
    )


defs = build_definitions()
