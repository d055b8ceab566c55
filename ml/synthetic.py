"""Deterministic synthetic product-photo catalog with exact segmentation masks.

The product has no data of its own, so the demo, the tests, the benchmarks and the replayed
reviewer all run on this generator: product-like objects (garments, shoes, bags, bottles with
translucent glass, thin jewellery) on studio, gradient, textured and cluttered backgrounds,
with soft shadows, colour casts and sensor noise.

Every item is a pure function of ``(seed, index)``: all randomness comes from
``np.random.default_rng([seed, index])``, split into independent child streams so that forcing
the category or the background of an item leaves the rest of it (size, noise, cast) unchanged.

The mask is exact: shapes are rasterised once without anti-aliasing into a label map, the mask
is ``label > 0`` and the image's product pixels are painted from that same label map. Shadows and
clutter live in the background only, so they are never in the mask.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

CATEGORIES: tuple[str, ...] = ("garment", "shoe", "bag", "bottle", "jewellery")
BACKGROUNDS: tuple[str, ...] = ("studio", "gradient", "texture", "clutter")

# (width, height) ratios seen in real catalogs: square, landscape and the portrait formats
# marketplaces ask for.
_ASPECTS: tuple[tuple[int, int], ...] = ((1, 1), (4, 3), (3, 4), (2, 3), (4, 5))

# Max in-plane rotation per category, in degrees: packshots are mostly upright, while
# jewellery is laid flat and ends up at any angle.
_MAX_ROTATION = {"garment": 10.0, "shoe": 8.0, "bag": 10.0, "bottle": 8.0, "jewellery": 35.0}


@dataclass(frozen=True)
class SyntheticItem:
    """One generated product photo with its exact ground-truth mask."""

    sku: str
    category: str
    background: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8 in {0, 255}; 255 = product, shadow excluded


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_item(
    index: int,
    seed: int = 0,
    max_side: int = 512,
    category: str | None = None,
    background: str | None = None,
) -> SyntheticItem:
    """Generate catalog item ``index`` of catalog ``seed``; category and background cycle with
    the index unless forced."""
    return _render(index, seed, max_side, category, background, layers=False).item


def generate_catalog(
    n: int,
    seed: int = 0,
    max_side: int = 512,
    categories: Sequence[str] | None = None,
    backgrounds: Sequence[str] | None = None,
) -> Iterator[SyntheticItem]:
    """Lazily yield items 0..n-1 of catalog ``seed``, cycling through the given (default: all)
    categories and backgrounds."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cats = _validated(categories, CATEGORIES, "category")
    bgs = _validated(backgrounds, BACKGROUNDS, "background")
    for i in range(n):
        yield generate_item(
            i,
            seed=seed,
            max_side=max_side,
            category=cats[i % len(cats)] if cats else None,
            background=bgs[i % len(bgs)] if bgs else None,
        )


