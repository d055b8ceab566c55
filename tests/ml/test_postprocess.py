"""Post-processing: alpha refinement, colour correction, shadow, composite, cut-out."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from ml.metrics import mask_iou
from ml.postprocess import (
    BrandStandard,
    PostprocessResult,
    apply_gains,
    background_reference,
    binary_mask,
    colour_distance,
    composite,
    cutout_rgba,
    drop_shadow,
    estimate_colour_gains,
    postprocess,
    refine_alpha,
)

WHITE = (255, 255, 255)
CAST = np.array([1.1, 1.0, 0.85])


def square_prob(size: int = 320, lo: int = 80, hi: int = 240) -> np.ndarray:
    p = np.zeros((size, size), np.float32)
    p[lo:hi, lo:hi] = 1.0
    return p


def product_scene(h: int = 400, w: int = 600, background=(220, 220, 220), seed: int = 0):
    """A coloured box with a blue band on a plain background with sensor noise, its exact mask, its box."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    top, bottom, left, right = h // 4, 3 * h // 4, w // 3, 2 * w // 3
    mask[top:bottom, left:right] = 255
    img = np.empty((h, w, 3), np.float64)
    img[:] = background
    img[mask > 0] = (180, 90, 60)
    img[top + 10 : top + 30, left:right] = (60, 120, 200)
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask, (top, bottom, left, right)


