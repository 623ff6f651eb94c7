"""Bad input gets a clear ValueError and loses nothing; one picture gives the same pixels by
every route (path, bytes, PIL, array); one budget grammar everywhere (issue 17)."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab.errors import InputError
from arrcoc_lab.inputs import check_max_new_tokens, check_query, load_image, parse_budget


def png_bytes(arr: np.ndarray | None = None, size: tuple[int, int] | None = None, bits: int = 16) -> bytes:
    """A PNG written by hand: 16-bit grey / RGB / RGBA from a uint16 array (which PIL cannot
    write), or just a header declaring `size` = (width, height) with no pixel data (a bomb)."""
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)  # noqa: E731
    if arr is None:
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    h, w = arr.shape[:2]
    colour = {2: 0, 3: 2, 4: 6}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_accepts_path_pil_array(tmp_path, rgb):
    p = tmp_path / "x.png"
    Image.fromarray(rgb).save(p)
    for src in (str(p), p, Image.fromarray(rgb), rgb, p.read_bytes()):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        assert (out == rgb).all()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "I", "F", "CMYK", "1", "YCbCr", "PA"])
def test_modes_are_converted(mode, rgb):
    img = Image.fromarray(rgb).convert(mode) if mode not in ("I;16",) else Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    out = load_image(img)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_sixteen_bit_array_keeps_contrast():
    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    out = load_image(arr)
    assert out.min() == 0 and out.max() == 255


def test_rgba_alpha_composited_on_white():
    arr = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    assert (load_image(arr) == 255).all()


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="not a valid image|corrupt"):
        load_image(p)


def test_truncated_file(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    p = tmp_path / "trunc.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_huge_image_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (5000, 5000)).save(p)
    with pytest.raises(InputError, match="over the limit"):
        load_image(p, max_pixels=10_000_000)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((2, 2, 2, 3)), np.array([[np.nan]]),
                                 np.zeros((3, 4, 4), complex), np.full((3, 3), "a"), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros((3, 3), object)])
def test_bad_arrays(bad):
    with pytest.raises(InputError):
        load_image(bad)


def test_unsupported_type():
    with pytest.raises(InputError, match="accepted"):
        load_image(42)


@pytest.mark.parametrize("q", ["", "   ", "\n\t"])
def test_empty_query(q):
    with pytest.raises(InputError, match="empty"):
        check_query(q)


def test_non_string_query():
    with pytest.raises(InputError, match="string"):
        check_query(None)


def test_long_query_truncated_with_warning():
    with pytest.warns(UserWarning, match="truncated"):
        q = check_query("why " * 500, max_chars=100)
    assert len(q) == 100


# ------------------------------------------------------------------------------ issue 17: one conversion
def test_sixteen_bit_is_one_rule_whichever_way_it_arrives(tmp_path):
    """The same 16-bit picture as an RGB PNG (which Pillow reduces to its high byte), a grey PNG
    (PIL mode I;16), a uint16 array and a PIL I;16 image: the same pixels (v >> 8). The grey PNG
    used to be stretched by its brightest pixel while the array was divided by 257."""
    rng = np.random.default_rng(3)
    rgb16 = rng.integers(0, 20_000, (6, 7, 3), dtype=np.uint16)  # a dim picture: stretching would show
    expected = (rgb16 >> 8).astype(np.uint8)
    (tmp_path / "rgb16.png").write_bytes(png_bytes(rgb16))
    for src in (tmp_path / "rgb16.png", png_bytes(rgb16), rgb16, rgb16.astype(">u2")):
        assert np.array_equal(load_image(src), expected), type(src)
    grey16 = rgb16[..., 0]
    grey = np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    opened = Image.open(io.BytesIO(png_bytes(grey16)))
    assert opened.mode == "I;16"
    for src in (png_bytes(grey16), opened, grey16, Image.fromarray(grey16)):
        assert np.array_equal(load_image(src), grey), type(src)


def test_exif_orientation_is_applied_for_files_and_pil_images(tmp_path):
    arr = np.zeros((2, 4, 3), np.uint8)  # 2 rows, 4 columns; a red pixel top-left
    arr[0, 0] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "rotated.png"
    Image.fromarray(arr).save(path, exif=exif)
    expected = np.rot90(arr, k=-1)  # clockwise: 4 rows, 2 columns, the red pixel top-right
    for src in (path, path.read_bytes(), Image.open(path)):
        out = load_image(src)
        assert out.shape == (4, 2, 3) and np.array_equal(out, expected), type(src)


@pytest.mark.parametrize("arr, expected", [
    (np.array([[0, 128, 255]], np.int64), [0, 128, 255]),  # other integer dtypes in 0..255: 8-bit
    (np.array([[0, 7, 255]], np.int16), [0, 7, 255]),
    (np.array([[0, 7, 127]], np.int8), [0, 7, 127]),
    (np.array([[False, True]]), [0, 255]),  # a mask
    (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # floats in [0, 1]
    (np.array([[0.0, 2.0, 255.0]], np.float16), [0, 2, 255]),  # floats in [0, 255]
])
def test_documented_dtype_rules(arr, expected):
    assert load_image(arr)[0, :, 0].tolist() == expected


@pytest.mark.parametrize("arr, message", [
    (np.array([[0, 300]], np.int64), r"integer image values span \[0, 300\].*0\.\.255.*uint16"),
    (np.array([[-1, 3]], np.int32), r"integer image values span \[-1, 3\]"),
    (np.array([[0.0, 256.0]]), r"float image values span \[0, 256\]"),
    (np.array([[-0.5, 0.5]]), r"float image values span"),
    (np.array([[0.0, np.inf]]), "NaN or Inf"),
])
def test_out_of_range_values_are_refused_not_clipped(arr, message):
    """int64 arrays used to be clipped to 255 in silence."""
    with pytest.raises(InputError, match=message):
        load_image(arr)


def test_pil_mode_i_outside_8_bit_is_refused():
    with pytest.raises(InputError, match="0..255"):
        load_image(Image.fromarray(np.array([[0, 4000]], np.int32)))


def test_closed_pil_image(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "x.png")
    for loaded in (True, False):
        img = Image.open(tmp_path / "x.png")
        if loaded:
            img.load()
        img.close()
        with pytest.raises(InputError, match="closed"):
            load_image(img)


def test_grey_alpha_array_matches_pil_la(rgb):
    la = Image.fromarray(rgb).convert("LA")
    assert np.array_equal(load_image(np.asarray(la)), load_image(la))


@pytest.mark.parametrize("size", [(200_000, 200_000), (9000, 9000)])
def test_decompression_bomb_is_an_input_error(tmp_path, size):
    """Beyond twice PIL's limit PIL raises DecompressionBombError at open (a traceback, once);
    under it our own limit refuses the header. Either way: InputError, nothing decoded."""
    data = png_bytes(size=size)
    (tmp_path / "bomb.png").write_bytes(data)
    for src in (data, tmp_path / "bomb.png"):
        with pytest.raises(InputError, match="bomb|over the limit"):
            load_image(src)


def test_path_problems_are_input_errors(tmp_path):
    for bad in ("a\0b.png", "x" * 5000 + ".png", tmp_path):
        with pytest.raises(InputError, match="not found"):
            load_image(bad)


# ------------------------------------------------------------------------------ issue 17: queries
@pytest.mark.parametrize("q, message", [
    ("\ud800 what?", "lone surrogate"),  # e.g. non-UTF-8 argv decoded with surrogateescape
    (b"\xff what?".decode("utf-8", "surrogateescape"), "lone surrogate"),
    (b"what?", "decode it first"),
    ("\x00\x00\x00", "empty"),
    ("\u200b\u200c\u200d\ufeff", "empty"),  # zero-width only
    ("\u0301\u0301", "empty"),  # combining marks on nothing
    ("x" * 100_001, "too long"),
])
def test_bad_queries_are_refused(q, message):
    with pytest.raises(InputError, match=message):
        check_query(q)


def test_control_characters_become_spaces():
    assert check_query("what\x00is\x07 the\tcode?\u200b") == "what is the code?\u200b"
    assert check_query("¿Qué dice el cartel? 🚀") == "¿Qué dice el cartel? 🚀"


# ------------------------------------------------------------------------------ issue 17: numbers
@pytest.mark.parametrize("value, expected", [
    (None, None), ("default", None), (" Policy default ", None), ("FAST", "fast"), (" Balanced ", "balanced"),
    (64, 64), (64.0, 64), ("64", 64), (" 64.0 ", 64), (np.int64(64), 64), (np.float32(64), 64),
])
def test_budget_grammar(value, expected):
    assert parse_budget(value) == expected


@pytest.mark.parametrize("value", [True, 20.5, "20.5", "turbo", [64], {"b": 1}, float("nan"), float("inf"), b"64",
                                   "9" * 50])
def test_budget_grammar_refuses(value):
    with pytest.raises(InputError, match="whole number of tokens"):
        parse_budget(value)


@pytest.mark.parametrize("value, expected", [(None, None), (1, 1), ("3", 3), (3.0, 3), (np.int32(256), 256)])
def test_max_new_tokens(value, expected):
    assert check_max_new_tokens(value) == expected


@pytest.mark.parametrize("value", [0, -1, 257, 2.5, "three", True, [3]])
def test_max_new_tokens_refused(value):
    with pytest.raises(InputError, match=r"max_new_tokens must be a whole number in \[1, 256\]"):
        check_max_new_tokens(value)


def test_truncated_file_is_refused_even_when_pil_was_relaxed_process_wide(tmp_path, rgb, monkeypatch):
    """lmms-eval sets PIL's LOAD_TRUNCATED_IMAGES on import; our boundary stays strict, and the
    process-wide setting is left as it was."""
    from PIL import ImageFile

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
