"""A photo's AI outputs, encoded and ready to store, made here or in worker processes.

``render`` turns a decoded photo and its model-resolution probability map (or a full-size mask)
into the mask PNG, the RGBA cut-out PNG and the brand composite JPEG, with the figures the
pipeline records (colour distance, mask size and pixels, and optionally the quality signals).

``RenderProcesses`` and ``serve_in_processes`` run that work, and the decoding of the model's
inputs, in worker processes while the calling process runs only the model. This is for GPU
hosts: there the forward pass is fast and the work around it is about 7 ms of Python-driven CPU
per photo (some 500 numpy and OpenCV calls); in threads of one process it is bound by the GIL
(README, "GPU figures": on an H200, 63-134 img/s in lanes, 903-1,096 in 12 worker processes).
Worker processes are forked from a fork server that loads only the main script and this module
(numpy, OpenCV, Pillow; no torch), so each starts in a fraction of a second and none inherits the
model's process state (threads, CUDA, the model). The photos' bytes go to the workers, and back come small
arrays (the model's inputs) and encoded files: no decoded full-size photo crosses a process, except
one already at the model's size, which is its own model input: that array goes back to a worker to
be rendered, in place of the bytes, so that such a photo is decoded once.

No Dagster and no torch import here: this is pure ML code.
"""

from __future__ import annotations

import collections
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import cv2
import numpy as np

from ml.imageio import encode_jpeg, encode_png_fast, load_rgb, resize_for_model
from ml.postprocess import BrandStandard, postprocess
from ml.quality import quality_signals
from ml.runtime import keep_freed_memory

__all__ = ["RenderProcesses", "RenderSettings", "Rendered", "model_input", "render", "render_photo", "serve_in_processes"]


@dataclass(frozen=True)
class RenderSettings:
    """How the outputs are made and encoded."""

    brand: BrandStandard = BrandStandard()
    jpeg_quality: int = 92
    # ISA-L deflate level (0-3) of the mask and cut-out PNGs; the pixels are the same at every level.
    png_compress_level: int = 1


@dataclass
class Rendered:
    """One photo's encoded outputs and the figures recorded with them."""

    mask_png: bytes
    cutout_png: bytes
    composite_jpg: bytes
    colour_distance: float
    mask_pixels: int
    width: int
    height: int
    # quality signals of the probability map (ml.quality.SIGNALS), when asked for
    signals: dict[str, float] = field(default_factory=dict)
    # seconds per stage: "read_decode", "signals", "refine", "composite", "encode"
    timings: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict:
        """The figures as the pipeline's table columns (signals first)."""
        return {
            **self.signals,
            "colour_distance": self.colour_distance,
            "mask_pixels": self.mask_pixels,
            "mask_width": self.width,
            "mask_height": self.height,
        }


def model_input(data: bytes, name: str, size: int, draft: bool) -> np.ndarray:
    """The (size, size, 3) model input of a photo's bytes: a draft-mode decode (longer side at most
    ``2 * size``) for large photos, a full decode otherwise; ``ImageRejected`` names ``name``."""
    return _decode_for_model(data, name, size, draft)[0]


def _decode_for_model(data: bytes, name: str, size: int, draft: bool) -> tuple[np.ndarray, bool]:
    """(``model_input``, whether it is the whole photo): a full decode already at the model's size
    is its own model input."""
    image = load_rgb(data, name, max_side=size * 2) if draft else load_rgb(data, name)
    made = resize_for_model(image, size)  # the image itself when it has the model's size
    return made, not draft and made is image


def render(
    image: np.ndarray,
    prob: np.ndarray | None,
    settings: RenderSettings,
    mask: np.ndarray | None = None,
    signals: bool = False,
    timings: dict[str, float] | None = None,
) -> Rendered:
    """Post-process a full-size photo (``ml.postprocess.postprocess``) and encode its outputs.

    ``prob`` is the model-resolution probability map, or None with ``mask`` (a full-size 0/255
    mask, a reviewer's). With ``signals`` the map's quality signals are computed too.
    """
    clock = time.perf_counter
    timings = {} if timings is None else timings
    found: dict[str, float] = {}
    if signals:
        t0 = clock()
        found = quality_signals(prob)
        timings["signals"] = timings.get("signals", 0.0) + clock() - t0
    result = postprocess(image, prob, settings.brand, mask=mask, timings=timings)
    del image
    t0 = clock()
    height, width = result.mask.shape
    rendered = Rendered(
        mask_png=encode_png_fast(result.mask, settings.png_compress_level),
        cutout_png=encode_png_fast(result.cutout, settings.png_compress_level),
        composite_jpg=encode_jpeg(result.composite, quality=settings.jpeg_quality),
        colour_distance=float(result.colour_distance),
        mask_pixels=int(cv2.countNonZero(result.mask)),
        width=width,
        height=height,
        signals=found,
        timings=timings,
    )
    timings["encode"] = timings.get("encode", 0.0) + clock() - t0
    return rendered


