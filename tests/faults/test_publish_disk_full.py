"""Fault: the publish location runs out of space mid-batch (ENOSPC).

The object store is the real local backend; only the operating system's answer changes: once the
publish folder has taken ``capacity`` bytes, every further write gets ``OSError(ENOSPC)`` part-way
through, after some bytes reached the disk (as a real full disk does). The run must fail with a
message that says so, leave no half-written file at the publish location, record nothing as
published that is not there, and publish exactly the approved images once space is back.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from unittest import mock

import dagster as dg
import pandas as pd
import pytest

import resources.object_store as object_store_module
from hitl_assets.assets.publish import published_images
from hitl_assets.assets.review import review_decisions
from hitl_assets.assets.routing import review_queue, review_task_rows
from ml.imageio import encode_jpeg
from resources import ObjectStore, ParquetIOManager
from resources.tables import read_table, write_table

pytestmark = pytest.mark.faults


DISK = {"capacity": -1}  # bytes the publish folder may hold; negative: unlimited (resources are frozen: state lives here)


class FullDiskStore(ObjectStore):
    """Local store whose ``published/`` folder holds at most ``DISK["capacity"]`` bytes."""

    def put_bytes(self, key, data, content_type=None):
        if DISK["capacity"] < 0 or not key.startswith("published/"):
            return super().put_bytes(key, data, content_type)
        used = sum(p.stat().st_size for p in Path(self.root, "published").rglob("*") if p.is_file())
        room = max(DISK["capacity"] - used, 0)
        real_fdopen = os.fdopen

        class Disk:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def write(self, chunk):
                nonlocal room
                if len(chunk) > room:
                    self.handle.write(chunk[:room])  # part of it lands, then the disk is full
                    self.handle.flush()
                    room = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                room -= len(chunk)
                return self.handle.write(chunk)

        with mock.patch.object(object_store_module.os, "fdopen", lambda fd, *a, **k: Disk(real_fdopen(fd, *a, **k))):
            return super().put_bytes(key, data, content_type)


def queue_for(store: ObjectStore, batch: str) -> pd.DataFrame:
    import numpy as np

    rows = []
    for i in range(6):
        rgb = np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        composite = store.put_bytes(f"outputs/{batch}/i{i}/composite.jpg", encode_jpeg(rgb, quality=90))
        rows.append({
            "image_id": f"i{i}", "sku": f"SKU {i}", "category": "shoe", "file": f"{i}.png", "image_key": f"originals/i{i}.png",
            "mask_key": f"outputs/{batch}/i{i}/mask.png", "composite_key": composite, "width": 128, "height": 96,
            "confidence": 0.9, "boundary_uncertainty": 0.1, "mask_area_fraction": 0.3, "connected_components": 1, "colour_distance": 1.0,
            "route": "escalate" if i in (4, 5) else "auto_approve", "reasons": "low_confidence" if i in (4, 5) else "",
            "audit": False, "double_review": False, "policy_version": "p1", "model_version": "1",
        })
    return pd.DataFrame(rows)


def test_publish_location_full_fails_clearly_and_marks_nothing_unpublished(tmp_path, review_store, hitl_resources, instance, fault_report):
    batch = "full-1"
    DISK["capacity"] = -1
    store = FullDiskStore(root=str(tmp_path / "objects"))
    queue = queue_for(store, batch)
    write_table(store, "review_queue", queue, batch)
    review_store.create_tasks(review_task_rows(batch, queue))
    for task in review_store.claim("ann", 10):
        review_store.record_decision(task.id, "ann", "reject" if task.image_id == "i5" else "approve", seconds=2.0)
    approved = {f"i{i}" for i in range(5)}
    sizes = [len(store.get_bytes(k)) for k in queue["composite_key"]]
    DISK["capacity"] = sizes[0] + sizes[1] + 100  # room for the first two files and a bit: the third write fills the disk

    resources = {**hitl_resources, "object_store": store, "io_manager": ParquetIOManager(object_store=store)}
    instance.add_dynamic_partitions("batches", [batch])

    def publish():
        return dg.materialize([*review_queue.to_source_assets(), review_decisions, published_images], partition_key=batch, resources=resources, instance=instance, raise_on_error=False)

    failed = publish()
    failure = next((e for e in failed.all_events if e.is_step_failure), None)
    message = failure.step_failure_data.error.message if failure else ""
    on_disk = sorted(p for p in Path(store.root, "published").rglob("*") if p.is_file())
    sources = {f"published/{batch}/SKU_{i}__i{i}.jpg": store.get_bytes(f"outputs/{batch}/i{i}/composite.jpg") for i in range(6)}
    whole = all(p.read_bytes() == sources.get(p.relative_to(store.root).as_posix()) for p in on_disk)  # no torn or temporary files
    recorded = instance.get_latest_materialization_event(dg.AssetKey("published_images"))
    table_written = store.exists(f"tables/published_images/{batch}.parquet")
    first_ok = (not failed.success) and "No space left on device" in message and "Nothing was recorded as published" in message
    first_ok = first_ok and whole and recorded is None and not table_written and len(on_disk) == 2

    # Space is back: the re-run publishes exactly the approved images, once.
    DISK["capacity"] = -1
    again = publish()
    published = read_table(store, "published_images", batch) if again.success else pd.DataFrame(columns=["image_id", "final_status", "published_key"])
    present = {e.key for e in store.list(f"published/{batch}/")}
    marked = set(published.loc[published["published_key"] != "", "published_key"])
    wanted = {f"published/{batch}/SKU_{i[1:]}__{i}.jpg" for i in sorted(approved)}
    lost = len(wanted - present) + len(marked - present)
    duplicated = len(present - wanted)
    survived = first_ok and again.success and lost == 0 and duplicated == 0 and marked == wanted
    fault_report("publish_location_disk_full", survived=survived, lost=lost, duplicated=duplicated)

    assert not failed.success and "No space left on device" in message and "Nothing was recorded as published" in message, message
    assert whole and len(on_disk) == 2, on_disk
    assert not list(Path(store.root, "published").rglob(".tmp-*"))
    assert recorded is None and not table_written
    assert again.success and marked == wanted == present
    assert f"published/{batch}/SKU_5__i5.jpg" not in present  # the rejected image, never
    assert all(store.get_bytes(k) == sources[k] for k in present)