def with_cast(img: np.ndarray, cast=CAST) -> np.ndarray:
    return np.clip(np.rint(img * np.asarray(cast)[None, None, :]), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("shape", [(64, 96), (300, 200), (321, 321)])
def test_refine_alpha_shape_and_dtype(shape):
    h, w = shape
    alpha = refine_alpha(square_prob(), h, w)
    assert alpha.shape == (h, w) and alpha.dtype == np.uint8
    guided = refine_alpha(square_prob(), h, w, image=np.full((h, w, 3), 128, np.uint8))
    assert guided.shape == (h, w) and guided.dtype == np.uint8


def test_refine_alpha_large_photo_square_is_accurate_and_antialiased():
    h, w = 4000, 6000
    alpha = refine_alpha(square_prob(), h, w)
    assert alpha.shape == (h, w) and alpha.dtype == np.uint8
    exact = np.zeros((h, w), np.uint8)
    exact[1000:3000, 1500:4500] = 255  # rows 80..240 of 320 -> 1000..3000; cols -> 1500..4500
    assert mask_iou(binary_mask(alpha), exact) > 0.98
    # inside and far outside are exact, the edge is a short anti-aliased ramp
    assert alpha[2000, 3000] == 255 and alpha[100, 100] == 0
    across_left = alpha[2000, 1470:1530].astype(int)
    across_top = alpha[970:1030, 3000].astype(int)
    for profile in (across_left, across_top):
        partial = profile[(profile > 0) & (profile < 255)]
        assert 1 <= len(partial) <= 8
        assert np.all(np.diff(profile) >= 0)  # monotone ramp from outside to inside


def test_refine_alpha_accepts_model_output_shapes_and_nan():
    p = square_prob(64, 16, 48)[None]  # (1, h, w) as a model might return it
    p[0, 0, 0] = np.nan
    alpha = refine_alpha(p, 128, 128)
    assert alpha.shape == (128, 128) and alpha[0, 0] == 0


def test_refine_alpha_with_image_snaps_coarse_edges_to_the_photo():
    img, truth, _ = product_scene(900, 1350)
    # a coarse model: predicted at 1/8 of a 320 px input, then bilinearly upsampled (soft, rounded edges)
    coarse = cv2.resize(truth, (40, 40), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    prob = cv2.resize(coarse, (320, 320), interpolation=cv2.INTER_LINEAR)
    plain = refine_alpha(prob, 900, 1350)
    guided = refine_alpha(prob, 900, 1350, image=img)
    iou_plain, iou_guided = mask_iou(binary_mask(plain), truth), mask_iou(binary_mask(guided), truth)
    assert iou_guided > iou_plain
    assert iou_guided > 0.99
    err_plain = np.abs(plain.astype(int) - truth).mean()
    err_guided = np.abs(guided.astype(int) - truth).mean()
    assert err_guided < err_plain


def test_binary_mask_values():
    alpha = np.array([[0, 1, 127, 128], [129, 200, 254, 255]], np.uint8)
    m = binary_mask(alpha)
    assert m.dtype == np.uint8
    assert m.tolist() == [[0, 0, 0, 255], [255, 255, 255, 255]]
    assert binary_mask(alpha, threshold=201).tolist() == [[0, 0, 0, 0], [0, 0, 255, 255]]
    assert set(np.unique(binary_mask(refine_alpha(square_prob(), 500, 700)))) == {0, 255}


# --------------------------------------------------------------------------- colour


def test_apply_gains_on_a_known_cast():
    img = np.zeros((4, 5, 3), np.uint8)
    img[:] = (200, 100, 60)
    img[0, 0] = (250, 250, 240)
    out = apply_gains(img, np.array([1.1, 1.0, 0.85], np.float32))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert out[1, 1].tolist() == [220, 100, 51]
    assert out[0, 0].tolist() == [255, 250, 204]  # saturates instead of wrapping
    assert np.array_equal(apply_gains(img, np.ones(3, np.float32)), img)


def test_estimate_colour_gains_recovers_a_synthetic_cast():
    img, mask, _ = product_scene(background=(220, 220, 220))
    cast = with_cast(img)
    gains = estimate_colour_gains(cast, mask, target_rgb=(220, 220, 220))
    assert gains.dtype == np.float32 and gains.shape == (3,)
    np.testing.assert_allclose(gains, 1.0 / CAST, rtol=0.03)
    # toward white the gains also lift exposure, but keep the cast's ratios
    to_white = estimate_colour_gains(cast, mask)
    np.testing.assert_allclose(to_white * CAST, 255 / 220, rtol=0.03)
    corrected = apply_gains(cast, gains)
    background = corrected[mask == 0].astype(float).mean(axis=0)
    np.testing.assert_allclose(background, 220, atol=4)


def test_estimate_colour_gains_ignores_product_and_shadows_and_clips():
    img, mask, (top, bottom, left, right) = product_scene(background=(230, 230, 230))
    img[bottom : bottom + 40, left:right] = (120, 120, 120)  # the photo's own grey shadow on the floor
    np.testing.assert_allclose(estimate_colour_gains(img, mask, target_rgb=(230, 230, 230)), 1.0, atol=0.02)
    dark = (img // 3).astype(np.uint8)
    gains = estimate_colour_gains(dark, mask, max_gain=1.4)
    np.testing.assert_allclose(gains, 1.4, atol=1e-6)


def test_estimate_colour_gains_without_background_is_neutral():
    img, _, _ = product_scene()
    everything = np.full(img.shape[:2], 255, np.uint8)
    assert estimate_colour_gains(with_cast(img), everything).tolist() == [1.0, 1.0, 1.0]


def test_estimate_colour_gains_leaves_coloured_backdrops_alone():
    img, mask, _ = product_scene(background=(60, 170, 80))  # a green backdrop, not a white with a cast
    assert estimate_colour_gains(img, mask).tolist() == [1.0, 1.0, 1.0]


def test_background_reference_is_the_background_colour():
    img, mask, _ = product_scene(background=(220, 220, 220))
    ref = background_reference(with_cast(img), mask)
    assert len(ref) == 3 and all(isinstance(c, float) for c in ref)
    np.testing.assert_allclose(ref, np.array([242.0, 220.0, 187.0]), atol=3)


def test_colour_distance_known_values():
    assert colour_distance(WHITE, WHITE) == pytest.approx(0.0, abs=1e-9)
    assert colour_distance(WHITE, (0, 0, 0)) == pytest.approx(100.0, abs=1e-6)
    # sRGB red is Lab (53.24, 80.09, 67.20), blue (32.30, 79.19, -107.86)
    assert colour_distance((255, 0, 0), (0, 0, 0)) == pytest.approx(117.34, abs=0.1)
    assert colour_distance((255, 0, 0), (0, 0, 255)) == pytest.approx(176.31, abs=0.1)
    forth, back = colour_distance((10, 20, 30), (40, 50, 60)), colour_distance((40, 50, 60), (10, 20, 30))
    assert forth == pytest.approx(back) and forth > 0


# --------------------------------------------------------------------------- shadow, composite, cut-out


def test_drop_shadow_lies_below_the_product():
    _, mask, (top, bottom, left, right) = product_scene()
    brand = BrandStandard()
    shadow = drop_shadow(mask, brand)
    assert shadow.shape == mask.shape and shadow.dtype == np.uint8
    centre = (left + right) // 2
    assert shadow[bottom + 3, centre] > shadow[top - 3, centre]
    assert shadow[bottom + 3, centre] > 20
    assert shadow[5, 5] == 0
    assert shadow.max() <= round(255 * brand.shadow_opacity) + 1
    assert not drop_shadow(mask, BrandStandard(shadow_opacity=0)).any()


def test_composite_background_product_and_shadow():
    img, mask, (top, bottom, left, right) = product_scene()
    cast = with_cast(img)
    gains = np.array([1 / 1.1, 1.0, 1 / 0.85], np.float32)
    brand = BrandStandard(background_rgb=(250, 248, 245))
    out = composite(cast, mask, brand, gains)
    assert out.dtype == np.uint8 and out.shape == img.shape
    # far from the product and its shadow: exactly the brand background
    assert np.all(out[:20] == brand.background_rgb)
    assert np.all(out[:, :20] == brand.background_rgb)
    # inside: exactly the gain-corrected photo
    corrected = apply_gains(cast, gains)
    assert np.array_equal(out[top:bottom, left:right], corrected[top:bottom, left:right])
    # just below the product: darker than the background (the shadow)
    below = out[bottom + 2 : bottom + 6, left + 20 : right - 20].astype(int)
    assert np.all(below.sum(axis=-1) < sum(brand.background_rgb) - 20)
    # without a shadow, every non-product pixel is the brand colour
    flat = composite(cast, mask, BrandStandard(shadow_opacity=0))
    assert np.all(flat[mask == 0] == WHITE)
    assert np.array_equal(flat[mask > 0], cast[mask > 0])


@pytest.mark.parametrize("background", [(255, 255, 255), (200, 200, 200), (250, 248, 245), (40, 120, 200)])
def test_composite_background_is_the_brand_colour_darkened_by_the_shadow(background):
    """Outside the product each channel is background * (255 - shadow) / 255, rounded: grey brands
    (one-channel table, repeated) and coloured ones (three-channel table) alike."""
    img, mask, _ = product_scene()
    brand = BrandStandard(background_rgb=background, shadow_opacity=0.6)
    out = composite(img, mask, brand)
    shadow = drop_shadow(mask, brand).astype(np.float64)
    expected = np.rint(np.array(background, np.float64) * (255.0 - shadow[..., None]) / 255.0)
    outside = mask == 0
    assert (shadow[outside] > 50).any()  # the shadow reaches outside the product
    assert np.array_equal(out[outside], expected[outside].astype(np.uint8))


def test_composite_blends_soft_edges_in_proportion_to_alpha():
    img = np.zeros((8, 256, 3), np.uint8)
    img[:] = (0, 100, 200)
    alpha = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    out = composite(img, alpha, BrandStandard(shadow_opacity=0)).astype(int)
    a = np.arange(256)[:, None]
    expected = (a * np.array([0, 100, 200]) + (255 - a) * 255) / 255
    assert np.abs(out[4] - expected).max() <= 1


def test_composite_edges_are_blended_exactly_as_opencv_blend_linear():
    """Only edge pixels are blended, with cv2.blendLinear's arithmetic: byte for byte the same as blending everything."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (300, 200), dtype=np.uint8)
    alpha[:40] = 0
    alpha[-40:] = 255
    background = (250, 240, 230)
    out = composite(img, alpha, BrandStandard(background_rgb=background, shadow_opacity=0))
    w1 = alpha.astype(np.float32) * np.float32(1.0 / 255.0)
    back = np.empty_like(img)
    back[:] = background
    assert np.array_equal(out, cv2.blendLinear(img, back, w1, np.float32(1.0) - w1))


def test_cutout_rgba():
    img, mask, _ = product_scene(120, 160)
    alpha = refine_alpha(cv2.resize(mask, (40, 30)).astype(np.float32) / 255, 120, 160)
    cut = cutout_rgba(img, alpha)
    assert cut.shape == (120, 160, 4) and cut.dtype == np.uint8
    assert np.array_equal(cut[..., 3], alpha)
    visible = alpha > 0
    assert np.array_equal(cut[..., :3][visible], img[visible])
    assert not cut[..., :3][~visible].any()  # fully transparent pixels are stored black


# --------------------------------------------------------------------------- pipeline


def test_postprocess_end_to_end_corrects_a_cast():
    img, mask, (top, bottom, left, right) = product_scene(background=(235, 235, 235))
    cast = with_cast(img, (1.05, 1.0, 0.88))
    prob = cv2.resize(mask, (320, 320), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    result = postprocess(cast, prob)
    assert isinstance(result, PostprocessResult)
    h, w = img.shape[:2]
    assert result.alpha.shape == (h, w) and result.alpha.dtype == np.uint8
    assert result.mask.shape == (h, w) and set(np.unique(result.mask)) <= {0, 255}
    assert result.composite.shape == (h, w, 3) and result.composite.dtype == np.uint8
    assert result.cutout.shape == (h, w, 4) and np.array_equal(result.cutout[..., 3], result.alpha)
    assert result.gains.shape == (3,) and result.gains.dtype == np.float32
    assert mask_iou(result.mask, mask) > 0.97
    # white balance restored: the cast's ratios are undone
    np.testing.assert_allclose(result.gains * np.array([1.05, 1.0, 0.88]), result.gains[1], rtol=0.03)
    centre = result.composite[(top + bottom) // 2 + 40, (left + right) // 2].astype(float)
    original = img[(top + bottom) // 2 + 40, (left + right) // 2].astype(float)
    np.testing.assert_allclose(centre / centre[1], original / original[1], rtol=0.06)
    assert result.colour_distance > 5
    assert np.all(result.composite[:10, :10] == WHITE)
    inside = result.alpha == 255  # the cut-out carries the same corrected product
    assert np.array_equal(result.cutout[..., :3][inside], result.composite[inside])
    # a neutral white studio photo is (almost) left alone
    neutral = postprocess(product_scene(background=(253, 253, 253))[0], prob)
    assert neutral.colour_distance < 2
    np.testing.assert_allclose(neutral.gains, 1.0, atol=0.02)


def test_postprocess_without_colour_correction_or_shadow():
    img, mask, _ = product_scene(background=(200, 210, 230))
    prob = cv2.resize(mask, (320, 320), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    result = postprocess(img, prob, BrandStandard(correct_colour=False, shadow_opacity=0))
    assert result.gains.tolist() == [1.0, 1.0, 1.0]
    assert result.colour_distance > 5  # still measured
    inside = result.alpha == 255
    assert np.array_equal(result.composite[inside], img[inside])
    assert np.all(result.composite[result.alpha == 0] == WHITE)


def test_postprocess_with_an_explicit_mask_ignores_prob():
    img, mask, _ = product_scene()
    human = mask.copy()
    human[:, : img.shape[1] // 2] = 0  # the reviewer kept only the right half
    wrong = np.ones((320, 320), np.float32)
    with_prob = postprocess(img, wrong, mask=human)
    without = postprocess(img, None, mask=human)
    assert np.array_equal(with_prob.mask, human)
    for field in ("alpha", "mask", "composite", "cutout", "gains"):
        assert np.array_equal(getattr(with_prob, field), getattr(without, field))
    inside = cv2.erode(human, np.ones((3, 3), np.uint8)) > 0
    assert np.all(with_prob.alpha[inside] == 255)
    assert np.all(with_prob.alpha[cv2.dilate(human, np.ones((3, 3), np.uint8)) == 0] == 0)
    # 0/1 and boolean masks are accepted too
    assert np.array_equal(postprocess(img, None, mask=human > 0).mask, human)
    with pytest.raises(ValueError):
        postprocess(img, None)


def test_postprocess_memory_stays_bounded():
    """No full-size float copies: traced numpy allocations stay near the outputs' own size."""
    h, w = 2000, 3000
    img = np.full((h, w, 3), 225, np.uint8)
    img[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = (180, 90, 60)
    prob = square_prob()
    postprocess(img[:50, :50].copy(), prob)  # warm up lazy imports/caches
    tracemalloc.start()
    try:
        result = postprocess(img, prob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = sum(a.nbytes for a in (result.alpha, result.mask, result.composite, result.cutout))
    # allowed beyond the outputs: about one uint8 copy of the photo (shadow map, strips) plus the
    # fixed-size working copy; a float32 copy of the photo alone would be 4 x img.nbytes
    assert peak < outputs + img.nbytes + 24 * 2**20


# --------------------------------------------------------------------------- speed-ups (issue 8): same results


def _guided_filter_per_plane(guide, p, radius, eps):
    """The colour guided filter written plane by plane (the form the multi-channel version replaced)."""
    from ml.postprocess import _box

    chans = [np.ascontiguousarray(guide[..., c]) for c in range(3)]
    means = [_box(c, radius) for c in chans]
    mp = _box(p, radius)
    cov = [_box(c * p, radius) - m * mp for c, m in zip(chans, means)]
    sigma = np.empty(p.shape + (3, 3), np.float64)
    for i in range(3):
        for j in range(3):
            sigma[..., i, j] = _box(chans[i] * chans[j], radius) - means[i] * means[j] + (eps if i == j else 0.0)
    a = np.linalg.solve(sigma, np.stack(cov, axis=-1)[..., None])[..., 0].astype(np.float32)
    b = mp - sum(a[..., i] * means[i] for i in range(3))
    return sum(_box(np.ascontiguousarray(a[..., i]), radius) * chans[i] for i in range(3)) + _box(b, radius)


def test_guided_filter_matches_the_per_plane_definition():
    from ml.postprocess import _guided_filter

    rng = np.random.default_rng(0)
    img, mask, _ = product_scene(120, 160)
    p = np.clip(cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3) + rng.normal(0, 0.02, mask.shape).astype(np.float32), 0, 1)
    fast = _guided_filter(img, p, radius=4, eps=1e-3)
    reference = _guided_filter_per_plane(img.astype(np.float32) / 255.0, p, radius=4, eps=1e-3)
    np.testing.assert_allclose(fast, reference, atol=2e-3)


def test_postprocess_reports_stage_timings_without_changing_the_result():
    img, mask, _ = product_scene(200, 300)
    prob = cv2.resize(mask.astype(np.float32) / 255.0, (96, 96), interpolation=cv2.INTER_AREA)
    timings: dict[str, float] = {}
    timed = postprocess(img, prob, timings=timings)
    plain = postprocess(img, prob)
    assert set(timings) == {"refine", "composite"} and all(v >= 0 for v in timings.values())
    for field in ("alpha", "mask", "composite", "cutout"):
        assert np.array_equal(getattr(timed, field), getattr(plain, field))
    postprocess(img, prob, timings=timings)  # accumulates
    assert timings["refine"] > 0


def test_edge_refinement_filters_only_around_the_edge_with_the_same_result():
    """The guided filter runs on the box around the predicted edge only; the matte is what filtering the whole photo gives."""
    from ml.postprocess import _box, _guided_filter, _refine_small, _sdf_ramp

    rng = np.random.default_rng(1)
    img, mask, _ = product_scene(150, 200)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)  # texture everywhere
    p = cv2.resize(mask.astype(np.float32) / 255.0, (50, 38), interpolation=cv2.INTER_AREA)
    refined = _refine_small(p, img, 150, 200)

    pw = np.clip(cv2.resize(p, (200, 150), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    radius = 16  # round(4 * 4): four model pixels, model -> working scale is 4
    whole = _guided_filter(img, pw, radius, eps=1e-3, subsample=2)
    mean_p = _box(pw, radius)
    expected = _sdf_ramp(np.where((mean_p > 0.01) & (mean_p < 0.99), np.clip(whole, 0, 1), pw).astype(np.float32), 3.0)
    np.testing.assert_allclose(refined, expected, atol=1e-5)

    # at the model's own resolution (radius 4) the coefficients come from a half-resolution copy as well
    small = cv2.resize(img, (64, 48), interpolation=cv2.INTER_AREA)
    p_small = cv2.resize(mask.astype(np.float32) / 255.0, (64, 48), interpolation=cv2.INTER_AREA)
    whole = _guided_filter(small, p_small, 4, eps=1e-3, subsample=2)  # radius: 4 model pixels
    mean_p = _box(p_small, 4)
    expected = _sdf_ramp(np.where((mean_p > 0.01) & (mean_p < 0.99), np.clip(whole, 0, 1), p_small).astype(np.float32), 3.0)
    np.testing.assert_allclose(_refine_small(p_small, small, 48, 64), expected, atol=1e-5)

    # a photo much smaller than the model's input (radius 2, no subsampling): only the window around the edge is filtered
    smaller = cv2.resize(img, (32, 24), interpolation=cv2.INTER_AREA)
    p_small[:, :8] = 0.0  # a margin that is surely background: outside the filtered window
    pw = np.clip(cv2.resize(p_small, (32, 24), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    whole = _guided_filter(smaller, pw, 2, eps=1e-3)  # radius: round(4 * 32 / 64) -> 2
    mean_p = _box(pw, 2)
    expected = _sdf_ramp(np.where((mean_p > 0.01) & (mean_p < 0.99), np.clip(whole, 0, 1), pw).astype(np.float32), 3.0)
    np.testing.assert_allclose(_refine_small(p_small, smaller, 24, 32), expected, atol=1e-5)


def test_the_fast_guided_filter_on_a_window_around_the_edge_gives_the_outputs_of_the_whole_photo(monkeypatch):
    """At the model's resolution the subsampled filter runs on the box around the edge, on the coarse grid, grown by its reach."""
    import ml.postprocess as pp

    shapes = []
    real = pp._guided_filter
    monkeypatch.setattr(pp, "_guided_filter", lambda guide, *a, **k: shapes.append(guide.shape[:2]) or real(guide, *a, **k))
    rng = np.random.default_rng(3)
    for size, (y, x) in [((256, 256), (70, 90)), ((192, 256), (0, 10)), ((256, 320), (150, 200))]:
        img, mask, _ = product_scene(96, 80)
        photo = np.full((*size, 3), 236, np.uint8)
        photo[y : y + 96, x : x + 80] = img  # a small product, at an edge of the frame or inside it
        photo = np.clip(photo.astype(np.int16) + rng.integers(-10, 11, photo.shape), 0, 255).astype(np.uint8)
        truth = np.zeros(size, np.float32)
        truth[y : y + 96, x : x + 80] = mask / 255.0
        prob = np.roll(cv2.GaussianBlur(cv2.resize(truth, (256, 256), interpolation=cv2.INTER_AREA), (0, 0), 1.5), 1, axis=1)
        monkeypatch.setattr(pp, "_WINDOW_FAST_FILTER", True)
        windowed = postprocess(photo, prob)
        monkeypatch.setattr(pp, "_WINDOW_FAST_FILTER", False)
        whole = postprocess(photo, prob)
        for field in ("alpha", "mask", "composite", "cutout"):
            assert np.array_equal(getattr(windowed, field), getattr(whole, field)), (size, field)
        assert shapes[-1] == size and shapes[-2][0] * shapes[-2][1] < 0.5 * size[0] * size[1]  # the window: under half the photo


def test_colour_reference_quantiles_from_histograms_match_numpy():
    """The background reference reads its quantiles off 256-bin histograms; they equal numpy's (linear interpolation)."""
    from ml.postprocess import _quantile_from_histogram

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 1001, 5000):
        values = rng.integers(0, 256, n)
        hist = np.bincount(values, minlength=256).astype(np.float32)
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert _quantile_from_histogram(hist, q) == pytest.approx(float(np.quantile(values, q)))