def write_catalog(out_dir: str | Path, n: int, seed: int = 0, max_side: int = 512) -> pd.DataFrame:
    """Write ``n`` items as ``images/<sku>.png`` + ``masks/<sku>.png`` plus ``catalog.csv``
    (file, sku, category, background) under ``out_dir``; return the CSV's DataFrame."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for item in generate_catalog(n, seed=seed, max_side=max_side):
        name = f"{item.sku}.png"
        # cv2 encodes BGR; convert so the file on disk is true RGB. imencode + write_bytes
        # (instead of imwrite) also copes with non-ASCII paths.
        _write_png(out / "images" / name, cv2.cvtColor(item.image, cv2.COLOR_RGB2BGR))
        _write_png(out / "masks" / name, item.mask)
        rows.append({"file": name, "sku": item.sku, "category": item.category, "background": item.background})
    df = pd.DataFrame(rows, columns=["file", "sku", "category", "background"])
    df.to_csv(out / "catalog.csv", index=False)
    return df


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


@dataclass
class _Rendered:
    """An item plus the layers tests need to check what the generator did."""

    item: SyntheticItem
    opacity: np.ndarray | None  # (H, W) float32 product opacity: 0 outside, <1 on translucent glass
    colour: np.ndarray | None  # (H, W, 3) float32 product colour before blending with the background


def _render(
    index: int, seed: int, max_side: int, category: str | None, background: str | None, *, layers: bool = True
) -> _Rendered:
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    if max_side < 32:
        raise ValueError(f"max_side must be >= 32, got {max_side}")
    category = CATEGORIES[index % len(CATEGORIES)] if category is None else category
    background = BACKGROUNDS[index % len(BACKGROUNDS)] if background is None else background
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")

    # Independent child streams: forcing a category or background must not shift the random
    # draws of the other stages (tests compare the same item on two backgrounds).
    r_layout, r_obj, r_bg, r_shadow, r_post = np.random.default_rng([seed, index]).spawn(5)

    aw, ah = _ASPECTS[int(r_layout.integers(len(_ASPECTS)))]
    if aw >= ah:
        w, h = max_side, max(16, round(max_side * ah / aw))
    else:
        h, w = max_side, max(16, round(max_side * aw / ah))

    design = _BUILDERS[category](r_obj)
    canvas, label = _place(design, r_obj, h, w, _MAX_ROTATION[category])
    mask = label > 0

    bg = _background(background, r_bg, h, w, mask)
    bg_mean = np.array(cv2.mean(bg, mask=mask.view(np.uint8))[:3], np.float32)
    _ensure_contrast(design, bg_mean)

    _paint(design, canvas, r_obj)
    bg *= _shadow(r_shadow, mask.view(np.uint8), max_side, flat=category == "jewellery")[..., None]

    # Per-pixel alpha blend inside the product's box (cv2 is several times faster than numpy
    # broadcasting here); outside it the opacity is 0 and the background stays as it is.
    box = np.s_[canvas.oy : canvas.oy + canvas.h, canvas.ox : canvas.ox + canvas.w]
    alpha = canvas.opacity
    bg[box] = cv2.blendLinear(canvas.colour, np.ascontiguousarray(bg[box]), alpha, np.float32(1) - alpha)
    image = _finish(r_post, bg)

    opacity = colour = None
    if layers:
        opacity, colour = np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
        opacity[box], colour[box] = canvas.opacity, canvas.colour

    item = SyntheticItem(
        sku=_sku(index, seed, category),
        category=category,
        background=background,
        image=image,
        mask=mask.astype(np.uint8) * 255,
    )
    return _Rendered(item=item, opacity=opacity, colour=colour)


def _sku(index: int, seed: int, category: str) -> str:
    # Seed 0 keeps the short form used in docs and demos; other seeds are namespaced so SKUs of
    # two catalogs ingested into the same store never collide.
    if seed == 0:
        return f"SKU-{index:06d}-{category}"
    return f"SKU-s{seed}-{index:06d}-{category}"


def _validated(values: Sequence[str] | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    values = tuple(values)
    if not values:
        raise ValueError(f"empty {what} list")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; expected a subset of {allowed}")
    return values


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------------------------
# Geometry: shapes are described in a local object frame (roughly [-1, 1]) and placed with a
# random similarity transform.
# --------------------------------------------------------------------------------------------


@dataclass
class _Part:
    points: np.ndarray  # (N, 2) local coordinates
    label: int
    thickness: float = 0.0  # > 0: stroked polyline, width in local units
    thickness_px: int = 0  # > 0: stroked polyline, width in pixels (jewellery chains)
    closed: bool = True


@dataclass
class _Design:
    parts: list[_Part]
    colours: dict[int, np.ndarray]  # label -> RGB float32 in 0..255
    opacities: dict[int, float] = field(default_factory=dict)  # label -> opacity (default 1)
    rim: float = 0.2  # edge darkening: how rounded the object looks
    rim_width: float = 0.15  # local units over which the rim darkening fades
    folds: float = 0.05  # amplitude of low-frequency shading (cloth folds, dents)
    decorate: Callable[["_Canvas", np.random.Generator], None] | None = None
    # Labels recoloured together when the first one is too close to the background colour.
    contrast_labels: tuple[int, ...] = (1,)


@dataclass
class _Canvas:
    """The product's bounding box (plus a small pad) in which it is painted; all per-pixel
    layers are crop-sized, so painting cost follows the product's size, not the image's."""

    ox: int  # crop offset in the image
    oy: int
    h: int  # crop size
    w: int
    s: float  # pixels per local unit
    cx: float
    cy: float
    cos: float
    sin: float
    flip: float
    U: np.ndarray
    V: np.ndarray
    label: np.ndarray
    colour: np.ndarray | None = None
    shade: np.ndarray | None = None
    opacity: np.ndarray | None = None
    dist: np.ndarray | None = None  # approx. distance to the silhouette edge, in pixels

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        u = pts[:, 0] * self.flip
        v = pts[:, 1]
        x = self.cx - self.ox + self.s * (u * self.cos - v * self.sin)
        y = self.cy - self.oy + self.s * (u * self.sin + v * self.cos)
        return np.stack([x, y], axis=1)

    def draw(self, pts, thickness: float = 0.0, thickness_px: int = 0, closed: bool = True) -> np.ndarray:
        """Rasterise a local-frame shape into a fresh boolean layer (for surface details)."""
        layer = np.zeros((self.h, self.w), np.uint8)
        _raster(layer, self, _Part(np.asarray(pts, np.float64), 1, thickness, thickness_px, closed))
        return layer.view(bool)


def _raster(layer: np.ndarray, canvas: _Canvas, part: _Part) -> None:
    # Sub-pixel fixed point (shift=4) keeps small parts faithful; LINE_8 means no
    # anti-aliasing, so every pixel is either in the part or not: that is what makes masks exact.
    pts = np.round(canvas.to_px(part.points) * 16).astype(np.int32).reshape(-1, 1, 2)
    if part.thickness <= 0 and part.thickness_px <= 0:
        cv2.fillPoly(layer, [pts], int(part.label), cv2.LINE_8, 4)
    else:
        t = part.thickness_px if part.thickness_px > 0 else max(1, int(round(part.thickness * canvas.s)))
        cv2.polylines(layer, [pts], part.closed, int(part.label), t, cv2.LINE_8, 4)


def _place(design: _Design, rng: np.random.Generator, h: int, w: int, max_rot: float) -> tuple[_Canvas, np.ndarray]:
    """Random pose and size; returns the crop canvas and the full-image label map."""
    theta = math.radians(rng.uniform(-max_rot, max_rot))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    c, s_ = math.cos(theta), math.sin(theta)

    # Extent of the rotated object at unit scale, including half the stroke widths.
    pts = np.concatenate([p.points for p in design.parts]) * [flip, 1.0]
    xr = pts[:, 0] * c - pts[:, 1] * s_
    yr = pts[:, 0] * s_ + pts[:, 1] * c
    pad = max([p.thickness / 2 for p in design.parts] + [0.0])
    x0, x1 = xr.min() - pad, xr.max() + pad
    y0, y1 = yr.min() - pad, yr.max() + pad

    # Pixel-width strokes (chains, beads) do not scale, so they get their own margin.
    margin = 0.03 * min(h, w) + 2 + max(p.thickness_px for p in design.parts) / 2
    fill = rng.uniform(0.55, 0.85)  # share of the frame the product occupies
    scale = fill * min((w - 2 * margin) / (x1 - x0), (h - 2 * margin) / (y1 - y0))
    lo_x, hi_x = margin - x0 * scale, w - margin - x1 * scale
    lo_y, hi_y = margin - y0 * scale, h - margin - y1 * scale
    cx = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (lo_x + hi_x) / 2
    cy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (lo_y + hi_y) / 2

    full = _Canvas(0, 0, h, w, scale, cx, cy, c, s_, flip, None, None, np.zeros((h, w), np.uint8))
    for part in design.parts:
        _raster(full.label, full, part)

    bx, by, bw, bh = cv2.boundingRect(full.label)
    x0, y0 = max(0, bx - 2), max(0, by - 2)
    x1, y1 = min(w, bx + bw + 2), min(h, by + bh + 2)
    # Local coordinates of every crop pixel: shading and surface details are written in the
    # object frame so they rotate and scale with the product.
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    inv = np.float32(1.0 / scale)
    U = (dx * np.float32(c) + dy * np.float32(s_)) * inv * np.float32(flip)
    V = (dy * np.float32(c) - dx * np.float32(s_)) * inv
    label = np.ascontiguousarray(full.label[y0:y1, x0:x1])
    crop = _Canvas(x0, y0, y1 - y0, x1 - x0, scale, cx, cy, c, s_, flip, U, V, label)
    return crop, full.label


def _paint(design: _Design, canvas: _Canvas, rng: np.random.Generator) -> None:
    """Colour, opacity and shading of the product, all keyed by the rasterised label map."""
    n = int(canvas.label.max()) + 1
    palette = np.zeros((max(n, max(design.colours) + 1), 3), np.float32)
    alphas = np.zeros(len(palette), np.float32)
    for lab, rgb in design.colours.items():
        palette[lab] = rgb
        alphas[lab] = design.opacities.get(lab, 1.0)
    # take() is ~10x faster than fancy indexing for a small palette.
    canvas.colour = palette.take(canvas.label, axis=0)
    canvas.opacity = alphas.take(canvas.label)

    h, w = canvas.h, canvas.w
    light = rng.uniform(0, 2 * math.pi)
    grad = rng.uniform(0.08, 0.16)
    shade = np.float32(1.0) + np.float32(grad) * (
        canvas.U * np.float32(math.cos(light)) + canvas.V * np.float32(math.sin(light))
    )
    if design.folds > 0:
        # Blobs ~0.4 object units across: a few folds / dents over the product.
        shade += np.float32(design.folds) * _value_noise(rng, h, w, max(2.0, max(h, w) / (0.4 * canvas.s)))
    if design.rim > 0:
        canvas.dist = _edge_distance(canvas.label)
        edge = np.clip(canvas.dist * np.float32(1.0 / (design.rim_width * canvas.s)), 0, 1)
        shade *= np.float32(1.0) - np.float32(design.rim) * (np.float32(1.0) - edge) ** 2
    canvas.shade = shade

    if design.decorate is not None:
        design.decorate(canvas, rng)
    canvas.colour *= canvas.shade[..., None]
    np.clip(canvas.colour, 0, 255, out=canvas.colour)


def _edge_distance(label: np.ndarray) -> np.ndarray:
    # Only drives shading, so half resolution is plenty and 4x cheaper.
    h, w = label.shape
    small = cv2.resize((label > 0).view(np.uint8), (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_NEAREST)
    dist = cv2.distanceTransform(small, cv2.DIST_L2, 3)
    return cv2.resize(dist, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(2)


def _ensure_contrast(design: _Design, bg_mean: np.ndarray) -> None:
    # A white shirt on a white sweep is a real hard case, but as the norm it would make the
    # task unlearnable; push the main colour away from the background it sits on. Related parts
    # (a bag's handle and flap) move with it so the product keeps one coherent colour.
    labels = design.contrast_labels
    if not labels or float(np.linalg.norm(design.colours[labels[0]] - bg_mean)) >= 60:
        return
    darken = float(bg_mean.mean()) > 128
    for lab in labels:
        rgb = design.colours[lab]
        design.colours[lab] = (rgb * 0.5 if darken else rgb * 0.4 + 150).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Shape helpers
# --------------------------------------------------------------------------------------------


def _round_corners(pts, r, n: int = 6) -> np.ndarray:
    """Replace each polygon corner by a quadratic Bezier of radius ~r (scalar or per vertex)."""
    pts = np.asarray(pts, np.float64)
    radii = np.broadcast_to(np.asarray(r, np.float64), (len(pts),))
    t = np.linspace(0.0, 1.0, n)[:, None]
    out = []
    for i, p in enumerate(pts):
        a, b = pts[i - 1], pts[(i + 1) % len(pts)]
        la, lb = np.linalg.norm(a - p), np.linalg.norm(b - p)
        rr = min(radii[i], 0.45 * la, 0.45 * lb)
        if rr <= 1e-9:
            out.append(p[None])
            continue
        p0 = p + (a - p) / la * rr
        p1 = p + (b - p) / lb * rr
        out.append((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p + t**2 * p1)
    return np.concatenate(out)


def _ellipse(cx: float, cy: float, ax: float, ay: float, t0: float = 0.0, t1: float = 2 * math.pi, n: int = 48):
    t = np.linspace(t0, t1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _random_colour(rng: np.random.Generator, s=(0.25, 0.9), v=(0.25, 0.9)) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(*s), rng.uniform(*v))


_METALS = (
    np.array([212, 175, 55], np.float32),  # gold
    np.array([196, 198, 204], np.float32),  # silver
    np.array([190, 120, 110], np.float32),  # rose gold
)


def _metal(rng: np.random.Generator) -> np.ndarray:
    return _METALS[int(rng.integers(len(_METALS)))].copy()


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with ~cells blobs along the longer side (cheap: a tiny
    random grid upsampled bicubically)."""
    gh = max(2, int(round(cells * h / max(h, w)))) + 1
    gw = max(2, int(round(cells * w / max(h, w)))) + 1
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


