"""Shared plumbing of the performance benchmarks (not a benchmark itself: `make bench` skips `_*.py`).

Each measurement runs in a fresh Python subprocess (``run_phase``), so its peak resident memory
(``ru_maxrss`` of that process) belongs to that measurement alone and nothing cached by an
earlier one (decoded images, allocator pools, imported modules) flatters a later one.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench_dir() -> Path:
    """``$HITL_HOME/bench`` (``.hitl/bench`` by default), created."""
    path = Path(os.environ.get("HITL_HOME", ROOT / ".hitl")).resolve() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process (since the last ``reset_peak_rss``), MiB.

    ``VmHWM`` of ``/proc/self/status`` on Linux (the high-water mark ``reset_peak_rss`` resets),
    else ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5), so set-up does not count.

    Returns False where that is not possible (the peak then includes set-up).
    """
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, memory, load, torch and device."""
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": gpu,
    }


def run_phase(script: Path, phase: str, params: dict, timeout: float = 1800) -> dict:
    """Run ``script --phase PHASE --params JSON`` in a fresh interpreter; returns the JSON it prints last.

    The child's own peak RSS is part of what it returns; the parent also records wall seconds.
    """
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--phase", phase, "--params", json.dumps(params)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        # the repository first, then the caller's own path (packages installed outside the environment, say)
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"benchmark phase {phase!r} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(proc.stderr[-8000:])
        raise RuntimeError(f"benchmark phase {phase!r} printed no result")
    result = json.loads(lines[-1])
    result["phase_wall_seconds"] = time.perf_counter() - started
    return result


def catalog_photo_jpeg(index: int, size: int) -> bytes:
    """A synthetic catalog photo at the model's input size (size x size), as a JPEG."""
    import cv2

    from ml.imageio import encode_jpeg
    from ml.synthetic import generate_item

    image = cv2.resize(generate_item(index, seed=8, max_side=size).image, (size, size), interpolation=cv2.INTER_AREA)
    return encode_jpeg(image, quality=92)


def large_photo_jpeg(index: int, rng, width: int = 6000, height: int = 4000) -> bytes:
    """A supplier-sized photo (6000x4000 by default), as a JPEG: a synthetic product upscaled, with
    sensor noise from ``rng`` (a numpy Generator), so that it carries a real photo's entropy."""
    import cv2
    import numpy as np

    from ml.imageio import encode_jpeg
    from ml.synthetic import generate_item

    image = cv2.resize(generate_item(index, seed=9, max_side=1536).image, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(0, 9, size=image.shape, dtype=np.uint8)
    return encode_jpeg(cv2.subtract(cv2.add(image, noise), np.full_like(image, 4)), quality=90)


def exported_champion(path):
    """The champion saved by ``benchmarks/gpu_serving.py --export``, a state dict that loads without
    MLflow (for a machine without the learning curve's home, such as a lent GPU machine): a
    namespace of ``model`` (on the CPU), ``architecture``, ``input_size`` and ``version``."""
    import types

    import torch

    from ml.model import build_model

    saved = torch.load(path, map_location="cpu")
    model = build_model(architecture=saved["architecture"])
    model.load_state_dict(saved["state_dict"])
    return types.SimpleNamespace(model=model, architecture=saved["architecture"], input_size=int(saved["input_size"]), version=saved["version"])


def emit(result: dict) -> None:
    """The child's answer to ``run_phase``: one JSON line on stdout."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def table(rows: list[list], headers: list[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
