"""ai_outputs streams chunks through the model (issue 8): results do not depend on the chunking, memory is bounded by it."""

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest

import hitl_assets.assets.inference as inference
from hitl_assets.assets.inference import STAGES, StageTimer, ai_outputs, encode_png_fast
from hitl_assets.assets.ingest import raw_images
from hitl_assets.partitions import batches
from ml.imageio import decode_mask, encode_jpeg
from ml.model import build_model
from ml.synthetic import generate_item
from resources import ParquetIOManager
from resources.tables import write_table

SIZES = [(96, 96), (160, 120), (64, 200), (300, 220), (128, 128)]


@pytest.fixture
def batch_with_champion(object_store, model_registry):
    import torch

    torch.manual_seed(0)
    model_registry.activate()
    with mlflow.start_run(run_name="test-champion"):
        version = model_registry.log_model(build_model().eval(), 64, tags={"gold_iou": "0", "mode": "test"})
    model_registry.promote(version, "test champion", actor="test")
    records = []
    for i, (width, height) in enumerate(SIZES):
        import cv2

        image = cv2.resize(generate_item(i, seed=3, max_side=max(width, height)).image, (width, height))
        key = f"originals/b1/{i}.jpg"
        data = encode_jpeg(image, quality=90)
        object_store.put_bytes(key, data, "image/jpeg")
        records.append({"image_id": f"img-{i}", "file": f"{i}.jpg", "also_named": "", "sku": f"SKU{i}", "category": "shoe",
                        "status": "accepted", "reason": "", "detail": "", "width": width, "height": height, "format": "JPEG",
                        "bytes": len(data), "image_key": key})
    write_table(object_store, "raw_images", pd.DataFrame.from_records(records), "b1")
    return version


def _materialize(object_store, model_registry, **config):
    resources = {"object_store": object_store, "model_registry": model_registry, "io_manager": ParquetIOManager(object_store=object_store)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["b1"])
        result = dg.materialize([raw_images, ai_outputs], selection=[ai_outputs], partition_key="b1", resources=resources,
                                instance=instance, run_config={"ops": {"ai_outputs": {"config": config}}})
        assert result.success
        frame = result.output_for_node("ai_outputs")
        metadata = {k: v.value for k, v in result.asset_materializations_for_node("ai_outputs")[0].metadata.items()}
    return frame.sort_values("image_id").reset_index(drop=True), metadata


def test_outputs_do_not_depend_on_chunking_or_decoding_path(object_store, model_registry, batch_with_champion, monkeypatch):
    whole, metadata = _materialize(object_store, model_registry, batch_size=16)
    masks = {key: decode_mask(object_store.get_bytes(key)) for key in whole["mask_key"]}
    # chunks of 2 over 2 lanes, and the two-pass decoding of large photos for all but the smallest
    monkeypatch.setattr(inference, "DECODE_ONCE_PIXELS", 10_000)
    chunked, _ = _materialize(object_store, model_registry, batch_size=2, workers=2)
    assert list(chunked["image_id"]) == [f"img-{i}" for i in range(len(SIZES))]
    assert (chunked[["mask_width", "mask_height"]].to_numpy() == np.array(SIZES)).all()
    for key in chunked["mask_key"]:
        assert np.array_equal(decode_mask(object_store.get_bytes(key)), masks[key])
    # the model input of a photo decoded in JPEG draft mode differs from a full decode by rounding only
    for column in ("confidence", "boundary_uncertainty", "mask_area_fraction", "colour_distance"):
        np.testing.assert_allclose(chunked[column].to_numpy(float), whole[column].to_numpy(float), atol=2e-3)
    assert (chunked["mask_pixels"] == whole["mask_pixels"]).all()
    assert set(metadata["stage_seconds"]) == set(STAGES)
    assert metadata["images"] == len(SIZES) and metadata["images_per_second"] > 0


def test_each_lane_holds_one_chunk_at_a_time(object_store, model_registry, batch_with_champion, monkeypatch):
    decoded, finished, most = [0], [0], [0]
    real_load, real_render = inference.load_rgb, inference.render_outputs

    def load(*args, **kwargs):
        decoded[0] += 1
        most[0] = max(most[0], decoded[0] - finished[0])
        return real_load(*args, **kwargs)

    def render(*args, **kwargs):
        out = real_render(*args, **kwargs)
        finished[0] += 1
        return out

    monkeypatch.setattr(inference, "load_rgb", load)
    monkeypatch.setattr(inference, "render_outputs", render)
    frame, metadata = _materialize(object_store, model_registry, batch_size=1, workers=2)
    assert len(frame) == len(SIZES) and finished[0] == len(SIZES)
    # two lanes, each decoding, predicting and rendering one single-image chunk: never the whole batch at once
    assert metadata["lanes"] == 2
    assert most[0] <= 2


def test_lanes_restore_the_thread_settings_and_a_failing_lane_fails_the_run(object_store, model_registry, batch_with_champion, monkeypatch):
    import sys

    import cv2
    import torch

    settings = lambda: (torch.get_num_threads(), cv2.getNumThreads(), sys.getswitchinterval())  # noqa: E731
    before = settings()
    frame, metadata = _materialize(object_store, model_registry, batch_size=1, workers=3)
    assert len(frame) == len(SIZES) and metadata["lanes"] == 3
    assert settings() == before

    real_render = inference.render_outputs

    def render(store, row, *args, **kwargs):
        if row["image_id"] == "img-1":
            raise OSError(f"{row['file']}: disk full")
        return real_render(store, row, *args, **kwargs)

    monkeypatch.setattr(inference, "render_outputs", render)
    resources = {"object_store": object_store, "model_registry": model_registry, "io_manager": ParquetIOManager(object_store=object_store)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["b1"])
        with pytest.raises(OSError, match="1.jpg: disk full"):
            dg.materialize([raw_images, ai_outputs], selection=[ai_outputs], partition_key="b1", resources=resources,
                           instance=instance, run_config={"ops": {"ai_outputs": {"config": {"batch_size": 1, "workers": 2}}}})
    assert settings() == before


def test_the_chunk_queue_hands_out_each_chunk_once_in_order_and_stops_after_a_failure():
    from concurrent.futures import ThreadPoolExecutor

    queue = inference._ChunkQueue(200)

    def drain(_):
        taken = []
        while (index := queue.take()) is not None:
            taken.append(index)
        return taken

    with ThreadPoolExecutor(4) as pool:
        taken = [i for lane in pool.map(drain, range(4)) for i in lane]
    assert sorted(taken) == list(range(200))
    stopped = inference._ChunkQueue(5)
    assert stopped.take() == 0
    stopped.failed.set()  # a lane failed: the others take nothing more
    assert stopped.take() is None


def test_encode_png_fast_round_trips():
    rng = np.random.default_rng(0)
    grey = (rng.random((37, 53)) > 0.5).astype(np.uint8) * 255
    rgba = rng.integers(0, 256, (20, 31, 4), dtype=np.uint8)
    assert np.array_equal(decode_mask(encode_png_fast(grey)), grey)
    from PIL import Image
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png_fast(rgba)))), rgba)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)  # anything else: the plain encoder
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png_fast(rgb)))), rgb)


def test_stage_timer_sums_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    timer = StageTimer()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: timer.add("forward", 0.5), range(8)))
    timer.merge({"refine": 1.0, "custom": 2.0})
    assert timer.seconds["forward"] == pytest.approx(4.0) and timer.seconds["refine"] == 1.0 and timer.seconds["custom"] == 2.0
