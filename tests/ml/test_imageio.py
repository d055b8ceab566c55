"""ml.imageio: untrusted supplier files are rejected with a reason; unusual valid files load."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from ml import imageio
from ml.imageio import (
    ImageInfo,
    ImageRejected,
    decode_mask,
    encode_jpeg,
    encode_png,
    encode_png_fast,
    inspect_image,
    load_rgb,
)


# ----------------------------------------------------------------------------- builders


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 320, h: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise: compresses like a photo, not like flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(-20, 20, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, syntactically valid PNG whose IHDR declares an enormous size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _reject(data: bytes, name: str, reason: str, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        inspect_image(data, name, **kw)
    err = info.value
    assert err.reason == reason, str(err)
    assert err.name == name
    assert str(err).startswith(f"{name}: {reason}: ")
    assert reason in imageio.REASONS
    return err


# ----------------------------------------------------------------------------- rejections


def test_zero_bytes_is_empty_file():
    _reject(b"", "drop/empty.jpg", "empty_file")


def test_truncated_png():
    data = _save(Image.fromarray(_photo()), "PNG")
    _reject(data[: len(data) // 2], "truncated.png", "truncated")


def test_truncated_jpeg_detected_by_reduced_decode():
    data = _save(Image.fromarray(_photo(800, 600)), "JPEG", quality=90)
    _reject(data[: len(data) // 2], "truncated.jpg", "truncated")
    # and load_rgb (draft path) rejects it too
    with pytest.raises(ImageRejected) as info:
        load_rgb(data[: len(data) // 2], "truncated.jpg", max_side=128)
    assert info.value.reason == "truncated"


def test_truncated_webp():
    data = _save(Image.fromarray(_photo()), "WEBP")
    _reject(data[: len(data) // 2], "cut.webp", "truncated")


def test_png_with_damaged_bytes_is_corrupt():
    data = bytearray(_save(Image.fromarray(_photo()), "PNG", compress_level=1))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    _reject(bytes(data), "damaged.png", "corrupt")


def test_file_cut_inside_the_signature_is_truncated():
    _reject(b"\x89PNG", "stub.png", "truncated")


def test_random_bytes_are_not_an_image():
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _reject(data, "noise.bin", "not_an_image")


def test_html_named_png_is_not_an_image():
    html = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>nope</body></html>"
    err = _reject(html, "supplier/sku-123.png", "not_an_image")
    assert "sku-123.png" in str(err)


def test_decompression_bomb_rejected_before_decoding():
    data = _png_declaring(100_000, 100_000)
    assert len(data) < 200  # tiny on disk, 10 gigapixels declared
    err = _reject(data, "bomb.png", "decompression_bomb")
    assert "bomb.png" in str(err)
    with pytest.raises(ImageRejected) as info:
        load_rgb(data, "bomb.png")
    assert info.value.reason == "decompression_bomb"


def test_pixel_limit_is_per_call_not_global():
    data = _save(Image.fromarray(_photo(100, 100)), "PNG")
    saved = Image.MAX_IMAGE_PIXELS
    _reject(data, "small-limit.png", "decompression_bomb", max_pixels=5_000)  # between 1x and 2x
    _reject(data, "tiny-limit.png", "decompression_bomb", max_pixels=1_000)  # above 2x
    assert Image.MAX_IMAGE_PIXELS == saved  # the global is left as it was
    assert inspect_image(data, "ok.png", max_pixels=10_000) == ImageInfo(100, 100, "PNG", "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_low_global_pillow_limit_does_not_reject_legit_images(monkeypatch, fmt):
    # another library in the process lowered Pillow's global limit far below ours
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    data = _save(Image.fromarray(_photo(100, 100)), fmt)
    assert inspect_image(data, f"x.{fmt}").width == 100
    assert load_rgb(data, f"x.{fmt}").shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1_000


def test_one_pixel_image_is_too_small():
    _reject(_save(Image.new("RGB", (1, 1), "white"), "PNG"), "pixel.png", "too_small")


def test_extreme_aspect_ratio():
    _reject(_save(Image.new("RGB", (2000, 50), "white"), "PNG"), "banner.png", "extreme_aspect_ratio")


def test_animated_gif():
    frames = [Image.new("RGB", (64, 64), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _reject(data, "spinner.gif", "animated")


def test_animated_webp():
    frames = [Image.fromarray(_photo(64, 64, seed=i)) for i in range(3)]
    data = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    _reject(data, "anim.webp", "animated")


def test_still_gif_is_unsupported():
    _reject(_save(Image.new("P", (64, 64), 3), "GIF"), "still.gif", "unsupported_format")


def test_truncation_flag_is_kept_off():
    data = _save(Image.fromarray(_photo(400, 300)), "JPEG")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.warns(RuntimeWarning):
            _reject(data[: len(data) // 2], "cut.jpg", "truncated")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_rejection_pickles():
    import pickle

    err = ImageRejected("a.png", "corrupt", "bad zlib stream")
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.reason, back.detail, str(back)) == ("a.png", "corrupt", "bad zlib stream", str(err))


# ----------------------------------------------------------------------------- valid files


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP"])
def test_supported_formats_inspect_and_load(fmt):
    rgb = _photo(120, 80)
    data = _save(Image.fromarray(rgb), fmt)
    info = inspect_image(data, f"x.{fmt.lower()}")
    assert (info.width, info.height, info.format) == (120, 80, fmt)
    out = load_rgb(data, "x")
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 12  # lossy formats are close


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # pure red in CMYK
    data = _save(cmyk, "JPEG", quality=95)
    assert inspect_image(data, "cmyk.jpg").mode == "CMYK"
    out = load_rgb(data, "cmyk.jpg")
    assert out.shape == (48, 64, 3)
    r, g, b = out[24, 32].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_scaled_to_8bit():
    ramp = (np.arange(64, dtype=np.uint32)[None, :] * 1040).astype(np.uint16).repeat(40, axis=0)
    data = _save(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_rgb(data, "deep.png")
    assert out.shape == (40, 64, 3)
    expected = np.round(ramp[0].astype(float) / 257).astype(int)
    assert np.abs(out[0, :, 0].astype(int) - expected).max() <= 1
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_greyscale():
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1))
    out = load_rgb(_save(Image.fromarray(grey, "L"), "PNG"), "grey.png")
    assert out.shape == (40, 64, 3)
    assert (out[..., 0] == grey).all() and (out[..., 2] == grey).all()


def test_palette_with_transparency_composited_over_white():
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.paste(1, (16, 16, 48, 48))  # red square on index 0
    data = _save(im, "PNG", transparency=0)  # index 0 transparent
    out = load_rgb(data, "palette.png")
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[32, 32]) == (255, 0, 0)


def test_rgba_composited_over_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 2] = 255  # blue
    rgba[:, 20:, 3] = 255  # right half opaque, left half fully transparent
    rgba[:, :5, 3] = 128  # a half-transparent strip
    out = load_rgb(encode_png(rgba), "cutout.png")
    assert tuple(out[10, 30]) == (0, 0, 255)
    assert tuple(out[10, 10]) == (255, 255, 255)
    assert tuple(out[10, 2]) == (127, 127, 255)


def test_rgb_colour_key_transparency():
    im = Image.new("RGB", (40, 40), (10, 20, 30))
    im.paste((200, 0, 0), (10, 10, 30, 30))
    out = load_rgb(_save(im, "PNG", transparency=(10, 20, 30)), "key.png")
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[20, 20]) == (200, 0, 0)


def test_exif_orientation_6_rotates():
    # stored 60 wide x 40 tall, red marker in the stored top-left corner
    arr = np.full((40, 60, 3), 255, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _save(im, "JPEG", quality=95, exif=exif.tobytes())
    info = inspect_image(data, "rotated.jpg")
    assert (info.width, info.height) == (40, 60)
    out = load_rgb(data, "rotated.jpg")
    assert out.shape == (60, 40, 3)
    # after a clockwise quarter turn the stored top-left lands at the displayed top-right
    top_right = out[:6, -6:].reshape(-1, 3).mean(axis=0)
    top_left = out[:6, :6].reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 200 and top_right[1] < 80
    assert top_left[1] > 200
    # reduced decode keeps the orientation
    small = load_rgb(data, "rotated.jpg", max_side=30)
    assert small.shape == (30, 20, 3)


def _pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow alone makes of an image: decoded, converted to RGB, turned upright by its EXIF orientation."""
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["rgb 4:2:0", "rgb 4:4:4 progressive", "grey", "png"])
def test_full_size_decode_matches_pillows_pixels_and_orientation(orientation, kind):
    # load_rgb decodes full-size RGB and grey JPEGs with OpenCV (ml.imageio._decode_jpeg_opencv),
    # a PNG with Pillow: byte for byte what Pillow makes of them, turned upright the same way
    arr = _photo(61, 37, seed=orientation)  # odd sizes: the chroma planes do not divide evenly
    im = Image.fromarray(arr).convert("L") if kind == "grey" else Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    if kind == "png":
        data = _save(im, "PNG", exif=exif.tobytes())
    else:
        options = {"subsampling": 0, "progressive": True} if "progressive" in kind else {}
        data = _save(im, "JPEG", quality=90, exif=exif.tobytes(), **options)
    out = load_rgb(data, "photo")
    expected = _pillow_rgb(data)
    if kind != "png":
        fast = imageio._decode_jpeg_opencv(data, (61, 37), orientation)
        assert fast is not None, "OpenCV should decode this JPEG itself"
        np.testing.assert_array_equal(fast, expected)
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert out.shape == expected.shape == ((61, 37, 3) if orientation >= 5 else (37, 61, 3))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_mask_applies_exif_orientation(orientation):
    mask = np.zeros((37, 61), np.uint8)
    mask[3:20, 5:50] = 255
    mask[25:30, 40:58] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(mask, "L"), "PNG", exif=exif.tobytes())
    np.testing.assert_array_equal(decode_mask(data, "mask.png"), _pillow_rgb(data)[..., 0])


