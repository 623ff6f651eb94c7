"""The quickstart notebook in a real JupyterLab, in headless Chromium: run all cells, wait for the
inspector to render, check its colour bars show, click a cell on its picture, screenshot it
(test-artifacts/jupyterlab_inspector.png). With ARRCOC_UPDATE_FIGURES=1 it runs the notebook on the
shipped lab weights instead of the tiny preset and refreshes the README screenshot docs/figures/inspector.png.

The test sets up everything itself: a temporary copy of notebooks/ (parameters injected the way
papermill does: the tiny preset, a temporary output dir), a kernel spec for this interpreter in a
temporary JUPYTER_PATH, isolated Jupyter config/data/settings dirs, JupyterLab on 127.0.0.1 on a free
port with a random token, and Chromium (tests/browser.py). JupyterLab and its kernel are always shut down.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, UPDATE_FIGURES, chromium_page, save_readme_figure

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "00_quickstart.ipynb"
SMALL = {"preset": "tiny", "policies": ["arrcoc", "heuristic"], "figure_dpi": 40}
SHIPPED = dict(SMALL, preset="lab")  # for the README screenshot: the shipped weights' real answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_workdir(root: Path, parameters: dict) -> Path:
    """notebooks/ copied under root with `parameters` injected into the quickstart; a kernel spec
    named python3 for this interpreter, and quiet JupyterLab settings, in root/jupyter."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb_dir = root / "notebooks"
    shutil.copytree(REPO / "notebooks", nb_dir)
    nb = parameterize_notebook(load_notebook_node(str(nb_dir / NOTEBOOK)),
                               dict(parameters, output_dir=str(root / "out")))
    nbformat.write(nb, nb_dir / NOTEBOOK)
    spec = root / "jupyter" / "path" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    settings = root / "jupyter" / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return nb_dir


@contextlib.contextmanager
def jupyterlab(root: Path):
    """JupyterLab serving root on 127.0.0.1:<free port> with a token; yields (base url, token)."""
    port, token, j = _free_port(), secrets.token_hex(16), root / "jupyter"
    env = dict(os.environ, JUPYTER_PATH=str(j / "path"), JUPYTER_CONFIG_DIR=str(j / "config"),
               JUPYTER_DATA_DIR=str(j / "data"), JUPYTER_RUNTIME_DIR=str(j / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(j / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(j / "workspaces"),
               MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONUNBUFFERED="1")
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        try:  # kernels first (they run in sessions of their own), then the server
            auth = {"Authorization": f"token {token}"}
            with urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels", headers=auth), timeout=10) as r:
                kernels = json.load(r)
            for k in kernels:
                urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{k['id']}", method="DELETE",
                                                              headers=auth), timeout=20).close()
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown", method="POST", headers=auth),
                                   timeout=10).close()
            proc.wait(timeout=20)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the kernel, if it outlived the server
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def run_all_cells(page, base: str, token: str, timeout_s: float = 150) -> None:
    """Open the notebook, wait for its kernel, Run → Run All Cells, wait for the inspector."""
    page.goto(f"{base}/lab/tree/notebooks/{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=90_000)  # status bar
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():  # only if JupyterLab asks anyway: take the (preselected) venv kernel
        dialog.get_by_role("button", name="Select").click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_selector(".arrcoc-inspector .arrcoc-answer-text", timeout=timeout_s * 1000)
    page.wait_for_function("() => [...document.querySelectorAll('.arrcoc-canvas-img')]"
                           ".some(img => img.complete && img.naturalWidth > 0)", timeout=30_000)


def _colour_bar_seen(locator) -> bool:
    """Whether the element, as the browser shows it, holds the ends of magma's gradient (its
    colour bar: the overlays, blended with the image, never reach the bright end)."""
    import io

    import numpy as np
    from PIL import Image

    from arrcoc_lab.apps.rendering import colormap

    seen = np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).reshape(-1, 3).astype(int)
    ends = [colormap(np.linspace(lo, hi, 16)).astype(int) for lo, hi in ((0.0, 0.1), (0.9, 1.0))]
    return all(min(np.abs(seen - c).sum(axis=1).min() for c in lut) <= 12 for lut in ends)


