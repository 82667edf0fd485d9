"""A real browser (Debian's Chromium, driven by Playwright) on the real local stack.

The stack itself comes from tests/conftest.py (`platform`, `api`); this file only adds the browser,
a page per test that fails on any JavaScript error, and screenshots under test-artifacts/web/.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.conftest import Platform

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        # A skip would turn a broken web app into a row of "s" (`make test` installs Chromium).
        pytest.fail("Chromium is not installed: apt-get install -y chromium chromium-driver",
                    pytrace=False)  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@dataclass
class Shots:
    """Numbered full-page screenshots of one test, for a person to look at."""

    folder: Path
    count: int = 0
    taken: list[Path] = field(default_factory=list)

    def __call__(self, page: Page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    folder = ARTIFACTS / re.sub(r"[^\w-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return Shots(folder)


@dataclass
class Web:
    """Opens pages of the gateway's web app; collects JavaScript errors from all of them."""

    browser: Browser
    base_url: str
    errors: list[str] = field(default_factory=list)
    contexts: list = field(default_factory=list)

    def page(self, viewport: dict[str, int] = DESKTOP, locale: str = "en-US") -> Page:
        context = self.browser.new_context(viewport=viewport, locale=locale, base_url=self.base_url)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda exc: self.errors.append(f"{exc}"))
        page.on("console", lambda msg: self._console(msg))
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        # A refused request is logged by the browser as a console error; those are expected
        # (a 401 before a refresh, a 404 on another user's job). Script errors are not.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(msg.text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed  # type: ignore[attr-defined]


@pytest.fixture
def web(browser: Browser, platform: Platform, request: pytest.FixtureRequest) -> Iterator[Web]:
    w = Web(browser, platform.url)
    yield w
    if getattr(request.node, "failed_call", False):  # what the page showed when the test failed
        folder = ARTIFACTS / re.sub(r"[^\w-]+", "_", request.node.name)
        folder.mkdir(parents=True, exist_ok=True)
        for i, context in enumerate(w.contexts):
            for j, page in enumerate(context.pages):
                page.screenshot(path=str(folder / f"failed-{i}-{j}.png"), full_page=True)
    for context in w.contexts:
        context.close()
    assert not w.errors, f"JavaScript errors on the page: {w.errors}"