# --------------------------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------------------------


def _garment(rng: np.random.Generator) -> _Design:
    """Flat-lay T-shirt, long-sleeve top or dress."""
    dress = rng.random() < 0.3
    long_sleeve = rng.random() < 0.35
    nw, nd = rng.uniform(0.12, 0.2), rng.uniform(0.08, 0.22)
    bw = rng.uniform(0.42, 0.58)
    sh_y = -0.92
    if long_sleeve:
        a, sl, sw = math.radians(rng.uniform(55, 70)), rng.uniform(0.75, 1.0), rng.uniform(0.18, 0.24)
    else:
        a, sl, sw = math.radians(rng.uniform(25, 45)), rng.uniform(0.25, 0.45), rng.uniform(0.24, 0.32)
    hem = rng.uniform(1.3, 1.6) if dress else rng.uniform(0.85, 1.0)
    hw = bw * (rng.uniform(1.3, 1.7) if dress else rng.uniform(0.95, 1.05))
    waist_w = bw * (rng.uniform(0.8, 0.9) if dress else rng.uniform(0.95, 1.0))

    shoulder = np.array([-bw * 0.96, sh_y])
    out = shoulder + sl * np.array([-math.cos(a), math.sin(a)])
    inn = out + sw * np.array([math.sin(a), math.cos(a)])
    armpit = np.array([-bw, sh_y + max(0.25, sw * 1.2)])
    left = [np.array([-nw, -1.0]), shoulder, out, inn, armpit, np.array([-waist_w, 0.0 if dress else 0.1])]
    hem_x = np.linspace(-hw, hw, 9)
    hem_pts = np.stack([hem_x, hem + (0.06 if dress else 0.02) * (1 - (hem_x / hw) ** 2)], axis=1)
    right = [p * [-1, 1] for p in reversed(left)]
    neck = _ellipse(0, -1.0, nw, nd, 0.0, math.pi, 12)  # from (nw,-1) dipping to (-nw,-1)
    outline = np.concatenate([np.array(left), hem_pts, np.array(right), neck[1:-1]])
    # Cut sleeve ends, hem and shoulders stay crisp; armpits and waist get softened.
    radii = [0.0, 0.04, 0.02, 0.02, 0.08, 0.1] + [0.0] * len(hem_pts) + [0.1, 0.08, 0.02, 0.02, 0.04, 0.0]
    radii += [0.0] * (len(neck) - 2)
    body = _round_corners(outline, radii, 5)

    main = _random_colour(rng)
    second = _random_colour(rng) if rng.random() < 0.5 else np.array([245, 245, 240], np.float32)
    stripes = rng.random() < 0.35
    print_ = (not stripes) and rng.random() < 0.4
    period, duty = rng.uniform(0.08, 0.2), rng.uniform(0.3, 0.6)
    logo = _random_colour(rng, v=(0.5, 1.0))
    logo_r = rng.uniform(0.08, 0.16)
    weave = rng.uniform(0.02, 0.05)

    def decorate(c: _Canvas, rng: np.random.Generator) -> None:
        inside = c.label == 1
        if stripes:
            band = inside & (np.mod(c.V * np.float32(1 / period), 1.0) < duty)
            c.colour[band] = second
        if print_:
            chest = c.draw(_ellipse(0.0, -0.55, logo_r, logo_r * rng.uniform(0.6, 1.0)))
            c.colour[chest & inside] = logo
        # Fine weave at pixel scale: fabric reads as cloth and colour correction has texture.
        c.shade *= np.float32(1) + np.float32(weave) * np.sin(c.U * np.float32(c.s * 2.2)) * np.sin(
            c.V * np.float32(c.s * 2.2)
        )
        seam = c.draw(hem_pts - [0, 0.07], thickness_px=max(1, round(c.s / 150)), closed=False)
        collar = c.draw(neck + [0, 0.05], thickness_px=max(1, round(c.s / 120)), closed=False)
        c.shade[(seam | collar) & inside] *= np.float32(0.8)

    folds = rng.uniform(0.04, 0.1)
    return _Design([_Part(body, 1)], {1: main}, rim=0.12, rim_width=0.06, folds=folds, decorate=decorate)


