"""What a person sees, checked in a real browser (headless Chromium): a sweep's report.html opened from disk,
and TensorBoard's default tab on the same sweep.

Needs Debian's `chromium` and the `browser` extra (Playwright drives the system Chromium; no browser
download). Screenshots go to the test's tmp folder, and also to `$LIGHTNING_RESNET_SCREENSHOTS` when set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_extra, require_tool
from tests.test_dashboard import tensorboard_server

require_extra("playwright", "browser")

pytestmark = [pytest.mark.engines, pytest.mark.slow]

VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, or skip (before the sweep is run) with the command that installs it."""
    return require_tool("chromium", "apt-get install -y chromium")


@pytest.fixture
def browser_page(tmp_path, chromium):
    """A fresh headless Chromium (the system one, its own empty profile) and a page at 1280x800."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def sweep(chromium, small_sweep) -> Path:
    """The shared 2x2 sweep (`small_sweep`), asked for after `chromium` so that a missing browser skips first."""
    return small_sweep


def keep_screenshot(path: Path) -> None:
    folder = os.environ.get("LIGHTNING_RESNET_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def within_viewport(box: dict | None) -> bool:
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= VIEWPORT["width"]
        and (box["y"] + box["height"] <= VIEWPORT["height"])
    )


def test_sweep_report_page_opens_from_disk_with_every_job_and_figure(tmp_path, browser_page, sweep):
    page = browser_page
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    page.on("requestfailed", lambda request: messages.append(f"requestfailed: {request.url}"))
    page.goto((sweep / "report.html").as_uri(), wait_until="load")

    jobs = page.locator("#summary tbody tr td:first-child").all_inner_texts()
    assert sorted(jobs) == [f"optimizer={o},seed={s}" for o in ("adam", "sgd") for s in (0, 1)]  # a row per job
    widths = page.evaluate("Array.from(document.images, image => image.complete ? image.naturalWidth : 0)")
    assert len(widths) == 1 + 4 * 4 and all(width > 0 for width in widths)  # summary.png, 4 figures per job
    assert not [m for m in messages if m.startswith(("error", "pageerror", "requestfailed"))], messages
    shot = tmp_path / "report_html.png"
    page.screenshot(path=str(shot))
    keep_screenshot(shot)


def test_tensorboard_default_tab_opens_on_train_and_val_loss_and_accuracy(tmp_path, browser_page, sweep):
    page = browser_page
    with tensorboard_server(sweep) as url:
        page.goto(url, wait_until="networkidle")
        cards = {tag: page.locator("card-view", has_text=tag).first for tag in ("curves/acc", "curves/loss")}
        for card in cards.values():
            card.locator("canvas, svg").first.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(1000)  # the charts draw their lines after the cards appear
        shot = tmp_path / "tensorboard_default_tab.png"
        page.screenshot(path=str(shot))
        keep_screenshot(shot)

        assert page.url.endswith("#timeseries")  # the default tab
        for tag, card in cards.items():  # the whole chart on the first screen, without a click or a scroll
            assert within_viewport(card.bounding_box()), (tag, card.bounding_box())
            legend = card.inner_text()
            for job in (f"optimizer={o},seed={s}" for o in ("adam", "sgd") for s in (0, 1)):
                assert f"{job}/tensorboard/train" in legend and f"{job}/tensorboard/val" in legend, legend
