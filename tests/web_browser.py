"""Debian's chromium driven by Selenium for the technician page's tests, and the camera
placement pictures of hw/README.md (`python tests/web_browser.py hw/` remakes them).

Nothing downloads a browser: the driver is /usr/bin/chromedriver (Debian's
chromium-driver, installed by `scripts/bootstrap test`), so Selenium Manager is not used.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # git-ignored


def chromium() -> webdriver.Chrome:
    """A headless Debian chromium (no sandbox: tests may run as root in a container)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: run scripts/bootstrap test "
                           "(it installs Debian's chromium and chromium-driver)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def text(driver: webdriver.Chrome, element_id: str) -> str:
    """The element's visible text; "" while a navigation (a form's POST answered by a
    redirect) has the element missing or replaced between finding and reading it, so a
    `wait_for` simply polls again (a wrong id still fails it: it times out)."""
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def hint_codes(driver: webdriver.Chrome) -> list[str]:
    """The hints shown, read in one script (the list is redrawn four times a second)."""
    return list(driver.execute_script(
        "return [...document.querySelectorAll('#hints li')].map(li => li.dataset.code);"))


def read_state(driver: webdriver.Chrome) -> str:
    """"read", "refused" or "none": the class of the read-state badge."""
    return str(driver.execute_script(
        "return document.getElementById('read-state').className.replace('state ', '');"))


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    """Poll `check` (every 20 ms) until truthy; its value, else AssertionError."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)
    return found


def save_small_png(png: bytes, path: Path, width: int = 720) -> Path:
    """A screenshot shrunk to `width` and reduced to 128 colours: small enough to commit."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)),
                             Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(128).save(path, optimize=True)
    return path


PLACEMENTS = (  # (file, what is shown, hint expected, read expected)
    ("placement-good.png", "good", None, True),
    ("placement-glare.png", "glare", "glare", False),
    ("placement-too-far.png", "too_far", "too_small", True),
)


def placement_pictures(out: Path) -> list[Path]:
    """Run the real daemon on replayed pictures (good, glare, too far), open the page in
    chromium and capture its Aim panel for each; the files written."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from broker import Mosquitto
    from web_device import SwitchableSource, card_frame, running_device, web_config

    from appliance.samples import glare

    good, centre = card_frame(11)
    # a lamp's reflection wide enough that even multi-frame decoding cannot read through it
    pictures = {"good": good, "glare": glare(good, centre, (90, 80), 255),
                "too_far": card_frame(11, module_px=2)[0]}
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker")
        broker.start()
        source = SwitchableSource(pictures["good"])
        try:
            cfg = web_config(broker, work, work / "state")
            with running_device(cfg, source) as device:
                driver = chromium()
                try:
                    driver.get(device.url + "/")
                    for name, shown, hint, read in PLACEMENTS:
                        source.show(pictures[shown])

                        def ready(hint: str | None = hint, read: bool = read) -> bool:
                            codes = hint_codes(driver)
                            return ((read_state(driver) == "read") == read
                                    and codes == ([hint] if hint else []))

                        wait_for(ready)
                        panel = driver.find_element(By.ID, "aim")
                        written.append(save_small_png(panel.screenshot_as_png, out / name))
                finally:
                    driver.quit()
        finally:
            source.close()
            broker.stop()
    return written


if __name__ == "__main__":
    for path in placement_pictures(Path(sys.argv[1] if len(sys.argv) > 1 else "hw")):
        print(path, f"{path.stat().st_size // 1024} KiB")
