"""GPU serving: the champion's bare forward pass on CUDA against ai_outputs' worker-process mode.

On a CUDA host ``ai_outputs`` runs the model alone in the step's process and decodes and renders
in worker processes (``ml.render.serve_in_processes``). This benchmark runs that very function,
without Dagster or MLflow, so that it also runs on a GPU machine that has neither (the machines
lent to this project have torch, numpy, OpenCV and Pillow only):

* the bare forward pass: pre-normalised batches in page-locked memory, float16 autocast;
* ``ml.infer.predict_probabilities`` alone on decoded images (uint8 to the GPU, normalised there);
* 1,024 JPEGs at the model's size served as ``ai_outputs`` serves them on CUDA: the photos'
  bytes to ``RenderProcesses`` workers for the model inputs, the forward pass here, signals,
  post-processing and encoding in the workers, three files per photo written by two I/O threads;
  at several process counts, images per pass and photos per task;
* 6000x4000 photos the same way (``--large``).

Writes ``$HITL_HOME/bench/gpu_serving.json`` (or ``$OUT/gpu_serving.json``). Without a CUDA
device it says so and exits (``make bench`` on a CPU machine); ``--device cpu`` runs it anyway.

    .venv/bin/python benchmarks/gpu_serving.py --export champion.pt   # here: the learning curve's champion
    python benchmarks/gpu_serving.py --champion champion.pt           # there: about 1.5 minutes on an H200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import bench_dir, catalog_photo_jpeg, exported_champion, large_photo_jpeg  # noqa: E402

#: (processes, images per pass, photos per task) of the runs at the model's size
PLAN = [(12, 64, 16), (12, 64, 16), (12, 64, 8), (12, 64, 1), (12, 128, 16), (8, 64, 16), (15, 64, 16)]


def _out_dir() -> Path:
    """``$OUT`` (the device machine's folder that comes back), else ``$HITL_HOME/bench``."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else bench_dir()


def export(path: Path, home: Path) -> None:
    """Save ``home``'s champion (its MLflow registry) as a state dict that loads without MLflow."""
    import torch

    from ml.model import architecture_of
    from resources import ModelRegistry

    registry = ModelRegistry(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_location=str(home / "mlartifacts"))
    champion = registry.load_champion()
    if champion is None:
        raise SystemExit(f"{home}: no champion to export (run benchmarks/learning_curve.py first)")
    state = {"architecture": architecture_of(champion.model), "input_size": champion.input_size, "version": champion.version,
             "state_dict": champion.model.state_dict()}
    torch.save(state, path)
    print(f"champion v{champion.version} ({state['architecture']}, {state['input_size']} px) saved to {path}")


def measure(champion: Path, device: str, images: int, large: int) -> dict:
    import numpy as np
    import torch

    from ml.data import to_tensor_batch
    from ml.imageio import load_rgb
    from ml.infer import inference_model, predict_probabilities
    from ml.postprocess import BrandStandard
    from ml.render import RenderProcesses, RenderSettings, serve_in_processes

    cuda = device == "cuda"
    saved = exported_champion(champion)
    model = inference_model(saved.model, inplace=True).to(device)
    size = saved.input_size
    report = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "architecture": saved.architecture, "input_size": size, "images": images, "runs": []}
    jpegs = [catalog_photo_jpeg(i, size) for i in range(images)]  # as benchmarks/pipeline.py makes them
    rng = np.random.default_rng(0)
    photos = [large_photo_jpeg(i, rng) for i in range(large)]
    decoded = [load_rgb(data, "bench.jpg") for data in jpegs]

    def best(run, repeats: int = 3) -> float:  # images per second, the first run a warm-up
        speeds = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            speeds.append(images / (time.perf_counter() - started))
        return max(speeds[1:])

    with torch.inference_mode():
        batches = [to_tensor_batch(decoded[i : i + 64]) for i in range(0, images, 64)]
        batches = [batch.pin_memory() for batch in batches] if cuda else batches

    def bare() -> None:
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            for batch in batches:
                model(batch.to(device, non_blocking=True))["out"].float().cpu()

    report["bare_forward_ips"] = best(bare)
    report["predict_probabilities_ips"] = best(
        lambda: [predict_probabilities(model, decoded[i : i + 64], size, device=device, batch_size=64, half=True) for i in range(0, images, 64)]
    )
    del batches, decoded
    print(f"bare forward {report['bare_forward_ips']:.0f} img/s, predict_probabilities {report['predict_probabilities_ips']:.0f} img/s", flush=True)
    settings = RenderSettings(BrandStandard(), 92, 1)
    written = Path(tempfile.mkdtemp(prefix="gpu_serving-"))

    def serve(label: str, datas: list[bytes], processes: int, batch: int, per_task: int, drafted: bool) -> dict:
        records = [{"file": f"{label}-{i}.jpg", "i": i} for i in range(len(datas))]
        chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
        stages: dict[str, float] = {}
        lock = threading.Lock()
        io = ThreadPoolExecutor(2, thread_name_prefix="write")
        writes = []

        def add(name: str, seconds: float) -> None:
            with lock:
                stages[name] = stages.get(name, 0.0) + seconds

        def write(path: Path, data: bytes) -> None:
            started = time.perf_counter()
            path.write_bytes(data)
            add("write", time.perf_counter() - started)

        def deliver(index: int, position: int, rendered) -> None:
            i = chunks[index][position]["i"]
            for name, data in (("mask.png", rendered.mask_png), ("cutout.png", rendered.cutout_png), ("composite.jpg", rendered.composite_jpg)):
                writes.append(io.submit(write, written / f"{label}-{i}-{name}", data))

        def forward(inputs):  # as ai_outputs: every pass at images_per_pass, a short one padded on CUDA
            return predict_probabilities(model, inputs, size, device=device, batch_size=batch, half=True)

        started = time.perf_counter()
        with RenderProcesses(processes, settings) as workers:
            serve_in_processes(workers, chunks, lambda k: [datas[r["i"]] for r in chunks[k]], forward, deliver, size,
                               draft=lambda record: drafted, photos_per_task=per_task, add_seconds=add)
        io.shutdown(wait=True)
        for future in writes:
            future.result()
        seconds = time.perf_counter() - started
        run = {"label": label, "processes": processes, "images_per_pass": batch, "photos_per_task": per_task, "images": len(datas),
               "seconds": round(seconds, 3), "ips": round(len(datas) / seconds, 1),
               "stage_ms_per_image": {name: round(value / len(datas) * 1e3, 3) for name, value in stages.items()}}
        print(run, flush=True)
        report["runs"].append(run)
        return run

    cores = os.cpu_count() or 2
    for processes, batch, per_task in PLAN if cuda else [(max(1, cores - 1), 8, 16)]:
        serve("small", jpegs, min(processes, cores), batch, per_task, drafted=False)
    # a batch that is not a multiple of the pass: the last pass is padded, no new shape
    serve("small-1000", jpegs[:1000], min(12, cores), 64, 16, drafted=False)
    for processes in (12, 8, 15) if cuda else (max(1, cores - 1),):
        if photos:  # one chunk, as ai_outputs makes it for a handful of photos, padded to 64
            serve("large", photos, min(processes, cores), 64, 1, drafted=True)
    small = [run for run in report["runs"] if run["label"].startswith("small")]
    report["pipeline_ips"] = max(run["ips"] for run in small)
    report["ratio"] = round(report["pipeline_ips"] / report["bare_forward_ips"], 3)
    big = [run for run in report["runs"] if run["label"] == "large"]
    if big:
        report["large_image_seconds"] = round(min(run["seconds"] for run in big) / len(photos), 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, help="save the learning curve's champion to this file and stop")
    parser.add_argument("--home", type=Path, default=_out_dir() / "learning_curve_home", help="HITL home whose champion --export saves")
    parser.add_argument("--champion", type=Path, default=_out_dir() / "champion_state.pt", help="state dict saved by --export")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--large", type=int, default=16, help="6000x4000 photos (0: none)")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.home)
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_serving: no CUDA device here, nothing measured (--device cpu runs it on the CPU)")
        return
    if not args.champion.exists():
        export(args.champion, args.home)
    report = measure(args.champion, args.device, args.images, args.large)
    path = _out_dir() / "gpu_serving.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps({key: value for key, value in report.items() if key != "runs"}, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
