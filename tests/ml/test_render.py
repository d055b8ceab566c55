"""Rendering a photo's outputs, here and in worker processes beside the model (ml.render)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.imageio import ImageRejected, decode_mask, encode_jpeg, encode_png_fast, load_rgb, resize_for_model
from ml.postprocess import BrandStandard, postprocess
from ml.quality import SIGNALS, quality_signals
from ml.render import RenderProcesses, RenderSettings, model_input, render, render_photo, serve_in_processes
from ml.synthetic import generate_item

SIZE = 64
SETTINGS = RenderSettings(BrandStandard(background_rgb=(250, 250, 250)), jpeg_quality=90, png_compress_level=1)


def _photos(count: int) -> tuple[list[dict], list[bytes]]:
    records, datas = [], []
    for i in range(count):
        item = generate_item(i, seed=5, max_side=96 + 16 * (i % 3))
        records.append({"file": f"photo-{i}.jpg", "index": i})
        datas.append(encode_jpeg(item.image, quality=90))
    return records, datas


def _darkness(inputs: list[np.ndarray]) -> np.ndarray:
    """A stand-in segmenter: foreground probability is how dark a pixel is (products on pale backgrounds)."""
    grey = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in inputs]).astype(np.float32)
    return 1.0 - grey / 255.0


def test_render_encodes_what_postprocess_makes():
    image = generate_item(0, seed=1, max_side=120).image
    prob = _darkness([resize_for_model(image, SIZE)])[0]
    timings: dict[str, float] = {}
    rendered = render(image, prob, SETTINGS, signals=True, timings=timings)
    expected = postprocess(image, prob, SETTINGS.brand)
    assert np.array_equal(decode_mask(rendered.mask_png), expected.mask)
    assert cv2.imdecode(np.frombuffer(rendered.cutout_png, np.uint8), cv2.IMREAD_UNCHANGED).shape == (*image.shape[:2], 4)
    assert (rendered.height, rendered.width) == image.shape[:2]
    assert rendered.mask_pixels == int(np.count_nonzero(expected.mask))
    assert rendered.colour_distance == pytest.approx(expected.colour_distance)
    assert rendered.signals == quality_signals(prob)
    assert list(rendered.row())[: len(SIGNALS)] == list(SIGNALS)
    assert {"signals", "refine", "composite", "encode"} <= set(timings)


def test_model_input_is_a_full_or_a_draft_decode_resized():
    _, (data,) = _photos(1)
    assert np.array_equal(model_input(data, "a.jpg", SIZE, draft=False), resize_for_model(load_rgb(data, "a.jpg"), SIZE))
    drafted = model_input(data, "a.jpg", SIZE, draft=True)
    assert drafted.shape == (SIZE, SIZE, 3)
    with pytest.raises(ImageRejected, match="broken.jpg"):
        model_input(data[:300], "broken.jpg", SIZE, draft=False)


def test_worker_processes_serve_every_chunk_in_order_with_bounded_work_in_flight():
    records, datas = _photos(11)
    chunks = [records[i : i + 3] for i in range(0, len(records), 3)]
    delivered, seen, most = [], [0], [0]
    seconds: dict[str, float] = {}

    def forward(inputs):
        seen[0] += len(inputs)
        return _darkness(inputs)

    def deliver(index, position, rendered):
        delivered.append((index, position, rendered))
        most[0] = max(most[0], seen[0] - len(delivered))

    def add(name, value):
        seconds[name] = seconds.get(name, 0.0) + value

    with RenderProcesses(2, SETTINGS) as workers:
        serve_in_processes(
            workers, chunks, lambda i: [datas[r["index"]] for r in chunks[i]], forward, deliver, SIZE,
            draft=lambda record: record["index"] % 5 == 1, ahead=1, photos_per_task=2, add_seconds=add,
        )
    assert [(i, p) for i, p, _ in delivered] == [(i, p) for i, c in enumerate(chunks) for p in range(len(c))]
    # at most two rounds of the workers' tasks (2 processes x 2 photos) wait beside the chunk just predicted
    assert most[0] <= 2 * 2 * 2 + 3
    for index, position, rendered in delivered:
        record = chunks[index][position]
        small = model_input(datas[record["index"]], record["file"], SIZE, draft=record["index"] % 5 == 1)
        here = render_photo(datas[record["index"]], record["file"], _darkness([small])[0], SETTINGS)
        assert rendered.mask_png == here.mask_png and rendered.composite_jpg == here.composite_jpg
        assert rendered.signals == here.signals
    assert {"read_decode", "forward", "signals", "refine", "composite", "encode"} <= set(seconds)


def test_a_photo_at_the_models_size_is_decoded_once_and_rendered_from_its_model_input():
    # photos 0 and 2 have the model's size, 1 and 3 not; photo 3 is a large one, decoded in draft mode
    records, datas = [], []
    for i in range(4):
        image = generate_item(i, seed=6, max_side=96).image
        records.append({"file": f"photo-{i}.png", "index": i})
        datas.append(encode_png_fast(cv2.resize(image, (SIZE, SIZE)) if i % 2 == 0 else image, 1))
    drafts = [i == 3 for i in range(4)]
    delivered = []
    with RenderProcesses(1, SETTINGS) as workers:
        inputs, whole, _ = workers.model_inputs(datas, [r["file"] for r in records], SIZE, drafts).result()
        serve_in_processes(workers, [records[:2], records[2:]], lambda i: datas[2 * i : 2 * i + 2], _darkness,
                           lambda *args: delivered.append(args), SIZE, draft=lambda record: record["index"] == 3)
    assert whole == [True, False, True, False]
    assert np.array_equal(inputs[0], load_rgb(datas[0], "photo-0.png"))
    for (index, position, rendered), record, small in zip(delivered, records, inputs):
        assert (index, position) == divmod(record["index"], 2)
        here = render_photo(datas[record["index"]], record["file"], _darkness([small])[0], SETTINGS)
        assert (rendered.mask_png, rendered.cutout_png, rendered.composite_jpg) == (here.mask_png, here.cutout_png, here.composite_jpg)
        assert rendered.signals == here.signals
    # the decoded photo renders as its bytes do
    from_array = render_photo(inputs[2], "photo-2.png", _darkness([inputs[2]])[0], SETTINGS)
    from_bytes = render_photo(datas[2], "photo-2.png", _darkness([inputs[2]])[0], SETTINGS)
    assert (from_array.mask_png, from_array.composite_jpg) == (from_bytes.mask_png, from_bytes.composite_jpg)


def test_a_photo_that_does_not_decode_in_a_worker_is_raised_by_name():
    records, datas = _photos(4)
    datas[2] = datas[2][:500]
    delivered = []
    with pytest.raises(ImageRejected, match="photo-2.jpg"):
        with RenderProcesses(1, SETTINGS) as workers:
            serve_in_processes(workers, [records[:2], records[2:]], lambda i: datas[2 * i : 2 * i + 2], _darkness,
                               lambda *args: delivered.append(args), SIZE, draft=lambda record: False)
    assert len(delivered) <= 2  # the first chunk's photos at most


def test_render_processes_need_at_least_one_process():
    with pytest.raises(ValueError, match="at least one process"):
        RenderProcesses(0, SETTINGS)


def test_a_worker_process_that_dies_is_reported_with_the_photos_it_held():
    import os
    import signal

    records, datas = _photos(6)
    killed = []

    def forward(inputs):
        if not killed:  # the first chunk's inputs are made: the workers are up
            for pid in workers.pids():
                os.kill(pid, signal.SIGKILL)
            killed.append(True)
        return _darkness(inputs)

    with pytest.raises(RuntimeError, match=r"worker process died \(killed by the system, out of memory\?\) while the chunk of photo-[02]\.jpg, photo-[13]\.jpg was served"):
        with RenderProcesses(2, SETTINGS) as workers:
            serve_in_processes(workers, [records[:2], records[2:4], records[4:]], lambda i: datas[2 * i : 2 * i + 2], forward,
                               lambda *args: None, SIZE, draft=lambda record: False, ahead=0)
