"""A reviewer works a batch in Chromium from the keyboard: log in, claim, approve with a tag, fix a mask
with the brush, then the stored decisions and the corrected mask PNG are checked."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hitl_assets.review_app.security import hash_password
from hitl_assets.review_app.synthetic import seed_review_tasks
from ml.imageio import decode_mask
from ml.policy import ReviewSettings, default_policy_path, load_policy
from resources.object_store import ObjectStore
from resources.review_store import ReviewStore

from hitl_assets.review_app.app import create_app
from hitl_assets.review_app.process import ThreadedServer

PASSWORD = "correct horse battery"
SECRET = "browser-test-secret-0123456789abcdef"

BREAK_AFTER, BREAK_SECONDS = 3, 2  # the policy's enforced break: after the 3rd decision, 2 s
WIDTH, HEIGHT = 2400, 1800  # larger than the 1600 px rendition: the mask is painted small and saved full size


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app (uvicorn, loopback, a background thread) on fresh stores with 6 tasks of 2400 x 1800 photos."""
    home = tmp_path_factory.mktemp("review-home")
    store = ReviewStore(url=f"sqlite:///{home / 'review.db'}")
    objects = ObjectStore(root=str(home / "objects"))
    seed_review_tasks(store, objects, 6, width=WIDTH, height=HEIGHT, seed=3, distinct_images=2)
    store.add_user("rita", "reviewer", hash_password(PASSWORD))
    policy = load_policy(default_policy_path())
    review = ReviewSettings(batch_size=6, break_after_items=BREAK_AFTER, break_seconds=BREAK_SECONDS, claim_timeout_minutes=30)
    app = create_app(store, objects, policy.model_copy(update={"review": review}), SECRET)
    with ThreadedServer(app) as server:
        yield server.url, store, objects


def wait_ready(page, task_id: int | None = None):
    if task_id is not None:
        page.wait_for_url(re.compile(rf"/tasks/{task_id}$"))
    page.wait_for_selector("#item[data-ready='true']")
    return int(page.get_attribute("#item", "data-task"))


