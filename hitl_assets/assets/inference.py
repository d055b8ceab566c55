"""ai_outputs: the champion model's mask, cut-out and brand composite for every accepted image.

Throughput (issue 8): the model's forward pass is the floor, everything else fits around it.
The batch is cut into chunks of ``batch_size`` images and worked by a few parallel lanes (one
per CPU core, 2 to 4). Each lane takes the next chunk, reads and decodes it, runs the model on
the whole chunk with its share of the CPU cores (PyTorch threads = cores / lanes), then computes
the quality signals, post-processes (vectorised, uint8 at full resolution), encodes and writes
that chunk's outputs. While one lane post-processes, another runs its forward pass, and no core
is oversubscribed: on 2 cores, a forward pass sharing its cores with post-processing threads ran
at about half speed, two single-threaded lanes at close to full speed (README, "Performance").
The model runs with its BatchNorm layers folded into the convolutions (``ml.infer.inference_model``).
The process keeps freed memory for reuse (``ml.runtime``): without that, every numpy and torch
temporary page-faults afresh. While the lanes run, Python hands the GIL over more often
(``SWITCH_INTERVAL``), so that a forward pass does not wait on the other lane's Python code
between its operations. On S3 a few I/O threads read the next chunks' photos ahead of the
lanes and write their outputs behind them (``ChunkReader``, ``ObjectWriter``), so no lane waits
on the network; on a local folder the lanes read and write themselves, as I/O threads there
only add CPU work beside the lanes. Each lane holds one chunk at a time, so memory is bounded by
lanes x chunk size (plus the chunks read ahead and the bounded bytes waiting to be written), not
by the batch. Small photos (up to ``DECODE_ONCE_PIXELS``) are decoded
once and kept for the composite; large ones are decoded twice, once reduced (JPEG draft mode)
for the model and once at full size, one at a time per lane, for the composite. Runs of
``compile_min_images`` or more compile the model with Inductor first (``compile_model``):
12-25 s, after which the forward pass runs about 1.7x faster on the CPU. Seconds per stage
(summed over lanes) are reported in the materialization's metadata.

On CUDA the lanes give way to worker processes (``processes``; ``ml.render``): this thread runs
only the model, on chunks of 64, while the workers decode the photos for it and make every
output from its probability maps, so that the Python-driven work around the model (about 7 ms
of CPU per photo) is spread over the cores instead of waiting on the GIL. On an H200 with 16
cores: 1,024 photos at 256 px at up to 1,096 img/s, against 63-134 in lanes (README, "GPU figures").
"""

import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import dagster as dg
import numpy as np
import pandas as pd

from hitl_assets.partitions import batches
from ml.imageio import load_rgb
from ml.postprocess import BrandStandard
from ml.render import Rendered, RenderProcesses, RenderSettings, render, serve_in_processes
from ml.quality import SIGNALS
from ml.runtime import keep_freed_memory
from resources.model_registry import ModelRegistry
from resources.object_store import ObjectStore

#: Photos up to this many pixels are decoded once and kept in memory until their composite is made.
DECODE_ONCE_PIXELS = 1_500_000
#: With compile_model "auto", runs of at least this many images compile the model (InferenceConfig).
COMPILE_MIN_IMAGES = 10_000
#: Stage names reported in ai_outputs' metadata (seconds summed over the threads that ran them).
STAGES = ("read_decode", "resize", "forward", "signals", "refine", "composite", "encode", "write")


