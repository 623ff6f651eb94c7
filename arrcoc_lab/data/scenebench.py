"""SceneBench: synthetic street scenes where the allocation policy decides the answer.

Each scene is the seeds' "Paris billboard" picture: a sky (five colours, vertical gradients), a
landmark (six kinds, each standing for a city), a street with low buildings, and two to four
billboards/signs carrying short text (formulas, codes, numbers). Every scene asks six questions:
four *gist* questions answerable from a coarse view (landmark kind, sky colour, how many signs,
what city) and two *detail* questions about two different signs, answerable only by reading one
small region at full resolution. Phrasings vary over several templates per family.

Calibration. The model sees image_size / patch_size patches per side, grouped in cells of 8x8
patches; a cell gets 1, 4, 16 or 64 tokens, so one token covers 8 / sqrt(level) patches per side.
Sign text is rendered with a cap height of about 2 patches, so that it is

* smaller than one token at the uniform 16x level (4 tokens/cell, 4x4 patches per token):
  glyph / token side <= 0.6, unreadable there;
* at least 1.5 tokens tall at full resolution (64 tokens/cell, one patch per token): readable.

Measured from rendered pixels by `glyph_calibration` (see tests/test_data_scenebench.py):

    geometry            font   glyph height   glyph in tokens at level 1 / 4 / 16 / 64
    lab   256 px, p 8   22 px  16 px          0.25 / 0.50 / 1.00 / 2.00
    paper 1024 px, p16  44 px  33 px          0.26 / 0.52 / 1.03 / 2.06

(the glyph height is the ink height of capitals and digits; round digits overshoot the cap
line by a pixel at the larger size).

Determinism: scene i of a split is drawn from numpy seed SPLIT_SEEDS[split] + i (train 0..,
val 1_000_000.., test 2_000_000..). Content (texts, kinds, questions) comes from one stream and
layout from another, so the questions and answers of scene i are the same at every image size.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .glyphs import GLYPH_PATCHES, calibrated_font
from .types import Box, Region, Sample, Scene, SyntheticDataset

logger = logging.getLogger(__name__)

LANDMARK_CITIES = {"tower": "paris", "arch": "rome", "dome": "agra",
                   "spire": "dubai", "wheel": "london", "pagoda": "kyoto"}
# sky colour -> (top, bottom) gradient variants
SKIES = {
    "blue": [((40, 100, 200), (150, 200, 245)), ((20, 70, 160), (110, 170, 230))],
    "orange": [((230, 120, 40), (250, 200, 120)), ((200, 90, 30), (245, 170, 80))],
    "pink": [((220, 110, 160), (250, 200, 220)), ((200, 90, 140), (240, 170, 200))],
    "grey": [((110, 115, 120), (190, 192, 195)), ((140, 140, 145), (210, 210, 210))],
    "purple": [((80, 40, 130), (170, 120, 200)), ((60, 30, 100), (140, 100, 180))],
}
BILLBOARDS = [((245, 245, 240), (20, 20, 20)), ((240, 230, 200), (40, 30, 20)),
              ((30, 30, 35), (250, 250, 250))]  # (board, text) colours
SIGNS = {"blue": ((30, 70, 190), (255, 255, 255)), "green": ((20, 130, 60), (255, 255, 255)),
         "yellow": ((245, 210, 40), (20, 20, 20))}
RED_SIGN = ((205, 30, 35), (255, 255, 255))
STONE = [(95, 85, 75), (200, 190, 170), (235, 232, 225), (210, 180, 120), (150, 155, 165)]
FAMOUS = ["E=mc2", "F=ma", "V=IR", "P=IV"]
VARIABLES = "abcmnxz"  # lower-case letters without descenders
CODE_LETTERS = "ABCDEFHKLMNRSTUVWXZ"  # no O/I (digit look-alikes), no Q/J (descenders)

TEMPLATES = {
    "landmark": ["What landmark is in the picture?", "Which kind of monument can you see?",
                 "What kind of landmark is shown?", "Name the landmark in this scene."],
    "sky": ["What colour is the sky?", "What color is the sky?",
            "Which colour is the sky here?", "Describe the sky's colour in one word."],
    "count": ["How many signs are there, billboards included?", "Count the signs and billboards.",
              "How many boards with text can you see?", "How many signs and billboards are visible?"],
    "city": ["What city is this?", "Which city is this picture from?",
             "In which city was this taken?", "Where is this? Name the city."],
    "formula": ["What's the formula on the billboard?", "Read the formula on the billboard.",
                "Which equation is written on the billboard?", "What does the billboard say?"],
    "code": ["What's the code on the red sign?", "Read the code on the red sign.",
             "Which code is printed on the red sign?"],
    "number": ["What number is on the {colour} sign?", "Read the number on the {colour} sign.",
               "Which number does the {colour} sign show?"],
}
DETAIL_FAMILIES = ("formula", "number", "code")  # the sign families: fine detail; the others gist


# ---------------------------------------------------------------- scene content

@dataclass
class _Sign:
    """A board with text; `family` is the question family that reads it."""

    name: str  # region name
    role: str  # "billboard" or "sign"
    colours: tuple  # (board RGB, text RGB)
    text: str  # what is written (the answer)
    family: str  # "formula", "code" or "number"
    colour_name: str = ""  # used in "the {colour} sign" phrasings


def _formula(rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    a, b = rng.choice(list(VARIABLES), 2, replace=False)
    if kind == 0:
        return str(rng.choice(FAMOUS))
    if kind == 1:
        return f"{a}+{b}={rng.integers(2, 10)}"
    if kind == 2:
        k = int(rng.integers(2, 10))
        return f"{k}{a}={k * int(rng.integers(2, 10))}"
    return f"{a}-{rng.integers(1, 10)}={rng.integers(1, 10)}"


def _code(rng: np.random.Generator) -> str:
    letters = "".join(rng.choice(list(CODE_LETTERS), int(rng.integers(1, 3))))
    return letters + str(rng.integers(1, 10 if len(letters) == 2 else 100))


def _number(rng: np.random.Generator) -> str:
    digits = int(rng.integers(2, 5))
    return str(rng.integers(10 ** (digits - 1), 10 ** digits))


def _signs(rng: np.random.Generator) -> list[_Sign]:
    """A billboard always; a red sign usually; 0-2 number signs; 2 to 4 boards in all."""
    signs = [_Sign("billboard", "billboard", BILLBOARDS[rng.integers(len(BILLBOARDS))],
                   _formula(rng), "formula")]
    has_red = bool(rng.random() < 0.7)
    if has_red:
        signs.append(_Sign("red_sign", "sign", RED_SIGN, _code(rng), "code", "red"))
    n_numbers = int(rng.integers(0 if has_red else 1, 3))
    for colour in rng.choice(list(SIGNS), n_numbers, replace=False):
        signs.append(_Sign(f"{colour}_sign", "sign", SIGNS[colour], _number(rng), "number", str(colour)))
    return signs


def _template(rng: np.random.Generator, family: str, **fields: str) -> str:
    options = TEMPLATES[family]
    return options[int(rng.integers(len(options)))].format(**fields)


# ---------------------------------------------------------------- rendering

def _sky(size: int, horizon: int, top, bottom) -> np.ndarray:
    t = np.linspace(0.0, 1.0, horizon)[:, None, None]
    band = (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)
    image = np.zeros((size, size, 3), np.uint8)
    image[:horizon] = np.broadcast_to(band, (horizon, size, 3)).round()
    return image


def _street(draw: ImageDraw.ImageDraw, size: int, horizon: int, rng: np.random.Generator) -> None:
    """Low buildings on the horizon, a pavement and a road with a dashed centre line."""
    x = 0
    while x < size:
        w, h = int(rng.uniform(0.08, 0.2) * size), int(rng.uniform(0.03, 0.14) * size)
        grey = int(rng.integers(70, 150))
        draw.rectangle([x, horizon - h, x + w, horizon], fill=(grey, grey - 5, grey - 10))
        x += w
    kerb = horizon + max(2, size // 20)
    draw.rectangle([0, horizon, size, kerb], fill=(175, 172, 165))
    draw.rectangle([0, kerb, size, size], fill=(70, 70, 75))
    lane_y, dash = (kerb + size) // 2, max(4, size // 16)
    for x0 in range(dash // 2, size, 2 * dash):
        draw.rectangle([x0, lane_y - max(1, size // 128), x0 + dash, lane_y + max(1, size // 128)],
                       fill=(235, 235, 235))


def _landmark(draw: ImageDraw.ImageDraw, kind: str, box: Box, colour: tuple) -> None:
    """Flat-shaded silhouettes; `shade` marks openings so no sky colour is needed."""
    x0, y0, x1, y1 = box
    w, h, cx = x1 - x0, y1 - y0, (x0 + x1) / 2
    shade = tuple(int(c * 0.55) for c in colour)
    line = max(1, round(w * 0.04))
    if kind == "tower":
        for s in (-1, 1):
            foot = cx + s * w / 2
            draw.polygon([(foot, y1), (foot - s * 0.2 * w, y1), (cx + s * 0.06 * w, y0 + 0.45 * h),
                          (cx + s * 0.2 * w, y0 + 0.45 * h)], fill=colour)
        draw.rectangle([x0 + 0.14 * w, y0 + 0.42 * h, x1 - 0.14 * w, y0 + 0.48 * h], fill=colour)
        draw.polygon([(cx - 0.17 * w, y0 + 0.45 * h), (cx + 0.17 * w, y0 + 0.45 * h),
                      (cx + 0.05 * w, y0 + 0.08 * h), (cx - 0.05 * w, y0 + 0.08 * h)], fill=colour)
        draw.rectangle([cx - 0.12 * w, y0 + 0.25 * h, cx + 0.12 * w, y0 + 0.29 * h], fill=colour)
        draw.line([(cx, y0), (cx, y0 + 0.1 * h)], fill=colour, width=line)
    elif kind == "arch":
        draw.rectangle([x0, y0 + 0.1 * h, x1, y1], fill=colour)
        draw.rectangle([x0, y0, x1, y0 + 0.14 * h], fill=shade)
        draw.ellipse([cx - 0.18 * w, y0 + 0.32 * h, cx + 0.18 * w, y0 + 0.7 * h], fill=shade)
        draw.rectangle([cx - 0.18 * w, y0 + 0.51 * h, cx + 0.18 * w, y1], fill=shade)
    elif kind == "dome":
        draw.rectangle([x0 + 0.15 * w, y0 + 0.55 * h, x1 - 0.15 * w, y1], fill=colour)
        draw.ellipse([cx - 0.24 * w, y0 + 0.18 * h, cx + 0.24 * w, y0 + 0.7 * h], fill=colour)
        draw.line([(cx, y0), (cx, y0 + 0.2 * h)], fill=colour, width=line)
        for mx in (x0, x1 - 0.07 * w):
            draw.rectangle([mx, y0 + 0.3 * h, mx + 0.07 * w, y1], fill=colour)
        draw.rectangle([cx - 0.08 * w, y0 + 0.75 * h, cx + 0.08 * w, y1], fill=shade)
    elif kind == "spire":
        draw.rectangle([x0 + 0.1 * w, y0 + 0.62 * h, x1 - 0.1 * w, y1], fill=colour)
        draw.rectangle([x0 + 0.25 * w, y0 + 0.3 * h, x1 - 0.25 * w, y0 + 0.62 * h], fill=colour)
        draw.polygon([(x0 + 0.33 * w, y0 + 0.3 * h), (x1 - 0.33 * w, y0 + 0.3 * h), (cx, y0)], fill=colour)
    elif kind == "wheel":
        r = min(w, h) / 2 * 0.9
        cy = y0 + r + 1
        for s in (-1, 1):
            draw.line([(cx, cy), (cx + s * 0.7 * r, y1)], fill=shade, width=line + 1)
        for k in range(8):
            a = k * math.pi / 4
            draw.line([(cx, cy), (cx + r * math.cos(a), cy + r * math.sin(a))], fill=colour, width=line)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=line + 1)
    elif kind == "pagoda":
        tiers, tier_h = 4, h * 0.9 / 4
        for t in range(tiers):
            half = w / 2 * 0.8 ** t
            base = y1 - t * tier_h
            draw.rectangle([cx - 0.6 * half, base - tier_h * 0.6, cx + 0.6 * half, base], fill=shade)
            draw.polygon([(cx - half, base - tier_h * 0.55), (cx + half, base - tier_h * 0.55),
                          (cx + 0.6 * half, base - tier_h), (cx - 0.6 * half, base - tier_h)], fill=colour)
        draw.line([(cx, y0), (cx, y1 - tiers * tier_h)], fill=colour, width=line)
    else:
        raise ValueError(f"unknown landmark kind {kind!r}; known: {sorted(LANDMARK_CITIES)}")


LANDMARK_SIZES = {"tower": ((0.22, 0.30), (0.45, 0.58)), "arch": ((0.25, 0.35), (0.22, 0.30)),
                  "dome": ((0.28, 0.36), (0.28, 0.36)), "spire": ((0.08, 0.12), (0.48, 0.58)),
                  "wheel": ((0.26, 0.34), (0.28, 0.36)), "pagoda": ((0.20, 0.28), (0.35, 0.45))}


def _overlaps(a: Box, b: Box, gap: float) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _place(rng: np.random.Generator, size: tuple[int, int], image_size: int,
           taken: list[Box], gap: float) -> Box:
    """A free spot for a w x h board: 60 random tries, then scans with the gap and without it."""
    w, h = size
    margin = max(2, image_size // 40)
    hi_x, hi_y = image_size - w - margin, image_size - h - margin
    tries = [(int(rng.integers(margin, hi_x + 1)), int(rng.integers(margin, hi_y + 1))) for _ in range(60)]
    step = max(1, image_size // 64)

    def grid():
        return ((x, y) for y in range(margin, hi_y + 1, step) for x in range(margin, hi_x + 1, step))

    for spots, g in ((tries, gap), (grid(), gap), (grid(), 0)):
        for x, y in spots:
            box = (x, y, x + w, y + h)
            if not any(_overlaps(box, t, g) for t in taken):
                return box
    logger.warning("no free spot for a %dx%d board; placing it over another region", w, h)
    return tries[0][0], tries[0][1], tries[0][0] + w, tries[0][1] + h


# ---------------------------------------------------------------- the dataset

class SceneBench(SyntheticDataset):
    """Street scenes with six questions each: slots 0-3 gist, slots 4-5 detail on two signs."""

    NAME = "scenebench"
    QUESTIONS_PER_SCENE = 6
    PAIR_MODES = ("detail", "mixed")  # two signs / a sign and the landmark

    def _pair_slots(self, scene: Scene, mode: str) -> tuple[int, int]:
        if mode not in self.PAIR_MODES:
            raise ValueError(f"unknown pair mode {mode!r}; known: {self.PAIR_MODES}")
        return (4, 5) if mode == "detail" else (4, 0)

    def _build(self, index: int, seed: int) -> Scene:
        content = np.random.default_rng([seed, 0])
        layout = np.random.default_rng([seed, 1])
        kind = str(content.choice(list(LANDMARK_CITIES)))
        sky = str(content.choice(list(SKIES)))
        signs = _signs(content)
        image, regions = self._render(layout, kind, sky, signs)
        questions = self._questions(content, kind, sky, signs)
        by_name = {r.name: r for r in regions}
        samples = [Sample(id=self.sample_id(index, slot), image=image, question=q, answer=a,
                          family=fam, difficulty=diff, target=tgt,
                          target_box=by_name[tgt].box if tgt in by_name else None,
                          regions=regions, dataset=self.NAME, scene_index=index, answers=(a,))
                   for slot, (fam, diff, q, a, tgt) in enumerate(questions)]
        return Scene(index, image, regions, samples)

    @staticmethod
    def _questions(rng: np.random.Generator, kind: str, sky: str, signs: list[_Sign]) -> list[tuple]:
        """(family, difficulty, question, answer, target) for the six slots."""
        gist = [("landmark", "gist", _template(rng, "landmark"), kind, "landmark"),
                ("sky", "gist", _template(rng, "sky"), sky, "sky"),
                ("count", "gist", _template(rng, "count"), str(len(signs)), "global"),
                ("city", "gist", _template(rng, "city"), LANDMARK_CITIES[kind], "landmark")]
        picked = rng.choice(len(signs), 2, replace=False)
        detail = [(signs[i].family, "detail", _template(rng, signs[i].family, colour=signs[i].colour_name),
                   signs[i].text, signs[i].name) for i in picked]
        return gist + detail

    def _render(self, rng: np.random.Generator, kind: str, sky: str,
                signs: list[_Sign]) -> tuple[np.ndarray, list[Region]]:
        size = self.image_size
        horizon = int(rng.uniform(0.60, 0.72) * size)
        variants = SKIES[sky]
        variant = variants[rng.integers(len(variants))]
        top, bottom = (np.asarray(c) + rng.integers(-12, 13, 3) for c in variant)
        canvas = Image.fromarray(_sky(size, horizon, np.clip(top, 0, 255), np.clip(bottom, 0, 255)))
        draw = ImageDraw.Draw(canvas)
        _street(draw, size, horizon, rng)
        (wl, wh), (hl, hh) = LANDMARK_SIZES[kind]
        w, h = int(rng.uniform(wl, wh) * size), min(int(rng.uniform(hl, hh) * size), horizon - size // 25)
        x0 = int(rng.integers(size // 25, size - w - size // 25))
        landmark: Box = (x0, horizon - h, x0 + w, horizon)
        _landmark(draw, kind, landmark, STONE[rng.integers(len(STONE))])
        regions = [Region("sky", "sky", (0, 0, size, horizon)),
                   Region("street", "street", (0, horizon, size, size)),
                   Region("landmark", "landmark", landmark, None)]
        regions += self._draw_signs(draw, rng, signs, [landmark], horizon)
        return np.asarray(canvas), regions

    def _draw_signs(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, signs: list[_Sign],
                    taken: list[Box], horizon: int) -> list[Region]:
        """Boards sized to their text, placed apart, posts first so boards cover them."""
        font = calibrated_font(self.patch_size)
        cap = GLYPH_PATCHES * self.patch_size
        boxes, pads = [], []
        for sign in signs:
            pad_x, pad_y = rng.uniform(0.5, 1.0) * cap, rng.uniform(0.45, 0.8) * cap
            size = (math.ceil(font.getlength(sign.text) + 2 * pad_x), math.ceil(cap + 2 * pad_y))
            box = _place(rng, size, self.image_size, taken + boxes, gap=cap)
            boxes.append(box)
            pads.append((pad_x, pad_y))
        ground = horizon + self.image_size // 20
        post = max(2, round(cap / 5))
        for x0, y0, x1, y1 in boxes:
            if y1 < ground:
                draw.rectangle([(x0 + x1) // 2 - post // 2, y1, (x0 + x1) // 2 + post // 2, ground],
                               fill=(60, 60, 60))
        regions = []
        for sign, box, (pad_x, pad_y) in zip(signs, boxes, pads):
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=sign.colours[0])
            draw.text((box[0] + pad_x, box[1] + pad_y + cap), sign.text, font=font,
                      fill=sign.colours[1], anchor="ls")
            regions.append(Region(sign.name, sign.role, box, sign.text))
        return regions
