"""Issue 17, hostile input to the demo: its HTTP API reads only what was uploaded to it; every bad
payload gets the app's own message (never `"error": null`, never "internal error", never a
server path); a login can be required. Driven with raw JSON on 127.0.0.1 (tests/http_api.py).

Plus the public API's boundary: the budget grammar the demo accepts is the API's, answer lengths
and devices are checked before any work."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab.errors import InputError
from tests.http_api import FILE_META, call, http_client, png, tiny_demo, upload

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
QUESTION = "What is written on the sign?"


@pytest.fixture(scope="module")
def demo():
    with tiny_demo() as (app, url, pipe), http_client(url) as client:
        yield client, pipe, url


@pytest.fixture(scope="module")
def uploaded(demo):
    return upload(demo[0], png(0))


def _args(image, **change):
    args = {"image": image, "query": QUESTION, "quality": "Custom", "budget": 12, "policy": "arrcoc", "opacity": 0.5}
    return list((args | change).values())


def _refused(result, fragment: str = "") -> str:
    kind, message = result
    assert kind == "error" and isinstance(message, str), result  # the app's message, not null
    assert not message.startswith("internal error") and "Traceback" not in message, message
    assert tempfile.gettempdir() not in message and "/gradio" not in message, message  # no server paths
    assert fragment in message, message
    return message


def test_an_uploaded_image_is_answered(demo, uploaded):
    from arrcoc_lab.inputs import load_image

    client, pipe, _ = demo
    kind, out = call(client, _args(uploaded))
    assert kind == "complete", out
    ref = pipe(load_image(png(0)), QUESTION, budget=12)
    assert out[6]["tokens_per_cell"] == ref.tokens_per_cell.tolist() and out[2] == ref.answer


@pytest.mark.parametrize("how", ["no meta", "meta", "traversal", "symlink in uploads", "missing file", "http url",
                                 "file url", "relative"])
def test_server_paths_in_requests_are_refused(demo, uploaded, tmp_path, how):
    """A path without `meta` used to skip Gradio's upload check: the app opened the file and sent
    back an overlay of it. Every way of naming a server file gets one message, which says nothing
    about whether the file exists."""
    from gradio.utils import get_upload_folder

    from arrcoc_lab.apps.demo.handlers import UPLOADS_ONLY

    client, _, url = demo
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(1))  # a valid image: were it read, the request would succeed
    link = Path(get_upload_folder()) / f"arrcoc-test-{os.getpid()}-link.png"
    path = {"no meta": str(secret), "meta": str(secret), "missing file": str(tmp_path / "nothing.png"),
            "traversal": os.path.dirname(uploaded["path"]) + "/../../../../../.." + str(secret),
            "symlink in uploads": str(link), "http url": f"{url}gradio_api/file={secret}",
            "file url": f"file://{secret}", "relative": "README.md"}[how]
    payload = {"path": path} | ({} if how == "no meta" else {"meta": FILE_META})
    if how == "symlink in uploads":
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(secret)
    try:
        message = _refused(call(client, _args(payload)))
    finally:
        link.unlink(missing_ok=True)
    assert message == UPLOADS_ONLY and str(tmp_path) not in message


def test_the_handler_refuses_paths_outside_its_roots(tmp_path):
    """The same rule without HTTP: image_from_payload reads only inside its upload roots."""
    from arrcoc_lab.apps.demo import image_from_payload

    roots = [tmp_path / "uploads"]
    roots[0].mkdir()
    (roots[0] / "ok.png").write_bytes(png(2))
    (tmp_path / "outside.png").write_bytes(png(2))
    assert image_from_payload({"path": str(roots[0] / "ok.png")}, 10**6, roots).shape == (48, 64, 3)
    for bad in ({"path": str(tmp_path / "outside.png")}, str(roots[0] / "ok.png"), Path(roots[0] / "ok.png"),
                {"url": "https://example.com/x.png"}, {"path": 7}):
        with pytest.raises(InputError, match="uploaded"):
            image_from_payload(bad, 10**6, roots)


def _bomb() -> bytes:
    from tests.test_inputs import png_bytes

    return png_bytes(size=(200_000, 200_000))


@pytest.mark.parametrize("case, fragment", [
    ("bomb", "decompression bomb"),
    ("over the limit", "over the limit of 200,000 pixels"),
    ("corrupt", "not a valid image file"),
    ("truncated", "corrupt or truncated"),
    ("surrogate query", "lone surrogate"),
    ("nul query", "query is empty"),
    ("zero-width query", "query is empty"),
    ("policy as list", "policy must be a name"),
    ("policy upper case", ""),  # accepted: "ARRCOC" is arrcoc
    ("plain-string image", "the image must be an uploaded file, got str"),
    ("number image", "got int"),
    ("too few arguments", "/analyze takes 6 inputs"),
    ("file in another field", "files are accepted only in the image field"),
    ("deeply nested opacity", "overlay opacity must be a number"),
    ("budget as dict", "budget must be a whole number"),
    ("remote data", "URLs are not read"),
])
def test_bad_payloads_get_the_app_message(demo, uploaded, case, fragment):
    client, _, _ = demo
    up = lambda data: upload(client, data)  # noqa: E731
    args = {
        "bomb": lambda: _args(up(_bomb())),
        "over the limit": lambda: _args(up(png(3, (500, 500)))),
        "corrupt": lambda: _args(up(b"not an image at all")),
        "truncated": lambda: _args(up(png(4, (200, 300))[:400])),
        "surrogate query": lambda: _args(uploaded, query="\ud800 what?"),
        "nul query": lambda: _args(uploaded, query="\x00\x00"),
        "zero-width query": lambda: _args(uploaded, query="\u200b\u200d"),
        "policy as list": lambda: _args(uploaded, policy=["arrcoc"]),
        "policy upper case": lambda: _args(uploaded, policy=" ARRCOC "),
        "plain-string image": lambda: _args(uploaded["path"]),
        "number image": lambda: _args(7),
        "too few arguments": lambda: _args(uploaded)[:2],
        "file in another field": lambda: _args(uploaded, query={"path": "/etc/hostname", "meta": FILE_META}),
        "deeply nested opacity": lambda: _args(uploaded, opacity=[[[[[[[[[[0.5]]]]]]]]]]),
        "budget as dict": lambda: _args(uploaded, budget={"tokens": 12}),
        "remote data": lambda: _args({"url": "https://example.com/a.png", "meta": FILE_META}),
    }[case]()
    result = call(client, args)
    if case == "policy upper case":
        assert result[0] == "complete" and result[1][6]["policy"] == "arrcoc"
    else:
        _refused(result, fragment)


def test_a_data_url_is_read_and_limited(demo):
    import base64

    client, _, _ = demo
    data = "data:image/png;base64," + base64.b64encode(png(5)).decode()
    assert call(client, _args({"url": data}))[0] == "complete"


# ------------------------------------------------------------------------------ login
def test_a_login_can_be_required(tmp_path):
    """--auth (launch(auth=...)): without a login the page's config, the API and uploads answer
    401; gradio_client logs in with auth=(user, password)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AuthenticationError

    with tiny_demo(auth=[("ana", "s3cret")]) as (app, url, pipe):
        with http_client(url) as anonymous:
            assert anonymous.get("/config").status_code == 401
            assert anonymous.post("/gradio_api/upload", files={"files": ("x.png", png(), "image/png")}).status_code == 401
            assert call(anonymous, [None, QUESTION, "Custom", 12, "arrcoc", 0.5]) == ("http", 401)
            assert anonymous.post("/login", data={"username": "ana", "password": "wrong"}).status_code == 400
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False, analytics_enabled=False)
        client = Client(url, auth=("ana", "s3cret"), verbose=False, analytics_enabled=False,
                        download_files=str(tmp_path))
        (tmp_path / "x.png").write_bytes(png(6))
        out = client.predict(handle_file(str(tmp_path / "x.png")), QUESTION, "Custom", 12, "arrcoc", 0.5,
                             api_name="/analyze")
        assert out[3] == out[6]["num_tokens"] <= 12


