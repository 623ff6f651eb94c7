"""The Gradio app: `build_app` puts together the header, the inputs, the outputs of one question,
the examples, the outputs of the comparison and the policy notes, then wires the events (the
named API endpoints /analyze and /compare, and the quality-mode ↔ slider sync). Gradio is
imported inside the functions, so importing this module stays light."""
from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from ...errors import CheckpointError, InputError
from .files import png_file
from .handlers import (CUSTOM, DEFAULT_MAX_IMAGE_PIXELS, MODES, QUALITY_CHOICES, DemoHandlers, check_image_field,
                       contains_file, policies_markdown, preset_markdown)

if TYPE_CHECKING:
    import gradio as gr

    from ...pipeline import Pipeline

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2  # requests processed at once (the model itself runs one at a time)
DEFAULT_MAX_QUEUE = 64  # requests waiting beyond that are refused with "queue is full"
CSS = """
#arrcoc-header p { margin: 0.1em 0; }
.arrcoc-out img { image-rendering: auto; }
"""


def build_app(pipe: Pipeline | None = None, *, preset: str = "lab", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
              concurrency: int = DEFAULT_CONCURRENCY, max_queue: int = DEFAULT_MAX_QUEUE, n_examples: int | None = None,
              **pipeline_kwargs) -> gr.Blocks:
    """The demo as a gr.Blocks with its queue configured; launch it with `launch(app, ...)` (which
    adds the theme) or `app.launch(...)`. `pipe` defaults to `load_pipeline(preset, **pipeline_kwargs)`.
    `n_examples`: how many of the shipped examples the gallery shows (None: all, 0: no gallery)."""
    import gradio as gr

    _check_limits(concurrency, max_queue, max_image_pixels)
    if pipe is None:
        from ...pipeline import load_pipeline

        pipe = load_pipeline(preset, **pipeline_kwargs)
    handlers = DemoHandlers(pipe, max_image_pixels)
    # delete_cache: rendered overlays and uploads older than an hour are removed every 30 minutes
    with demo_blocks()(title="ARR-COC Lab demo", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        _header(pipe)
        ui = SimpleNamespace()
        with gr.Row():
            _inputs(ui, pipe)
            _analyze_outputs(ui, pipe.geometry)
        _examples(ui, n_examples)
        _compare_outputs(ui)
        with gr.Accordion("About the policies", open=False):
            gr.Markdown(policies_markdown(pipe))
        _wire_model_events(ui, handlers, concurrency)
        _wire_budget_sync(ui, pipe.geometry)
    app.image_roots = handlers.roots  # where request images may come from (None: Gradio's upload folder)
    app.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return app


def _check_limits(concurrency: int, max_queue: int, max_image_pixels: int) -> None:
    for name, value in (("concurrency", concurrency), ("max queue size", max_queue),
                        ("max image pixels", max_image_pixels)):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")


# ------------------------------------------------------------------------------ the parts
def _header(pipe: Pipeline) -> None:
    import gradio as gr

    gr.Markdown("## ARR-COC Lab — query-aware visual-token allocation\n"
                "Ask a question about an image: the relevance analyzer scores every cell for *this* "
                "question and the allocator spends the token budget where it matters. Ask a second "
                "question to see the same image allocated differently.")
    gr.Markdown(preset_markdown(pipe), elem_id="arrcoc-header")


def _inputs(ui: SimpleNamespace, pipe: Pipeline) -> None:
    """Left column: image, both questions, quality mode, budget, policy, opacity, the two buttons."""
    import gradio as gr

    g = pipe.geometry
    with gr.Column(scale=2, min_width=300):
        ui.image = gr.Image(label="Image", type="filepath", format="png", image_mode=None,
                            sources=["upload", "clipboard"], height=300, elem_id="arrcoc-image")
        ui.query = gr.Textbox(label="Question A", placeholder="What's the formula on the billboard?",
                              max_lines=3, elem_id="arrcoc-query")
        ui.query2 = gr.Textbox(label="Question B (compare)", placeholder="What city is this?",
                               max_lines=3, elem_id="arrcoc-query2")
        ui.quality = gr.Radio(QUALITY_CHOICES, value="Balanced", label="Quality mode",
                              info=f"Custom uses the slider ({g.min_tokens}–{g.max_tokens} tokens)")
        ui.budget = gr.Slider(g.min_tokens, g.max_tokens, value=g.quality_budgets["balanced"], step=1,
                              label="Token budget", elem_id="arrcoc-budget")
        with gr.Row():
            ui.policy = gr.Dropdown(pipe.policies, value="arrcoc" if "arrcoc" in pipe.policies else pipe.policies[0],
                                    label="Allocation policy", elem_id="arrcoc-policy")
            ui.opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity")
        with gr.Row():
            ui.run_a = gr.Button("Analyze question A", variant="primary", elem_id="arrcoc-analyze")
            ui.run_ab = gr.Button("Compare A and B", elem_id="arrcoc-compare")


def _analyze_outputs(ui: SimpleNamespace, g) -> None:
    """Right column: question A's overlays, answer, tokens, ratio, timings and allocation JSON."""
    import gradio as gr

    with gr.Column(scale=3):
        with gr.Row():
            ui.rel_img = gr.Image(label="Relevance (question A)", format="png", interactive=False,
                                  elem_classes="arrcoc-out", elem_id="arrcoc-relevance-map")
            ui.tok_img = gr.Image(label="Tokens per cell (question A)", format="png", interactive=False,
                                  elem_classes="arrcoc-out", elem_id="arrcoc-tokens-map")
        ui.answer = gr.Textbox(label="Answer", interactive=False, elem_id="arrcoc-answer")
        with gr.Row():
            ui.tokens = gr.Number(label="Visual tokens used", precision=0, interactive=False, elem_id="arrcoc-tokens")
            ui.ratio = gr.Number(label=f"Compression ratio (full {g.full_tokens} tokens ÷ used)", precision=2,
                                 interactive=False)
        ui.timings = gr.Dataframe(headers=["stage", "ms"], datatype=["str", "number"], label="Per-stage timings",
                                  interactive=False, max_height=260)
        with gr.Accordion("Allocation (JSON)", open=False):
            ui.alloc = gr.JSON(label="Allocation A")


EXAMPLE_KINDS = {"scenebench": "SceneBench scene", "docsynth": "DocSynth page", "photo": "photo", "scan": "scan"}


def _examples(ui: SimpleNamespace, n: int | None) -> None:
    """The shipped examples (arrcoc_lab/assets/examples/): a click loads the image with a detail
    and a gist question of its own."""
    import gradio as gr

    rows = example_rows(n)
    if rows:
        counts = {k: sum(r[0] == k for r in rows) for k in EXAMPLE_KINDS}
        kinds = ", ".join(f"{c} {EXAMPLE_KINDS[k]}{'s' if c > 1 else ''}" for k, c in counts.items() if c)
        gr.Examples([row[1:] for row in rows], inputs=[ui.image, ui.query, ui.query2], examples_per_page=12,
                    label=f"Examples ({kinds}): click one to load its image with a detail and a gist question")


def example_rows(n: int | None = None) -> list[list]:
    """[kind, image, detail question, gist question] for the first `n` shipped examples (None: all).
    The images go to Gradio as arrays, which it caches like uploads, so the demo still reads only
    its upload folder and cache (docs/SECURITY.md). Empty if the examples are missing (an install
    without its data files): the demo still works with uploads."""
    if n is not None and n < 1:
        return []
    try:
        from ...examples import list_examples

        return [[e.kind, e.load(), *e.question_pair()] for e in list_examples()[:n]]
    except InputError as e:  # missing or damaged data files: said in one line
        log.warning("shipped examples unavailable: %s", e)
    except Exception:  # noqa: BLE001 - examples are optional; the reason goes to the log
        log.exception("shipped examples unavailable")
    return []


def _compare_outputs(ui: SimpleNamespace) -> None:
    """The comparison: A | B pictures, the A − B difference, the summary and both allocations."""
    import gradio as gr

    gr.Markdown("### Same image, two questions\n"
                "Left: question A | question B, tokens per cell (top) and relevance (bottom). "
                "Right: the per-cell token difference A − B (red: A spends more, blue: B does).")
    with gr.Row():
        ui.pair_img = gr.Image(label="A | B: tokens per cell (top), relevance (bottom)", format="png",
                               interactive=False, show_label=False, scale=2, elem_id="arrcoc-pair-map")
        ui.diff_img = gr.Image(label="Per-cell difference A − B (tokens)", format="png", interactive=False,
                               show_label=False, scale=1, elem_id="arrcoc-diff-map")
    ui.summary = gr.Markdown(label="Comparison", elem_id="arrcoc-summary")
    with gr.Accordion("Both allocations (JSON)", open=False):
        ui.both = gr.JSON(label="A, B and A − B")


# ------------------------------------------------------------------------------ events
def _wire_model_events(ui: SimpleNamespace, h: DemoHandlers, concurrency: int) -> None:
    """The buttons (named API endpoints /analyze and /compare) and Enter in either question.

    preprocess=False: the raw upload reaches image_from_payload, so the pipeline's loader (not
    Gradio's decoder) checks size and integrity and its message is the one users see. Every
    model event shares one concurrency group: `concurrency` requests at once across the app."""
    common = dict(preprocess=False, concurrency_limit=concurrency, concurrency_id="model", show_progress="minimal")
    analyze, compare = user_errors(h.analyze), user_errors(h.compare)
    a_in = [ui.image, ui.query, ui.quality, ui.budget, ui.policy, ui.opacity]
    a_out = [ui.rel_img, ui.tok_img, ui.answer, ui.tokens, ui.ratio, ui.timings, ui.alloc]
    ab_in = [ui.image, ui.query, ui.query2, ui.quality, ui.budget, ui.policy, ui.opacity]
    ab_out = [ui.pair_img, ui.diff_img, ui.summary, ui.both]
    ui.run_a.click(analyze, a_in, a_out, api_name="analyze", **common)
    ui.query.submit(analyze, a_in, a_out, api_visibility="private", **common)
    ui.run_ab.click(compare, ab_in, ab_out, api_name="compare", **common)
    ui.query2.submit(compare, ab_in, ab_out, api_visibility="private", **common)


def _wire_budget_sync(ui: SimpleNamespace, g) -> None:
    """A quality mode moves the slider to its budget; moving the slider selects Custom."""
    import gradio as gr

    modes = {k: g.quality_budgets[v] for k, v in MODES.items()}
    ui.quality.change(lambda q: gr.update(value=modes[q]) if isinstance(q, str) and q in modes else gr.update(),
                      ui.quality, ui.budget,
                      api_visibility="private", queue=False, show_progress="hidden")
    ui.budget.input(None, None, ui.quality, js=f"() => {CUSTOM!r}", api_visibility="private", queue=False)


def user_errors(fn):
    """Bad input → gr.Error with the app's message (UI toast, and AppError through gradio_client);
    anything else is logged with its traceback and reported by its type only (its text could name
    server paths). Image outputs (H, W, 3) go out as PNG files of their own (files.png_file)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return tuple(png_file(x) if isinstance(x, np.ndarray) and x.ndim == 3 else x for x in fn(*args, **kwargs))
        except gr.Error:
            raise
        except (InputError, CheckpointError) as e:
            log.info("refused: %s", ascii(str(e)))
            raise gr.Error(str(e), title="Bad input", print_exception=False) from None
        except Exception as e:
            log.exception("demo request failed")
            raise gr.Error(f"internal error ({type(e).__name__}); the server log has the details",
                           print_exception=False) from None

    return wrapper


@functools.cache
def demo_blocks():
    """gr.Blocks whose checks before a handler runs (argument count, payload shapes) fail with the
    app's own message, like the handlers' InputErrors: Gradio reports its own exceptions as
    `"error": null` (show_error stays off so that no exception text leaves the server)."""
    import gradio as gr

    class DemoBlocks(gr.Blocks):
        def validate_inputs(self, block_fn, inputs):
            if len(inputs) < len(block_fn.inputs):
                raise _refusal(f"{_endpoint(block_fn)} takes {len(block_fn.inputs)} inputs "
                               f"({', '.join(_labels(block_fn))}), got {len(inputs)}")
            super().validate_inputs(block_fn, inputs)

        async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
            roots = getattr(self, "image_roots", None)
            for block, value in zip(block_fn.inputs, inputs):
                try:
                    if isinstance(block, gr.Image):
                        check_image_field(value, roots)
                    elif contains_file(value):
                        raise InputError(f"{block.label or 'this field'}: files are accepted only in the image field")
                except InputError as e:
                    raise _refusal(str(e)) from None
            try:
                return await super().preprocess_data(block_fn, inputs, state, explicit_call)
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001 - a payload Gradio could not read
                log.info("refused before the handler: %s", type(e).__name__)
                raise _refusal(f"{_endpoint(block_fn)}: an input has the wrong type; it takes "
                               f"{', '.join(_labels(block_fn))} (docs/DEMO.md)") from None

    return DemoBlocks


def _refusal(message: str):
    import gradio as gr

    return gr.Error(message, title="Bad input", print_exception=False)


def _endpoint(block_fn) -> str:
    return f"/{block_fn.api_name}" if block_fn.api_name else "this event"


def _labels(block_fn) -> list[str]:
    return [str(getattr(b, "label", None) or type(b).__name__) for b in block_fn.inputs]
