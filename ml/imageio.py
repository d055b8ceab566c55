"""Safe decoding of untrusted supplier image files (Pillow + numpy; full-size JPEG decoding and JPEG encoding through OpenCV, fast PNG through ISA-L; no Dagster).

Supplier drops are untrusted: empty uploads, HTML error pages saved as ``.png``, files cut
off mid-transfer, decompression bombs, animations, 1-pixel tracking images and 100-megapixel
TIFFs all turn up. Every function here either returns a well-formed result or raises
:class:`ImageRejected`, whose ``reason`` is one of :data:`REASONS` and whose message names
the file, so the ingest step can quarantine the file with a reason a person can act on.

Decisions worth knowing:

* **Pixel limit.** The declared size (read from the header, before any pixel is decoded) is
  checked against ``max_pixels`` (default :data:`MAX_PIXELS`). Pillow's process-wide
  ``Image.MAX_IMAGE_PIXELS`` is never relied upon: while a file is being identified it is
  set to this call's limit (under a lock, restored afterwards) and Pillow's
  ``DecompressionBombWarning``/``DecompressionBombError`` become ``decompression_bomb``
  rejections; our own explicit check then runs as well.
* **Truncation.** ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (otherwise Pillow
  silently pads a cut-off file with grey). If other code in the process turned it on, the
  functions here switch it back off before decoding.
* **Formats.** :data:`SUPPORTED_FORMATS` only. GIF is *not* supported: an animated GIF is
  rejected as ``animated`` (frames are checked before the format), a still GIF as
  ``unsupported_format`` (256-colour palettes are not product photography). Camera JPEGs
  that Pillow identifies as MPO (a JPEG carrying extra preview/stereo pictures) are treated
  as JPEG: the primary picture is used and the extra pictures are ignored. Any other
  multi-frame file (animated PNG/WebP, multi-page TIFF) is rejected as ``animated``.
* **Cheap validation.** :func:`inspect_image` proves a JPEG is complete with a 1/8-scale
  draft decode (the whole entropy-coded stream is still read, so truncation is caught, at a
  fraction of the memory and time). Other formats have no reduced-scale decoder in Pillow
  and are decoded once at full size (bounded by ``max_pixels``) and released. PNG chunk
  CRCs are verified too (Pillow skips the IDAT CRCs, so damaged bytes would otherwise decode
  to silent garbage), and a WebP shorter than its declared RIFF length is ``truncated``.
* **Size policy.** ``too_small`` (shorter side < :data:`MIN_SIDE`) and
  ``extreme_aspect_ratio`` (longer/shorter > :data:`MAX_ASPECT`) are ingest policy and are
  applied by :func:`inspect_image` only; :func:`load_rgb` and :func:`decode_mask` apply the
  structural checks (empty, not an image, format, bomb, animated, truncated, corrupt).
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from isal import isal_zlib
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "REASONS",
    "SUPPORTED_FORMATS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MAX_ASPECT",
    "ImageRejected",
    "ImageInfo",
    "inspect_image",
    "load_rgb",
    "resize_for_model",
    "encode_png",
    "encode_png_fast",
    "encode_jpeg",
    "decode_mask",
]

REASONS = (
    "empty_file",
    "not_an_image",
    "unsupported_format",
    "truncated",
    "decompression_bomb",
    "too_small",
    "extreme_aspect_ratio",
    "animated",
    "corrupt",
)
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP"})
MAX_PIXELS = 250_000_000
MIN_SIDE = 32
MAX_ASPECT = 12.0

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the flip or turn that displays the picture upright (as ImageOps.exif_transpose:
# FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90), as a
# view of an (H, W) or (H, W, C) array; a test compares every one with Pillow's.
_ORIENTATION_TURN = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` turned upright by its EXIF ``orientation`` (a contiguous copy; ``arr`` itself for 1)."""
    turn = _ORIENTATION_TURN.get(orientation)
    return np.ascontiguousarray(turn(arr)) if turn is not None else arr

# Signatures of the supported formats, to tell a damaged image from something else.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
# Recognisable image formats that are deliberately not supported.
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)


class ImageRejected(ValueError):
    """An input file that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, name: str, reason: str, detail: str):
        super().__init__(name, reason, detail)
        self.name = name
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an accepted image; width/height are after EXIF orientation."""

    width: int
    height: int
    format: str
    mode: str


# --------------------------------------------------------------------------- helpers

_limit_lock = threading.Lock()


@contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Run Pillow's own bomb checks against *this call's* limit, whatever the global says.

    Pillow checks ``Image.MAX_IMAGE_PIXELS`` while identifying a file (warning above it,
    error above twice it). We set it to ``max_pixels`` for the duration (under a lock,
    restored afterwards) and turn the warning into an exception, so anything above
    ``max_pixels`` stops before a pixel is decoded. Held only around header parsing.
    """
    with _limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _ensure_strict_truncation() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; ml.imageio switched it back to "
            "False so that truncated supplier files are detected",
            RuntimeWarning,
            stacklevel=3,
        )
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _bomb(name: str, width: int, height: int, max_pixels: int) -> ImageRejected:
    return ImageRejected(
        name,
        "decompression_bomb",
        f"declared size {width}x{height} = {width * height:,} pixels exceeds the limit of "
        f"{max_pixels:,} pixels",
    )


def _unidentified(data: bytes, name: str) -> ImageRejected:
    head = data[:16]
    for sig, fmt in _SIGNATURES:
        if head.startswith(sig):
            return ImageRejected(name, "corrupt", f"{fmt} signature but the header cannot be read")
        if len(data) < len(sig) and sig.startswith(data):
            return ImageRejected(name, "truncated", f"file ends inside the {fmt} signature ({len(data)} bytes)")
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ImageRejected(name, "corrupt", "WEBP signature but the header cannot be read")
    for sig, fmt in _UNSUPPORTED_SIGNATURES:
        if head.startswith(sig):
            return ImageRejected(name, "unsupported_format", f"{fmt} files are not supported")
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        return ImageRejected(name, "unsupported_format", f"ISO media file (brand {brand!r}, e.g. HEIC/AVIF) is not supported")
    text = data[:512].lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return ImageRejected(name, "unsupported_format", "SVG (vector) files are not supported")
    kind = "text/markup" if text[:1] in (b"<", b"{", b"[") else f"{len(data)} bytes"
    return ImageRejected(name, "not_an_image", f"not a recognisable image file ({kind}, starts with {data[:8]!r})")


def _load_error(name: str, exc: BaseException) -> ImageRejected:
    if isinstance(exc, ImageRejected):
        return exc
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageRejected(name, "decompression_bomb", str(exc))
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError) or "truncat" in msg.lower() or "end of file" in msg.lower():
        return ImageRejected(name, "truncated", f"image data ends early ({msg})")
    return ImageRejected(name, "corrupt", f"image data cannot be decoded ({type(exc).__name__}: {msg})")


# What Pillow's decoders raise on hostile or damaged input.
_DECODE_ERRORS = (
    OSError, EOFError, SyntaxError, ValueError, IndexError, TypeError, KeyError,
    struct.error, zlib.error,
    Image.DecompressionBombError, Image.DecompressionBombWarning,
)


def _open(data: bytes, name: str, max_pixels: int) -> tuple[Image.Image, str]:
    """Identify ``data`` and apply the structural checks; pixels are not decoded yet."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise ImageRejected(name, "empty_file", "file has 0 bytes")
    _check_riff_length(data, name)
    _ensure_strict_truncation()
    try:
        with _pillow_pixel_limit(max_pixels):
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise _unidentified(data, name) from None
            width, height = im.size
            if width * height > max_pixels:
                raise _bomb(name, width, height, max_pixels)
            fmt = (im.format or "").upper()
            frames = 1 if fmt == "MPO" else int(getattr(im, "n_frames", 1) or 1)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(name, "decompression_bomb", str(exc)) from None
    except _DECODE_ERRORS as exc:
        raise _load_error(name, exc) from None
    if fmt == "MPO":  # camera JPEG with embedded preview pictures: use the primary one
        fmt = "JPEG"
    if frames > 1:
        im.close()
        what = "multi-page TIFF" if fmt == "TIFF" else f"animated {fmt or 'image'}"
        raise ImageRejected(name, "animated", f"{what} with {frames} frames; a single still picture is required")
    if fmt not in SUPPORTED_FORMATS:
        im.close()
        raise ImageRejected(
            name, "unsupported_format",
            f"{fmt or 'unknown'} is not supported (supported: {', '.join(sorted(SUPPORTED_FORMATS))})",
        )
    return im, fmt