def test_login_options(tmp_path, capsys):
    from types import SimpleNamespace

    from arrcoc_lab.apps.demo import banner, logins, main

    (tmp_path / "users").write_text("# demo accounts\nana:s3cret:with:colons\n\nbo:pw\n")
    args = SimpleNamespace(auth=["cy:pw2"], auth_file=str(tmp_path / "users"))
    assert logins(args, environ={"ARRCOC_DEMO_AUTH": "dee:pw3"}) == [
        ("cy", "pw2"), ("dee", "pw3"), ("ana", "s3cret:with:colons"), ("bo", "pw")]
    assert logins(SimpleNamespace(auth=[], auth_file=None), environ={}) == []
    for argv, message in ((["--auth", "nocolon"], "expected USER:PASSWORD"), (["--auth", ":pw"], "USER:PASSWORD"),
                          (["--auth-file", str(tmp_path / "none")], "cannot read it")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "s3cret" not in err
    pipe = SimpleNamespace(config=SimpleNamespace(preset="tiny", weights=None))
    shared = SimpleNamespace(host="127.0.0.1", port=7860, share=True)
    assert "WARNING" in banner(pipe, shared, "http://127.0.0.1:7860", "https://x.gradio.live")
    assert "Login:       required" in banner(pipe, shared, "http://127.0.0.1:7860", "https://x.gradio.live", login=True)
    local = SimpleNamespace(host="127.0.0.1", port=7860, share=False)
    assert "WARNING" not in banner(pipe, local, "http://127.0.0.1:7860", None)


# ------------------------------------------------------------------------------ the API's boundary
@pytest.fixture(scope="module")
def tiny(demo):
    return demo[1]


@pytest.mark.parametrize("value, tokens, control", [
    ("12", 12, "slider"), (12.0, 12, "slider"), (np.int64(12), 12, "slider"), ("12.0", 12, "slider"),
    ("FAST", 4, "mode"), (" Accurate ", 25, "mode"), ("default", None, "mode"), (None, None, "mode")])
def test_one_budget_grammar_for_api_cli_widgets_and_demo(tiny, value, tokens, control):
    """The API refused "64", "FAST" and 64.0, which the demo accepted."""
    from arrcoc_lab import inputs
    from arrcoc_lab.apps import cli, rendering
    from arrcoc_lab.apps.demo import resolve_budget

    g = tiny.geometry
    expected = tokens if tokens is not None else tiny.resolve("arrcoc")[1]
    assert tiny.resolve("arrcoc", value)[1] == expected  # the API
    if value is not None:
        assert tiny.resolve("arrcoc", cli._budget(str(value)))[1] == expected  # the CLI's --budget
    demo_arg = resolve_budget("Custom", value, g) if control == "slider" else resolve_budget(value, None, g)
    assert tiny.resolve("arrcoc", demo_arg)[1] == expected  # the demo (quality mode radio, or Custom + slider)
    assert rendering.parse_budget is inputs.parse_budget  # the widgets (Inspector.set_budget reads it)


def test_the_api_takes_the_grammar_and_refuses_bad_generation_settings(tiny, rgb):
    out = tiny(rgb, QUESTION, budget="FAST", policy="Uniform", max_new_tokens="2")
    assert out.budget == 4 and out.policy == "uniform"
    for kwargs, message in (({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": -1}, "max_new_tokens"),
                            ({"max_new_tokens": "three"}, "max_new_tokens"), ({"budget": 4.5}, "whole number"),
                            ({"policy": None}, "policy must be a name")):
        with pytest.raises(InputError, match=message):
            tiny(rgb, QUESTION, **kwargs)
    with pytest.raises(InputError, match="list of strings"):
        tiny.compare(rgb, QUESTION)  # a string is not a list of questions
    with pytest.raises(InputError, match="query is empty"):
        tiny.compare(rgb, [QUESTION, "\u200b"])  # checked before the first question runs


def test_images_arrive_the_same_way_through_the_demo(demo, tmp_path):
    """A 16-bit picture uploaded to the demo gets the pixels the API gives the same array."""
    from arrcoc_lab.apps.demo import image_from_payload
    from tests.test_inputs import png_bytes

    arr = np.random.default_rng(7).integers(0, 30_000, (20, 30, 3), dtype=np.uint16)
    (tmp_path / "16.png").write_bytes(png_bytes(arr))
    got = image_from_payload({"path": str(tmp_path / "16.png")}, 10**6, [tmp_path])
    assert np.array_equal(got, (arr >> 8).astype(np.uint8))
    buf = io.BytesIO()
    Image.fromarray(got).save(buf, "PNG")
    assert np.array_equal(image_from_payload({"url": "data:image/png;base64," + __import__("base64").b64encode(
        buf.getvalue()).decode()}, 10**6, [tmp_path]), got)