class InferenceConfig(dg.Config):
    """How ai_outputs runs the model and renders the brand composite."""

    # Images per forward pass (per lane). 0: on CUDA 64 with worker processes, 8 in lanes; on the
    # CPU as many as keep every activation well under 64 MiB (ml.infer.cpu_batch_size: 4 at the
    # 256 px serving size, 7 at 192). Larger
    # activations are mapped and unmapped by glibc on every forward pass in a lane thread (a
    # thread's malloc arena grows in 64 MiB heaps): at 256 px, 8 images per pass made two 64 MiB
    # tensors, 4,300 page faults and 6-7 ms of kernel time per image. Two lanes on 1,024 images at
    # 256 px, without Dagster: 49-53 img/s at 4 per pass against 42-44 at 8 (2026-12-03, 2-core Intel Xeon).
    batch_size: int = 0
    device: str = "auto"
    background_rgb: list[int] = [255, 255, 255]
    shadow_opacity: float = 0.35
    correct_colour: bool = True
    jpeg_quality: int = 92
    # ISA-L deflate level (0-3) of the mask and cut-out PNGs (ml.imageio.encode_png_fast); the
    # pixels are the same whatever the level. At 1 a 256 px cut-out takes 0.3 ms, a 24 MP one 0.3 s.
    png_compress_level: int = 1
    # Parallel lanes, each decoding, running the model on, post-processing and writing one chunk at
    # a time with cores / lanes PyTorch threads (0: one per CPU core, 2 to 4). Measured on 2 cores
    # with the U-Net: two one-thread lanes 33-38 img/s, against 29-31 for one two-thread forward
    # pass beside two post-processing threads.
    workers: int = 0
    # Threads that read the photos and write the outputs, so that no lane waits on the network: a
    # chunk's photos are fetched while the lanes before it run, its outputs handed over and written
    # while its lane goes on (that many threads each). 0: the lanes read and write themselves.
    # None: 8 for S3 (8 + 8 fill the S3 client's 16 connections), 0 for a local folder, whose
    # reads and writes are CPU work in the kernel, not waits: on 2 cores, 2 I/O threads beside 2
    # lanes took 33.6-34.3 img/s against 34.9-40.3 without (2026-12-02, 1,024 images).
    io_threads: int | None = None
    # Compile the model with Inductor on the CPU (ml.infer.compile_for_cpu: torch.compile with the
    # weights frozen): "auto" compiles when the run has at least compile_min_images images, "on"
    # always, "off" never; never on CUDA, where it is untested. Compiling takes 12-25 s per run,
    # after which the forward pass runs 1.6-1.7x faster (2 cores): worth it for a nightly catalog
    # batch, not for a few hundred photos. A model that fails to compile runs uncompiled, with a warning.
    compile_model: str = "auto"
    compile_min_images: int = COMPILE_MIN_IMAGES
    # Worker processes that decode the photos and make their outputs while this process runs only
    # the model (ml.render.serve_in_processes); 0: the lanes do it, in threads. None: on CUDA three
    # quarters of the CPU cores (2 to 16), where the GIL bounds the lanes (an H200 with 16 cores,
    # 1,024 photos at 256 px: 12 processes 903-1,096 img/s, the lanes 63-134); 0 on the CPU, whose
    # cores the forward pass needs. Each process may hold a 24 MP photo and its outputs (about 0.4 GB).
    processes: int | None = None

    def brand(self) -> BrandStandard:
        return BrandStandard(
            background_rgb=tuple(self.background_rgb), shadow_opacity=self.shadow_opacity, correct_colour=self.correct_colour
        )


class StageTimer:
    """Thread-safe seconds per pipeline stage."""

    def __init__(self) -> None:
        self.seconds = {name: 0.0 for name in STAGES}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def merge(self, timings: dict[str, float]) -> None:
        with self._lock:
            for name, seconds in timings.items():
                self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def output_keys(image_id: str, model_version: str) -> dict[str, str]:
    """Where one image's AI outputs live; versioned by model so a new champion never overwrites history."""
    base = f"outputs/{image_id}/v{model_version}"
    return {"mask_key": f"{base}/mask.png", "cutout_key": f"{base}/cutout.png", "composite_key": f"{base}/composite.jpg"}


