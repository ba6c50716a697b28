"""A headless Chromium driven by Selenium, for the console's end-to-end tests.

Debian's ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``). Without
them the tests skip, saying why; under CI (``CI`` set) they fail instead.

Selenium is synchronous and the daemon under test runs on the test's event loop,
so every browser call goes through a thread (:class:`Browser`): a page load that
waited on the loop would otherwise wait for ever.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = os.environ.get("SYNCD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SYNCD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)


def missing_browser() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(path)):
            return f"{path} is missing (Debian's {package} package)"
    try:
        import selenium  # noqa: F401  (only whether it is installed)
    except ImportError:
        return "selenium is not installed (requirements/test.txt)"
    return None


def require_browser() -> None:
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def start_driver(width: int = DESKTOP[0], height: int = DESKTOP[1]) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def driver_fixture() -> Iterator[Any]:
    require_browser()
    driver = start_driver()
    try:
        yield driver
    finally:
        driver.quit()


class Browser:
    """The driver's calls, each run in a thread so the daemon's loop keeps serving."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def get(self, path: str) -> None:
        await self.run(self.driver.get, self.base + path)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, script, *args)

    async def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return await self.run(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def text(self, css: str) -> str:
        return str(await self.wait_for(
            lambda: (e := self._first(css)) is not None and e.text, f"text in {css!r}"))

    async def click(self, css: str) -> None:
        await self.wait_for(lambda: self._act(css, lambda e: e.click()), f"{css!r} to click")

    async def type(self, css: str, text: str) -> None:
        await self.wait_for(lambda: self._act(css, lambda e: e.send_keys(text)),
                            f"{css!r} to type into")

    def _act(self, css: str, act: Callable[[Any], None]) -> bool:
        """Find and act in one go; False (try again) if the live page replaced it."""
        from selenium.common.exceptions import StaleElementReferenceException

        found = self._first(css)
        if found is None:
            return False
        try:
            act(found)
        except StaleElementReferenceException:
            return False
        return True

    def _first(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    async def wait_for(self, probe: Callable[[], T | None], what: str,
                       timeout: float = 30) -> T:
        """Until ``probe`` (run in a thread) gives something true."""
        from selenium.common.exceptions import StaleElementReferenceException

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.run(probe)
            except StaleElementReferenceException:  # the live page replaced it: again
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what}"
                                     f" (at {self.driver.current_url})")
            await asyncio.sleep(0.2)

    async def wait_text(self, css: str, wanted: str, timeout: float = 30) -> None:
        from selenium.webdriver.common.by import By

        def probe() -> bool:
            return any(wanted in e.text
                       for e in self.driver.find_elements(By.CSS_SELECTOR, css))

        await self.wait_for(probe, f"{wanted!r} in {css!r}", timeout)

    async def login(self, token: str) -> None:
        await self.get("/login")
        await self.type("#token", token)
        await self.click("form.login button[type=submit]")
        await self.wait_for(lambda: self._first("header nav"), "the console's navigation")

    async def logout(self) -> None:
        await self.click("header .account button")
        await self.wait_for(lambda: self._first("#token"), "the login form")
