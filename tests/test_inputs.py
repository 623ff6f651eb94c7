"""Bad input gets a clear ValueError and loses nothing."""
import io

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab.errors import InputError
from arrcoc_lab.inputs import check_query, load_image


def test_accepts_path_pil_array(tmp_path, rgb):
    p = tmp_path / "x.png"
    Image.fromarray(rgb).save(p)
    for src in (str(p), p, Image.fromarray(rgb), rgb, p.read_bytes()):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        assert (out == rgb).all()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "I", "F", "CMYK"])
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


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((2, 2, 2, 3)), np.array([[np.nan]])])
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