def render_photo(photo: bytes | np.ndarray, name: str, prob: np.ndarray, settings: RenderSettings) -> Rendered:
    """``render`` a photo, given as its bytes (decoded here at full size) or already decoded, with its
    quality signals (a worker's task)."""
    t0 = time.perf_counter()
    image = photo if isinstance(photo, np.ndarray) else load_rgb(photo, name)
    timings = {"read_decode": time.perf_counter() - t0}
    return render(image, prob, settings, signals=True, timings=timings)


def _model_inputs(datas: list[bytes], names: list[str], size: int, drafts: list[bool]) -> tuple[list[np.ndarray], list[bool], float]:
    """(the photos' model inputs, which of them are the whole photo, seconds they took)."""
    t0 = time.perf_counter()
    made = [_decode_for_model(data, name, size, draft) for data, name, draft in zip(datas, names, drafts)]
    return [image for image, _ in made], [whole for _, whole in made], time.perf_counter() - t0


def _render_photos(photos: list[bytes | np.ndarray], names: list[str], probs: np.ndarray, settings: RenderSettings) -> list[Rendered]:
    return [render_photo(photo, name, prob, settings) for photo, name, prob in zip(photos, names, probs)]


def _start_worker() -> None:
    # The processes are the parallelism: OpenCV splitting each image over every core on top of
    # them would oversubscribe the CPU. Freed memory is kept for reuse, as in the model's process.
    cv2.setNumThreads(1)
    keep_freed_memory()


class RenderProcesses:
    """A pool of worker processes that make model inputs and render outputs from photos' bytes."""

    def __init__(self, processes: int, settings: RenderSettings) -> None:
        if processes < 1:
            raise ValueError(f"RenderProcesses needs at least one process, got {processes}")
        self.processes, self.settings = processes, settings
        context = multiprocessing.get_context("forkserver")
        # The fork server imports the main script and this module once; each worker is forked from
        # it with both loaded (without "__main__" here every worker would import the main script
        # itself: the dagster command's is all of Dagster, 2 s and 150 MB per worker).
        context.set_forkserver_preload(["__main__", __name__])
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_start_worker)

    def model_inputs(self, datas: list[bytes], names: list[str], size: int, drafts: list[bool]) -> Future:
        """Future of (the photos' model inputs, which of them are the whole photo, seconds they took):
        ``model_input`` for each; a photo decoded in full at the model's size is its own input."""
        return self._pool.submit(_model_inputs, datas, names, size, drafts)

    def render(self, photos: list[bytes | np.ndarray], names: list[str], probs: np.ndarray) -> Future:
        """Future of the photos' ``Rendered`` outputs (with quality signals): ``render_photo`` for each
        photo, given as its bytes or decoded."""
        return self._pool.submit(_render_photos, photos, names, probs, self.settings)

    def pids(self) -> list[int]:
        """The worker processes' ids (those started so far)."""
        return sorted(self._pool._processes or ())

    def close(self, cancel: bool = False) -> None:
        if getattr(self._pool, "_broken", False):
            # A worker died: the pool's manager thread terminates and joins the others, and a worker
            # that does not end on SIGTERM (seen once in CI, Python 3.11) would hang the join and
            # this shutdown with it. SIGKILL ends every one.
            for process in list((self._pool._processes or {}).values()):
                process.kill()
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "RenderProcesses":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(cancel=kind is not None)