def render_outputs(
    store: ObjectStore,
    row: dict,
    prob: np.ndarray | None,
    brand: BrandStandard,
    keys: dict[str, str],
    jpeg_quality: int,
    mask: np.ndarray | None = None,
    image: np.ndarray | None = None,
    png_compress_level: int = 1,
    stages: StageTimer | None = None,
    data: bytes | None = None,
    writer: "ObjectWriter | None" = None,
    signals: bool = False,
) -> dict:
    """Build mask, cut-out and composite from the full-size photo, write them; return the row's outputs.

    With ``signals`` the probability map's quality signals are computed and returned too.

    ``image`` is the decoded full-size photo when the caller already has it; otherwise ``data``
    (the photo's bytes) or, without it, the object under ``row["image_key"]`` is decoded here.
    With a ``writer`` the outputs are handed to it (its I/O threads, or held for the lane's
    ``flush``); otherwise they are written here.
    """
    clock = time.perf_counter
    t0 = clock()
    if image is None:
        image = load_rgb(data if data is not None else store.get_bytes(row["image_key"]), row["file"])
    del data
    timings = {"read_decode": clock() - t0}
    rendered = render(image, prob, RenderSettings(brand, jpeg_quality, png_compress_level), mask=mask, signals=signals, timings=timings)
    del image
    if stages is not None:
        stages.merge(timings)
    write_rendered(store, keys, rendered, writer, stages)
    return output_columns(keys, rendered)


def output_columns(keys: dict[str, str], rendered: Rendered) -> dict:
    """A photo's ai_outputs columns: its quality signals (if computed), output keys and figures."""
    return {**rendered.signals, **keys, **rendered.row()}


def write_rendered(store: ObjectStore, keys: dict[str, str], rendered: Rendered, writer: "ObjectWriter | None" = None, stages: StageTimer | None = None) -> None:
    """Write a photo's three outputs under ``keys``, or hand them to ``writer``."""
    t0 = time.perf_counter()
    put = writer.put if writer is not None else store.put_bytes
    put(keys["mask_key"], rendered.mask_png, "image/png")
    put(keys["cutout_key"], rendered.cutout_png, "image/png")
    put(keys["composite_key"], rendered.composite_jpg, "image/jpeg")
    if stages is not None and writer is None:  # a writer's threads time their own writes
        stages.add("write", time.perf_counter() - t0)


def _io_thread_count(configured: int | None, store: ObjectStore) -> int:
    if configured is not None:
        return max(0, configured)
    return 8 if store.is_s3 else 0


