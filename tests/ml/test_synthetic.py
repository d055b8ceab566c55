"""Tests for the deterministic synthetic catalog (ml/synthetic.py)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ml.synthetic import (
    BACKGROUNDS,
    CATEGORIES,
    SyntheticItem,
    _render,
    generate_catalog,
    generate_item,
    write_catalog,
)

SIDE = 128  # small images keep the suite fast; geometry is resolution independent


def _enclosed_background(mask: np.ndarray) -> int:
    """Background pixels not 4-connected to the image border: holes in the product mask."""
    n, lab = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
    return int(sum(np.count_nonzero(lab == k) for k in range(1, n) if k not in border))


def test_same_seed_and_index_give_identical_items():
    a = generate_item(7, seed=3, max_side=SIDE)
    b = generate_item(7, seed=3, max_side=SIDE)
    in_catalog = list(generate_catalog(8, seed=3, max_side=SIDE))[7]
    for other in (b, in_catalog):
        assert other.sku == a.sku and other.category == a.category and other.background == a.background
        np.testing.assert_array_equal(other.image, a.image)
        np.testing.assert_array_equal(other.mask, a.mask)


def test_different_seed_gives_different_catalog():
    a = list(generate_catalog(5, seed=0, max_side=SIDE))
    b = list(generate_catalog(5, seed=1, max_side=SIDE))
    for x, y in zip(a, b):
        assert x.sku != y.sku
        assert x.image.shape != y.image.shape or not np.array_equal(x.image, y.image)
        assert x.mask.shape != y.mask.shape or not np.array_equal(x.mask, y.mask)


def test_different_index_gives_different_item():
    a, b = generate_item(0, max_side=SIDE), generate_item(5, max_side=SIDE)  # same category
    assert a.category == b.category
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("seed", [0, 11])
def test_arrays_masks_and_sizes(seed):
    shapes = set()
    for item in generate_catalog(20, seed=seed, max_side=SIDE):
        assert isinstance(item, SyntheticItem)
        h, w = item.mask.shape
        assert item.image.shape == (h, w, 3)
        assert item.image.dtype == np.uint8 and item.mask.dtype == np.uint8
        assert max(h, w) == SIDE
        assert set(np.unique(item.mask).tolist()) <= {0, 255}
        fg = np.count_nonzero(item.mask)
        assert 0 < fg < h * w
        # The whole product is in frame: nothing cut off at the border.
        assert not (item.mask[0].any() or item.mask[-1].any() or item.mask[:, 0].any() or item.mask[:, -1].any())
        shapes.add((h, w))
    assert len(shapes) >= 3, "aspect ratio should vary between items"


def test_every_category_and_background_appears():
    items = list(generate_catalog(20, max_side=64))
    assert {it.category for it in items} == set(CATEGORIES)
    assert {it.background for it in items} == set(BACKGROUNDS)
    assert {(it.category, it.background) for it in items} == set(itertools.product(CATEGORIES, BACKGROUNDS))
    # Any run of 5 consecutive items covers every category.
    for start in range(0, 16):
        assert {it.category for it in items[start : start + 5]} == set(CATEGORIES)
    assert len({it.sku for it in items}) == len(items)


def test_forced_categories_and_backgrounds():
    items = list(generate_catalog(6, max_side=64, categories=["bottle", "bag"], backgrounds=["clutter"]))
    assert [it.category for it in items] == ["bottle", "bag"] * 3
    assert {it.background for it in items} == {"clutter"}
    forced = generate_item(2, max_side=64, category="shoe", background="gradient")
    assert (forced.category, forced.background) == ("shoe", "gradient")
    assert forced.sku.endswith("-shoe")


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        generate_item(0, category="hat")
    with pytest.raises(ValueError):
        generate_item(0, background="beach")
    with pytest.raises(ValueError):
        list(generate_catalog(2, categories=["garment", "hat"]))
    with pytest.raises(ValueError):
        generate_item(-1)


def test_image_edges_follow_the_mask():
    # On a plain studio sweep the strongest image edges must sit on the mask boundary: the mask
    # and the painted product come from the same rasterisation.
    for cat in CATEGORIES:
        item = generate_item(1, max_side=256, category=cat, background="studio")
        grey = cv2.cvtColor(item.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        boundary = cv2.morphologyEx(item.mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        far = cv2.dilate(item.mask, np.ones((9, 9), np.uint8)) == 0
        assert mag[boundary].mean() > 5 * mag[far].mean(), cat


@pytest.mark.parametrize("index", range(2, 40, 5))  # index % 5 == 2 -> bag
def test_bag_handle_leaves_a_hole_in_the_mask(index):
    item = generate_item(index, max_side=SIDE)
    assert item.category == "bag"
    assert _enclosed_background(item.mask) > 20


@pytest.mark.parametrize("index", range(4, 40, 5))  # index % 5 == 4 -> jewellery
def test_jewellery_is_mostly_thin(index):
    item = generate_item(index, max_side=256)
    assert item.category == "jewellery"
    fg = np.count_nonzero(item.mask)
    eroded = np.count_nonzero(cv2.erode(item.mask, np.ones((5, 5), np.uint8)))
    assert eroded / fg < 0.5, "a 5x5 erosion should remove most of a 2-4 px chain"


@pytest.mark.parametrize("index", range(3, 30, 5))  # index % 5 == 3 -> bottle
def test_bottle_has_translucent_glass(index):
    r = _render(index, 0, SIDE, None, None)
    item = r.item
    assert item.category == "bottle"
    fg = item.mask > 0
    glass = fg & (r.opacity < 0.7)
    assert (r.opacity[~fg] == 0).all() and (r.opacity[fg] > 0).all()
    # Translucent pixels are part of the product mask...
    assert np.count_nonzero(glass) > 0.05 * np.count_nonzero(fg)
    # ...but their image colour is a blend with the background, not the bottle's own colour.
    diff = np.abs(item.image.astype(np.float32) - r.colour).sum(axis=-1)
    assert diff[glass].mean() > 8


def test_bottle_glass_shows_the_background_behind_it():
    a = _render(3, 0, SIDE, "bottle", "studio")
    b = _render(3, 0, SIDE, "bottle", "texture")
    np.testing.assert_array_equal(a.item.mask, b.item.mask)
    glass = cv2.erode(((a.item.mask > 0) & (a.opacity < 0.7)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    diff = np.abs(a.item.image.astype(np.int16) - b.item.image.astype(np.int16)).sum(axis=-1)
    assert glass.any() and diff[glass].mean() > 15


def test_write_catalog(tmp_path):
    df = write_catalog(tmp_path / "cat", n=6, seed=2, max_side=64)
    assert list(df.columns) == ["file", "sku", "category", "background"]
    assert len(df) == 6
    on_disk = pd.read_csv(tmp_path / "cat" / "catalog.csv")
    pd.testing.assert_frame_equal(on_disk, df)
    assert sorted(p.name for p in (tmp_path / "cat" / "images").iterdir()) == sorted(df["file"])
    assert sorted(p.name for p in (tmp_path / "cat" / "masks").iterdir()) == sorted(df["file"])
    for row, item in zip(df.itertuples(), generate_catalog(6, seed=2, max_side=64)):
        assert row.file == f"{item.sku}.png" and row.sku == item.sku
        assert (row.category, row.background) == (item.category, item.background)
        # PIL reads RGB: the file must not be in cv2's BGR order.
        image = np.asarray(Image.open(tmp_path / "cat" / "images" / row.file).convert("RGB"))
        mask = np.asarray(Image.open(tmp_path / "cat" / "masks" / row.file))
        np.testing.assert_array_equal(image, item.image)
        np.testing.assert_array_equal(mask, item.mask)
