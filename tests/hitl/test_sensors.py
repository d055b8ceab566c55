"""Sensors evaluated with built contexts against real embedded stores."""

import json

import dagster as dg
import pandas as pd

from hitl_assets.definitions import build_definitions
from hitl_assets.sensors import inbox_sensor, review_completion_sensor, review_task_sensor
from resources.tables import write_table


def tick(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor, resources=resources, definitions=build_definitions(resources)) as context:
        return sensor.evaluate_tick(context)


def test_inbox_sensor_waits_for_a_stable_folder_then_requests_one_run(object_store, hitl_resources, instance):
    resources = hitl_resources
    object_store.put_bytes("inbox/drop-1/a.png", b"a")
    object_store.put_bytes("inbox/bad name!/a.png", b"a")
    first = tick(inbox_sensor, instance, resources)
    assert not first.run_requests  # first sight: could still be uploading
    object_store.put_bytes("inbox/drop-1/b.png", b"bb")  # still arriving
    second = tick(inbox_sensor, instance, resources, first.cursor)
    assert not second.run_requests
    third = tick(inbox_sensor, instance, resources, second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["drop-1"]
    assert third.dynamic_partitions_requests[0].partition_keys == ["drop-1"]
    instance.add_dynamic_partitions("batches", ["drop-1"])
    fourth = tick(inbox_sensor, instance, resources, third.cursor)
    assert not fourth.run_requests  # a known batch is never ingested twice


def routed_queue():
    return pd.DataFrame({
        "image_id": ["i1", "i2", "i3", "i4"], "sku": ["s1", "s2", "s3", "s4"], "category": ["shoe"] * 4,
        "file": ["1.png", "2.png", "3.png", "4.png"], "image_key": ["o/1"] * 4, "mask_key": ["m/1"] * 4,
        "composite_key": ["c/1"] * 4, "width": [10] * 4, "height": [10] * 4,
        "confidence": [0.5, 0.99, 0.99, 0.6], "boundary_uncertainty": [0.1] * 4, "mask_area_fraction": [0.3] * 4,
        "connected_components": [1] * 4, "colour_distance": [1.0] * 4,
        "route": ["escalate", "auto_approve", "auto_approve", "escalate"], "reasons": ["low_confidence", "", "", "low_confidence"],
        "audit": [False, True, False, False], "double_review": [False, False, False, True],
        "policy_version": ["p1"] * 4, "model_version": ["1"] * 4,
    })


def test_review_task_sensor_creates_tasks_once_per_routed_batch(object_store, review_store, hitl_resources, instance):
    write_table(object_store, "review_queue", routed_queue(), "b1")
    instance.report_runless_asset_event(dg.AssetMaterialization("review_queue", partition="b1"))
    resources = hitl_resources
    result = tick(review_task_sensor, instance, resources)
    tasks = review_store.tasks(batch="b1")
    # i1 escalated, i2 audit, i4 escalated with double review (two slots); i3 auto-approved, not audited
    assert sorted(zip(tasks.image_id, tasks.slot, tasks.kind)) == [("i1", 0, "escalation"), ("i2", 0, "audit"), ("i4", 0, "escalation"), ("i4", 1, "escalation")]
    again = tick(review_task_sensor, instance, resources, result.cursor)
    assert len(review_store.tasks(batch="b1")) == 4
    # re-reading from scratch creates nothing twice either
    tick(review_task_sensor, instance, resources, None)
    assert len(review_store.tasks(batch="b1")) == 4
    assert again.cursor == result.cursor


def test_review_completion_sensor_fires_when_every_task_is_decided(object_store, review_store, hitl_resources, instance):
    instance.add_dynamic_partitions("batches", ["b1"])
    write_table(object_store, "review_queue", routed_queue(), "b1")
    resources = hitl_resources
    assert not tick(review_completion_sensor, instance, resources).run_requests  # no tasks created yet
    instance.report_runless_asset_event(dg.AssetMaterialization("review_queue", partition="b1"))
    tick(review_task_sensor, instance, resources)
    for reviewer in ("ann", "bob"):
        for task in review_store.claim(reviewer, 10):
            assert not tick(review_completion_sensor, instance, resources).run_requests
            review_store.record_decision(task.id, reviewer, "approve", seconds=3)
    done = tick(review_completion_sensor, instance, resources)
    assert [r.partition_key for r in done.run_requests] == ["b1"]
    assert not tick(review_completion_sensor, instance, resources, done.cursor).run_requests
    assert json.loads(done.cursor)["b1"]


def test_the_code_location_loads_without_torch_or_mlflow():
    """Sensors, schedules and the non-ML assets' step processes load the definitions: the heavy ML
    libraries are imported only by the assets that run a model (ai_outputs, segmentation_model)."""
    import subprocess
    import sys

    heavy = ("torch", "torchvision", "mlflow", "albumentations", "matplotlib")
    code = f"import sys, hitl_assets.definitions; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing hitl_assets.definitions imported {loaded}"