def _shoe(rng: np.random.Generator) -> _Design:
    """Side profile of a sneaker or an ankle boot: sole + upper (+ heel block)."""
    boot = rng.random() < 0.3
    t = rng.uniform(0.1, 0.16)
    ybot = 0.4
    spring = rng.uniform(0.03, 0.1)  # toe spring: the front of the sole curves up
    xs = np.linspace(-1.0, 1.0, 21)
    lift = spring * np.clip((xs - 0.4) / 0.6, 0, 1) ** 2
    sole_start = -0.55 if boot else -1.0
    keep = xs >= sole_start
    bottom = np.stack([xs[keep], ybot - lift[keep]], axis=1)
    top = np.stack([xs[keep][::-1], ybot - t - lift[keep][::-1]], axis=1)
    sole = _round_corners(np.concatenate([bottom, top]), t * 0.45, 4)

    h = rng.uniform(0.85, 1.15)  # collar / shaft height factor
    toe_h = rng.uniform(0.0, 0.08)
    st = ybot - t
    if boot:
        upper_pts = [
            (-0.97, st), (-1.0, -0.2 * h), (-0.93, -1.15 * h), (-0.38, -1.15 * h), (-0.3, -0.45 * h),
            (0.35, -0.12 - toe_h), (0.8, 0.0), (0.99, st - 0.08), (0.96, st),
        ]
    else:
        upper_pts = [
            (-0.97, st), (-1.0, -0.1 * h), (-0.9, -0.42 * h), (-0.62, -0.3 * h), (-0.32, -0.55 * h),
            (-0.2, -0.47 * h), (0.35, -0.12 - toe_h), (0.78, 0.0), (0.99, st - 0.06), (0.96, st),
        ]
    upper = _round_corners(upper_pts, 0.12, 6)
    parts = [_Part(upper, 1), _Part(sole, 2)]
    if boot:
        heel_h = rng.uniform(0.0, 0.04)
        # Overlaps the upper and the sole so the heel is attached, not floating.
        parts.append(_Part(_round_corners(_rect(-0.96, st - 0.06, -0.5, ybot + heel_h), 0.02, 3), 3))

    upper_c = _random_colour(rng)
    sole_c = [np.array([240, 240, 236]), np.array([35, 35, 38]), np.array([176, 128, 84])][int(rng.integers(3))]
    colours = {1: upper_c, 2: np.asarray(sole_c, np.float32), 3: np.array([40, 32, 30], np.float32)}
    lace_c = np.array([245, 245, 245], np.float32) if rng.random() < 0.6 else upper_c * 0.5
    accent = _random_colour(rng, v=(0.4, 1.0))
    swoosh = rng.random() < 0.5
    n_laces = int(rng.integers(4, 7))

    def decorate(c: _Canvas, rng: np.random.Generator) -> None:
        up = c.label == 1
        if swoosh:
            curve = np.stack([np.linspace(-0.7, 0.45, 12), -0.02 + 0.12 * np.linspace(-1, 1, 12) ** 2], 1)
            c.colour[c.draw(curve, thickness=rng.uniform(0.04, 0.08), closed=False) & up] = accent
        if not boot:
            laces = np.zeros((c.h, c.w), bool)
            for k in range(n_laces):
                f = (k + 0.5) / n_laces
                p = np.array([-0.22, -0.45 * h]) * (1 - f) + np.array([0.3, -0.13]) * f
                laces |= c.draw([p + [-0.05, -0.04], p + [0.05, 0.06]], thickness=0.03, closed=False)
            c.colour[laces & up] = lace_c
        # Midsole / outsole split line: soles are layered.
        split = np.stack([xs[keep], ybot - t * 0.4 - lift[keep]], 1)
        line = c.draw(split, thickness_px=max(1, round(c.s / 100)), closed=False)
        c.shade[line & (c.label == 2)] *= np.float32(0.7)

    return _Design(parts, colours, rim=0.35, rim_width=0.12, folds=0.05, decorate=decorate)


