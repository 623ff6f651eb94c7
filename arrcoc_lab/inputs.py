"""Validation of what callers pass in: images, queries, budgets. Every problem is an InputError
(a ValueError) saying what was wrong and what is accepted; nothing is modified in place."""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (PIL would warn at 89M)
MAX_QUERY_CHARS = 512  # longer queries are truncated with a warning
ACCEPTED = "a file path, a PIL.Image, or an HxWx3 uint8 numpy array (grey, RGBA, 16-bit are converted)"


def load_image(image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array from a path, PIL image or numpy array."""
    if isinstance(image, (str, os.PathLike)):
        return _from_pil(_open_path(Path(image), max_pixels), max_pixels)
    if isinstance(image, (bytes, bytearray)):
        return _from_pil(_open_bytes(bytes(image), max_pixels, "<bytes>"), max_pixels)
    if isinstance(image, Image.Image):
        return _from_pil(image, max_pixels)
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    raise InputError(f"unsupported image type {type(image).__name__}; accepted: {ACCEPTED}")


def _open_path(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    return _open_bytes(path.read_bytes(), max_pixels, str(path))


def _open_bytes(data: bytes, max_pixels: int, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))  # lazy: only the header is read here
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"cannot read image {name}: not a valid image file ({e}); accepted: PNG, JPEG, WebP, BMP, TIFF") from e
    _check_size(img.width, img.height, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except Exception as e:  # truncated or corrupt data only shows up on decode
        raise InputError(f"cannot decode image {name}: the file is corrupt or truncated ({e})") from e
    return img


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"image of {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels; "
            "downscale it first"
        )


def _from_pil(img: Image.Image, max_pixels: int) -> np.ndarray:
    _check_size(img.width, img.height, max_pixels)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        return _from_array((arr / max(arr.max(), 1) * 255).round().astype(np.uint8), max_pixels)
    if img.mode == "F":
        return _from_array(np.asarray(img), max_pixels)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return np.asarray(background)
    return np.asarray(img.convert("RGB"))


def _from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"image array of shape {arr.shape} not understood; accepted: HxW, HxWx1, HxWx3 or HxWx4")
    _check_size(arr.shape[1], arr.shape[0], max_pixels)
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255
        arr = (arr[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("image array contains NaN or Inf")
        scale = 255.0 if arr.max() <= 1.0 else 1.0  # floats in [0,1] or already in [0,255]
        return np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise InputError(f"image array dtype {arr.dtype} not supported; accepted: uint8, uint16, float")


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 → (1, 3, size, size) float32 in [0, 255], resized with bicubic filtering.
    Non-square images are stretched: cell boxes are mapped back to the original pixels."""
    resized = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].float()  # (1, 3, S, S)


def check_query(query, max_chars: int = MAX_QUERY_CHARS) -> str:
    """A query is a non-empty string; over-long ones are truncated with a warning."""
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    text = " ".join(query.split())
    if not text:
        raise InputError("query is empty; ask a question about the image, e.g. \"What's the formula on the billboard?\"")
    if len(text) > max_chars:
        warnings.warn(f"query of {len(text)} characters truncated to {max_chars}", UserWarning, stacklevel=3)
        text = text[:max_chars]
    return text