def test_reviewer_works_a_batch_from_the_keyboard(served, page):
    base, store, objects = served

    # Anonymous: sent to the login page.
    page.goto(base + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.fill("#username", "rita")
    page.fill("#password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#queue[data-ready='true']")

    # Claim from the keyboard (C), then start (Enter).
    page.keyboard.press("c")
    page.wait_for_selector("#task-table tbody tr")
    page.wait_for_selector("#queue[data-ready='true']")  # reloaded with the claimed batch
    assert page.locator("#task-table tbody tr").count() == 6
    page.keyboard.press("Enter")
    first = wait_ready(page)
    assert "Item 1 of 6" in page.inner_text("#position")
    assert page.locator("kbd", has_text="A").count() >= 1  # shortcuts are shown on screen

    # Tag a failure mode (1) and approve-and-next (A): one key.
    page.keyboard.press("1")
    assert page.get_attribute(".tag[data-mode='edge_halo']", "aria-pressed") == "true"
    page.keyboard.press("a")
    page.wait_for_url(lambda url: not url.endswith(f"/tasks/{first}"))
    second = wait_ready(page)
    assert second != first
    assert "Item 2 of 6" in page.inner_text("#position")

    # Fix the mask: brush (B), larger (]), paint a stroke over background in the top-left corner.
    page.keyboard.press("b")
    page.keyboard.press("]")
    page.keyboard.press("]")
    box = page.locator("#mask-canvas").bounding_box()
    y = box["y"] + box["height"] * 0.06
    page.mouse.move(box["x"] + box["width"] * 0.03, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.16, y, steps=12)
    page.mouse.up()
    # An eraser stroke then undone (Z) leaves the painted stroke as it was.
    page.keyboard.press("e")
    page.mouse.move(box["x"] + box["width"] * 0.05, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.08, y, steps=4)
    page.mouse.up()
    page.keyboard.press("z")
    page.keyboard.press("2")  # missing_part
    page.keyboard.press("n")
    page.keyboard.type("strap cut away")
    page.keyboard.press("Escape")
    page.keyboard.press("c")  # save the correction and go on
    page.wait_for_url(lambda url: not url.endswith(f"/tasks/{second}"))
    third = wait_ready(page)
    assert "Item 3 of 6" in page.inner_text("#position")

    # Viewing tools, all from the keyboard: overlay, side by side, zoom, slider, help.
    assert "hidden" not in (page.get_attribute("#mask-canvas", "class") or "")
    page.keyboard.press("m")
    assert "hidden" in page.get_attribute("#mask-canvas", "class")
    page.keyboard.press("m")
    assert "hidden" not in page.get_attribute("#mask-canvas", "class")
    page.keyboard.press("v")
    assert page.get_attribute("#panes", "data-mode") == "side"
    page.keyboard.press("v")
    assert page.get_attribute("#panes", "data-mode") == "compare"
    zoom_before = page.inner_text("#zoom-value")
    page.keyboard.press("+")
    assert page.inner_text("#zoom-value") != zoom_before
    page.keyboard.press("0")
    assert page.inner_text("#zoom-value") == zoom_before
    left_before = page.evaluate("document.getElementById('divider').style.left")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.getElementById('divider').style.left") != left_before
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    # The third decision (reject, R) reaches the policy's break: the app enforces it, then moves on.
    page.keyboard.press("r")
    page.wait_for_selector("#break:not([hidden])")
    assert page.inner_text("#break-count") == str(BREAK_AFTER)
    page.wait_for_url(lambda url: not url.endswith(f"/tasks/{third}"), timeout=BREAK_SECONDS * 1000 + 15_000)
    wait_ready(page)
    assert "Item 4 of 6" in page.inner_text("#position")
    assert store.latest_decisions().set_index("task_id").loc[third, "decision"] == "reject"

    # The store has the decisions, as the pipeline's review_decisions reads them.
    latest = store.latest_decisions().set_index("task_id")
    assert latest.loc[first, "decision"] == "approve"
    assert latest.loc[first, "failure_mode"] == "edge_halo"
    assert latest.loc[first, "reviewer"] == "rita"
    assert latest.loc[first, "seconds"] > 0
    row = latest.loc[second]
    assert row["decision"] == "correct" and row["failure_mode"] == "missing_part" and row["note"] == "strap cut away"
    key = row["corrected_mask_key"]
    task = store.get_task(second)
    assert key.startswith(f"corrections/{task.batch}/{task.image_id}/rita-") and key.endswith(".png")

    # The corrected mask: a PNG at the image's full size, with the stroke added and the rest kept.
    data = objects.get_bytes(key)
    assert data.startswith(b"\x89PNG")
    corrected = decode_mask(data)
    ai = decode_mask(objects.get_bytes(task.mask_key))
    assert corrected.shape == ai.shape == (HEIGHT, WIDTH)
    stroke_y = int(HEIGHT * 0.06)
    painted = corrected[stroke_y, int(WIDTH * 0.05) : int(WIDTH * 0.14)]
    assert ai[stroke_y, int(WIDTH * 0.05) : int(WIDTH * 0.14)].max() == 0  # background in the AI mask
    assert painted.min() == 255  # painted over, and the erased part was undone
    elsewhere = np.ones_like(ai, dtype=bool)
    elsewhere[: int(HEIGHT * 0.15), : int(WIDTH * 0.25)] = False
    # Painted on a 1600 px preview, merged at full size: away from the stroke the full-resolution AI mask is
    # kept pixel for pixel (no blur from a down- and up-scaling round trip).
    assert np.array_equal(corrected[elsewhere], ai[elsewhere])


def test_anonymous_browser_cannot_see_pages_or_images(served, page):
    base, _store, _objects = served
    for path in ("/", "/tasks/1", "/admin"):
        page.goto(base + path)
        page.wait_for_selector("#login-form")
    response = page.request.get(base + "/img/1/original")
    assert response.status == 401