def _bag(rng: np.random.Generator) -> _Design:
    """Tote / handbag: body plus a handle loop; background shows through the loop (mask hole)."""
    tw = rng.uniform(0.55, 0.8)
    bw = tw * rng.uniform(1.0, 1.3)
    top, bottom = 0.0, rng.uniform(0.9, 1.3)
    body = _round_corners([(-tw, top), (tw, top), (bw, bottom), (-bw, bottom)], [0.08, 0.08, 0.15, 0.15], 6)
    ht = rng.uniform(0.05, 0.09)
    hx = rng.uniform(0.3, 0.5) * tw / 0.7
    hh = rng.uniform(0.4, 0.75)
    # The arc starts inside the body so the handle is attached; its inside stays background.
    handle = _ellipse(0.0, top + 0.06, hx, hh + 0.06, math.pi, 2 * math.pi, 40)
    parts = [_Part(body, 1), _Part(handle, 2, thickness=ht, closed=False)]
    for sx in (-1, 1):  # attachment tabs
        parts.append(_Part(_rect(sx * hx - ht, top - 0.02, sx * hx + ht, top + 0.12), 2))
    flap = rng.random() < 0.5
    if flap:
        depth = rng.uniform(0.3, 0.55)
        parts.append(_Part(_round_corners([(-tw, top), (tw, top), (0.0, top + depth)], [0.08, 0.08, 0.05], 4), 3))
        clasp_y = top + depth - 0.06
    else:
        clasp_y = top + 0.1
    parts.append(_Part(_round_corners(_rect(-0.07, clasp_y - 0.04, 0.07, clasp_y + 0.04), 0.02, 3), 4))

    if rng.random() < 0.5:  # leather tones
        main = _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.7))
    else:
        main = _random_colour(rng)
    colours = {1: main, 2: main * rng.uniform(0.6, 1.0), 3: main * 0.85, 4: _metal(rng)}
    grain = rng.uniform(0.015, 0.03)

    def decorate(c: _Canvas, rng: np.random.Generator) -> None:
        # Leather grain: high-frequency blotches.
        c.shade += np.float32(grain) * _value_noise(rng, c.h, c.w, max(c.h, c.w) / (0.045 * c.s))
        seam = c.draw(_round_corners([(-tw + 0.06, top + 0.07), (tw - 0.06, top + 0.07), (bw - 0.07, bottom - 0.07),
                                      (-bw + 0.07, bottom - 0.07)], 0.1, 5), thickness_px=max(1, round(c.s / 150)))
        dashes = np.mod((c.U + c.V) * np.float32(c.s / 6), 2.0) < 1.0  # stitches, not a solid line
        c.shade[seam & dashes & (c.label == 1)] *= np.float32(0.65)
        metal = c.label == 4
        c.shade[metal] *= np.float32(1.15)

    return _Design(parts, colours, rim=0.3, rim_width=0.12, folds=0.06, decorate=decorate, contrast_labels=(1, 2, 3))


# Bottle glass tints (green, amber, blue, near clear).
_GLASS = (
    np.array([60, 140, 80], np.float32),
    np.array([170, 100, 30], np.float32),
    np.array([60, 100, 170], np.float32),
    np.array([200, 215, 220], np.float32),
)