class ChunkReader:
    """Reads the photos of a chunk from I/O threads, and those of the ``ahead`` chunks after it.

    ``take(i)`` returns chunk ``i``'s photos' bytes, in order, waiting for those not read yet.
    With no threads (``threads=0``) it reads them itself, in the calling lane.
    Chunks are taken in order (``_ChunkQueue``), so at most ``ahead + 1`` chunks' bytes are
    held besides those the lanes work on. Seconds spent reading go to ``stages["read_decode"]``.
    """

    def __init__(self, store: ObjectStore, chunks: list[list[dict]], ahead: int, threads: int, stages: StageTimer | None = None) -> None:
        self._store, self._chunks, self._stages = store, chunks, stages
        self._ahead = max(0, ahead) if threads > 0 else 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ai_outputs-read") if threads > 0 else None
        self._reads: dict[int, list] = {}
        self._next = 0
        self._lock = threading.Lock()

    def _read(self, key: str) -> bytes:
        started = time.perf_counter()
        data = self._store.get_bytes(key)
        if self._stages is not None:
            self._stages.add("read_decode", time.perf_counter() - started)
        return data

    def take(self, index: int) -> list[bytes]:
        if self._pool is None:  # no I/O threads: read here, in the lane
            return [self._read(r["image_key"]) for r in self._chunks[index]]
        with self._lock:
            while self._next < min(len(self._chunks), index + 1 + self._ahead):
                self._reads[self._next] = [self._pool.submit(self._read, r["image_key"]) for r in self._chunks[self._next]]
                self._next += 1
            reads = self._reads.pop(index)
        return [read.result() for read in reads]  # a failed read raises here, in the lane

    def close(self) -> None:
        """Stop: reads not started are cancelled, the bytes not taken dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._reads.clear()


class WriteFailed(RuntimeError):
    """Raised by ``ObjectWriter.put`` once one of its writes has failed."""


class ObjectWriter:
    """Puts objects in the store from a few I/O threads: a lane hands its outputs over and goes on.

    At most ``max_pending_bytes`` wait to be written at once (one object whatever its size), so
    a run of 24 MP cut-outs cannot pile up in memory: ``put`` waits for room. After a failed
    write, ``put`` raises at once (the lanes stop) and ``close`` raises the failure. Seconds
    spent writing go to ``stages["write"]``.

    With no threads (``threads=0``) the calling lane writes the objects itself, a group at a
    time: ``put`` holds them (at most ``max_held_bytes`` per lane) until the lane calls
    ``flush``, after each chunk. On a local disk one file created after another costs less
    kernel CPU than the same files created between other work (2026-12-02: 0.31-0.56 against
    0.58-0.67 ms per image of three files, 1,500 images on ext4).
    """

    def __init__(
        self, store: ObjectStore, threads: int, stages: StageTimer | None = None,
        max_pending_bytes: int = 256 * 2**20, max_held_bytes: int = 64 * 2**20,
    ) -> None:
        self._store, self._stages, self._limit, self._hold_limit = store, stages, max_pending_bytes, max_held_bytes
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ai_outputs-write") if threads > 0 else None
        self._room = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._held = threading.local()  # no threads: each lane's objects not written yet

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        if self._pool is None:  # no I/O threads: held for this lane's next flush
            held = self._lane_held()
            held.append((key, data, content_type))
            if sum(len(data) for _, data, _ in held) > self._hold_limit:
                self.flush()
            return
        size = len(data)
        with self._room:
            while self._error is None and self._pending and self._pending + size > self._limit:
                self._room.wait()
            if self._error is not None:
                raise WriteFailed(f"not writing {key}: an earlier write failed ({self._error})") from self._error
            self._pending += size
        self._pool.submit(self._write, key, data, content_type, size)

    def _write(self, key: str, data: bytes, content_type: str | None, size: int) -> None:
        started = time.perf_counter()
        try:
            self._store.put_bytes(key, data, content_type)
        except BaseException as exc:  # kept for put and close: nothing reads a pool future's exception
            with self._room:
                self._error = self._error or exc
        finally:
            del data
            if self._stages is not None:
                self._stages.add("write", time.perf_counter() - started)
            with self._room:
                self._pending -= size
                self._room.notify_all()

    def _lane_held(self) -> list[tuple[str, bytes, str | None]]:
        if not hasattr(self._held, "objects"):
            self._held.objects = []
        return self._held.objects

    def flush(self) -> None:
        """Write the objects this lane handed over and the writer holds (no I/O threads; else nothing to do)."""
        held = self._lane_held()
        if not held:
            return
        started = time.perf_counter()
        try:
            for key, data, content_type in held:
                self._store.put_bytes(key, data, content_type)
        finally:
            held.clear()
            if self._stages is not None:
                self._stages.add("write", time.perf_counter() - started)

    def close(self, raise_failure: bool = True) -> None:
        """Wait for every write; raise the first that failed (unless ``raise_failure`` is False).

        Objects still held by a lane (one that failed before its flush) are not written.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if raise_failure and self._error is not None:
            raise self._error


#: Seconds a thread may hold the GIL while another waits for it, during the lanes (Python's default:
#: 0.005). A forward pass is hundreds of PyTorch operations, each taking the GIL back when it ends;
#: beside a lane running numpy and Python post-processing, each waited up to the default 5 ms.
#: 1,024 images at 192 px, 2 lanes (2026-12-01): the lanes' forward seconds 27.1 -> 22.2, ai_outputs
#: 55.5 -> 63.8 img/s (22.8 s and 61.4 img/s at 0.0005).
SWITCH_INTERVAL = 0.0001


def _decoded_once(record: dict) -> bool:
    """Whether a photo is small enough (``DECODE_ONCE_PIXELS``) to be decoded once, at full size, for the model too."""
    return 0 < int(record.get("width") or 0) * int(record.get("height") or 0) <= DECODE_ONCE_PIXELS


