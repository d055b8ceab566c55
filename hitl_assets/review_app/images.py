"""Screen-sized renditions of the images a reviewer looks at, and checks on uploaded corrected masks."""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np
from PIL import Image

from ml.imageio import ImageRejected, decode_mask, encode_jpeg, encode_png, inspect_image, load_rgb

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RENDITION_KINDS = ("original", "composite", "mask", "corrected")


class UploadRejected(ValueError):
    """An uploaded mask the app refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__(detail)
        self.detail, self.status = detail, status


def display_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The rendition's size: the image scaled so its longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def rgb_rendition(data: bytes, name: str, size: tuple[int, int]) -> bytes:
    """A JPEG of the image at exactly ``size`` (JPEG sources are decoded at a reduced scale first)."""
    rgb = load_rgb(data, name, max_side=max(size))
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return encode_jpeg(rgb, quality=88)


def mask_preview(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (height, width) = ``size[::-1]`` grey preview of a full-size 0/255 mask (area-averaged, so thin parts
    stay visible). The review canvas shows this; :func:`merge_preview_correction` compares against it."""
    if (mask.shape[1], mask.shape[0]) == size:
        return np.ascontiguousarray(mask, dtype=np.uint8)
    method = Image.Resampling.BOX if size[0] < mask.shape[1] else Image.Resampling.NEAREST
    return np.ascontiguousarray(np.asarray(Image.fromarray(mask, "L").resize(size, method)), dtype=np.uint8)


def mask_rendition(data: bytes, name: str, size: tuple[int, int]) -> bytes:
    """A greyscale PNG of the mask at exactly ``size`` (see :func:`mask_preview`)."""
    return encode_png(mask_preview(decode_mask(data, name), size), compress_level=3)


def merge_preview_correction(base: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """The full-resolution corrected mask from a mask painted on the screen-sized preview.

    ``base`` is the full-size 0/255 mask the reviewer started from (the AI mask, or their earlier
    correction); ``painted`` is what they saved, at the preview's size. The upsampling rule: a preview
    pixel the reviewer changed (its thresholded value differs from the preview of ``base`` at half
    grey), grown by one preview pixel, takes the painted mask upsampled bilinearly and thresholded at
    half; every other pixel keeps ``base`` exactly, so the full-resolution outline of the parts nobody
    touched survives the round trip through a 1600-pixel canvas.
    """
    height, width = base.shape
    ph, pw = painted.shape
    if (pw, ph) == (width, height):
        return np.where(painted >= 128, 255, 0).astype(np.uint8)
    shown = mask_preview(base, (pw, ph)) >= 128
    changed = (painted >= 128) != shown
    if not changed.any():
        return base.copy()
    changed = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    changed_full = cv2.resize(changed.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    upsampled = cv2.resize(painted, (width, height), interpolation=cv2.INTER_LINEAR) >= 128
    return np.where(changed_full, np.where(upsampled, 255, 0), base).astype(np.uint8)


class RenditionCache:
    """Encoded renditions kept in memory, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


def check_corrected_mask(data: bytes, sizes: list[tuple[int, int]] | tuple[int, int], max_bytes: int) -> np.ndarray:
    """Validate an uploaded corrected mask and return it as a (height, width) 0/255 array.

    PNG only (by content, not by name), at most ``max_bytes``, exactly one of ``sizes`` (width, height):
    the image's full size or the preview's. The declared pixel count is checked before any pixel is
    decoded (decompression bombs: nothing larger than the image itself is decoded), and the PNG's
    chunks and data must be complete.
    """
    if isinstance(sizes, tuple):
        sizes = [sizes]
    allowed = " or ".join(f"{w}x{h}" for w, h in sizes)
    if len(data) == 0:
        raise UploadRejected("the corrected mask is empty")
    if len(data) > max_bytes:
        raise UploadRejected(f"the corrected mask is larger than {max_bytes} bytes", status=413)
    if not data.startswith(PNG_SIGNATURE):
        raise UploadRejected("the corrected mask must be a PNG file", status=415)
    try:
        # At most the image's own pixel count: anything bigger is refused before decoding.
        info = inspect_image(data, "corrected mask", max_pixels=max(1, max(w * h for w, h in sizes)))
    except ImageRejected as exc:
        if exc.reason == "decompression_bomb":
            raise UploadRejected(f"the corrected mask must be {allowed} pixels ({exc.detail})", status=413) from None
        raise UploadRejected(f"the corrected mask is not a usable PNG: {exc.reason}") from None
    if info.format != "PNG":
        raise UploadRejected("the corrected mask must be a PNG file", status=415)
    if (info.width, info.height) not in sizes:
        raise UploadRejected(f"the corrected mask is {info.width}x{info.height}; expected {allowed}")
    try:
        mask = decode_mask(data, "corrected mask")
    except ImageRejected as exc:
        raise UploadRejected(f"the corrected mask is not a usable PNG: {exc.reason}") from None
    if (mask.shape[1], mask.shape[0]) not in sizes:
        raise UploadRejected(f"the corrected mask is {mask.shape[1]}x{mask.shape[0]}; expected {allowed}")
    return mask


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) of an image, upright, without decoding it at full size."""
    info = inspect_image(data, name)
    return info.width, info.height


__all__ = [
    "RENDITION_KINDS", "RenditionCache", "UploadRejected", "check_corrected_mask", "display_size",
    "image_size", "mask_preview", "mask_rendition", "merge_preview_correction", "rgb_rendition",
]
