"""A catalogue of hostile and unusual supplier files, shared by the decoding and the ingest tests.

Not a test module: ``tests/ml/test_bad_inputs.py`` and ``tests/hitl/test_ingest_cli.py`` load it by
path. Every builder is deterministic and small (tens of kilobytes at most).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w: int = 96, h: int = 72, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header declares an enormous size (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(save(Image.fromarray(photo(64, 48)), "JPEG", quality=80))
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def png_with_damaged_idat() -> bytes:
    data = bytearray(save(Image.fromarray(photo()), "PNG"))
    at = data.index(b"IDAT") + 20
    data[at] ^= 0xFF
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_webp() -> bytes:
    frames = [Image.fromarray(photo(64, 64, seed=i)) for i in range(3)]
    return save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)


def multipage_tiff() -> bytes:
    pages = [Image.fromarray(photo(64, 64, seed=i)) for i in range(2)]
    return save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def bad_files() -> list[tuple[str, bytes, str]]:
    """(file name, content, expected quarantine reason) for every kind of unusable file tried."""
    good_png = save(Image.fromarray(photo()), "PNG")
    good_jpeg = save(Image.fromarray(photo(256, 192)), "JPEG", quality=90)
    good_webp = save(Image.fromarray(photo()), "WEBP", quality=80)
    rng = np.random.default_rng(7)
    return [
        ("zero-bytes.jpg", b"", "empty_file"),
        ("truncated.png", good_png[: len(good_png) // 2], "truncated"),
        ("truncated.jpg", good_jpeg[: len(good_jpeg) * 2 // 3], "truncated"),
        ("truncated.webp", good_webp[: len(good_webp) // 2], "truncated"),
        ("cut-in-signature.png", good_png[:5], "truncated"),
        ("random-bytes.jpg", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_an_image"),
        ("readme-text.png", b"This is not an image, it is a text file.\n" * 20, "not_an_image"),
        ("error-page.png", b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n", "not_an_image"),
        ("bomb.png", png_declaring(100_000, 100_000), "decompression_bomb"),
        ("bomb.jpg", jpeg_declaring(60_000, 60_000), "decompression_bomb"),
        ("one-pixel.png", save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "too_small"),
        ("banner.png", save(Image.new("RGB", (1300, 40), (0, 128, 0)), "PNG"), "extreme_aspect_ratio"),
        ("animated.gif", animated_gif(), "animated"),
        ("animated.webp", animated_webp(), "animated"),
        ("two-pages.tiff", multipage_tiff(), "animated"),
        ("still.gif", save(Image.new("P", (64, 64), 3), "GIF"), "unsupported_format"),
        ("document.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n", "unsupported_format"),
        ("vector.svg", b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'/>", "unsupported_format"),
        ("phone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "unsupported_format"),
        ("damaged-crc.png", png_with_damaged_idat(), "corrupt"),
    ]


def exif_rotated_jpeg() -> bytes:
    """Stored 96 wide x 64 tall with EXIF orientation 6: displayed 64 wide x 96 tall."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(Image.fromarray(photo(96, 64)), "JPEG", quality=90, exif=exif.tobytes())


def unusual_valid_files() -> list[tuple[str, bytes, tuple[int, int]]]:
    """(file name, content, upright (width, height)) for unusual files that must be accepted, not quarantined."""
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    palette.paste(1, (16, 16, 48, 48))
    rgba = np.zeros((64, 80, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:, 40:, 3] = 255
    deep = (np.arange(80, dtype=np.uint32)[None, :] * 800).astype(np.uint16).repeat(64, axis=0)
    return [
        ("cmyk.jpg", save(Image.new("CMYK", (80, 64), (0, 255, 255, 0)), "JPEG", quality=90), (80, 64)),
        ("deep-16bit.png", save(Image.fromarray(deep), "PNG"), (80, 64)),
        ("greyscale.png", save(Image.fromarray(photo(80, 64)[..., 0], "L"), "PNG"), (80, 64)),
        ("palette-transparent.png", save(palette, "PNG", transparency=0), (64, 64)),
        ("rgba-transparent.png", save(Image.fromarray(rgba, "RGBA"), "PNG"), (80, 64)),
        ("exif-rotated.jpg", exif_rotated_jpeg(), (64, 96)),
        ("progressive.jpg", save(Image.fromarray(photo(80, 64, seed=3)), "JPEG", quality=85, progressive=True), (80, 64)),
        ("bilevel.png", save(Image.fromarray(photo(80, 64, seed=4)[..., 1] > 128), "PNG"), (80, 64)),
        ("plain.bmp", save(Image.fromarray(photo(80, 64, seed=5)), "BMP"), (80, 64)),
        ("plain.tiff", save(Image.fromarray(photo(80, 64, seed=6)), "TIFF"), (80, 64)),
    ]
