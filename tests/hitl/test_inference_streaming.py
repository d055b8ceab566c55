"""ai_outputs streams chunks through the model (issue 8): results do not depend on the chunking, memory is bounded by it."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

import hitl_assets.assets.inference as inference
from hitl_assets.assets.inference import STAGES, StageTimer, ai_outputs
from hitl_assets.assets.ingest import raw_images
from hitl_assets.partitions import batches
from ml.imageio import decode_mask, encode_jpeg
from ml.synthetic import generate_item
from resources import ParquetIOManager
from resources.tables import write_table

# the last has the model's input size (64): its model input is the whole photo
SIZES = [(96, 96), (160, 120), (64, 200), (300, 220), (128, 128), (64, 64)]


@pytest.fixture
def model_registry(champion_registry):
    """This module's tests share the champion's registry (conftest's gives each test an empty one)."""
    champion_registry.activate()
    return champion_registry


@pytest.fixture
def batch_with_champion(object_store, model_registry):
    version = model_registry.champion_version().version
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


def test_default_chunks_on_the_cpu_follow_the_cpu_batch_size(object_store, model_registry, batch_with_champion, monkeypatch):
    # the champion serves at 64 px; a budget of two such images per forward pass
    monkeypatch.setattr("ml.infer.CPU_BATCH_PIXELS", 2 * 64 * 64)
    frame, metadata = _materialize(object_store, model_registry, workers=1)
    assert len(frame) == len(SIZES) and metadata["images_per_forward_pass"] == 2
    _, metadata = _materialize(object_store, model_registry, workers=1, batch_size=3)
    assert metadata["images_per_forward_pass"] == 3


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


@pytest.mark.parametrize("io_threads", [0, 1])
def test_a_failed_write_fails_the_run_with_its_own_error(io_threads, object_store, model_registry, batch_with_champion, monkeypatch):
    from resources.object_store import ObjectStore

    real_put = ObjectStore.put_bytes

    def put_bytes(self, key, data, content_type=None):
        if "img-2" in key and key.endswith("cutout.png"):
            raise OSError(f"{key}: disk full")
        return real_put(self, key, data, content_type)

    monkeypatch.setattr(ObjectStore, "put_bytes", put_bytes)
    with pytest.raises(OSError, match="img-2/v1/cutout.png: disk full"):
        _materialize(object_store, model_registry, batch_size=1, workers=2, io_threads=io_threads)


def test_the_object_writer_bounds_the_bytes_waiting_and_keeps_the_first_failure():
    import threading

    release, written = threading.Event(), []

    class Store:
        def put_bytes(self, key, data, content_type=None):
            release.wait(30)
            if key == "bad":
                raise OSError("bad: disk full")
            written.append(key)

    timer = StageTimer()
    writer = inference.ObjectWriter(Store(), threads=4, stages=timer, max_pending_bytes=10)
    writer.put("a", b"12345678")
    second = threading.Thread(target=writer.put, args=("b", b"12345678"))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # no room for 8 more bytes until "a" is written
    release.set()
    second.join(30)
    assert not second.is_alive()
    writer.put("c", b"x" * 100)  # larger than the bound: written on its own
    writer.close()
    assert sorted(written) == ["a", "b", "c"] and timer.seconds["write"] > 0

    # no I/O threads: the caller's objects are held until it flushes, or until they pass the bound
    inline = inference.ObjectWriter(Store(), threads=0, stages=timer, max_held_bytes=10)
    inline.put("d", b"1")
    inline.put("e", b"22")
    assert written[-1] == "c"
    inline.flush()
    assert written[-2:] == ["d", "e"]
    inline.put("f", b"x" * 11)  # past the bound: written at once
    assert written[-1] == "f"
    inline.flush()  # nothing held: nothing to do
    inline.close()

    failing = inference.ObjectWriter(Store(), threads=1)
    failing.put("bad", b"1")
    with pytest.raises(OSError, match="bad: disk full"):
        failing.close()
    with pytest.raises(inference.WriteFailed, match="not writing later"):
        failing.put("later", b"2")


def test_the_chunk_reader_reads_ahead_in_order_and_raises_a_failed_read_in_the_lane():
    class Store:
        def __init__(self):
            self.read = []

        def get_bytes(self, key):
            self.read.append(key)
            if key == "missing":
                raise FileNotFoundError(f"no object {key!r}")
            return key.encode()

    store = Store()
    chunks = [[{"image_key": f"{c}-{i}"} for i in range(3)] for c in range(5)] + [[{"image_key": "missing"}]]
    reader = inference.ChunkReader(store, chunks, ahead=1, threads=2)
    assert reader.take(0) == [b"0-0", b"0-1", b"0-2"]
    assert reader.take(1) == [b"1-0", b"1-1", b"1-2"]
    assert set(store.read) <= {f"{c}-{i}" for c in range(3) for i in range(3)}  # never more than one chunk ahead
    for c in range(2, 5):
        assert reader.take(c) == [f"{c}-{i}".encode() for i in range(3)]
    with pytest.raises(FileNotFoundError, match="missing"):
        reader.take(5)
    reader.close()
    inline = inference.ChunkReader(Store(), chunks, ahead=1, threads=0)  # no I/O threads: read in the lane, nothing ahead
    assert inline.take(3) == [b"3-0", b"3-1", b"3-2"] and inline._store.read == ["3-0", "3-1", "3-2"]
    inline.close()


def test_io_threads_by_default_only_for_s3():
    from resources.object_store import ObjectStore

    assert inference._io_thread_count(None, ObjectStore(root="x")) == 0  # a local folder: the lanes read and write
    assert inference._io_thread_count(None, ObjectStore(bucket="b")) == 8  # S3: requests wait on the network
    assert inference._io_thread_count(3, ObjectStore(root="x")) == 3


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


def test_stage_timer_sums_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    timer = StageTimer()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: timer.add("forward", 0.5), range(8)))
    timer.merge({"refine": 1.0, "custom": 2.0})
    assert timer.seconds["forward"] == pytest.approx(4.0) and timer.seconds["refine"] == 1.0 and timer.seconds["custom"] == 2.0


