"""What the browser tests of the web UI share: Debian's headless Chromium driven by selenium (the module-scoped
`browser` fixture: import it into a test module), waiting, logging in, screenshots saved to $BITHARBOR_ARTIFACTS
(default tests/artifacts/web-ui/), the browser's console checked for errors, and API calls with the machine token.

Needs the Debian packages chromium and chromium-driver (scripts/test.sh installs them); without them the tests fail
and say so."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.api_support import ALICE_PASSWORD, MACHINE_TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("BITHARBOR_ARTIFACTS", Path(__file__).resolve().parent / "artifacts" / "web-ui"))
T = TypeVar("T")

def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except (StaleElementReferenceException, WebDriverException) as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            raise AssertionError(f"{exe} is missing: apt-get install chromium chromium-driver "
                                 "(bash scripts/test.sh does, as root)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
                "--disable-domain-reliability", "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = driver.execute_script("return Math.max(document.body.scrollHeight, 900)")
    driver.set_window_size(1280, min(int(height) + 40, 2400))
    for _ in range(3):  # the window's own height is not all page: grow it until the whole page shows
        short = int(driver.execute_script("return document.documentElement.scrollHeight - window.innerHeight"))
        if short <= 0 or driver.get_window_size()["height"] >= 2400:
            break
        driver.set_window_size(1280, min(driver.get_window_size()["height"] + short + 20, 2400))
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(1280, 900)
    assert path.stat().st_size > 5000, f"{path} looks empty"
    return path


def no_js_errors(driver: WebDriver) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"  # type: ignore[no-untyped-call]
              and "favicon" not in e["message"] and "/thumbnail" not in e["message"]
              and "Failed to load resource" not in e["message"]]
    assert not errors, errors


def call(url: str, method: str, path: str, body: Any = None) -> Any:
    """`method path` on the daemon at `url` with the machine token: the JSON answer."""
    req = urllib.request.Request(f"{url}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {MACHINE_TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def el(driver: WebDriver, css: str) -> WebElement:
    return wait_for(css, lambda: next(iter(driver.find_elements(By.CSS_SELECTOR, css)), None))


def login(driver: WebDriver, url: str, name: str = "alice", password: str = ALICE_PASSWORD) -> None:
    """Log in through the login form (the token is kept in this tab's sessionStorage)."""
    driver.get(f"{url}/#/login")
    el(driver, "#name").send_keys(name)
    el(driver, "#password").send_keys(password)
    el(driver, "#login-submit").click()
    el(driver, "#search-form")
