"""Validation of what callers pass in: images, queries, budgets, answer lengths. Every problem is
an InputError (a ValueError) saying what was wrong and what is accepted; nothing is modified in
place. The API, the CLI, the widgets and the demo all read their inputs through this module, so
one picture gives the same pixels and one budget the same tokens whichever way it arrives.

Image conversion (docs/SECURITY.md, "Accepted inputs"): paths, bytes, PIL images and arrays all
end as HxWx3 uint8 RGB by one rule (a path "example:NAME" is a shipped example, arrcoc_lab.examples,
unless a file exists at that exact path) —
  * EXIF orientation is applied (files and PIL images);
  * uint8 as is; 16-bit (uint16 arrays, PIL "I;16") keeps its high byte (v >> 8), the rule Pillow
    itself applies to 16-bit RGB files; bool → 0 / 255;
  * other integer dtypes (and PIL "I") must hold values in 0..255; floats (and PIL "F") must be
    finite and in [0, 1] (scaled by 255) or [0, 255] — anything else is refused;
  * grey is repeated to RGB; alpha (RGBA, LA, PA, HxWx2, HxWx4) is composited on white.
"""
from __future__ import annotations

import io
import os
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .examples import example_path, is_example_ref

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (PIL would warn at 89M)
MAX_QUERY_CHARS = 512  # longer queries are truncated with a warning
MAX_QUERY_INPUT_CHARS = 100_000  # ... and queries longer than this are refused outright
MAX_NEW_TOKENS = 256  # the answer-length cap a caller may ask for
ACCEPTED = ("a file path, example:NAME (a shipped example), image file bytes, a PIL.Image, or an HxW / HxWx1-4 "
            "numpy array (uint8; uint16, other integers in 0..255, bool and floats in [0, 1] or [0, 255] are converted)")
FORMATS = "PNG, JPEG, WebP, BMP, TIFF, GIF"
QUALITY_MODES = ("fast", "balanced", "accurate")  # the presets' geometry.quality_budgets
DEFAULT_WORDS = ("", "default", "policy default", "none")  # → None: the policy's own default budget
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_VISIBLE = ("L", "N", "P", "S")  # letters, numbers, punctuation, symbols: what makes a query non-empty


# ------------------------------------------------------------------------------ images
def load_image(image, max_pixels: int = MAX_PIXELS, *, name: str | None = None) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array from a path (or "example:NAME", a shipped example), image
    file bytes, a PIL image or a numpy array (the module's docstring has the conversion rule).
    `name` is how messages refer to the image (default: its path, or "the image data")."""
    if isinstance(image, (str, os.PathLike)):
        if is_example_ref(image):  # "example:NAME": a shipped example (arrcoc_lab.examples)
            name, image = name or image, example_path(image)
        path = Path(image)
        return _from_pil(_open_path(path, max_pixels, name or str(path)), max_pixels, name or str(path))
    if isinstance(image, (bytes, bytearray, memoryview)):
        label = name or "the image data"
        return _from_pil(_open_bytes(bytes(image), max_pixels, label), max_pixels, label)
    if isinstance(image, Image.Image):
        return _from_pil(image, max_pixels, name or "the PIL image")
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    raise InputError(f"unsupported image type {type(image).__name__}; accepted: {ACCEPTED}")


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file read: generous for any format under the pixel limit."""
    return max(64 * 2**20, 16 * max_pixels)


def _open_path(path: Path, max_pixels: int, name: str) -> Image.Image:
    try:
        size = path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):  # a name too long, a NUL byte, no permission to look
        size = None
    if size is None:
        raise InputError(f"image file not found: {name}")
    if size > max_file_bytes(max_pixels):
        raise InputError(f"image file {name} is {size:,} bytes, over the limit of {max_file_bytes(max_pixels):,}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read image file {name}: {e.strerror or e}") from None
    return _open_bytes(data, max_pixels, name)