@pytest.mark.slow
def test_inspector_renders_in_jupyterlab(tmp_path):
    update = bool(os.environ.get(UPDATE_FIGURES))
    prepare_workdir(tmp_path, SHIPPED if update else SMALL)
    # a tall window for the README picture: JupyterLab scrolls the notebook inside the page, and an
    # element screenshot only gets what is on screen
    with jupyterlab(tmp_path) as (base, token), chromium_page(width=1400, height=2600 if update else 1300) as page:
        run_all_cells(page, base, token, timeout_s=400 if update else 150)
        inspector = page.locator(".arrcoc-inspector")
        assert inspector.count() == 1
        answer = inspector.locator(".arrcoc-answer").inner_text()
        assert "Q:" in answer and "A:" in answer
        stats = inspector.locator(".arrcoc-stats").inner_text()
        assert "visual tokens" in stats and "compression" in stats
        timings = inspector.locator(".arrcoc-timings").inner_text()
        assert all(stage in timings for stage in ("sam", "relevance", "allocator", "llm", "total"))
        options = inspector.locator("select").evaluate_all("els => els.flatMap(e => [...e.options].map(o => o.text))")
        assert {"arrcoc", "heuristic", "uniform"} <= set(options)  # the policy dropdown
        assert inspector.locator(".widget-slider").count() >= 2  # budget, opacity
        assert inspector.locator(".widget-toggle-buttons").count() >= 2  # quality mode, view
        n_cells = inspector.locator(".arrcoc-cell-table tr").count() - 1
        side = 4 if update else 2
        assert n_cells == side * side  # lab geometry: 4 × 4 cells; tiny: 2 × 2
        assert inspector.locator(".arrcoc-canvas-img").count() >= 3  # main picture + compare tiles
        # every picture has its colour bar under it: the main one, each compare tile and each A − B map
        bars = inspector.locator(".arrcoc-colorbar")
        assert bars.count() == inspector.locator(".arrcoc-canvas-img").count()
        page.wait_for_function("() => [...document.querySelectorAll('.arrcoc-colorbar img, img.arrcoc-colorbar')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
        main_bar = bars.first
        main_bar.scroll_into_view_if_needed()
        assert main_bar.is_visible() and main_bar.bounding_box()["height"] >= 30
        assert _colour_bar_seen(main_bar)

        # a click on the picture selects the cell under it (browser → kernel → table), outlined in place
        main = inspector.locator(".arrcoc-main-canvas .arrcoc-canvas-img")
        main.scroll_into_view_if_needed()
        before = inspector.locator(".arrcoc-cell-table tr.selected").get_attribute("data-cell")  # the notebook's pick
        target = 1 if before != "1" else 2
        box = main.bounding_box()
        main.click(position={"x": box["width"] * (target % side + 0.5) / side,
                             "y": box["height"] * (target // side + 0.5) / side})
        page.wait_for_selector(f".arrcoc-cell-table tr.selected[data-cell='{target}']", timeout=20_000)
        assert inspector.locator(".arrcoc-cell-table tr.selected").count() == 1
        assert inspector.locator(".arrcoc-main-canvas .arrcoc-canvas-selected").is_visible()
        assert inspector.locator("select").evaluate_all("els => els.map(e => e.selectedOptions[0]?.text.replace(/\\s/g, ' '))").count(
            f"row {target // side}, col {target % side}") == 1  # the cell dropdown followed

        # the last cell's output: every cell ran, none raised
        page.locator(".jp-OutputArea-output", has_text=re.compile(r"^wrote \[")).wait_for(timeout=300_000)
        assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # fold the file browser
        inspector.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "jupyterlab_inspector.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        if update:  # the README's picture: the inspector alone, on the shipped weights
            inspector.locator(".arrcoc-cell-table tr.selected").scroll_into_view_if_needed()
            inspector.screenshot(path=str(ARTIFACTS / "jupyterlab_inspector_full.png"))
            save_readme_figure(ARTIFACTS / "jupyterlab_inspector_full.png", REPO / "docs" / "figures" / "inspector.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.png", "policies.png", "summary.json", "views.png"]