def test_full_size_jpeg_damage_is_still_named_by_pillow():
    data = _save(Image.fromarray(_photo(200, 150)), "JPEG", quality=90)
    assert imageio._decode_jpeg_opencv(data[: len(data) // 2], (200, 150), 1) is None  # OpenCV refuses it ...
    with pytest.raises(ImageRejected) as err:  # ... and Pillow says why
        load_rgb(data[: len(data) // 2], "cut.jpg")
    assert err.value.reason == "truncated" and "cut.jpg" in str(err.value)


def test_ingest_gate_rejects_damage_that_opencv_decodes_through():
    # a stray start-of-image marker mid-scan: OpenCV's libjpeg decodes through it, Pillow's does
    # not; load_rgb serves files that inspect_image (ingest) accepted, and inspect_image refuses it
    data = bytearray(_save(Image.fromarray(_photo(256, 192)), "JPEG", quality=90))
    middle = len(data) // 2
    data[middle : middle + 2] = b"\xff\xd8"
    with pytest.raises(ImageRejected) as err:
        inspect_image(bytes(data), "damaged.jpg")
    assert err.value.reason == "corrupt" and "damaged.jpg" in str(err.value)


def test_cmyk_jpeg_is_converted_by_pillow():
    cmyk = Image.fromarray(_photo(40, 30)).convert("CMYK")
    data = _save(cmyk, "JPEG", quality=95)
    np.testing.assert_array_equal(load_rgb(data, "cmyk.jpg"), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_rgb_max_side(fmt):
    data = _save(Image.fromarray(_photo(1600, 900)), fmt)
    out = load_rgb(data, "big", max_side=256)
    assert out.shape == (144, 256, 3)
    assert max(load_rgb(data, "big", max_side=1000).shape[:2]) == 1000
    # an image already within the bound is not upscaled
    assert load_rgb(data, "big", max_side=4000).shape == (900, 1600, 3)


def test_reduced_jpeg_decode_matches_full_decode():
    data = _save(Image.fromarray(_photo(1024, 768)), "JPEG", quality=95)
    small = load_rgb(data, "a.jpg", max_side=128).astype(int)
    full = np.asarray(Image.fromarray(load_rgb(data, "a.jpg")).resize((128, 96), Image.Resampling.LANCZOS))
    assert small.shape == full.shape
    assert np.abs(small - full.astype(int)).mean() < 6


def test_camera_jpeg_with_preview_pictures_is_a_still_jpeg():
    # Pillow identifies a JPEG that carries extra pictures (MPF: previews, stereo) as MPO
    main, preview = Image.fromarray(_photo(96, 64)), Image.fromarray(_photo(48, 32, seed=1))
    data = _save(main, "MPO", save_all=True, append_images=[preview])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert inspect_image(data, "camera.jpg") == ImageInfo(96, 64, "JPEG", "RGB")
    assert load_rgb(data, "camera.jpg").shape == (64, 96, 3)


# ----------------------------------------------------------------------------- encode/decode


def test_png_round_trips():
    rng = np.random.default_rng(3)
    for shape in [(30, 40), (30, 40, 3), (30, 40, 4)]:
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        back = np.asarray(Image.open(io.BytesIO(encode_png(arr))))
        assert back.shape == arr.shape and (back == arr).all()


@pytest.mark.parametrize("level", [0, 1, 3])
def test_fast_png_round_trips_through_pillow_opencv_and_our_own_checks(level, monkeypatch):
    import cv2

    rng = np.random.default_rng(4)
    photo = np.clip(np.cumsum(rng.integers(-3, 4, (45, 67, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    cases = {
        "mask": (rng.random((37, 53)) > 0.5).astype(np.uint8) * 255,
        "noise RGBA": rng.integers(0, 256, (20, 31, 4), dtype=np.uint8),  # the "sub" filter's wrap-around
        "photo RGB": photo,
        "one pixel": np.array([[[1, 2, 3, 4]]], np.uint8),
        "(H, W, 1)": rng.integers(0, 256, (9, 7, 1), dtype=np.uint8),
    }
    # strips of 3 rows: the filtered rows reach the compressor in several pieces, as a 24 MP cut-out's do
    monkeypatch.setattr(imageio, "_PNG_STRIP_BYTES", 3 * 67 * 3)
    for name, arr in cases.items():
        data = encode_png_fast(arr, level)
        expected = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), expected), name
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if back.ndim == 3:
            back = cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA if back.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        assert np.array_equal(back, expected), name
        imageio._check_png_chunks(data, name)  # every chunk's CRC, as ingest and the review app check them
    assert np.array_equal(decode_mask(encode_png_fast(cases["mask"])), cases["mask"])
    assert encode_png_fast(photo, level) == encode_png_fast(np.asfortranarray(photo), level)  # any memory layout


def test_fast_png_compresses_and_rejects_what_it_cannot_write():
    mask = np.zeros((256, 256), np.uint8)
    mask[64:192, 32:224] = 255
    assert len(encode_png_fast(mask)) < 2_000  # 64 KiB of pixels: deflate ran
    for bad in [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8)]:
        with pytest.raises(ValueError):
            encode_png_fast(bad)
    with pytest.raises(ValueError, match="0..3"):
        encode_png_fast(mask, level=6)


def test_jpeg_round_trip_close():
    rgb = _photo(64, 48)
    out = load_rgb(encode_jpeg(rgb), "x.jpg")
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 8


def test_jpeg_is_a_baseline_4_4_4_jpeg_of_the_asked_quality_like_pillows():
    from PIL import JpegImagePlugin

    rgb = _photo(64, 48)
    im = Image.open(io.BytesIO(encode_jpeg(rgb, quality=92)))
    assert im.format == "JPEG" and im.mode == "RGB" and not im.info.get("progressive")
    assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4: no chroma subsampling
    pillow = io.BytesIO()
    Image.fromarray(rgb).save(pillow, "JPEG", quality=92, subsampling=0)
    assert im.quantization == Image.open(pillow).quantization  # the same quantisation tables: the same quality
    grey = Image.open(io.BytesIO(encode_jpeg(rgb[..., 1])))
    assert grey.mode == "L" and grey.size == (rgb.shape[1], rgb.shape[0])


def test_encoders_reject_bad_input():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4, 4), np.uint8))


def test_decode_mask_variants():
    mask = np.zeros((24, 32), np.uint8)
    mask[4:20, 8:24] = 255
    # grey
    assert (decode_mask(encode_png(mask)) == mask).all()
    # grey with soft values: >= 128 is foreground
    soft = (mask // 255 * 200).astype(np.uint8) + 20
    assert (decode_mask(encode_png(soft)) == mask).all()
    # bilevel
    assert (decode_mask(_save(Image.fromarray(mask).convert("1"), "PNG")) == mask).all()
    # RGB (white on black)
    assert (decode_mask(encode_png(np.repeat(mask[..., None], 3, axis=2))) == mask).all()
    # RGBA: alpha is the mask even though the colour is white everywhere
    rgba = np.full((24, 32, 4), 255, np.uint8)
    rgba[..., 3] = mask
    assert (decode_mask(encode_png(rgba)) == mask).all()
    # RGBA fully opaque: luminance decides
    rgba_opaque = np.dstack([np.repeat(mask[..., None], 3, axis=2), np.full((24, 32), 255, np.uint8)])
    assert (decode_mask(encode_png(rgba_opaque)) == mask).all()
    # 16-bit
    deep = mask.astype(np.uint16) * 257
    assert (decode_mask(_save(Image.fromarray(deep), "PNG")) == mask).all()
    out = decode_mask(encode_png(mask))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}


def test_decode_mask_rejects_garbage_with_name():
    with pytest.raises(ImageRejected) as info:
        decode_mask(b"not a png at all", "masks/sku-9.png")
    assert info.value.reason == "not_an_image"
    assert str(info.value).startswith("masks/sku-9.png: not_an_image: ")