def _process_count(configured: int | None, device_type: str) -> int:
    if configured is not None:
        return max(0, configured)
    # Three quarters of the cores (12 of 16), leaving the model's process room for its threads (the
    # forward pass, the pool's two, the writers). An H200 with 16 cores, 1,024 photos at 256 px:
    # 12 processes 903-1,096 img/s, 15 930-1,058, 8 892-903 (2026-12-04, README "GPU figures").
    return max(2, min(16, (os.cpu_count() or 2) * 3 // 4)) if device_type == "cuda" else 0


def _default_batch_size(device_type: str, size: int, processes: int) -> int:
    if device_type != "cuda":
        from ml.infer import cpu_batch_size  # torch is loaded by now (ai_outputs)

        return cpu_batch_size(size)
    # H200, 256 px: predict_probabilities 2,031-3,218 img/s at 64 per pass, 2,392 at 128; worker
    # processes served 903-1,096 at 64 (README, "GPU figures"); the lanes keep their 8
    return 64 if processes else 8


def _lane_count(configured: int) -> int:
    # Capped: each lane may hold one full-size photo and its outputs (about 0.4 GB at 24 MP).
    return configured if configured > 0 else max(2, min(4, os.cpu_count() or 2))


class _ChunkQueue:
    """Hands out chunk indices to lanes, in order, until the chunks run out or a lane fails."""

    def __init__(self, count: int) -> None:
        self._next, self._count = 0, count
        self._lock = threading.Lock()
        self.failed = threading.Event()

    def take(self) -> int | None:
        with self._lock:
            if self.failed.is_set() or self._next >= self._count:
                return None
            self._next += 1
            return self._next - 1


@dg.asset(
    partitions_def=batches,
    group_name="ai",
    check_specs=[
        dg.AssetCheckSpec("masks_match_images", asset="ai_outputs", description="Every mask exists, is non-empty and has its image's size.")
    ],
)
def ai_outputs(context: dg.AssetExecutionContext, config: InferenceConfig, raw_images: pd.DataFrame, object_store: ObjectStore, model_registry: ModelRegistry):
    """The champion's mask, RGBA cut-out and colour-corrected white-background composite with shadow, plus quality signals."""
    # torch is imported here, not with the module: the code location, its sensors and every other
    # asset's step process load without it (README, "Performance": 2.0 s and 283 MiB to import the
    # code location, against 6.0 s and 1,160 MiB with torch)
    import torch

    from ml.data import resize_for_model
    from ml.infer import compile_for_cpu, inference_model, predict_probabilities
    from ml.model import select_device

    if config.compile_model not in ("auto", "on", "off"):  # before loading anything
        raise dg.Failure(f"compile_model must be 'auto', 'on' or 'off', got {config.compile_model!r}")
    started = time.perf_counter()
    keep_freed_memory()  # numpy/torch temporaries reuse memory instead of page-faulting afresh (ml.runtime)
    device = select_device(config.device)
    champion = model_registry.load_champion(device=str(device))
    if champion is None:
        raise dg.Failure(
            "no champion segmentation model yet: materialize segmentation_model (retrain_job) first; "
            "with no corrections it bootstraps on the synthetic catalog"
        )
    # BatchNorm folded into the convolutions: about 10 % less CPU per forward pass, the same masks.
    # In place: this run loaded the champion only to serve it.
    model = inference_model(champion.model, inplace=True)
    model_seconds = time.perf_counter() - started
    accepted = raw_images[raw_images["status"] == "accepted"].drop_duplicates("image_id")
    records = accepted.to_dict("records")
    brand = config.brand()
    size = champion.input_size
    half = device.type == "cuda"
    stages = StageTimer()

    def load(record: dict, data: bytes) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
        """(model input, full-size photo or None, bytes or None): small photos are decoded once and
        kept, large ones reduced (draft mode) and their bytes kept for the full-size decode."""
        t0 = time.perf_counter()
        keep = _decoded_once(record)
        image = load_rgb(data, record["file"]) if keep else load_rgb(data, record["file"], max_side=size * 2)
        t1 = time.perf_counter()
        small = resize_for_model(image, size)
        stages.add("read_decode", t1 - t0)
        stages.add("resize", time.perf_counter() - t1)
        return (small, image, None) if keep else (small, None, data)

    def outputs(record: dict, prob: np.ndarray, full: np.ndarray | None, data: bytes | None, writer: ObjectWriter) -> dict:
        keys = output_keys(record["image_id"], champion.version)
        rendered = render_outputs(
            object_store, record, prob, brand, keys, config.jpeg_quality,
            image=full, png_compress_level=config.png_compress_level, stages=stages, data=data, writer=writer, signals=True,
        )
        return {**record, **rendered}

    processes = _process_count(config.processes, device.type)
    # With worker processes this thread is the one lane: it runs the model, they do the rest.
    lanes = 1 if processes else _lane_count(config.workers)
    # Chunks of batch_size, smaller when the batch is too small to keep every lane busy (a handful
    # of 24 MP photos is mostly post-processing: it goes fastest spread over all the lanes).
    batch_size = config.batch_size if config.batch_size > 0 else _default_batch_size(device.type, size, processes)
    chunk_size = max(1, min(batch_size, math.ceil(len(records) / lanes)))
    chunks = [records[i : i + chunk_size] for i in range(0, len(records), chunk_size)]
    lanes = max(1, min(lanes, len(chunks)))
    model_threads = torch.get_num_threads()
    # On the CPU the lanes split the cores between them; on a GPU each lane's host threads only feed it.
    lane_threads = max(1, model_threads // lanes) if device.type == "cpu" else model_threads
    compiled, compile_seconds = None, 0.0
    wanted = config.compile_model == "on" or (config.compile_model == "auto" and len(records) >= config.compile_min_images)
    if wanted and device.type == "cpu" and len(records) >= chunk_size:
        compile_started = time.perf_counter()
        try:  # compiled with the threads each lane runs it with
            compiled = compile_for_cpu(model, size, chunk_size, threads=lane_threads)
        except Exception as exc:  # a missing C++ compiler, an operator Inductor cannot lower: run eager
            context.log.warning(f"torch.compile failed, the model runs uncompiled: {type(exc).__name__}: {exc}")
        compile_seconds = time.perf_counter() - compile_started
        if compiled is not None:
            context.log.info(f"model compiled by Inductor in {compile_seconds:.1f} s for chunks of {chunk_size}")
    done: list[list[dict] | None] = [None] * len(chunks)
    queue = _ChunkQueue(len(chunks))

    io_threads = _io_thread_count(config.io_threads, object_store)
    if processes:  # this thread runs the model: its reads and writes go to I/O threads
        io_threads = max(2, io_threads)
    # the photos of the next `lanes` chunks are read while the lanes work on theirs
    reader = ChunkReader(object_store, chunks, ahead=lanes, threads=io_threads, stages=stages)
    writer = ObjectWriter(object_store, threads=io_threads, stages=stages)

    def forward(inputs: list[np.ndarray]) -> np.ndarray:
        # the compiled model serves full chunks only: another batch shape would compile again
        net = compiled if compiled is not None and len(inputs) == chunk_size else model
        # on CUDA every pass has batch_size images, a short one padded (a new shape costs seconds there)
        return predict_probabilities(net, inputs, size, device=device, batch_size=batch_size if device.type == "cuda" else len(inputs), half=half)

    def lane() -> None:
        torch.set_num_threads(lane_threads)  # this thread's intra-op threads
        try:
            while (index := queue.take()) is not None:
                chunk = chunks[index]
                loaded = [load(record, data) for record, data in zip(chunk, reader.take(index))]
                t0 = time.perf_counter()
                probs = forward([small for small, _, _ in loaded])
                stages.add("forward", time.perf_counter() - t0)
                done[index] = [outputs(record, prob, full, data, writer) for record, prob, (_, full, data) in zip(chunk, probs, loaded)]
                del loaded, probs
                writer.flush()  # the chunk's outputs, one file after another
        except BaseException:
            queue.failed.set()  # the other lanes stop after their current chunk
            raise

    def deliver(index: int, position: int, rendered: Rendered) -> None:
        record = chunks[index][position]
        keys = output_keys(record["image_id"], champion.version)
        write_rendered(object_store, keys, rendered, writer)
        if position == 0:
            done[index] = []
        done[index].append({**record, **output_columns(keys, rendered)})

    # OpenCV's thread pool is process-wide: with several lanes the lanes are the parallelism, and
    # OpenCV splitting each small image over every core on top of them would oversubscribe the CPU.
    opencv_threads = cv2.getNumThreads()
    switch_interval = sys.getswitchinterval()
    if lanes > 1:
        cv2.setNumThreads(1)
        sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        if processes:
            with RenderProcesses(processes, RenderSettings(brand, config.jpeg_quality, config.png_compress_level)) as workers:
                serve_in_processes(
                    workers, chunks, reader.take, forward, deliver, size,
                    draft=lambda record: not _decoded_once(record),
                    ahead=2, add_seconds=stages.add,
                )
        else:
            with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="ai_outputs") as pool:
                for future in [pool.submit(lane) for _ in range(lanes)]:
                    future.result()
    except BaseException as exc:
        # a lane's own error is the one to report, unless it stopped because a write had failed
        writer.close(raise_failure=isinstance(exc, WriteFailed))
        raise
    else:
        writer.close()  # every output written; a failed write fails the run
    finally:
        reader.close()
        torch.set_num_threads(model_threads)  # MKL's thread count is process-wide: restore it
        cv2.setNumThreads(opencv_threads)
        sys.setswitchinterval(switch_interval)
    rows = [row for chunk_rows in done for row in chunk_rows or ()]
    if processes:
        context.log.info(f"{len(rows)} images in {len(chunks)} chunks, the model in this process, the rest in {processes} worker processes")
    else:
        context.log.info(f"{len(rows)} images in {len(chunks)} chunks over {lanes} lanes of {lane_threads} model thread(s)")

    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[*accepted.columns, *SIGNALS, "mask_key", "cutout_key", "composite_key", "colour_distance", "mask_pixels", "mask_width", "mask_height"])
    frame["model_version"] = champion.version
    # The champion's calibrator turns the signals into P(needs correction); NaN when none is fitted yet.
    frame["needs_correction_probability"] = champion.calibrator.predict(frame) if champion.calibrator is not None and len(frame) else np.nan
    frame = frame.drop(columns=["status", "reason", "detail"], errors="ignore")
    seconds = time.perf_counter() - started
    yield dg.Output(
        frame,
        metadata={
            "images": len(frame),
            "model_version": champion.version,
            "input_size": size,
            "calibrated": champion.calibrator is not None,
            "device": str(device),
            "lanes": lanes,
            "worker_processes": processes,
            "images_per_forward_pass": chunk_size,
            "model_threads_per_lane": lane_threads,
            "mean_confidence": float(frame["confidence"].mean()) if len(frame) else 0.0,
            "signals": dg.MetadataValue.md(frame[list(SIGNALS)].describe().round(3).to_markdown()) if len(frame) else "none",
            "seconds": seconds,
            "model_load_seconds": model_seconds,
            "compiled": compiled is not None,
            "compile_seconds": compile_seconds,
            "images_per_second": len(frame) / seconds if seconds > 0 else 0.0,
            "stage_seconds": dg.MetadataValue.json({name: round(value, 4) for name, value in stages.seconds.items()}),
        },
    )
    yield check_masks(object_store, frame)


def check_masks(store: ObjectStore, frame: pd.DataFrame) -> dg.AssetCheckResult:
    """Masks were written, are non-empty, and have their image's size."""
    problems, empty = [], []
    stored = store.exists_many(frame["mask_key"].tolist())
    for row, exists in zip(frame.itertuples(), stored):
        if not exists:
            problems.append(f"{row.file}: mask missing")
        elif (row.mask_height, row.mask_width) != (row.height, row.width):
            problems.append(f"{row.file}: mask {row.mask_width}x{row.mask_height} vs image {row.width}x{row.height}")
        elif row.mask_pixels == 0:
            empty.append(f"{row.file}: empty mask")
    # A missing or mis-sized mask is a pipeline bug (error); an empty one is a model failure that routing escalates (warning).
    return dg.AssetCheckResult(
        check_name="masks_match_images",
        passed=not problems and not empty,
        severity=dg.AssetCheckSeverity.ERROR if problems else dg.AssetCheckSeverity.WARN,
        metadata={"checked": len(frame), "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in (problems + empty)[:50]) or "none")},
    )
