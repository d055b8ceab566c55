"""Every kind of bad supplier file is rejected with a reason that names the problem; unusual valid files load.

The file-level kinds live in ``bad_inputs.py`` (shared with the ingest tests, which add the kinds
that only exist in a folder: vanished files, symlinks, duplicates, odd names, files still arriving).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ml.imageio import REASONS, ImageRejected, inspect_image, load_rgb

_spec = importlib.util.spec_from_file_location("bad_inputs", Path(__file__).with_name("bad_inputs.py"))
bad_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bad_inputs)

BAD = bad_inputs.bad_files()
VALID = bad_inputs.unusual_valid_files()


def test_the_catalogue_covers_at_least_twenty_kinds():
    assert len(BAD) >= 20
    assert len({name for name, _, _ in BAD}) == len(BAD)


@pytest.mark.parametrize(("name", "data", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_rejected_with_a_reason_naming_the_problem(name, data, reason):
    with pytest.raises(ImageRejected) as info:
        inspect_image(data, name)
    err = info.value
    assert err.reason == reason, str(err)
    assert reason in REASONS
    assert str(err).startswith(f"{name}: {reason}: ") and len(err.detail) > 10
    # the decoder the model uses refuses it too (structural kinds), never returning garbage pixels
    if reason not in ("too_small", "extreme_aspect_ratio"):
        with pytest.raises(ImageRejected):
            load_rgb(data, name, max_side=64)


@pytest.mark.parametrize(("name", "data", "size"), VALID, ids=[v[0] for v in VALID])
def test_unusual_but_valid_file_is_accepted_upright_as_rgb(name, data, size):
    info = inspect_image(data, name)
    assert (info.width, info.height) == size
    rgb = load_rgb(data, name)
    assert rgb.dtype == np.uint8 and rgb.shape == (size[1], size[0], 3)
    small = load_rgb(data, name, max_side=48)
    assert max(small.shape[:2]) == 48 and (small.shape[1] > small.shape[0]) == (size[0] > size[1])


def test_exif_rotation_is_applied_before_the_model_sees_the_picture():
    data = bad_inputs.exif_rotated_jpeg()
    stored = load_rgb(data, "x.jpg")
    assert stored.shape == (96, 64, 3)  # stored 96x64 landscape, displayed portrait
    # the stored picture's left edge (x=0: red channel 0) is the displayed top edge after a clockwise turn
    assert stored[0, :, 0].mean() < 40 and stored[-1, :, 0].mean() > 200


def test_a_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch):
    from PIL import ImageFile

    def refuse(*_a, **_k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    for name, data, reason in BAD:
        if reason == "decompression_bomb":
            with pytest.raises(ImageRejected, match="decompression_bomb: .*exceeds"):
                inspect_image(data, name)