def _check_riff_length(data: bytes, name: str) -> None:
    """A WebP (RIFF) file declares its own length: a shorter file was cut off."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = struct.unpack("<I", data[4:8])[0] + 8
        if len(data) < declared:
            raise ImageRejected(name, "truncated", f"WEBP declares {declared} bytes but the file has {len(data)}")


def _check_png_chunks(data: bytes, name: str) -> None:
    """Walk the PNG chunks and verify each CRC (Pillow does not check IDAT CRCs).

    Catches bytes damaged in transfer that would otherwise decode to silent garbage.
    A missing IEND after complete image data is tolerated (the pixels are all there).
    """
    view = memoryview(data)
    pos, size = 8, len(data)
    while pos < size:
        if pos + 8 > size:
            raise ImageRejected(name, "truncated", f"PNG ends inside a chunk header at offset {pos}")
        length = struct.unpack(">I", view[pos:pos + 4])[0]
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > size:
            raise ImageRejected(
                name, "truncated",
                f"PNG {kind.decode('latin-1')!r} chunk at offset {pos} needs {end - pos} bytes, file ends after {size - pos}",
            )
        (crc,) = struct.unpack(">I", view[end - 4:end])
        if zlib.crc32(view[pos + 4:end - 4]) != crc:
            raise ImageRejected(name, "corrupt", f"CRC mismatch in PNG {kind.decode('latin-1')!r} chunk at offset {pos}")
        pos = end
        if kind == b"IEND":
            break


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        value = int(value)
    except Exception:  # malformed EXIF must not reject an otherwise good picture
        return 1
    return value if value in _ORIENTATION_TURN else 1


def _decode(im: Image.Image, name: str, fmt: str) -> None:
    """Decode the pixel data, turning damage into ImageRejected.

    The size was already checked against this call's limit. Pillow's TIFF loader checks the
    global limit again (and would call a legitimate 200-megapixel TIFF a bomb under
    Pillow's default), so a TIFF above the global is decoded under the per-call limit.
    """
    try:
        pixels = im.size[0] * im.size[1]
        global_limit = Image.MAX_IMAGE_PIXELS
        if fmt == "TIFF" and global_limit is not None and pixels > global_limit:
            with _pillow_pixel_limit(max(pixels, MAX_PIXELS)):
                im.load()
        else:
            im.load()
    except _DECODE_ERRORS as exc:
        raise _load_error(name, exc) from None


def _to_8bit_grey(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth grey ("I;16*", "I", "F") -> uint8.

    Integer modes are taken as 16-bit data (what PNG/TIFF store in them) and scaled by
    1/257; float data in 0..1 is scaled by 255, otherwise clipped to 0..255.
    """
    if mode == "F":
        f = np.nan_to_num(arr.astype(np.float64), nan=0.0)
        if f.size and float(f.max()) <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return np.clip((arr.astype(np.int64) + 128) // 257, 0, 255).astype(np.uint8)


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgb_image(im: Image.Image) -> Image.Image:
    """Any decoded mode -> an RGB image (transparency composited over white)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit grey (PNG/TIFF): scale 0..65535 -> 0..255
        grey = _to_8bit_grey(np.asarray(im), mode)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = (
        mode in _ALPHA_MODES
        or "transparency" in im.info  # tRNS: palette index or RGB/L colour key
        or (mode == "P" and im.palette is not None and im.palette.mode == "RGBA")
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        return Image.fromarray(_composite_over_white(rgba), "RGB")
    if mode == "RGB":
        return im
    if mode == "1":
        return im.convert("L").convert("RGB")
    # L, P, CMYK (Pillow undoes Adobe inversion), YCbCr, LAB, HSV, RGBX ...
    return im.convert("RGB")


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# --------------------------------------------------------------------------- public API


def inspect_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Validate an untrusted image without keeping a full-resolution copy; raise ImageRejected.

    Checks, in order: empty file, recognisable image, declared pixel count against
    ``max_pixels`` (before decoding), single frame, supported format, minimum side,
    aspect ratio, and finally that the pixel data is complete and decodable (JPEG: a
    1/8-scale draft decode; other formats: a full decode that is released at once).
    """
    im, fmt = _open(data, name, max_pixels)
    try:
        mode = im.mode
        width, height = im.size
        if _orientation(im) in (5, 6, 7, 8):
            width, height = height, width
        short, long_ = min(width, height), max(width, height)
        if short < MIN_SIDE:
            raise ImageRejected(name, "too_small", f"{width}x{height}: the shorter side must be at least {MIN_SIDE} px")
        if long_ / short > MAX_ASPECT:
            raise ImageRejected(
                name, "extreme_aspect_ratio",
                f"{width}x{height}: aspect ratio {long_ / short:.1f} exceeds {MAX_ASPECT:g}",
            )
        if fmt == "PNG":
            _check_png_chunks(data, name)
        if fmt == "JPEG":
            im.draft(None, (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
        _decode(im, name, fmt)
        return ImageInfo(width=int(width), height=int(height), format=fmt, mode=mode)
    finally:
        im.close()


def _decode_jpeg_opencv(data: bytes, size: tuple[int, int], orientation: int) -> np.ndarray | None:
    """A baseline or progressive RGB or grey JPEG decoded by OpenCV, upright; None if OpenCV cannot decode it.

    Pillow and OpenCV both decode with libjpeg-turbo (islow DCT, fancy upsampling), so the
    pixels are the same (a test compares them), but Pillow keeps RGB in four bytes per pixel
    and then copies it out into a numpy array: a 256 px photo took 0.65 ms through Pillow and
    0.35 ms here, and a 24 MP one's decode holds one 72 MB array instead of 96 MB plus 72 MB.
    Only called after Pillow has read the header (format, mode, declared size against the
    pixel limit). OpenCV returns None for a cut-off or damaged stream; the caller then decodes
    with Pillow, whose error names the reason the file is rejected.
    """
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.ndim != 3 or arr.shape[:2] != (size[1], size[0]):
        return None
    return _upright(arr, orientation)


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to the square (size, size, 3) model input (aspect not kept)."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    # INTER_AREA averages source pixels when shrinking large photos (no aliasing);
    # INTER_LINEAR is the better choice for the rare upscale.
    shrinking = height * width > size * size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def load_rgb(data: bytes, name: str, max_side: int | None = None) -> np.ndarray:
    """Decode to an upright RGB uint8 array of shape (H, W, 3); raise ImageRejected on bad data.

    EXIF orientation is applied; CMYK, 16-bit, greyscale, bilevel and palette images are
    converted; transparency is composited over white. With ``max_side`` the result's longer
    side is at most ``max_side``: JPEGs are decoded straight to a reduced scale (draft mode,
    1/2, 1/4 or 1/8, never below the target), then everything is resized (box-reduce, then
    Lanczos) to the exact bound. Without ``max_side`` the full resolution is returned; an RGB or
    grey JPEG is then decoded by OpenCV once Pillow has read and checked its header (the same
    libjpeg-turbo and the same pixels in about 60 % of the time, ``_decode_jpeg_opencv``), and by
    Pillow when OpenCV cannot decode it, so that a cut-off file is still rejected with its reason.
    OpenCV hands the whole stream to libjpeg at once and decodes through a few kinds of damage
    that Pillow's incremental decoder stops at (a stray marker mid-scan: 11 of 400 random byte
    changes to a JPEG). That is why supplier files enter through :func:`inspect_image`, which
    rejects those (``corrupt``), and ``load_rgb`` serves the files it accepted.
    """
    if max_side is not None and int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    im, fmt = _open(data, name, MAX_PIXELS)
    try:
        if fmt == "PNG":  # damaged bytes must not decode to silent garbage here either
            _check_png_chunks(data, name)
        orientation = _orientation(im)
        target = None
        if max_side is not None and max(im.size) > max_side:
            target = _target_size(im.size[0], im.size[1], int(max_side))
            if fmt == "JPEG":
                im.draft(None, target)
        elif im.format == "JPEG" and im.mode in ("RGB", "L"):  # not MPO: Pillow picks its primary picture
            rgb = _decode_jpeg_opencv(data, im.size, orientation)
            if rgb is not None:
                return rgb
        _decode(im, name, fmt)
        try:
            out = _to_rgb_image(im)
            if target is not None and out.size != target:
                out = out.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            return _upright(np.array(out, dtype=np.uint8), orientation)
        except _DECODE_ERRORS as exc:
            raise _load_error(name, exc) from None
    finally:
        im.close()


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode a uint8 (H,W) grey/mask, (H,W,3) RGB or (H,W,4) RGBA array as PNG.

    A boolean (H,W) mask is accepted and written as 0/255.
    """
    arr = np.asarray(array)
    if arr.dtype == bool and arr.ndim == 2:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {arr.dtype}")
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = modes[arr.shape[2]]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr, mode = arr[..., 0], "L"
    else:
        raise ValueError(f"encode_png expects (H,W), (H,W,3) or (H,W,4), got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), mode).save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA
#: Uncompressed bytes handed to the compressor at a time: bounds the filtered copy of a 24 MP cut-out to about 1 MB.
_PNG_STRIP_BYTES = 1 << 20


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png_fast(array: np.ndarray, level: int = 1) -> bytes:
    """PNG of a uint8 grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) array, compressed by ISA-L.

    The same pixels as :func:`encode_png`, written several times faster: the deflate stream
    comes from Intel's ISA-L (``isal``; ``level`` 0-3, 0 fastest), which compresses a 256 px
    cut-out in 0.3 ms against 1.4 ms for OpenCV's zlib at level 1 with run-length matching and
    2.9 ms for libpng's adaptive filters (2026-12-02, 2-core AMD EPYC; a 6000x4000 cut-out: 0.31 s
    against 1.55 s, 26 MB against 22 MB). No PNG library lets its deflate be chosen, so the
    container is written here: the signature, IHDR, IDAT and IEND chunks of the PNG
    specification, 8 bits per channel, not interlaced. Colour rows use the "sub" filter (each
    byte minus the same channel of the pixel to its left: without it a photo's cut-out is 75 %
    larger), grey masks none (flat areas of 0 and 255 compress best unfiltered). The rows are
    filtered and compressed a strip at a time, so no full-size copy is made.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_png_fast expects uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else 0)
    if channels not in _PNG_COLOUR_TYPES:
        raise ValueError(f"encode_png_fast expects (H,W), (H,W,3) or (H,W,4), got shape {arr.shape}")
    if not 0 <= int(level) <= 3:
        raise ValueError(f"level must be in 0..3 (ISA-L), got {level}")
    height, width = arr.shape[:2]
    row = width * channels
    flat = np.ascontiguousarray(arr).reshape(height, row)
    sub = channels > 1
    rows = max(1, min(height, _PNG_STRIP_BYTES // max(1, row)))
    strip = np.empty((rows, row + 1), dtype=np.uint8)
    strip[:, 0] = 1 if sub else 0  # each row's filter type byte
    compressor = isal_zlib.compressobj(int(level))
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0))]
    for y0 in range(0, height, rows):
        n = min(rows, height - y0)
        src, dst = flat[y0 : y0 + n], strip[:n, 1:]
        if sub:  # uint8 arithmetic wraps modulo 256, as the filter is defined
            dst[:, :channels] = src[:, :channels]
            np.subtract(src[:, channels:], src[:, :-channels], out=dst[:, channels:])
        else:
            dst[...] = src
        data = compressor.compress(strip[:n])
        if data:
            parts.append(_png_chunk(b"IDAT", data))
    parts.append(_png_chunk(b"IDAT", compressor.flush()))
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    """Encode a uint8 (H,W,3) RGB (or (H,W) grey) array as a baseline JPEG.

    Chroma is not subsampled (4:4:4): cut-outs on white have sharp colour edges that 4:2:0
    would smear.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_jpeg expects uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        mode = "RGB"
    elif arr.ndim == 2:
        mode = "L"
    else:
        raise ValueError(f"encode_jpeg expects (H,W,3) or (H,W), got shape {arr.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    # OpenCV's encoder: the very bytes Pillow writes with quality=q, subsampling=0, optimize=False
    # (both are libjpeg-turbo), without Pillow's per-image overhead (256 px: 0.22 ms against 0.36)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if mode == "RGB" else np.ascontiguousarray(arr), params)
    if not ok:  # pragma: no cover - OpenCV only fails on input excluded above
        raise ValueError(f"JPEG encoding failed for an array of shape {arr.shape}")
    return buffer.tobytes()


def decode_mask(data: bytes, name: str = "mask") -> np.ndarray:
    """Decode a mask file to (H, W) uint8 with values 0/255.

    Grey, bilevel, 16-bit, palette, RGB and RGBA files are accepted. Where the file has a
    real alpha channel (not fully opaque) alpha >= 128 is foreground; otherwise luminance
    >= 128 is. EXIF orientation, if any, is applied as for :func:`load_rgb`.
    """
    im, fmt = _open(data, name, MAX_PIXELS)
    try:
        if fmt == "PNG":
            _check_png_chunks(data, name)
        orientation = _orientation(im)
        _decode(im, name, fmt)
        try:
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "L")
                mode = im.mode
            alpha = None
            if mode in _ALPHA_MODES:
                alpha = np.asarray(im.getchannel("A"))
                if alpha.size and alpha.min() == 255:
                    alpha = None
            if alpha is not None:
                fg = alpha >= 128
            elif mode.startswith("I;16") or mode in ("I", "F"):
                fg = _to_8bit_grey(np.asarray(im), mode) >= 128
            elif mode == "1":
                fg = np.asarray(im).astype(bool)
            else:
                fg = np.asarray(im.convert("L")) >= 128
            out = np.where(fg, np.uint8(255), np.uint8(0))
            return _upright(out, orientation)
        except _DECODE_ERRORS as exc:
            raise _load_error(name, exc) from None
    finally:
        im.close()
