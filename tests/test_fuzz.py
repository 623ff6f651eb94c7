"""Issue 17, fuzzing as a test: hypothesis draws hostile and careless input for the public call and
for the demo's HTTP API; every outcome must be an answer or a documented error (InputError /
CheckpointError in Python, the app's own message over HTTP), the server must stay up, answer the
next valid request identically, and keep its memory bounded.

Bounded: a few dozen examples per property, no deadlines, derandomized (the same examples on
every run), the tiny preset's seeded weights, a server on 127.0.0.1 only."""
from __future__ import annotations

import io
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from arrcoc_lab.errors import CheckpointError, InputError
from arrcoc_lab.inputs import MAX_QUERY_CHARS, check_query, load_image
from tests.http_api import FILE_META, call, http_client, png, tiny_demo, upload

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def bounded(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


DOCUMENTED = (InputError, CheckpointError)

# ------------------------------------------------------------------------------ strategies
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())  # surrogates and controls included
QUERIES = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(st.sampled_from(" \t\n\x00\u200b\u200c\u200d\ufeff\u0301\u2028"), max_size=12),  # nothing visible
    st.sampled_from(["What is written on the sign?", "¿Qué dice? 🚀", "what\x00is it", "x" * (MAX_QUERY_CHARS + 9)]),
    st.binary(max_size=8), st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
)
DTYPES = st.sampled_from([np.uint8, np.uint16, ">u2", np.int8, np.int16, np.int64, np.uint32, np.float16, np.float32,
                          np.float64, np.bool_, np.complex64])


@st.composite
def arrays(draw):
    h, w = draw(st.integers(0, 24)), draw(st.integers(0, 24))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 2), (h, w, 3), (h, w, 4), (h, w, 5), (3, h, w), (h,),
                                  (h, w, 3, 1)]))
    dtype = np.dtype(draw(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1.0, 255.0, 1e5, -1.0]))
        with np.errstate(over="ignore"):
            arr = (rng.random(shape) * scale).astype(dtype)  # float16 * 1e5 overflows to inf: on purpose
        if arr.size and draw(st.booleans()):
            arr.flat[0] = draw(st.sampled_from([np.nan, np.inf, -0.0, 1.0]))
        return arr
    if dtype.kind == "c":
        return np.zeros(shape, dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    info = np.iinfo(dtype)
    lo, hi = draw(st.sampled_from([(0, 255), (max(info.min, -5), min(info.max, 300)), (info.min, info.max)]))
    return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV",
                                 "LAB"]))
    rgb = np.random.default_rng(draw(st.integers(0, 999))).integers(
        0, 256, (draw(st.integers(1, 20)), draw(st.integers(1, 20)), 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257) if mode == "I;16" else img.convert(mode)
    if draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation, valid or not
        buf = io.BytesIO()
        try:
            img.save(buf, "PNG", exif=exif)
            img = Image.open(io.BytesIO(buf.getvalue()))
        except (OSError, ValueError):
            pass
    if draw(st.integers(0, 9)) == 0:
        img.close()
    return img


@st.composite
def files(draw):
    data = png(draw(st.integers(0, 99)), (draw(st.integers(1, 30)), draw(st.integers(1, 30))))
    cut = draw(st.sampled_from([None, 8, 33, 60, -10]))
    data = data if cut is None else data[:cut]
    return draw(st.sampled_from([data, bytearray(data), b"\x89PNG\r\n\x1a\n" + data[8:20]]))


IMAGES = st.one_of(arrays(), pil_images(), files(), st.none(), st.integers(), st.text(max_size=10),
                   st.lists(st.integers(0, 255), max_size=4))
BUDGETS = st.one_of(st.none(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["fast", "FAST", " balanced ", "Accurate", "default", "", "12", "12.0", "4.5",
                                     "turbo", "\ud800"]),
                    st.text(max_size=6), st.booleans(), st.lists(st.integers(), max_size=2),
                    st.integers(0, 2**70))
POLICIES_ = st.one_of(st.sampled_from(["arrcoc", "uniform", "random", "heuristic", "full", "ARRCOC", " uniform ",
                                       "nope", ""]),
                      st.none(), st.integers(), st.text(max_size=8), st.lists(st.just("arrcoc"), max_size=2))
MAX_NEW = st.one_of(st.none(), st.integers(-3, 300), st.sampled_from(["2", "2.0", "two", 1.5]))


# ------------------------------------------------------------------------------ the public call
@pytest.fixture(scope="module")
def tiny():
    import warnings

    from arrcoc_lab import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("tiny", weights="random")


@bounded(150)
@given(image=IMAGES)
def test_load_image_returns_rgb_or_a_documented_error(image):
    try:
        out = load_image(image, max_pixels=10_000)
    except DOCUMENTED:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous


@bounded(200)
@given(query=QUERIES)
def test_check_query_returns_clean_text_or_a_documented_error(query):
    try:
        text = check_query(query)
    except DOCUMENTED:
        return
    text.encode("utf-8")  # never a lone surrogate downstream
    assert 0 < len(text) <= MAX_QUERY_CHARS and text == " ".join(text.split())
    assert "\x00" not in text


@bounded(200)
@given(budget=BUDGETS)
def test_budget_grammar_answers_or_refuses(tiny, budget):
    try:
        tokens = tiny.resolve("arrcoc", budget)[1]
    except DOCUMENTED as e:
        str(e).encode("utf-8")  # a message that survives JSON
        return
    g = tiny.geometry
    assert isinstance(tokens, int) and g.min_tokens <= tokens <= g.max_tokens


@st.composite
def usually(draw, valid, hostile):
    """About three draws in four from `valid`: enough whole requests get through to be answered."""
    return draw(valid) if draw(st.sampled_from([True, True, True, False])) else draw(hostile)


def test_the_public_call_answers_or_raises_a_documented_error(tiny):
    g = tiny.geometry
    outcomes = {"answer": 0, "refused": 0}

    @bounded(36)
    @given(image=usually(st.sampled_from([np.full((20, 30, 3), 90, np.uint8), Image.new("RGB", (25, 17), "red")]),
                         st.one_of(arrays(), pil_images(), files())),
           query=usually(st.sampled_from(["What is written on the sign?", "¿Qué dice? 🚀", "a\x00b"]), QUERIES),
           budget=usually(st.sampled_from([None, "fast", " BALANCED ", 12, 12.0, "12", np.int64(20)]), BUDGETS),
           policy=usually(st.sampled_from(["arrcoc", "uniform", "ARRCOC", "heuristic"]), POLICIES_),
           max_new_tokens=usually(st.sampled_from([1, "2", None]), MAX_NEW))
    def one_call(image, query, budget, policy, max_new_tokens):
        try:
            out = tiny(image, query, budget=budget, policy=policy, max_new_tokens=max_new_tokens)
        except DOCUMENTED as e:
            assert str(e) and "Traceback" not in str(e)
            str(e).encode("utf-8")  # a message that survives JSON
            outcomes["refused"] += 1
            return
        outcomes["answer"] += 1
        assert isinstance(out.answer, str) and out.policy in tiny.policies
        assert out.tokens_per_cell.shape == (g.cells_per_side, g.cells_per_side)
        assert out.num_tokens <= out.budget and g.min_tokens <= out.budget <= g.max_tokens
        assert np.isfinite(out.relevance).all()

    one_call()
    assert outcomes["answer"] >= 3 and outcomes["refused"] >= 3, outcomes


# ------------------------------------------------------------------------------ the HTTP API
@pytest.fixture(scope="module")
def served():
    with tiny_demo() as (app, url, pipe), http_client(url) as client:
        yield client, pipe


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(ANY_CHAR, max_size=12),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                                        max_size=4),
                    max_leaves=12)


