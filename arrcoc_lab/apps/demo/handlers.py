"""The functions behind the demo's UI and API, independent of Gradio's layout: input decoding
(image payload, quality mode + budget, opacity), the two handlers (analyze, compare), and the
pure helpers that turn a PipelineOutput into the app's outputs (JSON, timing rows, markdown)."""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InputError
from ...inputs import short_repr
from .. import rendering

if TYPE_CHECKING:
    from ...pipeline import Pipeline, PipelineOutput

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 16_000_000  # e.g. 4000 x 4000; larger uploads are refused before decoding
DISPLAY_MIN_SIDE, DISPLAY_MAX_SIDE = 512, 768  # overlays are rendered with their long side in this range

POLICY_DEFAULT = "Policy default"
CUSTOM = "Custom"
MODES = {"Fast": "fast", "Balanced": "balanced", "Accurate": "accurate"}
QUALITY_CHOICES = [POLICY_DEFAULT, *MODES, CUSTOM]


# ------------------------------------------------------------------------------ input handling
UPLOADS_ONLY = ("the image must be a file uploaded to this demo: paths on the server and URLs are not read "
                "(with gradio_client pass handle_file(path))")


def upload_roots() -> list[Path]:
    """The folders a request's image may come from: Gradio's upload folder (uploads, pasted images
    and the bundled examples, which Gradio caches there) and its examples cache."""
    from gradio.utils import get_cache_folder, get_upload_folder

    return [Path(os.path.realpath(get_upload_folder())), Path(os.path.realpath(get_cache_folder()))]


def image_from_payload(image: Any, max_pixels: int, roots: list[Path] | None = None) -> np.ndarray:
    """The uploaded image as HxWx3 uint8, validated by the pipeline's loader (size limit checked
    on the header, before decoding). Accepts Gradio's raw file payload — a dict whose `path` lies in
    one of `roots` (default `upload_roots()`), or a base64 data URL — and, from Python, a PIL image
    or an array. Any other path (a plain string, a dict pointing elsewhere, a URL) is refused
    without being opened, and no message names a server path."""
    from PIL import Image

    from ...inputs import load_image, max_file_bytes

    if image is None or (isinstance(image, dict) and not (image.get("path") or image.get("url"))):
        raise InputError("no image: upload one, paste one, or pick an example below")
    if isinstance(image, (np.ndarray, Image.Image)):  # in-process callers only: HTTP carries JSON
        return load_image(image, max_pixels, name="the image")
    if not isinstance(image, dict):
        raise InputError(f"the image must be an uploaded file, got {type(image).__name__}: with gradio_client pass "
                         "handle_file(path); paths on the server are not read")
    path, url = image.get("path"), image.get("url")
    if isinstance(path, str) and path:
        return load_image(_read_upload(path, max_file_bytes(max_pixels), roots), max_pixels, name="the uploaded image")
    if isinstance(url, str) and url.startswith("data:"):
        limit = max_file_bytes(max_pixels) * 4 // 3 + 1024
        if len(url) > limit:
            raise InputError(f"the image data URL is over {limit:,} characters; upload the file instead")
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            raise InputError("cannot read the image data URL: not base64 data") from None
        return load_image(data, max_pixels, name="the image data URL")
    raise InputError(UPLOADS_ONLY)


def upload_path(path: Any, roots: list[Path] | None = None) -> Path:
    """The real path (links resolved) of an uploaded file; anything outside `roots` (default
    `upload_roots()`), URLs included, is an InputError that does not say whether the path exists."""
    try:
        real = Path(os.path.realpath(path)) if isinstance(path, str) and path and "://" not in path else None
    except (OSError, ValueError):
        real = None
    if real is None or not any(real.is_relative_to(root) for root in (roots if roots is not None else upload_roots())):
        log.warning("refused an image path outside the upload folder")
        raise InputError(UPLOADS_ONLY)
    return real