def _bottle(rng: np.random.Generator) -> _Design:
    """Upright bottle: translucent glass body/neck (alpha-blended with the background behind
    it, still 100 % product in the mask), an opaque paper label and an opaque cap."""
    bw = rng.uniform(0.28, 0.42)
    nw = bw * rng.uniform(0.28, 0.42)
    cap_bot = -1.0 + rng.uniform(0.14, 0.22)
    neck_bot = cap_bot + rng.uniform(0.15, 0.3)
    shoulder_bot = neck_bot + rng.uniform(0.12, 0.3)
    cap_w = nw * rng.uniform(1.1, 1.35)
    glass = _round_corners(
        [(-nw, cap_bot - 0.03), (nw, cap_bot - 0.03), (nw, neck_bot), (bw, shoulder_bot), (bw, 1.0), (-bw, 1.0),
         (-bw, shoulder_bot), (-nw, neck_bot)],
        [0.0, 0.0, 0.05, 0.1, rng.uniform(0.04, 0.12), rng.uniform(0.04, 0.12), 0.1, 0.05],
        6,
    )
    cap = _round_corners(_rect(-cap_w, -1.0, cap_w, cap_bot), 0.03, 3)
    parts = [_Part(glass, 1), _Part(cap, 2)]
    has_label = rng.random() < 0.8
    lab_top = rng.uniform(shoulder_bot + 0.12, 0.35)
    lab_bot = min(0.85, lab_top + rng.uniform(0.3, 0.6))
    if has_label:
        parts.append(_Part(_rect(-bw, lab_top, bw, lab_bot), 3))

    glass_c = _GLASS[int(rng.integers(len(_GLASS)))].copy()
    cap_c = _random_colour(rng, v=(0.1, 0.9))
    paper = _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.8, 0.97))
    colours = {1: glass_c, 2: cap_c, 3: paper}
    opacities = {1: float(rng.uniform(0.25, 0.5))}
    liquid = rng.random() < 0.6
    level = rng.uniform(shoulder_bot, 0.4)
    liquid_c = _random_colour(rng, s=(0.4, 1.0), v=(0.3, 0.9))
    liquid_a = rng.uniform(0.7, 0.9)
    ink = _random_colour(rng, v=(0.1, 0.5))

    def decorate(c: _Canvas, rng: np.random.Generator) -> None:
        g = c.label == 1
        if liquid:
            fill = g & (c.V > np.float32(level))
            c.colour[fill] = liquid_c
            c.opacity[fill] = liquid_a
        # Thick glass walls: the silhouette edge is more opaque than the middle.
        wall = np.float32(0.35) * np.clip(1 - c.dist * np.float32(1 / max(2.0, 0.05 * c.s)), 0, 1)
        c.opacity[g] = np.minimum(c.opacity[g] + wall[g], 0.95)
        # Vertical specular highlight.
        hl = g & (np.abs(c.U + np.float32(bw * 0.55)) < np.float32(bw * 0.08))
        c.colour[hl] = c.colour[hl] * 0.4 + 150
        c.opacity[hl] = np.maximum(c.opacity[hl], 0.8)
        if has_label:
            text = np.zeros((c.h, c.w), bool)
            for k in range(int(rng.integers(2, 5))):
                y = lab_top + (k + 1) * (lab_bot - lab_top) / 5
                half = bw * rng.uniform(0.3, 0.7)
                text |= c.draw([(-half, y), (half, y)], thickness=0.025, closed=False)
            c.colour[text & (c.label == 3)] = ink
        # Ribbed cap.
        cap_m = c.label == 2
        c.shade[cap_m] *= np.float32(0.85) + np.float32(0.15) * np.sin(c.U[cap_m] * np.float32(c.s / 2.5))

    return _Design(parts, colours, opacities, rim=0.3, rim_width=0.1, folds=0.0, decorate=decorate, contrast_labels=(2,))


def _jewellery(rng: np.random.Generator) -> _Design:
    """Necklace laid flat: a 2-4 px chain (arc or loop) plus a small pendant, ring or beads."""
    chain_px = int(rng.integers(2, 5))
    A, B = rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.1)
    closed = rng.random() < 0.25
    if closed:
        chain = _ellipse(0.0, 0.0, A, B * 0.8, 0.0, 2 * math.pi, 120)[:-1]
        bottom = B * 0.8
    else:
        t0 = rng.uniform(0.05, 0.35)
        chain = _ellipse(0.0, 0.0, A, B, -t0, math.pi + t0, 100)
        bottom = B
    parts = [_Part(chain, 1, thickness_px=chain_px, closed=closed)]
    parts.append(_Part(np.array([[0.0, bottom], [0.0, bottom + 0.06]]), 1, thickness_px=chain_px, closed=False))
    kind = int(rng.integers(3))
    py = bottom + 0.06
    if kind == 0:  # gem in a metal bezel
        rx, ry = rng.uniform(0.04, 0.07), rng.uniform(0.05, 0.09)
        parts.append(_Part(_ellipse(0.0, py + ry + 0.015, rx + 0.015, ry + 0.015), 1))
        parts.append(_Part(_ellipse(0.0, py + ry + 0.015, rx, ry), 2))
    elif kind == 1:  # ring pendant: a loop with a hole
        r = rng.uniform(0.05, 0.09)
        parts.append(_Part(_ellipse(0.0, py + r, r, r), 1, thickness_px=int(rng.integers(3, 6))))
    else:  # charm: small diamond
        d = rng.uniform(0.05, 0.08)
        parts.append(_Part(np.array([[0.0, py], [d * 0.7, py + d], [0.0, py + 2 * d], [-d * 0.7, py + d]]), 1))
    if rng.random() < 0.4:  # beads along the chain
        for k in rng.choice(len(chain), size=int(rng.integers(3, 8)), replace=False):
            p = chain[k]
            parts.append(_Part(np.array([p, p + 1e-3]), 2 if kind == 0 else 1, thickness_px=chain_px + 3, closed=False))

    metal = _metal(rng)
    gem = _random_colour(rng, s=(0.6, 1.0), v=(0.4, 0.9))
    phase = rng.uniform(0, 2 * math.pi)

    def decorate(c: _Canvas, rng: np.random.Generator) -> None:
        m = c.label == 1
        # Links / polished metal: strong periodic specular banding at a few-pixel period.
        band = np.abs(np.sin((c.U[m] + c.V[m]) * np.float32(c.s / 3.0) + np.float32(phase)))
        c.shade[m] = np.float32(0.6) + np.float32(0.6) * band
        gm = c.label == 2
        c.shade[gm] *= np.float32(0.75) + np.float32(0.5) * np.abs(
            np.sin(c.U[gm] * np.float32(c.s / 2)) * np.sin(c.V[gm] * np.float32(c.s / 2))
        )

    return _Design(parts, {1: metal, 2: gem}, rim=0.0, folds=0.0, decorate=decorate)