@st.composite
def payloads(draw, valid_image: dict):
    """A request body's `data`: mostly the right shape with hostile values, sometimes anything."""
    secret = draw(st.sampled_from(["/etc/hostname", "/proc/self/environ", tempfile.gettempdir(), "README.md",
                                   "../../etc/passwd", "http://127.0.0.1:1/x.png", "file:///etc/hostname"]))
    image = draw(usually(st.just(valid_image), st.one_of(
        st.just({"path": secret}), st.just({"path": secret, "meta": FILE_META}), st.just(valid_image["path"]),
        st.just({"url": "data:image/png;base64,iVBORw0KGgo="}), JSON)))
    slots = [image,
             draw(usually(st.sampled_from(["What is written on the sign?", "a\x00b?", "¿Qué? 🚀"]),
                          st.one_of(QUERIES.filter(lambda q: not isinstance(q, bytes)), JSON))),
             draw(usually(st.sampled_from(["Custom", "Fast", "balanced", "Policy default"]),
                          st.one_of(st.just("turbo"), JSON))),
             draw(usually(st.sampled_from([4, 12, 12.0, "12", 256]), st.one_of(st.integers(-5, 300), JSON))),
             draw(usually(st.sampled_from(["arrcoc", "uniform", "ARRCOC"]), st.one_of(st.just("nope"), JSON))),
             draw(usually(st.floats(0, 1), st.one_of(st.sampled_from([-1, 2, "0.5"]), JSON)))]
    shape = draw(st.sampled_from(["full"] * 8 + ["short", "long"]))
    return slots if shape == "full" else slots[: draw(st.integers(0, 5))] if shape == "short" else slots + [draw(JSON)]


def test_the_demo_api_survives_random_payloads(served):
    """Each payload: an answer, or the app's message (a string: no `"error": null`, no internal
    error, no server path). Afterwards the server answers the first valid request identically and
    its memory grew by less than 300 MiB."""
    import psutil

    client, pipe = served
    image = upload(client, png(11))
    valid = [image, "What is written on the sign?", "Custom", 12, "arrcoc", 0.5]
    kind, before = call(client, valid)
    assert kind == "complete", before
    rss = psutil.Process().memory_info().rss
    outcomes = {"complete": 0, "error": 0}

    @bounded(60)
    @given(data=payloads(image), api=st.sampled_from(["analyze", "analyze", "compare"]))
    def one_request(data, api):
        if api == "compare" and len(data) >= 2:
            data = data[:2] + [data[1]] + data[2:]
        kind, result = call(client, data, api)
        assert kind in outcomes, (kind, result)
        outcomes[kind] += 1
        if kind == "error":
            assert isinstance(result, str) and result, data
            assert not result.startswith("internal error"), (result, data)
            assert tempfile.gettempdir() not in result and "/gradio" not in result, result
            assert "/etc/" not in result and "/proc/" not in result, result

    one_request()
    kind, after = call(client, valid)
    assert kind == "complete"
    assert after[6] | {"timings_ms": None} == before[6] | {"timings_ms": None}  # the same allocation, answer, maps
    assert outcomes["error"] >= 10 and outcomes["complete"] >= 5, outcomes
    growth = (psutil.Process().memory_info().rss - rss) / 2**20
    assert growth < 300, f"RSS grew {growth:.0f} MiB over the fuzz"
