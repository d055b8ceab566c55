"""Browser tests: Playwright drives Debian's Chromium against the review app served by uvicorn on loopback.

Skipped only when Chromium (or Playwright) is missing and HITL_REQUIRE_BROWSER is not set; CI sets it.
A failing test leaves a screenshot in .hitl/test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".hitl" / "test-artifacts"
CHROMIUM = os.environ.get("HITL_CHROMIUM", "/usr/bin/chromium")


def _browser_missing() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        return f"Chromium not found at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def pytest_collection_modifyitems(config, items):
    why = _browser_missing()
    if why is None:
        return
    if os.environ.get("HITL_REQUIRE_BROWSER"):
        raise pytest.UsageError(f"HITL_REQUIRE_BROWSER is set but {why}")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    failed = any(getattr(request.node, f"rep_{when}", None) is not None and getattr(request.node, f"rep_{when}").failed for when in ("setup", "call"))
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the failing page: {path}")
        except Exception as exc:  # pragma: no cover - the browser may be gone
            print(f"no screenshot: {exc}")
    context.close()