_BUILDERS: dict[str, Callable[[np.random.Generator], _Design]] = {
    "garment": _garment,
    "shoe": _shoe,
    "bag": _bag,
    "bottle": _bottle,
    "jewellery": _jewellery,
}


# --------------------------------------------------------------------------------------------
# Backgrounds, shadows and camera effects
# --------------------------------------------------------------------------------------------


def _lerp(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """(H, W) weights -> (H, W, 3) colours c1 + t (c2 - c1), in one cv2 pass (3x faster than numpy)."""
    m = np.stack([np.asarray(c2, np.float32) - c1, np.asarray(c1, np.float32)], axis=1)
    return cv2.transform(np.ascontiguousarray(t, np.float32)[..., None], m)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.linspace(-1, 1, w, dtype=np.float32)[None, :],
        np.linspace(-1, 1, h, dtype=np.float32)[:, None],
    )


def _studio(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    xx, yy = _grid(h, w)
    base = rng.uniform(236, 252) + rng.uniform(-4, 4, 3)
    k = rng.uniform(0.04, 0.12)
    sweep = rng.uniform(-0.03, 0.03)  # wall-to-floor brightness change of a paper sweep
    light = np.float32(1) - np.float32(k) * (xx * xx + yy * yy) + np.float32(sweep) * yy
    light = np.broadcast_to(light, (h, w)).astype(np.float32)
    return _lerp(light, np.zeros(3, np.float32), base.astype(np.float32))


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    xx, yy = _grid(h, w)
    a = rng.uniform(0, 2 * math.pi)
    ca, sa = math.cos(a), math.sin(a)
    t = (xx * np.float32(ca) + yy * np.float32(sa)) * np.float32(1 / (abs(ca) + abs(sa)))
    t = (t + np.float32(1)) * np.float32(0.5)
    c1 = _random_colour(rng, s=(0.05, 0.6), v=(0.55, 1.0))
    c2 = _random_colour(rng, s=(0.05, 0.6), v=(0.55, 1.0))
    return _lerp(np.broadcast_to(t, (h, w)).astype(np.float32), c1, c2)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = int(rng.integers(3))
    xx, yy = _grid(h, w)
    if kind == 0:  # concrete / paper: multi-octave noise between two close colours
        n = 0.6 * _value_noise(rng, h, w, 4) + 0.3 * _value_noise(rng, h, w, 14)
        n += 0.25 * _value_noise(rng, h, w, max(h, w) / 6)
        t = np.clip(n * np.float32(0.35) + np.float32(0.5), 0, 1)
        c1 = _random_colour(rng, s=(0.0, 0.3), v=(0.5, 0.95))
        c2 = c1 * rng.uniform(0.6, 0.85)
    elif kind == 1:  # wood: warped sinusoidal grain plus plank joints
        a = rng.uniform(0, math.pi)
        u = xx * np.float32(math.cos(a)) + yy * np.float32(math.sin(a))
        v = yy * np.float32(math.cos(a)) - xx * np.float32(math.sin(a))
        warp = _value_noise(rng, h, w, 3) * np.float32(rng.uniform(0.3, 0.8))
        grain = np.sin(np.float32(2 * math.pi) * (v * np.float32(rng.uniform(5, 12)) + warp))
        t = np.float32(0.5) + np.float32(0.35) * grain + np.float32(0.1) * _value_noise(rng, h, w, max(h, w) / 8)
        planks = rng.uniform(2, 5)
        phase = np.float32(rng.random())
        joint = np.abs(np.mod(u * np.float32(planks) + phase, 1.0) - np.float32(0.5)) > np.float32(0.49)
        t = np.where(joint, np.float32(1.3), t)
        c1 = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.35, 0.7), rng.uniform(0.55, 0.9))
        c2 = c1 * rng.uniform(0.55, 0.75)
    else:  # fabric: woven threads, optional plaid, soft folds
        p = np.float32(2 * math.pi / rng.uniform(3.5, 7))
        xs = np.arange(w, dtype=np.float32)[None, :] * p
        ys = np.arange(h, dtype=np.float32)[:, None] * p
        t = np.float32(0.5) + np.float32(0.25) * np.sin(xs) * np.sin(ys) + np.float32(0.2) * _value_noise(rng, h, w, 5)
        if rng.random() < 0.35:
            q = np.float32(rng.uniform(6, 14) * math.pi)
            t = t + np.float32(0.25) * ((np.sin(xx * q) > 0.6) | (np.sin(yy * q) > 0.6))
        c1 = _random_colour(rng, s=(0.1, 0.5), v=(0.5, 0.95))
        c2 = c1 * rng.uniform(0.6, 0.85)
    return _lerp(np.clip(t, 0, 1.3).astype(np.float32), c2, c1)