def _open_bytes(data: bytes, max_pixels: int, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))  # lazy: only the header is read here
    except Image.DecompressionBombError:  # over twice PIL's own limit, refused by PIL at open
        raise InputError(f"{name} declares more pixels than PIL will decode (decompression bomb); the limit is "
                         f"{max_pixels:,} pixels: downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise InputError(f"cannot read {name}: not a valid image file; accepted: {FORMATS}") from None
    _check_size(img.width, img.height, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _strict_load(img)
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data only shows up on decode, as anything
        raise InputError(f"cannot decode {name}: the file is corrupt or truncated ({type(e).__name__})") from None
    return img


def _strict_load(img: Image.Image) -> None:
    """Decode, refusing truncated data even where another library relaxed PIL process-wide
    (`ImageFile.LOAD_TRUNCATED_IMAGES = True`: lmms-eval sets it on import)."""
    from PIL import ImageFile

    relaxed = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = relaxed


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"image of {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels; "
            "downscale it first"
        )


def _from_pil(img: Image.Image, max_pixels: int, name: str) -> np.ndarray:
    _check_size(img.width, img.height, max_pixels)
    try:
        _strict_load(img)  # a closed image fails here; a lazily opened one decodes
        img = _exif_transposed(img)
        if img.mode.startswith("I;16"):
            return _from_array(np.asarray(img).astype(np.uint16), max_pixels)
        if img.mode in ("I", "F", "1"):
            arr = np.asarray(img)
            return _from_array(arr.astype(np.uint8) * 255 if img.mode == "1" else arr, max_pixels)
        if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
            return _from_array(np.asarray(img.convert("RGBA")), max_pixels)
        return _from_array(np.asarray(img.convert("RGB")), max_pixels)
    except InputError:
        raise
    except ValueError as e:
        if "closed" in str(e):
            raise InputError(f"{name} is closed: pass it before calling .close() (or pass its path)") from None
        raise InputError(f"cannot convert {name} (mode {img.mode}) to RGB: {e}") from None
    except Exception as e:  # noqa: BLE001 - a lazily opened file can fail to decode in many ways
        raise InputError(f"cannot decode {name} (mode {img.mode}): {type(e).__name__}") from None


def _exif_transposed(img: Image.Image) -> Image.Image:
    """The image in the orientation its EXIF records (as it was, when its EXIF cannot be read)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - malformed EXIF: the pixels are still good
        return img


def _from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise InputError(f"image array dtype {arr.dtype} not supported; accepted: uint8, uint16, other integers, "
                         "bool, float")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)):
        raise InputError(f"image array of shape {arr.shape} not understood; accepted: HxW, HxWx1 (grey), HxWx2 "
                         "(grey + alpha), HxWx3 (RGB) or HxWx4 (RGBA), channels last")
    _check_size(arr.shape[1], arr.shape[0], max_pixels)
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=-1))
    if arr.shape[-1] in (2, 4):  # alpha last: composite on white
        colour = np.repeat(arr[..., :1], 3, axis=-1) if arr.shape[-1] == 2 else arr[..., :3]
        alpha = arr[..., -1:].astype(np.float32) / 255
        arr = (colour * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # 16-bit, either byte order: the high byte
        return (arr.astype(np.uint16) >> 8).astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError("image array contains NaN or Inf; accepted: finite values in [0, 1] or [0, 255]")
        if lo < 0 or hi > 255:
            raise InputError(f"float image values span [{float(lo):.4g}, {float(hi):.4g}]; accepted: [0, 1] "
                             "(scaled by 255) or [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0  # floats in [0, 1], or already in [0, 255]
        return np.clip(arr.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    if lo < 0 or hi > 255:
        raise InputError(f"integer image values span [{int(lo)}, {int(hi)}] (dtype {arr.dtype}); accepted: 0..255, "
                         "or a uint16 array for 16-bit data")
    return arr.astype(np.uint8)


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 → (1, 3, size, size) float32 in [0, 255], resized with bicubic filtering.
    Non-square images are stretched: cell boxes are mapped back to the original pixels."""
    resized = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].float()  # (1, 3, S, S)


