"""The demo's HTTP API driven with raw JSON (what a hostile client can send, beyond what
gradio_client would): a tiny-preset app on 127.0.0.1, uploads, and one call = POST + its event
stream. Used by test_security.py and test_fuzz.py."""
from __future__ import annotations

import contextlib
import json
import socket
import warnings

import numpy as np

FILE_META = {"_type": "gradio.FileData"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tiny_demo(max_image_pixels: int = 200_000, **launch_kwargs):
    """(app, url, pipe): the demo on the tiny preset's seeded weights, loopback only."""
    from arrcoc_lab import load_pipeline
    from arrcoc_lab.apps.demo import build_app, launch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("tiny", weights="random")
    app = build_app(pipe, max_image_pixels=max_image_pixels, concurrency=2, max_queue=16, n_examples=0)
    url, share = launch(app, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, **launch_kwargs)
    assert url.startswith("http://127.0.0.1:") and share is None
    try:
        yield app, url, pipe
    finally:
        app.close(verbose=False)


def http_client(url: str, **kwargs):
    import httpx

    return httpx.Client(base_url=url, timeout=60, trust_env=False, **kwargs)  # no proxy: loopback only


def upload(client, data: bytes, name: str = "image.png") -> dict:
    """Upload bytes the way the page does; returns the file payload for the image field."""
    r = client.post("/gradio_api/upload", files={"files": (name, data, "image/png")})
    r.raise_for_status()
    return {"path": r.json()[0], "meta": FILE_META, "orig_name": name}


def call(client, data, api: str = "analyze") -> tuple[str, object]:
    """POST a raw payload (any JSON, escaped to ASCII so lone surrogates survive) and read its
    event stream: ("complete", outputs), ("error", message or None), or ("http", status)."""
    body = json.dumps({"data": data})  # ASCII: "\ud800" stays an escape; NaN / Infinity as Python writes them
    r = client.post(f"/gradio_api/call/{api}", content=body, headers={"content-type": "application/json"})
    if r.status_code != 200:
        return "http", r.status_code
    stream = client.get(f"/gradio_api/call/{api}/{r.json()['event_id']}").text
    event = payload = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1])
    if event == "error":
        return "error", payload.get("error") if isinstance(payload, dict) else payload
    return event or "none", payload


def png(seed: int = 0, size: tuple[int, int] = (48, 64)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()
