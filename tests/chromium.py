"""Headless Chromium for the browser tests (selenium + Debian's ``chromium`` and ``chromium-driver``).

Without them a test fails saying how to install them; it does not skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

INSTALL = "apt-get install -y chromium chromium-driver  (and: pip install -e '.[test]' for selenium)"


def start(*, downloads: Path | None = None, extra_args: tuple[str, ...] = ()):
    """A new headless Chromium driver; ``downloads``: the folder downloads go to, without asking."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed; {INSTALL}")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_bin = shutil.which("chromedriver")
    if not binary or not driver_bin:
        pytest.fail(
            f"headless Chromium is needed for the browser tests but {'chromium' if not binary else 'chromedriver'}"
            f" is not on PATH; install it with: {INSTALL}"
        )
    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", *extra_args):
        opts.add_argument(arg)
    if downloads is not None:
        opts.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
            },
        )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)