# ------------------------------------------------------------------------------ queries
def check_query(query, max_chars: int = MAX_QUERY_CHARS) -> str:
    """A query is text with at least one visible character (a letter, number, punctuation mark or
    symbol). Control characters become spaces and whitespace runs one space; text with a lone
    surrogate (e.g. bytes that were not UTF-8, decoded with surrogateescape) is refused; queries
    over `max_chars` are truncated with a warning, over MAX_QUERY_INPUT_CHARS refused."""
    if isinstance(query, (bytes, bytearray)):
        raise InputError("query must be text (str), got bytes; decode it first, e.g. query.decode('utf-8')")
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_INPUT_CHARS:
        raise InputError(f"query of {len(query):,} characters is too long; accepted: up to {max_chars} characters "
                         f"(longer ones, up to {MAX_QUERY_INPUT_CHARS:,}, are truncated)")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"query is not valid Unicode text: character {e.start} is a lone surrogate "
                         f"(U+{ord(query[e.start]):04X}), e.g. from bytes that were not UTF-8; accepted: text that "
                         "encodes as UTF-8") from None
    text = " ".join("".join(" " if unicodedata.category(c) == "Cc" else c for c in query).split())
    if not any(unicodedata.category(c)[0] in _VISIBLE for c in text):
        raise InputError("query is empty; ask a question about the image, e.g. \"What's the formula on the "
                         "billboard?\" (whitespace, control and zero-width characters do not count)")
    if len(text) > max_chars:
        warnings.warn(f"query of {len(text)} characters truncated to {max_chars}", UserWarning, stacklevel=3)
        text = text[:max_chars]
    return text


# ------------------------------------------------------------------------------ numbers
def whole_number(value) -> int | None:
    """An int from an int, a numpy integer, an integral finite float or a string of one ("64",
    " 64.0 "); None for anything else (bools included)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def parse_budget(value, geometry=None, *, tokens_only: bool = False) -> int | str | None:
    """The one budget grammar (API, CLI, widgets, demo): None / "default" / "" → None (the
    policy's default); a quality mode in any case ("fast", "FAST", " Balanced ") → its lower-case
    name; a whole number of tokens (64, 64.0, "64", "64.0", numpy scalars) → int, checked against
    `geometry`'s [min_tokens, max_tokens] when one is given (the mode names are then its
    quality_budgets). `tokens_only`: only the number (a slider's value). Anything else is an
    InputError saying what is accepted."""
    modes = tuple(geometry.quality_budgets) if geometry is not None else QUALITY_MODES
    if not tokens_only:
        if value is None:
            return None
        if isinstance(value, str):
            word = value.strip().lower()
            if word in modes:
                return word
            if word in DEFAULT_WORDS:
                return None
    number = whole_number(value)
    if number is None:
        span = f" in [{geometry.min_tokens}, {geometry.max_tokens}]" if geometry is not None else ""
        alternatives = "" if tokens_only else f", a quality mode ({'/'.join(modes)}) or default"
        raise InputError(f"budget must be a whole number of tokens{span}{alternatives}, got {short_repr(value)}")
    if geometry is not None and not geometry.min_tokens <= number <= geometry.max_tokens:
        raise InputError(f"budget {short_repr(number, 24)} is outside the accepted range [{geometry.min_tokens}, "
                         f"{geometry.max_tokens}] tokens; or a quality mode ({'/'.join(modes)}) or default")
    return geometry.check_budget(number) if geometry is not None else number


def check_max_new_tokens(value) -> int | None:
    """The answer-length cap: None (the preset's) or a whole number in [1, MAX_NEW_TOKENS]."""
    if value is None:
        return None
    number = whole_number(value)
    if number is None or not 1 <= number <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be a whole number in [1, {MAX_NEW_TOKENS}] (None: the preset's "
                         f"default), got {short_repr(value)}")
    return number


def short_repr(value, limit: int = 60) -> str:
    """repr of a caller's value for a message: bounded, ASCII (a lone surrogate cannot break JSON)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
