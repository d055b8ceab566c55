"""Corrected masks: upload checks (PNG only, size, dimensions, decompression bombs) and the preview-to-full-size merge."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from hitl_assets.review_app.images import mask_preview, merge_preview_correction
from ml.imageio import decode_mask, encode_jpeg, encode_png

W, H = 640, 480  # the seeded images; the app below shows them on a 320 x 240 preview


def upload(reviewer, task, data: bytes, name="mask.png", **fields):
    form = {"failure_modes": "edge_halo", "note": "", "seconds": "5"} | fields
    return reviewer.post(f"/api/tasks/{task}/correction", files={"mask": (name, data, "image/png")}, data=form)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size with a tiny body (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_full_size_correction_is_stored_as_png_and_linked_to_the_decision(review_env, login, review_store, object_store):
    make_app, seed = review_env
    seed(3, width=W, height=H)
    rita = login(make_app(display_side=320), "rita")
    task = rita.claim()[0]
    fixed = np.zeros((H, W), np.uint8)
    fixed[100:300, 200:450] = 255
    answer = upload(rita, task, encode_png(fixed), failure_modes="missing_part,edge_halo", note="handle")
    assert answer.status_code == 200, answer.text
    key = answer.json()["corrected_mask_key"]
    stored = review_store.task_events(task)[-1]
    assert stored.decision == "correct" and stored.corrected_mask_key == key and stored.failure_mode == "missing_part,edge_halo"
    data = object_store.get_bytes(key)
    assert data.startswith(b"\x89PNG") and np.array_equal(decode_mask(data), fixed)
    # The item view now starts from the correction, and shows it.
    item = rita.get(f"/api/tasks/{task}").json()
    assert item["mine"]["has_correction"] and item["images"]["corrected"] == f"/img/{task}/corrected"
    shown = decode_mask(rita.get(f"/img/{task}/corrected").content)
    assert shown.shape == (240, 320)


def test_a_preview_sized_correction_is_merged_at_full_resolution(review_env, login, review_store, object_store):
    make_app, seed = review_env
    seed(3, width=W, height=H)
    rita = login(make_app(display_side=320), "rita")
    task = rita.claim()[0]
    item = rita.get(f"/api/tasks/{task}").json()
    assert item["display"] == {"width": 320, "height": 240} and (item["width"], item["height"]) == (W, H)
    shown = decode_mask(rita.get(f"/img/{task}/mask").content)  # what the canvas starts from
    ai = decode_mask(object_store.get_bytes(review_store.get_task(task).mask_key))
    painted = shown.copy()
    painted[10:30, 10:60] = 255  # a brush stroke over background, top left
    answer = upload(rita, task, encode_png(painted))
    assert answer.status_code == 200, answer.text
    corrected = decode_mask(object_store.get_bytes(answer.json()["corrected_mask_key"]))
    assert corrected.shape == (H, W)
    assert corrected[22:58, 22:118].min() == 255  # the stroke, at full size
    untouched = np.ones((H, W), bool)
    untouched[16:64, 16:124] = False
    assert np.array_equal(corrected[untouched], ai[untouched])  # everything else: the full-resolution AI mask


def test_merge_rule_keeps_untouched_pixels_and_upsamples_the_changed_ones():
    base = np.zeros((400, 600), np.uint8)
    yy, xx = np.mgrid[0:400, 0:600]
    base[((xx - 300) / 200.0) ** 2 + ((yy - 200) / 120.0) ** 2 <= 1] = 255  # a fine elliptical outline
    preview = mask_preview(base, (150, 100))
    assert np.array_equal(merge_preview_correction(base, np.where(preview >= 128, 255, 0).astype(np.uint8)), base)
    painted = np.where(preview >= 128, 255, 0).astype(np.uint8)
    painted[40:60, 60:90] = 0  # erase a hole in the middle
    merged = merge_preview_correction(base, painted)
    assert merged[170:230, 250:350].max() == 0
    assert np.array_equal(merged[:100], base[:100]) and np.array_equal(merged[300:], base[300:])
    full = np.full((400, 600), 255, np.uint8)
    assert np.array_equal(merge_preview_correction(base, full), full)  # full size: taken as is


def test_uploads_that_are_not_a_clean_png_of_the_right_size_are_refused(review_env, login, review_store, object_store):
    make_app, seed = review_env
    seed(3, width=W, height=H)
    rita = login(make_app(display_side=320, max_upload_bytes=200_000), "rita")
    task = rita.claim()[0]
    ok = np.zeros((H, W), np.uint8)
    jpeg_named_png = encode_jpeg(np.zeros((H, W, 3), np.uint8))
    gif = io.BytesIO()
    Image.fromarray(ok).save(gif, "GIF")
    truncated = encode_png(np.random.default_rng(0).integers(0, 2, (H, W), dtype=np.uint8) * 255)
    noise = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    cases = {
        "jpeg": (jpeg_named_png, (415,)),
        "gif": (gif.getvalue(), (415,)),
        "empty": (b"", (400,)),
        "one pixel narrower": (encode_png(np.zeros((H, W - 1), np.uint8)), (400,)),
        "one pixel wider": (encode_png(np.zeros((H, W + 1), np.uint8)), (400, 413)),  # more pixels than the image
        "half the preview": (encode_png(np.zeros((120, 160), np.uint8)), (400,)),
        "truncated": (truncated[: len(truncated) // 2], (400,)),
        "bomb": (png_header_only(40_000, 40_000), (413,)),
        "too many bytes": (encode_png(noise, compress_level=0), (413,)),
        "text": (b"\x89PNG\r\n\x1a\nnot really a png", (400,)),
    }
    for name, (data, statuses) in cases.items():
        answer = upload(rita, task, data)
        assert answer.status_code in statuses, (name, answer.status_code, answer.text)
    missing = rita.post(f"/api/tasks/{task}/correction", data={"seconds": "1"})
    assert missing.status_code == 400
    assert review_store.task_events(task) == []
    assert not list(object_store.list("corrections/"))
    # Someone else's task: 404 before anything is stored.
    sam = login(make_app(display_side=320), "sam")
    assert upload(sam, task, encode_png(ok)).status_code == 404
