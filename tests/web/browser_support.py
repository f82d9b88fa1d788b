"""Headless Chromium from Debian's `chromium` and `chromium-driver` packages, driven by
Selenium (no browser is downloaded: the driver's path is given, so Selenium Manager stays idle).

Outside CI a missing browser skips the browser tests with the install hint; with CI=true it is a
failure, since CI installs both packages.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

INSTALL_HINT = "sudo apt-get install chromium chromium-driver; pip install selenium"
REPO_ROOT = Path(__file__).resolve().parents[2]


def output_dir() -> Path:
    """Where screenshots go: $RPIBOOT_TEST_OUTPUT, else test-output/ in the checkout."""
    directory = Path(os.environ.get("RPIBOOT_TEST_OUTPUT") or REPO_ROOT / "test-output")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must install it: {INSTALL_HINT})")
    pytest.skip(f"{reason}: {INSTALL_HINT}")


@pytest.fixture
def chromium() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        _missing("headless Chromium or its driver is not installed")
    profile = tempfile.mkdtemp(prefix="rpiboot-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
