"""The technician page in a real browser (Debian's chromium via Selenium, web_browser.py):
the page loads, the preview updates, a card appears as read within a second, "Save frame"
writes a file, a wrong password is refused, nothing loads from outside the device.
Screenshots go to tests/artifacts/ (git-ignored); their paths are printed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from broker import Mosquitto
from selenium import webdriver
from selenium.webdriver.common.by import By
from web_browser import (
    ARTIFACTS,
    PLACEMENTS,
    chromium,
    placement_pictures,
    read_state,
    text,
    wait_for,
)
from web_device import SwitchableSource, camera_like, card_frame, running_device, web_config

from appliance.samples import background

READ_WITHIN_S = 1.0


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def external_resources(driver: webdriver.Chrome, origin: str) -> list[str]:
    """Every resource the page loaded (performance entries) not from `origin`."""
    names = driver.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource')"
        ".map(e => e.name)];")
    return [name for name in names if not str(name).startswith(origin + "/")]


def test_page_previews_reads_a_card_within_a_second_and_saves_a_frame(
    browser: webdriver.Chrome, broker: Mosquitto, tmp_path: Path
) -> None:
    empty = camera_like(background((640, 360), np.random.default_rng(11)))
    source = SwitchableSource(empty)
    cfg = web_config(broker, tmp_path, tmp_path / "state")
    with running_device(cfg, source) as dev:
        browser.get(dev.url + "/")
        assert browser.title == "leat-scanner: technician page"
        wait_for(lambda: text(browser, "device") == "test-counter")
        preview = browser.find_element(By.ID, "preview")
        first = wait_for(lambda: preview.get_attribute("data-sequence"))
        wait_for(lambda: preview.get_attribute("data-sequence") != first)  # it updates
        assert browser.execute_script("return arguments[0].naturalWidth", preview) == 640
        assert read_state(browser) == "none"

        shown_at = source.show(card_frame(11)[0])
        wait_for(lambda: read_state(browser) == "read", timeout=5)
        took = time.monotonic() - shown_at
        assert text(browser, "read-state") == "read: QRCode LC******WX"
        assert took < READ_WITHIN_S, f"the card showed as read after {took:.2f} s"
        print(f"card shown as read {took:.2f} s after the frame")
        wait_for(lambda: "LC******WX" in text(browser, "recent-rows"))
        wait_for(lambda: "1 read" in text(browser, "health-rows"))  # from the published state

        browser.find_element(By.ID, "save-frame").click()
        saved = wait_for(lambda: text(browser, "action-result").removeprefix("saved "))
        assert Path(saved).is_file() and Path(saved).parent == tmp_path / "state" / "frames"
        browser.find_element(By.ID, "test-accepted").click()
        wait_for(lambda: text(browser, "action-result") == "played: accepted")

        assert external_resources(browser, dev.url) == []
        assert not browser.execute_script(  # the CSP is in force: inline script is refused
            "const s = document.createElement('script'); s.textContent = 'window.x = 1';"
            "document.body.append(s); return window.x === 1;")
        screenshot(browser, "web-page.png")


def test_login_refuses_a_wrong_password(
    browser: webdriver.Chrome, broker: Mosquitto, tmp_path: Path
) -> None:
    secret = tmp_path / "web-password"
    secret.write_text("correct horse\n")
    secret.chmod(0o600)
    cfg = web_config(broker, tmp_path, tmp_path / "state", password_file=str(secret))
    source = SwitchableSource(card_frame(11)[0])
    with running_device(cfg, source) as dev:
        browser.get(dev.url + "/")
        assert browser.current_url == dev.url + "/login"
        browser.find_element(By.ID, "password").send_keys("wrong")
        browser.find_element(By.ID, "login").click()
        wait_for(lambda: browser.current_url.endswith("/login?refused=password"))
        wait_for(lambda: text(browser, "login-error") == "Wrong password.")
        assert browser.get_cookies() == []
        screenshot(browser, "web-login-refused.png")
        browser.find_element(By.ID, "password").send_keys("correct horse")
        browser.find_element(By.ID, "login").click()
        wait_for(lambda: browser.current_url == dev.url + "/")
        wait_for(lambda: text(browser, "device") == "test-counter")
        cookie = browser.get_cookies()[0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert external_resources(browser, dev.url) == []


def test_placement_pictures_show_good_glare_and_too_far() -> None:
    written = placement_pictures(ARTIFACTS / "placement")
    assert [p.name for p in written] == [name for name, *_ in PLACEMENTS]
    for path in written:
        assert path.stat().st_size < 100_000
        print(f"screenshot: {path}")
