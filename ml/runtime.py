"""Process-wide settings that make CPU inference fast. No Dagster import here.

numpy, OpenCV and PyTorch allocate and free arrays of a few hundred KiB to tens of MiB on every
operation. glibc's malloc serves blocks above 128 KiB with ``mmap`` and gives freed memory back
to the kernel at once (trimming), so the next array of the same size page-faults fresh zeroed
pages all over again. On the 2-core development machine that made the guided filter of a 192 px
photo take 6 ms instead of 3 ms and, in side-by-side runs, the model's forward pass 15-50 %
slower (see the README's "Performance"). A training step showed no clear gain, so training does
not call it. PyTorch's CPU performance guide recommends a caching allocator
(jemalloc or tcmalloc through ``LD_PRELOAD``) for this; ``keep_freed_memory`` gets most of the
same effect from glibc itself, from inside the process, with ``mallopt``: the same settings as
the ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` environment variables.

The trim threshold has to be above what one forward pass frees at once. The U-Net's forward pass
on a batch of 8 at 256 px frees about 150 MiB of activations when it ends: with a 128 MiB
threshold glibc handed that back to the kernel after every batch, and the next batch
page-faulted it in again, about 4,500 faults and 5-8 ms of system time per image, against about
45 ms of CPU for the whole forward pass (2026-12-02, 2-core AMD EPYC VM, where a first touch of
memory is expensive). At 1 GiB: 0-500 faults and under 1 ms per image.

No setting here helps a block too large for a thread's heap: glibc gives every thread but the
main one an arena made of heaps of at most 64 MiB, and maps a block that does not fit in one
with ``mmap`` on every allocation (and unmaps it on every free), whatever the thresholds say.
At 8 images of 256 px the U-Net made two 64 MiB tensors per forward pass; in a lane thread that
was 4,100-4,300 page faults and 6-7 ms of kernel time per image (``strace`` showed the two maps
and unmaps per pass), against under 220 faults at 2 to 7 images (2026-12-03, 2-core Intel Xeon).
So CPU inference sizes its batches to keep every activation well under that
(``ml.infer.cpu_batch_size``).

The cost is memory that stays mapped after it is freed: at most ``trim_threshold_mib`` per
malloc arena (one per thread that allocates, bounded by glibc), and never more than the
process's own high-water mark, which it already reached. Blocks above ``mmap_threshold_mib``
(a full-size 24 MP RGB photo is 69 MiB) are still mapped and unmapped one by one, so the
large-photo path keeps its bounded footprint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_TOP_PAD = -2

_applied: tuple[int, int, int] | None = None


def keep_freed_memory(mmap_threshold_mib: int = 64, trim_threshold_mib: int = 1024, top_pad_mib: int = 64) -> bool:
    """Let glibc reuse freed memory rather than return it to the kernel after every array.

    ``top_pad_mib`` matters for threads: each thread that allocates gets its own malloc arena,
    made of 64 MiB heaps, and glibc unmaps a heap as soon as it is empty unless the arena may
    keep that much padding. With 64 MiB the lanes of ``ai_outputs`` keep theirs; in a lane
    thread the forward pass then page-faulted about 450 times per image, against 700-2,800
    times (and 1-4 ms of system time) with the trim threshold alone.

    Returns True when the settings are in force (now or from an earlier call), False where the
    C library is not glibc (macOS, musl): there nothing changes. Safe to call more than once.
    """
    global _applied
    wanted = (int(mmap_threshold_mib) << 20, int(trim_threshold_mib) << 20, int(top_pad_mib) << 20)
    if _applied == wanted:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also turns off glibc's dynamic
    # adjustment of it, so the value holds for the life of the process.
    ok = all(mallopt(param, value) == 1 for param, value in zip((_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD, _M_TOP_PAD), wanted))
    if ok:
        _applied = wanted
    return ok
