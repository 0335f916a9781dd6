"""Headless Chromium for the browser tests (Debian's chromium and chromedriver, driven by
Selenium; the flags ../shared/ENVIRONMENT.md measured): the ``browser`` fixture and the page
helpers. A plugin of conftest: test modules import the helpers (``from browser import ...``)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import wait_until
from PIL import Image

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Browser:
    driver: object
    downloads: Path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not CHROMEDRIVER.exists() or not CHROMIUM.exists():
        pytest.skip(
            "needs Debian's chromium and chromedriver (/usr/bin/chromium, /usr/bin/chromedriver): "
            "apt-get install -y --no-install-recommends chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    # Headless Chromium ignores the download preference unless told through DevTools.
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield Browser(driver, downloads)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- page helpers ------------------------------------------------------------------------------


def find(driver, css: str, timeout: float = 30, what: str | None = None, visible: bool = True):
    """The first element matching `css`, once it exists (and is shown, unless not `visible`:
    file inputs are hidden behind the uploader's button)."""
    from selenium.webdriver.common.by import By

    def present():
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and (not visible or found[0].is_displayed()) else None

    return wait_until(present, timeout, what or f"{css} on the page", interval=0.25)


def act(driver, css: str, action, what: str, timeout: float = 30, visible: bool = True):
    """Find `css` and do `action(element)` until it returns None (a click) or something truthy
    (a check); the element is found afresh each try, because a Streamlit rerun replaces
    elements and a stale reference is then retried rather than a failure."""
    from selenium.webdriver.common.by import By

    def attempt():
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if not found or (visible and not found[0].is_displayed()):
            return None
        result = action(found[0])
        return True if result is None else result  # None: an action (a click) that is done

    return wait_until(attempt, timeout, what, interval=0.25)


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def idle(driver, timeout: float = 60) -> None:
    """Wait until Streamlit shows no 'Running...' icon (for screenshots of a settled page)."""
    from selenium.webdriver.common.by import By

    running = '[data-testid="stStatusWidgetRunningIcon"]'
    wait_until(
        lambda: not driver.find_elements(By.CSS_SELECTOR, running),
        timeout,
        "the page to finish running",
        interval=0.25,
    )


def text_appears(driver, text: str, timeout: float, what: str) -> None:
    wait_until(lambda: text in page_text(driver), timeout, what, interval=0.25)


def screenshot(driver, path: Path, width: int = 1280) -> None:
    """Whole-page screenshot at `width`: the window is grown to the page's height first."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]');"
        "return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);"
    )
    driver.set_window_size(width, min(max(900, int(height) + 120), 6000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)


def set_number(driver, key: str, value: int) -> None:
    from selenium.webdriver.common.keys import Keys

    css = f".st-key-{key} input"

    def type_value(field) -> bool:
        if field.get_attribute("value") != str(value):
            field.send_keys(Keys.CONTROL, "a")
            # Enter commits a number input: the value is then in every later widget update.
            field.send_keys(str(value), Keys.ENTER)
        return field.get_attribute("value") == str(value)

    act(driver, css, type_value, f"{key} = {value}")


def click_button(driver, label: str, timeout: float = 30) -> None:
    """Click the visible button whose text ends with ``label`` (Streamlit's and the sign-in
    provider's buttons carry icons before their words)."""
    from selenium.webdriver.common.by import By

    def click() -> bool:
        for button in driver.find_elements(By.TAG_NAME, "button"):
            if button.is_displayed() and button.text.strip().endswith(label):
                button.click()
                return True
        return False

    wait_until(click, timeout, f"the {label!r} button", 0.25)


def fill_submit_form(driver, photo: Path) -> None:
    """On the dashboard's Submit page: upload ``photo``, tick the mosaic style, make the job
    tiny (48 px, 6 steps), and wait for the Stylise button to be enabled and the page to
    settle (a click during Streamlit's rerun after the last field can be lost)."""
    uploader = ".st-key-content input[type=file]"
    find(driver, uploader, 60, "the photo uploader", visible=False).send_keys(str(photo))
    # The first check imports the engine (torch) in the dashboard: seconds on a busy machine.
    with Image.open(photo) as image:
        size = f"{image.width}×{image.height}"
    text_appears(driver, f"{photo.name} · {size}", 120, "the uploaded photo accepted")
    act(driver, ".st-key-style_mosaic label", lambda e: e.click(), "a click on the mosaic style")
    act(
        driver,
        ".st-key-style_mosaic input",
        lambda e: e.is_selected(),
        "mosaic ticked",
        visible=False,
    )
    set_number(driver, "size", 48)
    act(driver, '[data-testid="stExpander"] summary', lambda e: e.click(), "opening Advanced")
    set_number(driver, "iterations", 6)
    act(driver, ".st-key-submit button", lambda e: e.is_enabled(), "the Stylise button enabled")
    idle(driver)
