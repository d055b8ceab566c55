"""Decisions made in the review app flow through the pipeline: review_decisions (latest event per task),
published_images (corrected masks re-rendered at full size, rejections withheld) and correction_dataset."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.assets.dataset import correction_dataset
from hitl_assets.assets.routing import review_task_rows
from hitl_assets.definitions import build_definitions
from hitl_assets.loop import LoopRunner
from hitl_assets.review_app.synthetic import synthetic_images
from ml.imageio import decode_mask, encode_jpeg, encode_png
from resources.tables import read_table, write_table

BATCH = "app-batch"
W, H = 900, 600  # shown on a 450 x 300 preview (display_side=450): corrections are merged to full size


def routed_batch(object_store) -> pd.DataFrame:
    """A routed batch as ingest -> ai_outputs -> review_queue leaves it: 4 escalated images, one double-reviewed."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(4):
        rgb, ai, composite = synthetic_images(W, H, rng)
        image_id = f"app{i:04d}"
        base = f"outputs/{image_id}/v1"
        rows.append({
            "image_id": image_id, "batch": BATCH, "sku": f"SKU-{i}", "category": "bag", "file": f"{image_id}.jpg",
            "image_key": object_store.put_bytes(f"originals/{image_id}.jpg", encode_jpeg(rgb), "image/jpeg"),
            "mask_key": object_store.put_bytes(f"{base}/mask.png", encode_png(ai), "image/png"),
            "cutout_key": f"{base}/cutout.png",
            "composite_key": object_store.put_bytes(f"{base}/composite.jpg", encode_jpeg(composite), "image/jpeg"),
            "width": W, "height": H, "confidence": 0.6, "boundary_uncertainty": 0.4, "mask_area_fraction": 0.2,
            "connected_components": 1, "colour_distance": 5.0, "route": "escalate", "reasons": "low_confidence",
            "audit": False, "double_review": i == 2, "gold": False, "policy_version": "p-test", "model_version": "1",
        })
    return pd.DataFrame(rows)


def test_app_decisions_reach_review_decisions_published_images_and_the_dataset(tmp_path, review_env, login, make_policy, hitl_resources, instance):
    object_store, review_store = hitl_resources["object_store"], hitl_resources["review_store"]
    queue = routed_batch(object_store)
    write_table(object_store, "review_queue", queue, BATCH)
    instance.add_dynamic_partitions("batches", [BATCH])
    assert review_store.create_tasks(review_task_rows(BATCH, queue)) == 5
    runner = LoopRunner(build_definitions(hitl_resources), instance, tmp_path / "cursors.json")
    assert runner.tick("review_completion_sensor") == []  # people still working: nothing published

    make_app, _seed = review_env
    app = make_app(make_policy(batch_size=10), display_side=450)
    rita, sam = login(app, "rita"), login(app, "sam")
    tasks = review_store.tasks(batch=BATCH).set_index("id")
    ritas = rita.claim()
    assert len(ritas) == 4  # never both slots of the double-reviewed image
    by_image = {tasks.loc[t, "image_id"]: t for t in ritas}

    # app0000: rejected, then the reviewer changes their mind and approves: the latest event counts.
    assert rita.decide(by_image["app0000"], "reject").status_code == 200
    assert rita.decide(by_image["app0000"], "approve", failure_modes=["edge_halo"]).status_code == 200
    # app0001: a mask painted on the preview (a square of product added top left).
    shown = decode_mask(rita.get(f"/img/{by_image['app0001']}/mask").content)
    assert shown.shape == (300, 450)
    painted = shown.copy()
    painted[10:40, 10:60] = 255
    answer = rita.post(
        f"/api/tasks/{by_image['app0001']}/correction",
        files={"mask": ("mask.png", encode_png(painted), "image/png")}, data={"failure_modes": "missing_part", "seconds": "12"},
    )
    assert answer.status_code == 200, answer.text
    corrected_key = answer.json()["corrected_mask_key"]
    # app0002: double review, rita and sam both approve. app0003: rejected.
    assert rita.decide(by_image["app0002"], "approve").status_code == 200
    assert rita.decide(by_image["app0003"], "reject", failure_modes=["background_residue"]).status_code == 200
    second = sam.claim()
    assert [tasks.loc[t, "image_id"] for t in second] == ["app0002"]
    assert sam.decide(second[0], "approve").status_code == 200

    # The completion sensor sees the finished batch and runs review_decisions + published_images.
    runs = runner.tick("review_completion_sensor")
    assert len(runs) == 1 and runs[0].is_success

    decisions = read_table(object_store, "review_decisions", BATCH).set_index("task_id")
    assert len(decisions) == 5
    assert decisions.loc[by_image["app0000"], "decision"] == "approve"  # latest of two events
    assert decisions.loc[by_image["app0000"], "failure_mode"] == "edge_halo"
    assert len(review_store.task_events(by_image["app0000"])) == 2  # the reject is still on record
    assert decisions.loc[by_image["app0001"], "corrected_mask_key"] == corrected_key

    published = read_table(object_store, "published_images", BATCH).set_index("image_id")
    assert published["final_status"].to_dict() == {
        "app0000": "approved_human", "app0001": "approved_corrected", "app0002": "approved_human", "app0003": "rejected",
    }
    on_disk = {entry.key for entry in object_store.list(f"published/{BATCH}/")}
    assert on_disk == set(published.loc[published["published_key"] != "", "published_key"]) and len(on_disk) == 3
    assert published.loc["app0001", "corrected_mask_key"] == corrected_key
    # The corrected image was re-rendered at full size from the reviewer's mask.
    final_mask = decode_mask(object_store.get_bytes(corrected_key.rsplit(".", 1)[0] + "-final-mask.png"))
    assert final_mask.shape == (H, W)
    ai = decode_mask(object_store.get_bytes(queue.loc[1, "mask_key"]))
    assert ai[30:70, 30:110].max() == 0 and final_mask[30:70, 30:110].min() == 255  # the painted square, full size
    composite = object_store.get_bytes(published.loc["app0001", "published_key"])
    assert composite != object_store.get_bytes(queue.loc[1, "composite_key"])

    # The correction dataset takes the correction and the approvals, never the rejection.
    result = dg.materialize([correction_dataset], resources=hitl_resources)
    assert result.success
    dataset = read_table(object_store, "correction_dataset").set_index("image_id")
    assert set(dataset.index) == {"app0000", "app0001", "app0002"}
    assert dataset.loc["app0001", "source"] == "corrected" and dataset.loc["app0001", "mask_key"] == corrected_key
    assert dataset.loc["app0000", "source"] == "verified"