def _clutter(rng: np.random.Generator, h: int, w: int, product: np.ndarray) -> np.ndarray:
    base = int(rng.integers(3))
    if base == 0:
        bg = _studio(rng, h, w)
    elif base == 1:
        bg = _gradient(rng, h, w)
    else:
        bg = np.broadcast_to(_random_colour(rng, s=(0.0, 0.4), v=(0.5, 0.95)), (h, w, 3)).astype(np.float32)
    bg = np.ascontiguousarray(bg)
    xx, yy = _grid(h, w)
    shading = np.float32(0.85) + np.float32(0.15) * (xx - yy)
    # Distractors may touch the product's silhouette but not hide behind it: a model must
    # learn to leave them out, not be rewarded for ignoring half-covered shapes.
    forbidden = cv2.dilate(product.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    side = min(h, w)
    for _ in range(int(rng.integers(3, 8))):
        for _attempt in range(5):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.05, 0.18) * side
            kind = int(rng.integers(4))
            # Every shape fits within 2r of its centre: draw and test in that patch only.
            ext = 2 * r + 2
            x0, y0 = max(0, int(cx - ext)), max(0, int(cy - ext))
            x1, y1 = min(w, int(cx + ext) + 1), min(h, int(cy + ext) + 1)
            patch = np.s_[y0:y1, x0:x1]
            layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cx, cy = cx - x0, cy - y0
            if kind == 0:
                cv2.circle(layer, (int(cx), int(cy)), int(r), 1, -1, cv2.LINE_8)
            elif kind == 1:
                box = cv2.boxPoints(((cx, cy), (r * rng.uniform(0.6, 2), r * rng.uniform(0.6, 2)), rng.uniform(0, 180)))
                cv2.fillPoly(layer, [np.round(box).astype(np.int32)], 1, cv2.LINE_8)
            elif kind == 2:
                pts = rng.uniform(-r, r, (int(rng.integers(3, 7)), 2)) + [cx, cy]
                cv2.fillPoly(layer, [cv2.convexHull(np.round(pts).astype(np.int32))], 1, cv2.LINE_8)
            else:  # pen / cable-like stick
                a = rng.uniform(0, math.pi)
                d = np.array([math.cos(a), math.sin(a)]) * r * 1.5
                p0, p1 = np.round([cx, cy] - d).astype(int), np.round([cx, cy] + d).astype(int)
                thick = max(2, int(r * 0.15))
                cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1, thick, cv2.LINE_8)
            area = np.count_nonzero(layer)
            if area == 0:
                continue
            m = layer.view(bool)
            if np.count_nonzero(m & forbidden[patch]) <= 0.1 * area:
                colour = _random_colour(rng, s=(0.1, 0.9), v=(0.2, 0.95))
                bg[patch][m] = shading[patch][m][:, None] * colour
                break
    return bg


def _background(kind: str, rng: np.random.Generator, h: int, w: int, product: np.ndarray) -> np.ndarray:
    if kind == "studio":
        bg = _studio(rng, h, w)
    elif kind == "gradient":
        bg = _gradient(rng, h, w)
    elif kind == "texture":
        bg = _texture(rng, h, w)
    else:
        bg = _clutter(rng, h, w, product)
    return np.ascontiguousarray(bg, dtype=np.float32)


def _shadow(rng: np.random.Generator, mask: np.ndarray, max_side: int, flat: bool = False) -> np.ndarray:
    """Multiplicative darkening of the background: a soft drop shadow, a contact shadow, or both.
    ``flat`` objects (jewellery laid down) only get a small, tight drop shadow."""
    h, w = mask.shape
    x, y, bw, bh = cv2.boundingRect(mask)
    # Blur at quarter resolution: large soft kernels at full size would dominate the run time.
    f = 4
    sw, sh = max(1, w // f), max(1, h // f)
    small = cv2.resize(mask.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    src = np.zeros((sh, sw), np.float32)
    kind = int(rng.integers(3))  # 0 drop, 1 contact, 2 both
    reach = 0.2 if flat else 1.0
    if flat:
        kind = 0
    if kind in (0, 2):
        dx = rng.uniform(-0.05, 0.06) * reach * max_side / f
        dy = rng.uniform(0.015, 0.06) * reach * max_side / f
        shifted = cv2.warpAffine(small, np.float32([[1, 0, dx], [0, 1, dy]]), (sw, sh), borderValue=0)
        src = np.maximum(src, shifted * np.float32(rng.uniform(0.25, 0.5)))
    if kind in (1, 2):
        contact = np.zeros((sh, sw), np.float32)
        centre = (int(round((x + bw / 2) / f)), int(round((y + bh * 0.98) / f)))
        axes = (max(1, int(bw * rng.uniform(0.4, 0.55) / f)), max(1, int(bh * rng.uniform(0.03, 0.07) / f)))
        cv2.ellipse(contact, centre, axes, 0, 0, 360, float(rng.uniform(0.35, 0.6)), -1)
        src = np.maximum(src, contact)
    sigma = rng.uniform(0.008, 0.03) * reach * max_side / f
    src = cv2.GaussianBlur(src, (0, 0), max(0.5, sigma))
    return np.float32(1) - cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lens softness, exposure, optional colour cast, sensor noise; float RGB -> uint8."""
    h, w = img.shape[:2]
    # sigma < 1 px: edges soften by about a pixel, so image and exact mask still agree.
    img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 0.8), dst=img)
    gain = np.full(3, rng.uniform(0.92, 1.06), np.float32)
    if rng.random() < 0.5:
        m = rng.uniform(0.08, 0.2)
        cast = int(rng.integers(4))
        # warm, cool, green, magenta: the casts colour correction has to undo.
        casts = (
            (1 + m, 1 + m / 4, 1 - m),
            (1 - m, 1, 1 + m),
            (1 - m / 2, 1 + m, 1 - m / 2),
            (1 + m / 2, 1 - m, 1 + m / 2),
        )
        gain *= np.array(casts[cast], np.float32)
    img = cv2.transform(img, np.diag(gain), dst=img)  # per-channel gain; cheaper than broadcasting
    sigma = rng.uniform(0.8, 3.0)
    # Uniform rather than Gaussian noise: same look at this level, several times cheaper to draw.
    a = np.float32(sigma * math.sqrt(3.0))
    noise = rng.random((h, w, 3), np.float32)
    noise *= 2 * a
    noise -= a
    img += noise
    np.clip(img, 0, 255, out=img)
    return cv2.convertScaleAbs(img)  # rounds to uint8; the clip above makes its abs() a no-op
