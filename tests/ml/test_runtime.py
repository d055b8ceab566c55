"""Process-wide allocator settings for fast CPU inference (ml.runtime)."""

import sys

import numpy as np
import pytest

from ml import runtime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")
def test_keep_freed_memory_applies_once_and_is_idempotent():
    assert runtime.keep_freed_memory() is True
    assert runtime.keep_freed_memory() is True  # a second call changes nothing and still reports success
    # arrays still allocate, free and compute as before
    total = sum(float(np.ones(1 << 18, np.float32).sum()) for _ in range(20))
    assert total == 20 * (1 << 18)


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")
@pytest.mark.parametrize("where", ["main thread", "lane thread"])
def test_memory_a_forward_pass_frees_is_reused_without_page_faults(where):
    """Freeing a few hundred MiB of activation-sized arrays keeps them for the next batch (no fresh page faults).

    In the main thread that is the trim threshold; in another thread (ai_outputs' lanes, each with
    its own malloc arena of 64 MiB heaps) it is also the top pad, without which empty heaps are unmapped.
    """
    import resource
    import threading

    assert runtime.keep_freed_memory() is True
    faults: list[int] = []

    def run() -> None:
        def batch() -> None:
            # 160 arrays of 1.5 MiB (each below the mmap threshold, so from malloc's heap): 240 MiB, all freed at the end
            arrays = [np.ones(3 << 18, np.float16) for _ in range(160)]
            del arrays

        batch()  # the first pass maps the memory
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        batch()
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

    if where == "main thread":
        run()
    else:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    pages = 240 * 2**20 // resource.getpagesize()
    # with glibc's defaults (or a 128 MiB trim threshold, or no top pad in a thread) the freed
    # memory went back to the kernel and every page faulted again: ~61,000 faults here
    assert faults[0] < pages // 10, f"{faults[0]} page faults for {pages} pages of reused memory"