def test_a_compiled_model_gives_the_same_outputs(object_store, model_registry, batch_with_champion):
    """compile_model "on": Inductor serves the full chunks (the last, partial one runs uncompiled), with the masks and signals of eager."""
    runs = {}
    for mode in ("off", "on"):
        frame, metadata = _materialize(object_store, model_registry, batch_size=2, workers=2, compile_model=mode)
        masks = [decode_mask(object_store.get_bytes(key)) for key in frame["mask_key"]]  # the next run writes the same keys
        runs[mode] = (frame, metadata, masks)
    (eager, eager_meta, eager_masks), (compiled, meta, masks) = runs["off"], runs["on"]
    assert meta["compiled"] is True and meta["compile_seconds"] > 0
    assert eager_meta["compiled"] is False and eager_meta["compile_seconds"] == 0
    for a, b in zip(eager_masks, masks):
        assert a.shape == b.shape and np.mean(a != b) < 0.005
    for signal in ("confidence", "boundary_uncertainty", "mask_area_fraction"):
        np.testing.assert_allclose(compiled[signal], eager[signal], atol=2e-3)


def test_auto_compiles_large_runs_and_a_failed_compile_runs_uncompiled(object_store, model_registry, batch_with_champion, monkeypatch):
    import ml.infer

    calls = []

    def no_compiler(model, input_size, batch_size, threads=None):
        calls.append((input_size, batch_size))
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(ml.infer, "compile_for_cpu", no_compiler)
    frame, metadata = _materialize(object_store, model_registry, batch_size=2, workers=2, compile_min_images=len(SIZES) + 1)
    assert calls == [] and metadata["compiled"] is False  # auto, and fewer images than compile_min_images
    frame, metadata = _materialize(object_store, model_registry, batch_size=2, workers=2, compile_min_images=len(SIZES))
    assert calls == [(64, 2)] and metadata["compiled"] is False
    assert len(frame) == len(SIZES) and all(object_store.exists(key) for key in frame["mask_key"])


def test_compile_model_must_be_auto_on_or_off(object_store, model_registry, batch_with_champion):
    with pytest.raises(dg.Failure, match="compile_model"):
        _materialize(object_store, model_registry, compile_model="yes")


def test_worker_processes_give_the_lanes_outputs(object_store, model_registry, batch_with_champion, monkeypatch):
    lanes, _ = _materialize(object_store, model_registry, batch_size=16)
    masks = {key: decode_mask(object_store.get_bytes(key)) for key in lanes["mask_key"]}
    # the model in this process, decoding and rendering in two worker processes; chunks of 2, and
    # the two-pass decoding of large photos for all but the smallest
    monkeypatch.setattr(inference, "DECODE_ONCE_PIXELS", 10_000)
    served, metadata = _materialize(object_store, model_registry, batch_size=2, processes=2)
    assert metadata["worker_processes"] == 2 and metadata["lanes"] == 1 and metadata["images_per_forward_pass"] == 2
    assert list(served.columns) == list(lanes.columns)
    assert list(served["image_id"]) == [f"img-{i}" for i in range(len(SIZES))]
    for key in served["mask_key"]:
        assert np.array_equal(decode_mask(object_store.get_bytes(key)), masks[key])
    for column in ("confidence", "boundary_uncertainty", "mask_area_fraction", "colour_distance"):
        np.testing.assert_allclose(served[column].to_numpy(float), lanes[column].to_numpy(float), atol=2e-3)
    assert (served["mask_pixels"] == lanes["mask_pixels"]).all()
    assert set(metadata["stage_seconds"]) == set(STAGES) and metadata["stage_seconds"]["refine"] > 0


def test_a_photo_a_worker_process_cannot_decode_fails_the_run_naming_it(object_store, model_registry, batch_with_champion):
    # ingest accepted it; the bytes changed since (a partial overwrite in the bucket)
    key = "originals/b1/3.jpg"
    object_store.put_bytes(key, object_store.get_bytes(key)[:600], "image/jpeg")
    resources = {"object_store": object_store, "model_registry": model_registry, "io_manager": ParquetIOManager(object_store=object_store)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["b1"])
        with pytest.raises(Exception, match=r"3\.jpg"):
            dg.materialize([raw_images, ai_outputs], selection=[ai_outputs], partition_key="b1", resources=resources,
                           instance=instance, run_config={"ops": {"ai_outputs": {"config": {"batch_size": 1, "processes": 1}}}})


def test_worker_processes_by_default_only_on_cuda(monkeypatch):
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 16)
    assert inference._process_count(None, "cpu") == 0
    assert inference._process_count(None, "cuda") == 12
    assert inference._process_count(3, "cpu") == 3 and inference._process_count(0, "cuda") == 0
    monkeypatch.setattr(inference.os, "cpu_count", lambda: 2)
    assert inference._process_count(None, "cuda") == 2
