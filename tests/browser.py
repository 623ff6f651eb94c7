"""Headless Chromium for browser tests: installs Debian's chromium when missing (the tests set
themselves up; CI machines start bare) and opens pages with Playwright driving that binary; and
`save_readme_figure`, which turns a screenshot into a docs/figures/ PNG (ARRCOC_UPDATE_FIGURES=1).

    from tests.browser import chromium_page
    with chromium_page() as page:
        page.goto("http://127.0.0.1:7860"); page.screenshot(path=...)
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # screenshots (git-ignored)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium_path() -> str:
    """Path of a Chromium binary, installing Debian's package if there is none."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True, timeout=900)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but no chromium binary is on PATH"
    return found


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(profile, executable_path=exe, headless=True, args=FLAGS,
                                                       viewport={"width": width, "height": height})
        try:
            yield browser.pages[0] if browser.pages else browser.new_page()
        finally:
            browser.close()


UPDATE_FIGURES = "ARRCOC_UPDATE_FIGURES"  # set (make figures): the browser tests refresh docs/figures/


def save_readme_figure(src: Path, dst: Path, width: int | None = 1000, max_bytes: int = 300_000) -> None:
    """A screenshot as a palette PNG under max_bytes for the docs: downscaled to `width` if wider."""
    img = Image.open(src).convert("RGB")
    if width and img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    for colours in (256, 128, 64, 32):
        small = img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(dst, optimize=True)
        if dst.stat().st_size < max_bytes:
            return
    raise AssertionError(f"{dst} is {dst.stat().st_size} bytes, over {max_bytes}")