def _tasks(records: Sequence[dict], draft: Callable[[dict], bool], per_task: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive photos handed to a worker at once: up to ``per_task`` small
    photos, and each large one (decoded in draft mode for the model) on its own."""
    tasks: list[tuple[int, int]] = []
    start = 0
    for position, record in enumerate(records):
        if draft(record):
            if start < position:
                tasks.append((start, position))
            tasks.append((position, position + 1))
            start = position + 1
        elif position + 1 - start == per_task:
            tasks.append((start, position + 1))
            start = position + 1
    if start < len(records):
        tasks.append((start, len(records)))
    return tasks


def serve_in_processes(
    workers: RenderProcesses,
    chunks: Sequence[Sequence[dict]],
    read_chunk: Callable[[int], list[bytes]],
    forward: Callable[[list[np.ndarray]], np.ndarray],
    deliver: Callable[[int, int, Rendered], None],
    size: int,
    draft: Callable[[dict], bool],
    ahead: int = 2,
    photos_per_task: int = 16,
    add_seconds: Callable[[str, float], None] | None = None,
) -> None:
    """Run the model on every chunk in this thread while ``workers`` decode and render around it.

    ``chunks`` are lists of records (``"file"`` names the photo in errors); ``read_chunk(i)``
    returns chunk ``i``'s photos' bytes; ``forward(inputs)`` returns their probability maps (N,
    size, size); ``draft(record)`` says whether the model input may come from a reduced decode (a
    large photo). The inputs of the next ``ahead`` chunks are decoded while the model runs on one. A
    photo already at the model's size comes back as its own model input and goes to be rendered as
    that array, not as its bytes: it is decoded once. Workers get up to ``photos_per_task`` small
    photos at a time (each task costs this process a round trip), and each large photo alone.
    ``deliver(chunk, position, rendered)`` is called in this thread, in the chunks' order, as
    outputs come back. At most about two chunks' and two rounds of the workers' renders wait, so
    memory is bounded by the chunk size and the number of workers, not by the batch. A worker's
    error (an undecodable photo) is raised here, and a worker that died (out of memory) as a
    ``RuntimeError`` naming the chunk being served; renders not started are then cancelled.
    """
    add = add_seconds or (lambda name, seconds: None)
    clock = time.perf_counter
    per_task = max(1, photos_per_task)
    prepared: dict[int, tuple[list[bytes], list[tuple[int, int, Future]]]] = {}
    rendering: collections.deque[tuple[int, int, Future]] = collections.deque()
    waiting = [0]  # photos in `rendering`
    most = max(2 * max((len(c) for c in chunks), default=1), 2 * per_task * workers.processes)

    def settle(limit: int) -> None:
        while waiting[0] > limit:
            index, start, future = rendering.popleft()
            outputs = future.result()
            waiting[0] -= len(outputs)
            for offset, rendered in enumerate(outputs):
                for name, seconds in rendered.timings.items():
                    add(name, seconds)
                deliver(index, start + offset, rendered)

    current = [0]  # the chunk being served

    def run() -> None:
        queued = 0
        for index in range(len(chunks)):
            current[0] = index
            while queued < min(len(chunks), index + 1 + ahead):
                records, datas = chunks[queued], read_chunk(queued)
                tasks = [
                    (a, b, workers.model_inputs(datas[a:b], [r["file"] for r in records[a:b]], size, [draft(r) for r in records[a:b]]))
                    for a, b in _tasks(records, draft, per_task)
                ]
                prepared[queued] = (datas, tasks)
                queued += 1
            datas, tasks = prepared.pop(index)
            photos: list[bytes | np.ndarray] = list(datas)
            inputs: list[np.ndarray] = []
            for a, _, future in tasks:
                made, whole, seconds = future.result()
                add("read_decode", seconds)
                inputs.extend(made)
                for offset, is_whole in enumerate(whole):
                    if is_whole:
                        photos[a + offset] = made[offset]
            t0 = clock()
            probs = forward(inputs)
            add("forward", clock() - t0)
            del inputs
            names = [r["file"] for r in chunks[index]]
            for a, b, _ in tasks:
                rendering.append((index, a, workers.render(photos[a:b], names[a:b], probs[a:b])))
                waiting[0] += b - a
            del datas, photos, probs
            settle(most)
        settle(0)

    try:
        run()
    except BrokenProcessPool as exc:  # a worker killed (the kernel's OOM killer, a signal)
        files = ", ".join(r["file"] for r in chunks[current[0]])
        raise RuntimeError(
            f"a worker process died (killed by the system, out of memory?) while the chunk of {files} was served; "
            f"with large photos, fewer worker processes ({workers.processes} now) hold less memory at once"
        ) from exc
