"""Sign text and its calibration: the font every answer-bearing text is drawn in, sized so a
glyph is smaller than a token at the uniform 16x level and at least 1.5 tokens tall at full
resolution (the calibration table is in scenebench.py's docstring; DATA.md explains why)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILE = "DejaVuSansMono-Bold.ttf"  # ships with matplotlib: mpl-data/fonts/ttf/
CELL_PATCHES = 8  # patches per cell side
LOD_LEVELS = (1, 4, 16, 64)  # tokens per cell
UNIFORM_LEVEL = 4  # the fixed 16x compression baseline
GLYPH_PATCHES = 2.0  # cap height of calibrated text, in patches
CALIBRATION_TEXT = "E=mc2 K7 X42 0123456789"  # no descenders: ink height == cap height


def font_path(name: str = FONT_FILE) -> str:
    """Path of a TTF bundled with matplotlib, so rendering never needs a system font."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)
    if not os.path.isfile(path):
        raise ValueError(f"font {name!r} not found at {path}; matplotlib ships DejaVu*.ttf there")
    return path


@lru_cache(maxsize=64)
def text_font(size_px: int, name: str = FONT_FILE) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(name), int(size_px))


@lru_cache(maxsize=8)
def _cap_ratio(name: str = FONT_FILE) -> float:
    """Cap height / font size, read from the font's own outline of "H" at a large size."""
    _, top, _, bottom = text_font(200, name).getbbox("H", anchor="ls")
    return (bottom - top) / 200.0


def font_size_for(cap_px: float, name: str = FONT_FILE) -> int:
    """Font size whose capitals and digits are `cap_px` pixels tall."""
    return max(4, round(cap_px / _cap_ratio(name)))


def calibrated_font(patch_size: int, scale: float = 1.0) -> ImageFont.FreeTypeFont:
    """The font of all answer-bearing text: cap height GLYPH_PATCHES * scale patches."""
    return text_font(font_size_for(GLYPH_PATCHES * patch_size * scale))


def ink_height(gray: np.ndarray, threshold: int = 128) -> int:
    """Rows holding ink (>= threshold) in a grayscale crop of white-on-black text."""
    rows = np.flatnonzero(gray.max(axis=1) >= threshold)
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


@dataclass(frozen=True)
class GlyphCalibration:
    """How big sign text is relative to the tokens of each LOD level."""

    image_size: int  # input side in pixels
    patch_size: int  # encoder patch side in pixels
    font_px: int  # font size handed to ImageFont.truetype
    glyph_px: int  # cap height measured from rendered pixels
    glyph_patches: float  # glyph_px / patch_size
    token_side_px: dict[int, float]  # LOD level (tokens per cell) -> token side in pixels
    glyph_tokens: dict[int, float]  # LOD level -> glyph height in token sides


def glyph_calibration(image_size: int = 256, patch_size: int = 8) -> GlyphCalibration:
    """Render CALIBRATION_TEXT with the sign font and measure its height against each level."""
    if patch_size < 1 or image_size % (patch_size * CELL_PATCHES):
        raise ValueError(f"image_size={image_size}, patch_size={patch_size}; accepted: image_size a "
                         f"multiple of {CELL_PATCHES} * patch_size")
    font = calibrated_font(patch_size)
    canvas = Image.new("L", (int(font.getlength(CALIBRATION_TEXT)) + 8, 4 * font.size), 0)
    ImageDraw.Draw(canvas).text((4, 3 * font.size), CALIBRATION_TEXT, font=font, fill=255, anchor="ls")
    glyph = ink_height(np.asarray(canvas))
    cell_px = CELL_PATCHES * patch_size
    sides = {lv: cell_px / math.sqrt(lv) for lv in LOD_LEVELS}
    return GlyphCalibration(image_size, patch_size, font.size, glyph, glyph / patch_size,
                            sides, {lv: glyph / s for lv, s in sides.items()})
