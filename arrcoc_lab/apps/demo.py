"""Gradio demo (DESIGN §6): one image, a question, a budget and a policy in; the relevance heatmap,
the tokens-per-cell map, the answer, tokens used, compression ratio and per-stage timings out; and
the same image under a second question side by side with the per-cell difference.

    python -m arrcoc_lab.apps.demo                    # http://127.0.0.1:7860
    python -m arrcoc_lab.apps.demo --share --port 8000

Two named API endpoints serve the same functions to `gradio_client` (see docs/DEMO.md):

    from gradio_client import Client, handle_file
    c = Client("http://127.0.0.1:7860/")
    relevance_png, tokens_png, answer, tokens, ratio, timings, allocation = c.predict(
        handle_file("scene.png"), "What's the formula on the billboard?", "Balanced", 45, "arrcoc", 0.5,
        api_name="/analyze")

Bad input (no image, empty question, budget out of range, unknown policy, corrupt or oversized
image) is reported with the pipeline's own InputError message, in the UI and through the API.
Gradio and torch are imported only when an app is built or run, so importing this module (the
CLI does, for its `demo` subcommand's options) stays fast.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import logging
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    import gradio as gr

    from ..pipeline import Pipeline, PipelineOutput

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000  # e.g. 4000 x 4000; larger uploads are refused before decoding
DEFAULT_CONCURRENCY = 2  # requests processed at once (the model itself runs one at a time)
DEFAULT_MAX_QUEUE = 64  # requests waiting beyond that are refused with "queue is full"
DISPLAY_MIN_SIDE, DISPLAY_MAX_SIDE = 512, 768  # overlays are rendered with their long side in this range

POLICY_DEFAULT = "Policy default"
CUSTOM = "Custom"
MODES = {"Fast": "fast", "Balanced": "balanced", "Accurate": "accurate"}
QUALITY_CHOICES = [POLICY_DEFAULT, *MODES, CUSTOM]

CSS = """
#arrcoc-header p { margin: 0.1em 0; }
.arrcoc-out img { image-rendering: auto; }
"""


# ------------------------------------------------------------------------------ input handling
def image_from_payload(image: Any, max_pixels: int) -> np.ndarray:
    """The uploaded image as HxWx3 uint8, validated by the pipeline's loader (size limit checked
    on the header, before decoding). Accepts Gradio's raw file payload (a dict with `path`, or a
    base64 data URL), a path, a PIL image or an array."""
    from ..inputs import load_image

    if image is None or (isinstance(image, dict) and not (image.get("path") or image.get("url"))):
        raise InputError("no image: upload one, paste one, or pick an example below")
    if isinstance(image, dict):
        url = image.get("url") or ""
        if not image.get("path") and url.startswith("data:"):
            try:
                data = base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, ValueError) as e:
                raise InputError(f"cannot read the image data URL: {e}") from e
            return load_image(data, max_pixels)
        image = image["path"]
    return load_image(image, max_pixels)


def resolve_budget(quality: Any, budget: Any, geometry) -> int | str | None:
    """Quality mode (Policy default / Fast / Balanced / Accurate / Custom) and the slider value →
    the `budget` argument of the pipeline: None, a mode name, or an int checked against the range."""
    mode = str(quality).strip() if quality is not None else POLICY_DEFAULT
    lowered = {k.lower(): v for k, v in MODES.items()}
    if mode.lower() in lowered:
        return lowered[mode.lower()]
    if mode.lower() in (POLICY_DEFAULT.lower(), "default", "none", ""):
        return None
    if mode.lower() != CUSTOM.lower():
        raise InputError(f"unknown quality mode {quality!r}; accepted: {QUALITY_CHOICES}")
    return _int_budget(budget, geometry)


def _int_budget(budget: Any, geometry) -> int:
    value = budget
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"budget must be a whole number of tokens in [{geometry.min_tokens}, {geometry.max_tokens}], "
                         f"got {budget!r}")
    return geometry.check_budget(int(value))


def _opacity(opacity: Any) -> float:
    try:
        value = float(0.5 if opacity is None else opacity)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise InputError(f"overlay opacity must be a number in [0, 1], got {opacity!r}")
    return value


# ------------------------------------------------------------------------------ rendering
def display_copy(rgb: np.ndarray, out: PipelineOutput, geometry) -> tuple[np.ndarray, PipelineOutput]:
    """The image resized for display (long side in [DISPLAY_MIN_SIDE, DISPLAY_MAX_SIDE]) and the
    output with its cell boxes mapped onto that size, so huge uploads render quickly and tiny
    ones legibly."""
    from PIL import Image

    h, w = rgb.shape[:2]
    long_side = max(h, w)
    target = min(max(long_side, DISPLAY_MIN_SIDE), DISPLAY_MAX_SIDE)
    if target == long_side:
        return rgb, out
    scale = target / long_side
    h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
    resample = Image.LANCZOS if scale < 1 else Image.BICUBIC
    small = np.asarray(Image.fromarray(rgb).resize((w2, h2), resample))
    return small, dataclasses.replace(out, cell_boxes=geometry.cell_boxes(h2, w2))


def difference_image(rgb: np.ndarray, a: PipelineOutput, b: PipelineOutput, alpha: float = 0.5) -> np.ndarray:
    """Per-cell token difference A − B over the image: red where question A gets more tokens,
    blue where B does, each cell labelled with the signed difference."""
    import matplotlib
    from PIL import Image, ImageDraw

    from .rendering import difference

    diff = difference(a, b)
    scale = max(int(np.abs(diff).max()), 1)
    colours = (matplotlib.colormaps["RdBu_r"](0.5 + 0.5 * diff / scale)[..., :3] * 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    heat = np.asarray(Image.fromarray(colours).resize((w, h), Image.NEAREST))
    img = Image.fromarray((rgb.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for (i, j), d in np.ndenumerate(diff):
        x0, y0, x1, y1 = a.cell_boxes[i, j]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255))
        if x1 - x0 >= 24:
            draw.text((x0 + 3, y0 + 2), f"{int(d):+d}" if d else "0", fill=(0, 0, 0))
    return np.asarray(img)


def allocation_dict(out: PipelineOutput) -> dict:
    """What the pipeline decided, as plain JSON (the API's machine-readable output)."""
    return {
        "query": out.query, "policy": out.policy, "budget": out.budget, "tier": out.tier,
        "answer": out.answer, "num_tokens": out.num_tokens, "full_tokens": out.full_tokens,
        "compression_ratio": round(out.compression_ratio, 4),
        "tokens_per_cell": out.tokens_per_cell.astype(int).tolist(),
        "levels": out.levels.astype(int).tolist(),
        "cell_relevance": np.round(out.cell_relevance.astype(float), 5).tolist(),
        "relevance": np.round(out.relevance.astype(float), 5).tolist(),
        "cell_boxes": out.cell_boxes.astype(int).tolist(),
        "image_size": list(out.image_size),
        "timings_ms": {k: round(v * 1000, 2) for k, v in out.timings.items()},
    }


def timings_rows(out: PipelineOutput, render_s: float | None = None) -> list[list]:
    rows = [[f"{k} (cached)" if k == "sam" and v == 0.0 else k, round(v * 1000, 1)] for k, v in out.timings.items()]
    if render_s is not None:
        rows.append(["render (demo)", round(render_s * 1000, 1)])
    rows.append(["total", round(sum(r[1] for r in rows), 1)])
    return rows


def preset_markdown(pipe: Pipeline) -> str:
    cfg, g = pipe.config, pipe.geometry
    weights = f"`{cfg.weights}`" if cfg.weights else "**untrained (random) — allocations and answers are not meaningful**"
    levels = "/".join(str(v) for v in g.levels)
    modes = ", ".join(f"{k} {g.quality_budgets[v]}" for k, v in MODES.items())
    return (
        f"**Preset `{cfg.preset}`** · input {g.image_size}×{g.image_size} px, patch {g.patch_size} → "
        f"{g.cells_per_side}×{g.cells_per_side} cells at {levels} tokens each · budget "
        f"{g.min_tokens}–{g.max_tokens} tokens (full resolution {g.full_tokens}; {modes}) · "
        f"device `{pipe.device}` · weights: {weights}"
    )


def policies_markdown(pipe: Pipeline) -> str:
    from ..policies import POLICIES

    return "\n".join(f"- **{name}** — {POLICIES[name].cite}" for name in pipe.policies)


# ------------------------------------------------------------------------------ the app
class DemoHandlers:
    """The functions behind the UI and the API, independent of Gradio except for gr.Error."""

    def __init__(self, pipe: Pipeline, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.pipe = pipe
        self.max_image_pixels = int(max_image_pixels)
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    def _run(self, rgb, query, quality, budget, policy, which: str = "") -> PipelineOutput:
        from ..inputs import MAX_QUERY_CHARS

        if isinstance(query, str) and len(" ".join(query.split())) > MAX_QUERY_CHARS:
            _warn(f"{which}the question is longer than {MAX_QUERY_CHARS} characters: only the start is used")
        try:
            budget_arg = resolve_budget(quality, budget, self.pipe.geometry)
            with self._lock:
                return self.pipe(rgb, query, budget=budget_arg, policy=policy)
        except InputError as e:
            raise InputError(f"{which}{e}") from e

    def analyze(self, image, query, quality="Balanced", budget=None, policy="arrcoc", opacity=0.5):
        """One image, one question: relevance overlay, tokens-per-cell overlay, answer, tokens used,
        compression ratio vs full resolution, per-stage timings (ms), and the allocation as JSON."""
        alpha = _opacity(opacity)
        rgb = image_from_payload(image, self.max_image_pixels)
        out = self._run(rgb, query, quality, budget, policy)
        from .rendering import overlay

        t0 = time.perf_counter()
        shown, out_shown = display_copy(rgb, out, self.pipe.geometry)
        rel = overlay(shown, out_shown, mode="relevance", alpha=alpha)
        tok = overlay(shown, out_shown, mode="tokens", alpha=alpha)
        render = time.perf_counter() - t0
        return (rel, tok, out.answer, out.num_tokens, round(out.compression_ratio, 2),
                timings_rows(out, render), allocation_dict(out))

    def compare(self, image, query, query2, quality="Balanced", budget=None, policy="arrcoc", opacity=0.5):
        """The same image under two questions: both allocations side by side (tokens per cell on
        top, relevance below), their per-cell difference A − B, a summary, and both as JSON."""
        alpha = _opacity(opacity)
        rgb = image_from_payload(image, self.max_image_pixels)
        a = self._run(rgb, query, quality, budget, policy, which="question A: ")
        b = self._run(rgb, query2, quality, budget, policy, which="question B: ")
        from .rendering import difference, side_by_side

        shown, a_shown = display_copy(rgb, a, self.pipe.geometry)
        _, b_shown = display_copy(rgb, b, self.pipe.geometry)
        titles = [f"A: {a.query} — {a.num_tokens} tok", f"B: {b.query} — {b.num_tokens} tok"]
        pair = np.concatenate([side_by_side(shown, [a_shown, b_shown], mode="tokens", alpha=alpha, titles=titles),
                               side_by_side(shown, [a_shown, b_shown], mode="relevance", alpha=alpha,
                                            titles=["A: relevance", "B: relevance"])], axis=0)
        diff = difference(a, b)
        changed = int((diff != 0).sum())
        summary = "\n".join([
            "| | question | answer | tokens | ratio vs full |", "|---|---|---|---|---|",
            *(f"| {k} | {_md(o.query)} | {_md(o.answer)} | {o.num_tokens} | {o.compression_ratio:.1f}× |"
              for k, o in (("A", a), ("B", b))),
            "",
            f"The allocations differ in **{changed} of {diff.size} cells**; A − B = {int(diff.sum()):+d} tokens "
            f"(red: A spends more, blue: B does). Largest relevance change between the questions: "
            f"{float(np.abs(a.relevance - b.relevance).max()):.3f}.",
        ])
        result = {"a": allocation_dict(a), "b": allocation_dict(b), "difference": diff.astype(int).tolist(),
                  "cells_differing": changed}
        return pair, difference_image(shown, a_shown, b_shown, alpha), summary, result


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "∅"


def _warn(message: str) -> None:
    """A yellow toast in the UI (outside a request Gradio turns it into a Python warning)."""
    import gradio as gr

    log.info(message)
    gr.Warning(message)


PNG_MAX_AGE_S = 3600  # image files handed to gradio are removed after this long
PNG_SWEEP_EVERY_S = 60  # ... by a sweep of the folder at most this often (not on every request)
_last_sweep = {"at": 0.0}


def _png_file(rgb: np.ndarray) -> str:
    """An image output as a PNG file of its own. Gradio writes a returned array into its cache at
    a path named by the content's hash, rewriting it in place on every request, so two identical
    requests at once could serve a half-written file; a returned file is copied into the cache
    atomically instead. Files older than PNG_MAX_AGE_S are swept on the way, at most every
    PNG_SWEEP_EVERY_S."""
    import os
    import tempfile
    from pathlib import Path

    from PIL import Image

    folder = Path(tempfile.gettempdir()) / "arrcoc-demo"
    folder.mkdir(exist_ok=True)
    now = time.time()
    if now - _last_sweep["at"] >= PNG_SWEEP_EVERY_S:
        _last_sweep["at"] = now
        for old in folder.glob("*.png"):
            try:
                if now - old.stat().st_mtime > PNG_MAX_AGE_S:
                    old.unlink()
            except OSError:  # another request swept it first
                pass
    fd, path = tempfile.mkstemp(suffix=".png", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        Image.fromarray(rgb).save(fh, format="PNG")
    return path


def _user_errors(fn):
    """Bad input → gr.Error with the app's message (UI toast, and AppError through gradio_client);
    anything else is logged with its traceback and reported without one. Image outputs (H, W, 3)
    go out as PNG files of their own (_png_file)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return tuple(_png_file(x) if isinstance(x, np.ndarray) and x.ndim == 3 else x for x in fn(*args, **kwargs))
        except gr.Error:
            raise
        except (InputError, CheckpointError) as e:
            log.info("refused: %s", e)
            raise gr.Error(str(e), title="Bad input", print_exception=False) from None
        except Exception as e:
            log.exception("demo request failed")
            raise gr.Error(f"internal error ({type(e).__name__}): {e}. The server log has the details.",
                           print_exception=False) from None

    return wrapper


def build_app(pipe: Pipeline | None = None, *, preset: str = "lab", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              concurrency: int = DEFAULT_CONCURRENCY, max_queue: int = DEFAULT_MAX_QUEUE, n_examples: int = 3,
              **pipeline_kwargs) -> gr.Blocks:
    """The demo as a gr.Blocks with its queue configured; launch it with `launch(app, ...)` (which
    adds the theme) or `app.launch(...)`. `pipe` defaults to `load_pipeline(preset, **pipeline_kwargs)`."""
    import gradio as gr

    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}")
    if max_queue < 1:
        raise InputError(f"max queue size must be at least 1, got {max_queue}")
    if max_image_pixels < 1:
        raise InputError(f"max image pixels must be at least 1, got {max_image_pixels}")
    if pipe is None:
        from ..pipeline import load_pipeline

        pipe = load_pipeline(preset, **pipeline_kwargs)
    h = DemoHandlers(pipe, max_image_pixels)
    g = pipe.geometry

    # delete_cache: rendered overlays and uploads older than an hour are removed every 30 minutes
    with gr.Blocks(title="ARR-COC Lab demo", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown("## ARR-COC Lab — query-aware visual-token allocation\n"
                    "Ask a question about an image: the relevance analyzer scores every cell for *this* "
                    "question and the allocator spends the token budget where it matters. Ask a second "
                    "question to see the same image allocated differently.")
        gr.Markdown(preset_markdown(pipe), elem_id="arrcoc-header")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                image = gr.Image(label="Image", type="filepath", format="png", image_mode=None, sources=["upload", "clipboard"],
                                 height=300, elem_id="arrcoc-image")
                query = gr.Textbox(label="Question A", placeholder="What's the formula on the billboard?",
                                   max_lines=3, elem_id="arrcoc-query")
                query2 = gr.Textbox(label="Question B (compare)", placeholder="What city is this?",
                                    max_lines=3, elem_id="arrcoc-query2")
                quality = gr.Radio(QUALITY_CHOICES, value="Balanced", label="Quality mode",
                                   info=f"Custom uses the slider ({g.min_tokens}–{g.max_tokens} tokens)")
                budget = gr.Slider(g.min_tokens, g.max_tokens, value=g.quality_budgets["balanced"], step=1,
                                   label="Token budget", elem_id="arrcoc-budget")
                with gr.Row():
                    policy = gr.Dropdown(pipe.policies, value="arrcoc" if "arrcoc" in pipe.policies else pipe.policies[0],
                                         label="Allocation policy", elem_id="arrcoc-policy")
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
                with gr.Row():
                    run_a = gr.Button("Analyze question A", variant="primary", elem_id="arrcoc-analyze")
                    run_ab = gr.Button("Compare A and B", elem_id="arrcoc-compare")
            with gr.Column(scale=3):
                with gr.Row():
                    rel_img = gr.Image(label="Relevance (question A)", format="png", interactive=False,
                                       elem_classes="arrcoc-out")
                    tok_img = gr.Image(label="Tokens per cell (question A)", format="png", interactive=False,
                                       elem_classes="arrcoc-out")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="arrcoc-answer")
                with gr.Row():
                    tokens = gr.Number(label="Visual tokens used", precision=0, interactive=False, elem_id="arrcoc-tokens")
                    ratio = gr.Number(label=f"Compression ratio (full {g.full_tokens} tokens ÷ used)", precision=2,
                                      interactive=False)
                timings = gr.Dataframe(headers=["stage", "ms"], datatype=["str", "number"], label="Per-stage timings",
                                       interactive=False, max_height=260)
                with gr.Accordion("Allocation (JSON)", open=False):
                    alloc = gr.JSON(label="Allocation A")
        ex = _example_rows(g, n_examples)
        if ex:
            kinds = ", ".join(f"{sum(r[0].startswith(k) for r in ex)} {k}" for k in ("SceneBench", "DocSynth"))
            gr.Examples([row[1:] for row in ex], inputs=[image, query, query2], examples_per_page=12,
                        label=f"Examples ({kinds}): click one to load its image with a detail and a gist question")
        gr.Markdown("### Same image, two questions\n"
                    "Left: question A | question B, tokens per cell (top) and relevance (bottom). "
                    "Right: the per-cell token difference A − B (red: A spends more, blue: B does).")
        with gr.Row():
            pair_img = gr.Image(label="A | B: tokens per cell (top), relevance (bottom)", format="png",
                                interactive=False, show_label=False, scale=2)
            diff_img = gr.Image(label="Per-cell difference A − B (tokens)", format="png", interactive=False,
                                show_label=False, scale=1)
        summary = gr.Markdown(label="Comparison", elem_id="arrcoc-summary")
        with gr.Accordion("Both allocations (JSON)", open=False):
            both = gr.JSON(label="A, B and A − B")

        with gr.Accordion("About the policies", open=False):
            gr.Markdown(policies_markdown(pipe))

        # preprocess=False: the raw upload reaches image_from_payload, so the pipeline's loader (not
        # Gradio's decoder) checks size and integrity and its message is the one users see. Every
        # model event shares one concurrency group: `concurrency` requests at once across the app.
        common = dict(preprocess=False, concurrency_limit=concurrency, concurrency_id="model", show_progress="minimal")
        run_a.click(_user_errors(h.analyze), [image, query, quality, budget, policy, opacity],
                    [rel_img, tok_img, answer, tokens, ratio, timings, alloc], api_name="analyze", **common)
        query.submit(_user_errors(h.analyze), [image, query, quality, budget, policy, opacity],
                     [rel_img, tok_img, answer, tokens, ratio, timings, alloc], api_visibility="private", **common)
        run_ab.click(_user_errors(h.compare), [image, query, query2, quality, budget, policy, opacity],
                     [pair_img, diff_img, summary, both], api_name="compare", **common)
        query2.submit(_user_errors(h.compare), [image, query, query2, quality, budget, policy, opacity],
                      [pair_img, diff_img, summary, both], api_visibility="private", **common)

        modes = {k: g.quality_budgets[v] for k, v in MODES.items()}
        quality.change(lambda q: gr.update(value=modes[q]) if q in modes else gr.update(), quality, budget,
                       api_visibility="private", queue=False, show_progress="hidden")
        budget.input(None, None, quality, js=f"() => {CUSTOM!r}", api_visibility="private", queue=False)

    app.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return app


def _example_rows(g, n: int) -> list[list]:
    """[label, image, detail question, gist question] for the bundled examples (empty if the data
    package cannot render them: the demo still works with uploads)."""
    if n < 1:
        return []
    try:
        from ..data.examples import examples

        exs = examples(n, image_size=g.image_size, patch_size=g.patch_size)
    except Exception:  # noqa: BLE001 - examples are optional; the reason goes to the log
        log.exception("bundled examples unavailable")
        return []
    label = {"scenebench": "SceneBench", "docsynth": "DocSynth"}
    return [[f"{label.get(e.name.split('/')[0], e.name)} {e.name.split('/')[-1]}", e.image, *e.questions[:2]]
            for e in exs]


def launch(app: gr.Blocks, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           max_file_size: int | str | None = None, prevent_thread_lock: bool = False, quiet: bool = True):
    """Launch with the demo's theme and CSS (Gradio 6 takes them at launch); returns (local_url, share_url)."""
    import gradio as gr

    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    _, local_url, share_url = app.launch(server_name=host, server_port=port, share=share, quiet=quiet,
                                         prevent_thread_lock=prevent_thread_lock, max_file_size=max_file_size,
                                         show_error=False, ssr_mode=False, theme=theme, css=CSS,
                                         footer_links=["api", "settings"])
    return local_url, share_url


# ------------------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--share", action="store_true", help="also serve on a public *.gradio.live link")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST}; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--preset", default=None,
                   help="lab | paper | tiny (default lab, or paper when checkpoint paths are given)")
    p.add_argument("--weights", default=None, help="our safetensors weights (default: the preset's)")
    p.add_argument("--device", default=None, help="cpu, cuda, … (default cpu)")
    p.add_argument("--sam-checkpoint", dest="sam_checkpoint", default=None, help="paper: official SAM .pth")
    p.add_argument("--clip-pretrained", dest="clip_pretrained", default=None, help="paper: open_clip checkpoint")
    p.add_argument("--llm-path", dest="llm_path", default=None, help="paper: Hugging Face model directory")
    p.add_argument("--max-image-pixels", dest="max_image_pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"refuse larger images before decoding them (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help=f"requests processed at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--max-queue", dest="max_queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"waiting requests beyond this are refused (default {DEFAULT_MAX_QUEUE})")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m arrcoc_lab.apps.demo", description="ARR-COC Lab Gradio demo")
    p.add_argument("-v", "--verbose", action="store_true", help="log requests")
    return add_arguments(p)


def _preset_kwargs(args) -> tuple[str, dict]:
    paths = {k: getattr(args, k) for k in ("sam_checkpoint", "clip_pretrained", "llm_path") if getattr(args, k, None)}
    preset = args.preset or ("paper" if paths else "lab")
    if paths and preset != "paper":
        raise InputError(f"--sam-checkpoint/--clip-pretrained/--llm-path apply to the paper preset, not {preset!r}")
    return preset, paths


def run(args: argparse.Namespace) -> int:
    """Load the pipeline, build and launch the app, print its URL and serve until Ctrl+C."""
    from ..pipeline import load_pipeline

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    for name in ("max_image_pixels", "concurrency", "max_queue"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    preset, paths = _preset_kwargs(args)
    pipe = load_pipeline(preset, weights=args.weights, device=args.device, **paths)
    app = build_app(pipe, max_image_pixels=args.max_image_pixels, concurrency=args.concurrency,
                    max_queue=args.max_queue)
    max_file = max(16 * 2**20, 4 * args.max_image_pixels)  # bytes: generous for any compressed image under the limit
    try:
        local_url, share_url = launch(app, host=args.host, port=args.port, share=args.share, max_file_size=max_file,
                                      prevent_thread_lock=True)
    except OSError as e:
        raise InputError(f"cannot serve on {args.host}:{args.port}: {e}") from e
    print(_banner(pipe, args, local_url, share_url), flush=True)
    try:
        app.block_thread()
    finally:
        app.close(verbose=False)
    return 0


def _banner(pipe, args, local_url: str, share_url: str | None) -> str:
    url = local_url.rstrip("/") + "/"
    lines = ["", f"ARR-COC Lab demo — preset {pipe.config.preset}"
             + ("" if pipe.config.weights else " (untrained weights)"),
             f"  Local URL:   {url}"]
    if args.host in ("0.0.0.0", "::"):
        lines.append(f"  On network:  http://{socket.gethostname()}:{args.port}/")
    if args.share:
        lines.append(f"  Public URL:  {share_url}" if share_url else "  Public URL:  not available (see the message above)")
    lines += [f"  API:         {url}?view=api   (endpoints /analyze and /compare)",
              "  Press Ctrl+C to stop.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (InputError, CheckpointError) as e:
        print(f"arrcoc-lab demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