def check_image_field(value: Any, roots: list[Path] | None = None) -> None:
    """What an HTTP request may carry in the image field, checked before Gradio touches it: null,
    Gradio's file dict whose path lies in an upload root, or a dict with a data: URL."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InputError(f"the image must be an uploaded file, got {type(value).__name__}: with gradio_client pass "
                         "handle_file(path); paths on the server are not read")
    path, url = value.get("path"), value.get("url")
    if path is not None and path != "":
        upload_path(path, roots)
    elif url is not None and not (isinstance(url, str) and url.startswith("data:")):
        raise InputError(UPLOADS_ONLY)


def contains_file(value: Any, max_items: int = 100_000) -> bool:
    """Whether a JSON value holds a dict with a "path" key anywhere (Gradio would fetch or copy
    it); walked without recursion, so any nesting depth is safe."""
    stack, seen = [value], 0
    while stack and seen < max_items:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            if "path" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return bool(stack)  # too large to walk: treated as suspect


def _read_upload(path: str, limit: int, roots: list[Path] | None) -> bytes:
    """The bytes of an uploaded file (checked by upload_path), at most `limit`."""
    real = upload_path(path, roots)
    try:
        with open(real, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, ValueError):
        raise InputError("the uploaded image is no longer on the server (uploads are kept for an hour); "
                         "upload it again") from None
    if len(data) > limit:
        raise InputError(f"the uploaded image is over {limit:,} bytes")
    return data


def resolve_budget(quality: Any, budget: Any, geometry) -> int | str | None:
    """Quality mode (Policy default / Fast / Balanced / Accurate / Custom, any case) and the slider
    value → the `budget` argument of the pipeline: None, a mode name, or (Custom) the slider's
    whole number checked against the range. Both read by `rendering.parse_budget`."""
    mode = str(quality).strip() if quality is not None else POLICY_DEFAULT
    if mode.lower() == CUSTOM.lower():
        return rendering.parse_budget(budget, geometry, tokens_only=True)
    if mode.lower() not in {*(m.lower() for m in MODES), POLICY_DEFAULT.lower(), "default", "none", ""}:
        raise InputError(f"unknown quality mode {short_repr(quality)}; accepted: {QUALITY_CHOICES}")
    return rendering.parse_budget(mode, geometry)


def parse_opacity(opacity: Any) -> float:
    """The overlay opacity slider's value as a float in [0, 1] (None → 0.5)."""
    try:
        value = float(0.5 if opacity is None else opacity)
    except (TypeError, ValueError, OverflowError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise InputError(f"overlay opacity must be a number in [0, 1], got {short_repr(opacity)}")
    return value


# ------------------------------------------------------------------------------ outputs
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
    from ...policies import POLICIES

    return "\n".join(f"- **{name}** — {POLICIES[name].cite}" for name in pipe.policies)


def compare_markdown(a: PipelineOutput, b: PipelineOutput, diff: np.ndarray) -> str:
    """The comparison's summary: both questions' answers and tokens, and how the allocations differ."""
    return "\n".join([
        "| | question | answer | tokens | ratio vs full |", "|---|---|---|---|---|",
        *(f"| {k} | {_md(o.query)} | {_md(o.answer)} | {o.num_tokens} | {o.compression_ratio:.1f}× |"
          for k, o in (("A", a), ("B", b))),
        "",
        f"The allocations differ in **{int((diff != 0).sum())} of {diff.size} cells**; A − B = {int(diff.sum()):+d} "
        f"tokens (red: A spends more, blue: B does). Largest relevance change between the questions: "
        f"{float(np.abs(a.relevance - b.relevance).max()):.3f}.",
    ])


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "∅"


def _warn(message: str) -> None:
    """A yellow toast in the UI (outside a request Gradio turns it into a Python warning)."""
    import gradio as gr

    log.info(message)
    gr.Warning(message)


# ------------------------------------------------------------------------------ the handlers
class DemoHandlers:
    """The functions behind the UI and the API, independent of Gradio except for gr.Warning."""

    def __init__(self, pipe: Pipeline, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 roots: list[Path] | None = None):
        self.pipe = pipe
        self.max_image_pixels = int(max_image_pixels)
        self.roots = roots  # where uploaded images may be read from (None: upload_roots())
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    def _check(self, query, quality, budget, policy, which: str = ""):
        """The question, quality mode + budget and policy, checked before the image is decoded;
        returns the pipeline's budget argument."""
        from ...inputs import MAX_QUERY_CHARS, check_query

        try:
            check_query(query)
            budget_arg = resolve_budget(quality, budget, self.pipe.geometry)
            self.pipe.resolve(policy, budget_arg)
        except InputError as e:
            raise InputError(f"{which}{e}") from e
        if len(" ".join(query.split())) > MAX_QUERY_CHARS:
            _warn(f"{which}the question is longer than {MAX_QUERY_CHARS} characters: only the start is used")
        return budget_arg

    def _run(self, rgb, query, budget_arg, policy, which: str = "") -> PipelineOutput:
        try:
            with self._lock:
                return self.pipe(rgb, query, budget=budget_arg, policy=policy)
        except InputError as e:
            raise InputError(f"{which}{e}") from e

    def analyze(self, image, query, quality="Balanced", budget=None, policy="arrcoc", opacity=0.5):
        """One image, one question: relevance overlay, tokens-per-cell overlay (each with its colour
        bar and legend under it), answer, tokens used, compression ratio vs full resolution,
        per-stage timings (ms), and the allocation as JSON."""
        alpha = parse_opacity(opacity)
        budget_arg = self._check(query, quality, budget, policy)
        rgb = image_from_payload(image, self.max_image_pixels, self.roots)
        out = self._run(rgb, query, budget_arg, policy)
        t0 = time.perf_counter()
        shown, out_shown = display_copy(rgb, out, self.pipe.geometry)
        levels = self.pipe.geometry.levels
        rel = rendering.overlay_figure(shown, out_shown, mode="relevance", alpha=alpha, levels=levels)
        tok = rendering.overlay_figure(shown, out_shown, mode="tokens", alpha=alpha, levels=levels)
        render = time.perf_counter() - t0
        return (rel, tok, out.answer, out.num_tokens, round(out.compression_ratio, 2),
                timings_rows(out, render), allocation_dict(out))

    def compare(self, image, query, query2, quality="Balanced", budget=None, policy="arrcoc", opacity=0.5):
        """The same image under two questions: both allocations side by side (tokens per cell on
        top, relevance below, each row with its colour bar), their per-cell difference A − B (with
        its colour bar), a summary, and both as JSON."""
        alpha = parse_opacity(opacity)
        budget_arg = self._check(query, quality, budget, policy, which="question A: ")
        self._check(query2, quality, budget, policy, which="question B: ")
        rgb = image_from_payload(image, self.max_image_pixels, self.roots)
        try:  # both questions in one batch: the image is encoded once, the rest runs as one forward
            with self._lock:
                a, b = self.pipe.compare(rgb, [query, query2], budget=budget_arg, policy=policy)
        except InputError as e:  # both questions were checked above: what is left is the image's
            raise InputError(f"question A: {e}") from e
        shown, a_shown = display_copy(rgb, a, self.pipe.geometry)
        _, b_shown = display_copy(rgb, b, self.pipe.geometry)
        titles = [f"A: {a.query} — {a.num_tokens} tokens", f"B: {b.query} — {b.num_tokens} tokens"]
        levels = self.pipe.geometry.levels
        pair = np.concatenate([
            rendering.side_by_side(shown, [a_shown, b_shown], mode="tokens", alpha=alpha, titles=titles, levels=levels),
            rendering.side_by_side(shown, [a_shown, b_shown], mode="relevance", alpha=alpha, levels=levels,
                                   titles=["A: relevance", "B: relevance"])], axis=0)
        diff = rendering.difference(a, b)
        picture = rendering.difference_figure(shown, diff, a_shown.cell_boxes, alpha)
        result = {"a": allocation_dict(a), "b": allocation_dict(b), "difference": diff.astype(int).tolist(),
                  "cells_differing": int((diff != 0).sum())}
        return pair, picture, compare_markdown(a, b, diff), result
