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
