"""Gradio demo (docs/DEMO.md): one image, a question, a budget and a policy in; the relevance heatmap,
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
image, a payload of the wrong shape) is reported with the pipeline's own InputError message, in
the UI and through the API. Images are read only from what was uploaded to the demo (Gradio's
upload folder) or sent as a data: URL: server paths in requests are refused (docs/SECURITY.md).
Gradio and torch are imported only when an app is built or run, so importing this package (the
CLI does, for its `demo` subcommand's options) stays fast.

Modules: `handlers` (input decoding, the analyze/compare handlers and their pure helpers),
`files` (image outputs as PNG files, old ones swept), `layout` (`build_app` and its parts, the
event wiring), `server` (`launch`, the command line). Pictures come from `arrcoc_lab.apps.rendering`.
"""
from .files import PNG_MAX_AGE_S, PNG_SWEEP_EVERY_S, png_file
from .handlers import (CUSTOM, DEFAULT_MAX_IMAGE_PIXELS, DISPLAY_MAX_SIDE, DISPLAY_MIN_SIDE, MODES, POLICY_DEFAULT,
                       QUALITY_CHOICES, DemoHandlers, allocation_dict, check_image_field, compare_markdown,
                       display_copy, image_from_payload, parse_opacity, policies_markdown, preset_markdown,
                       resolve_budget, timings_rows, upload_path, upload_roots)
from .layout import CSS, DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE, build_app, demo_blocks, user_errors
from .server import (AUTH_ENV, DEFAULT_HOST, DEFAULT_PORT, add_arguments, banner, build_parser, launch, logins, main,
                     run)

__all__ = [
    "AUTH_ENV", "CSS", "CUSTOM", "DEFAULT_CONCURRENCY", "DEFAULT_HOST", "DEFAULT_MAX_IMAGE_PIXELS", "DEFAULT_MAX_QUEUE",
    "DEFAULT_PORT", "DISPLAY_MAX_SIDE", "DISPLAY_MIN_SIDE", "MODES", "PNG_MAX_AGE_S", "PNG_SWEEP_EVERY_S",
    "POLICY_DEFAULT", "QUALITY_CHOICES", "DemoHandlers", "add_arguments", "allocation_dict", "banner", "build_app",
    "build_parser", "check_image_field", "compare_markdown", "demo_blocks", "display_copy", "image_from_payload",
    "launch", "logins", "main", "parse_opacity", "png_file", "policies_markdown", "preset_markdown", "resolve_budget",
    "run", "timings_rows", "upload_path", "upload_roots", "user_errors",
]
