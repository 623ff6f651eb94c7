"""Serving the demo: `launch` (theme, CSS), the command line (`add_arguments`, `build_parser`,
`run`, `main`) and the banner with the URLs. Gradio and torch are imported only when an app is
built or run, so `add_arguments` (the CLI's `demo` subcommand options) stays light."""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import TYPE_CHECKING

from ...errors import CheckpointError, InputError
from .handlers import DEFAULT_MAX_IMAGE_PIXELS
from .layout import CSS, DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE, build_app

if TYPE_CHECKING:
    import gradio as gr

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
AUTH_ENV = "ARRCOC_DEMO_AUTH"  # "user:password", the login without putting it on the command line
AUTH_MESSAGE = "ARR-COC Lab demo: log in with the account its operator gave you."


def launch(app: gr.Blocks, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           max_file_size: int | str | None = None, prevent_thread_lock: bool = False, quiet: bool = True,
           auth: list[tuple[str, str]] | None = None):
    """Launch with the demo's theme and CSS (Gradio 6 takes them at launch); returns (local_url, share_url).
    `auth`: (user, password) pairs; when given, the page and the API need a login (docs/SECURITY.md)."""
    import gradio as gr

    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    _, local_url, share_url = app.launch(server_name=host, server_port=port, share=share, quiet=quiet,
                                         prevent_thread_lock=prevent_thread_lock, max_file_size=max_file_size,
                                         auth=auth or None, auth_message=AUTH_MESSAGE if auth else None,
                                         show_error=False, ssr_mode=False, theme=theme, css=CSS,
                                         footer_links=["api", "settings"])
    return local_url, share_url


# ------------------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--share", action="store_true", help="also serve on a public *.gradio.live link "
                   "(anyone with the link can use it: add a login, docs/SECURITY.md)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help=f"require a login (repeatable; also ${AUTH_ENV} or --auth-file)")
    p.add_argument("--auth-file", dest="auth_file", default=None,
                   help="require a login: a file of USER:PASSWORD lines (# comments)")
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


def logins(args: argparse.Namespace, environ=None) -> list[tuple[str, str]]:
    """The (user, password) pairs from --auth, --auth-file and $ARRCOC_DEMO_AUTH; [] for none."""
    import os

    environ = os.environ if environ is None else environ
    lines = [(f"--auth {a.partition(':')[0]}:…", a) for a in getattr(args, "auth", None) or []]
    if environ.get(AUTH_ENV):
        lines.append((f"${AUTH_ENV}", environ[AUTH_ENV]))
    if getattr(args, "auth_file", None):
        try:
            text = open(args.auth_file, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--auth-file {args.auth_file}: cannot read it ({type(e).__name__})") from None
        lines += [(f"--auth-file line {i}", t.strip()) for i, t in enumerate(text.splitlines(), 1)
                  if t.strip() and not t.strip().startswith("#")]
    pairs = []
    for where, entry in lines:
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise InputError(f"{where}: expected USER:PASSWORD with both parts non-empty")
        pairs.append((user.strip(), password))
    return pairs


def _check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    for name in ("max_image_pixels", "concurrency", "max_queue"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")


def run(args: argparse.Namespace) -> int:
    """Load the pipeline, build and launch the app, print its URL and serve until Ctrl+C (SIGINT),
    then close the server and return 0."""
    from ...pipeline import load_pipeline

    _check_args(args)
    auth = logins(args)
    preset, paths = _preset_kwargs(args)
    pipe = load_pipeline(preset, weights=args.weights, device=args.device, **paths)
    app = build_app(pipe, max_image_pixels=args.max_image_pixels, concurrency=args.concurrency,
                    max_queue=args.max_queue)
    max_file = max(16 * 2**20, 4 * args.max_image_pixels)  # bytes: generous for any compressed image under the limit
    try:
        local_url, share_url = launch(app, host=args.host, port=args.port, share=args.share, max_file_size=max_file,
                                      prevent_thread_lock=True, auth=auth)
    except OSError as e:
        raise InputError(f"cannot serve on {args.host}:{args.port}: {e}") from e
    print(banner(pipe, args, local_url, share_url, login=bool(auth)), flush=True)
    try:
        app.block_thread()  # returns on Ctrl+C (SIGINT), once Gradio has closed the server
    finally:
        app.close(verbose=False)
    print("ARR-COC Lab demo stopped.", flush=True)
    return 0


def banner(pipe, args, local_url: str, share_url: str | None, login: bool = False) -> str:
    """What `run` prints once the app serves: preset, local / network / public URLs, the API, and
    whether a login is required (a warning when the demo is reachable beyond this machine without one)."""
    url = local_url.rstrip("/") + "/"
    lines = ["", f"ARR-COC Lab demo — preset {pipe.config.preset}"
             + ("" if pipe.config.weights else " (untrained weights)"),
             f"  Local URL:   {url}"]
    if args.host in ("0.0.0.0", "::"):
        lines.append(f"  On network:  http://{socket.gethostname()}:{args.port}/")
    if args.share:
        lines.append(f"  Public URL:  {share_url}" if share_url else "  Public URL:  not available (see the message above)")
    lines.append(f"  API:         {url}?view=api   (endpoints /analyze and /compare)")
    if login:
        lines.append("  Login:       required (--auth)")
    elif args.share or args.host not in (DEFAULT_HOST, "localhost", "::1"):
        lines.append("  WARNING:     reachable beyond this machine without a login: anyone who can reach it can "
                     "use it; add --auth USER:PASSWORD (docs/SECURITY.md)")
    lines += ["  Press Ctrl+C to stop.", ""]
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
