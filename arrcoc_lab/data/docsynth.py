"""DocSynth: synthetic document pages in the spirit of seed 002 (title, abstract, body, chart,
table, sidebar, margins, a signature date), each region with a role and a pixel box.

Every page asks six questions: three *gist* questions that the page layout answers (is there a
chart, how many table rows, which side is the sidebar on) and three *detail* questions that need
one small text region read at full resolution (the signature date, a quarter's revenue from its
bar label or, on pages without a chart, the page number, and the title).

Calibration follows SceneBench (see `glyphs.glyph_calibration`): every answer-bearing text
(date, bar labels, page number) has a cap height of 2 patches, smaller than one token at the
uniform 4-tokens-per-cell level and two tokens tall at full resolution; the title is 1.5x that.
Body, abstract, sidebar and table text is page texture in a smaller font and is never asked about.

Layout is laid out in fractions of the page side, sized for the tightest geometry allowed
(32 patches per side, where the calibrated glyph is 1/16 of the page); larger geometries
leave more white space around the same text. Determinism and split seeds as in SceneBench.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .glyphs import GLYPH_PATCHES, calibrated_font, text_font
from .types import Box, Region, Sample, Scene, SyntheticDataset

SMALL_FONT = "DejaVuSans.ttf"  # texture text (body, abstract, sidebar, table)
INK = (25, 25, 30)
PAPERS = [(250, 250, 247), (246, 244, 236), (252, 252, 252)]
SIDEBAR_TINTS = [(228, 236, 246), (236, 242, 230), (242, 236, 228)]
BAR_COLOURS = [(50, 100, 180), (40, 140, 90), (220, 120, 40), (110, 110, 120)]
SYLLABLES = ["ka", "lo", "mi", "re", "tu", "van", "sor", "del", "ni", "ca", "zu", "ber", "ten", "mo"]
TITLE_SYLLABLES = ["KA", "LO", "MI", "RE", "TU", "VAN", "SOR", "DEL", "NI", "CA", "ZU", "BER", "TEN"]
# fractions of the page side
MARGIN, GAP, HEADER, SIGNATURE, SIDEBAR_W = 0.04, 0.015, 0.125, 0.10, 0.27
ABSTRACT, CHART, ROW = 0.16, 0.27, 0.04
TEXTURE_LINES = 48  # distinct lines of page texture

TEMPLATES = {
    "has_chart": ["Is there a chart on this page?", "Does this page contain a chart?",
                  "Is a bar chart shown here?"],
    "table_rows": ["How many rows does the table have?", "How many table rows are there?",
                   "Count the rows of the table."],
    "sidebar": ["Which side is the sidebar on?", "Is the sidebar on the left or the right?",
                "On which side of the page is the sidebar?"],
    "date": ["Extract the signature date.", "When was the document signed?",
             "What date is next to the signature?"],
    "revenue": ["What's the Q{q} revenue?", "Read the Q{q} value from the chart.",
                "What revenue does the chart show for Q{q}?"],
    "page": ["What is the page number?", "Which page is this?", "Read the page number."],
    "title": ["What is the title?", "What's the title of this document?", "Read the document title."],
}
DETAIL_FAMILIES = ("date", "revenue", "page", "title")  # small print: fine detail; the others gist


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _ask(rng: np.random.Generator, family: str, **fields) -> str:
    return _pick(rng, TEMPLATES[family]).format(**fields)


def _title(rng: np.random.Generator) -> str:
    word = ""
    while len(word) < 4:
        word += _pick(rng, TITLE_SYLLABLES)
    return word[:6]


def _date(rng: np.random.Generator) -> str:
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{month:02d}-{day:02d}" if rng.random() < 0.5 else f"{day:02d}.{month:02d}"


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join("".join(_pick(rng, SYLLABLES) for _ in range(int(rng.integers(1, 4))))
                    for _ in range(n))


@lru_cache(maxsize=8)
def _texture(size_px: int) -> tuple[Image.Image, int]:
    """TEXTURE_LINES lines of pseudo-words as an ink mask, rendered once per font size.

    Pages paste crops of it instead of rendering text: page texture is never asked about, and
    rendering forty lines of text per page would cost ten times the rest of the page.
    """
    rng = np.random.default_rng(12345)
    font = text_font(size_px, SMALL_FONT)
    step = math.ceil(size_px * 1.3)
    strip = Image.new("L", (60 * size_px, TEXTURE_LINES * step), 0)
    draw = ImageDraw.Draw(strip)
    for k in range(TEXTURE_LINES):
        draw.text((0, (k + 1) * step - 2), _words(rng, 40), font=font, fill=255, anchor="ls")
    return strip, step


class DocSynth(SyntheticDataset):
    """Document pages with six questions each: slots 0-2 gist, slots 3-5 detail."""

    NAME = "docsynth"
    QUESTIONS_PER_SCENE = 6
    PAIR_MODES = ("detail", "mixed")  # date vs chart label (or title) / date vs sidebar

    def _pair_slots(self, scene: Scene, mode: str) -> tuple[int, int]:
        if mode not in self.PAIR_MODES:
            raise ValueError(f"unknown pair mode {mode!r}; known: {self.PAIR_MODES}")
        if mode == "mixed":
            return 3, 2
        return (3, 4) if scene.samples[4].family == "revenue" else (3, 5)

    def _build(self, index: int, seed: int) -> Scene:
        rng = np.random.default_rng([seed, 0])
        page = {"title": _title(rng), "page": str(rng.integers(1, 100)), "date": _date(rng),
                "has_chart": bool(rng.random() < 0.7), "rows": int(rng.integers(2, 6)),
                "side": "left" if rng.random() < 0.5 else "right",
                "values": [str(v) for v in rng.integers(10, 100, 4)], "quarter": int(rng.integers(1, 5))}
        questions = self._questions(rng, page)
        image, regions = _Page(self, np.random.default_rng([seed, 1]), page).render()
        boxes = {r.name: r.box for r in regions}
        samples = [Sample(id=self.sample_id(index, slot), image=image, question=q, answer=a,
                          family=fam, difficulty=diff, target=tgt, target_box=boxes.get(tgt),
                          regions=regions, dataset=self.NAME, scene_index=index, answers=(a,))
                   for slot, (fam, diff, q, a, tgt) in enumerate(questions)]
        return Scene(index, image, regions, samples)

    @staticmethod
    def _questions(rng: np.random.Generator, page: dict) -> list[tuple]:
        """(family, difficulty, question, answer, target) for the six slots."""
        q = page["quarter"]
        chart = (("revenue", "detail", _ask(rng, "revenue", q=q), page["values"][q - 1], f"chart_q{q}")
                 if page["has_chart"] else ("page", "detail", _ask(rng, "page"), page["page"], "page_number"))
        return [("has_chart", "gist", _ask(rng, "has_chart"), "yes" if page["has_chart"] else "no",
                 "chart" if page["has_chart"] else "global"),
                ("table_rows", "gist", _ask(rng, "table_rows"), str(page["rows"]), "table"),
                ("sidebar", "gist", _ask(rng, "sidebar"), page["side"], "sidebar"),
                ("date", "detail", _ask(rng, "date"), page["date"], "signature_date"),
                chart,
                ("title", "detail", _ask(rng, "title"), page["title"], "title")]


class _Page:
    """Renders one page top to bottom; `self.y` is the running vertical cursor."""

    def __init__(self, ds: DocSynth, rng: np.random.Generator, page: dict) -> None:
        self.rng, self.page, self.size = rng, page, ds.image_size
        self.cap = GLYPH_PATCHES * ds.patch_size
        self.font = calibrated_font(ds.patch_size)
        self.title_font = calibrated_font(ds.patch_size, scale=1.5)
        # texture text: at most half the calibrated font, so it never out-reads the answers
        self.small = text_font(max(6, min(round(0.032 * self.size), self.font.size // 2)), SMALL_FONT)
        self.canvas = Image.new("RGB", (self.size, self.size), _pick(rng, PAPERS))
        self.draw = ImageDraw.Draw(self.canvas)
        self.regions: list[Region] = []

    def px(self, fraction: float) -> int:
        return round(fraction * self.size)

    def add(self, name: str, role: str, box, text: str | None = None) -> Box:
        box = tuple(int(round(v)) for v in box)
        self.regions.append(Region(name, role, box, text))
        return box

    def label(self, name: str, role: str, text: str, x: float, baseline: float, pad: float,
              title: bool = False) -> Box:
        """Answer-bearing text: drawn at its baseline, its region padded around the ink."""
        font, cap = (self.title_font, 1.5 * self.cap) if title else (self.font, self.cap)
        self.draw.text((x, baseline), text, font=font, fill=INK, anchor="ls")
        return self.add(name, role, (x - pad, baseline - cap - pad, x + font.getlength(text) + pad,
                                     baseline + pad), text)

    def lines(self, box: tuple) -> None:
        """Fill `box` with lines of pseudo-words in the small font (texture, never asked)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        strip, step = _texture(self.small.size)
        for k in range(int((y1 - y0) // step)):
            self.ink(strip, int(self.rng.integers(TEXTURE_LINES)), x1 - x0, (x0, y0 + k * step), (90, 90, 95))

    def ink(self, strip: Image.Image, line: int, width: int, at: tuple, colour: tuple,
            height: int | None = None) -> None:
        """Paste a width x height crop of texture line `line` at `at` (top-left) in `colour`."""
        step = strip.height // TEXTURE_LINES
        width, height = min(width, strip.width), min(height or step, step)
        self.canvas.paste(colour, (at[0], at[1], at[0] + width, at[1] + height),
                          mask=strip.crop((0, line * step, width, line * step + height)))

    def render(self) -> tuple[np.ndarray, list[Region]]:
        s, m, gap = self.size, self.px(MARGIN), self.px(GAP)
        self.add("margin_left", "margin", (0, 0, m, s))
        self.add("margin_right", "margin", (s - m, 0, s, s))
        self.header(m)
        sig_top = s - m - self.px(SIGNATURE)
        sw = self.px(SIDEBAR_W)
        left = self.page["side"] == "left"
        col = (m + sw + gap, s - m) if left else (m, s - m - sw - gap)
        top = self.y + gap
        side_box = (m, top, m + sw, sig_top - gap) if left else (s - m - sw, top, s - m, sig_top - gap)
        self.sidebar(side_box)
        self.abstract(col, self.y + self.px(ABSTRACT))
        y = self.y + gap
        if self.page["has_chart"]:
            self.chart((col[0], y, col[1], y + self.px(CHART)))
        else:
            self.add("body_upper", "body", (col[0], y, col[1], y + self.px(CHART)))
            self.lines(self.regions[-1].box)
        self.table((col[0], y + self.px(CHART) + gap, col[1]))
        if sig_top - gap - self.y > self.small.size * 1.3:
            self.lines(self.add("body", "body", (col[0], self.y + gap, col[1], sig_top - gap)))
        self.signature((col[0], sig_top, col[1], s - m))
        return np.asarray(self.canvas), self.regions

    def header(self, m: int) -> None:
        pad = self.cap * 0.25
        baseline = m + pad + 1.5 * self.cap
        self.label("title", "title", self.page["title"], m + pad, baseline, pad, title=True)
        width = self.font.getlength(self.page["page"])
        self.label("page_number", "page_number", self.page["page"], self.size - m - pad - width,
                   baseline, pad)
        self.y = m + self.px(HEADER)
        rule = max(1, self.size // 256)
        self.draw.line([(m, self.y - 2), (self.size - m, self.y - 2)], fill=INK, width=rule)
        self.add("header", "header", (m, m, self.size - m, self.y))

    def sidebar(self, box: tuple) -> None:
        self.draw.rectangle(box, fill=_pick(self.rng, SIDEBAR_TINTS))
        inset = self.px(0.012)
        self.lines((box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset))
        self.add("sidebar", "sidebar", box)

    def abstract(self, col: tuple, bottom: int) -> None:
        top = self.y + self.px(GAP)
        self.draw.text((col[0], top + self.small.size), "Abstract", font=self.small, fill=INK, anchor="ls")
        self.lines((col[0], top + self.small.size, col[1], bottom))
        self.add("abstract", "abstract", (col[0], top, col[1], bottom))
        self.y = bottom

    def chart(self, box: tuple) -> None:
        """Four bars Q1-Q4, each with its value printed above it in the calibrated font."""
        x0, y0, x1, y1 = box
        self.add("chart", "chart", box)
        base = y1 - self.small.size * 1.4
        top_room = y0 + self.cap + self.px(0.02)
        slot, colour = (x1 - x0) / 4, _pick(self.rng, BAR_COLOURS)
        self.draw.line([(x0, base), (x1, base)], fill=INK, width=max(1, self.size // 256))
        for q, value in enumerate(self.page["values"]):
            cx = x0 + (q + 0.5) * slot
            top = base - (base - top_room) * int(value) / 99
            self.draw.rectangle([cx - slot * 0.3, top, cx + slot * 0.3, base], fill=colour)
            self.draw.text((cx, y1), f"Q{q + 1}", font=self.small, fill=INK, anchor="md")
            width = self.font.getlength(value)
            self.label(f"chart_q{q + 1}", "chart_label", value, cx - width / 2, top - self.px(0.01),
                       self.px(0.006))
        self.y = y1

    def table(self, box: tuple) -> None:
        x0, y0, x1 = box
        rows, row_h = self.page["rows"], self.px(ROW)
        y1 = y0 + rows * row_h
        self.draw.rectangle([x0, y0, x1, y1], outline=INK, width=max(1, self.size // 256))
        self.draw.line([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1)], fill=INK, width=1)
        strip, step = _texture(self.small.size)
        for r in range(rows):
            if r:
                self.draw.line([(x0, y0 + r * row_h), (x1, y0 + r * row_h)], fill=INK, width=1)
            height = min(step, row_h - 2)
            top = int(y0 + r * row_h + (row_h - height) / 2 + 1)
            for c in range(2):
                line = int(self.rng.integers(TEXTURE_LINES))
                at = (int(x0 + c * (x1 - x0) / 2 + 3), top)
                self.ink(strip, line, int((x1 - x0) * 0.3), at, INK, height)
        self.add("table", "table", (x0, y0, x1, y1 + 1))
        self.y = y1

    def signature(self, box: tuple) -> None:
        """A scribble on one side and the calibrated date on the other."""
        x0, y0, x1, y1 = box
        self.add("signature", "signature", box)
        width = self.font.getlength(self.page["date"])
        pad = self.cap * 0.25
        baseline = (y0 + y1) / 2 + self.cap / 2
        date_left = self.rng.random() < 0.5
        dx = x0 + pad if date_left else x1 - pad - width
        self.label("signature_date", "signature", self.page["date"], dx, baseline, pad)
        sx0 = x1 - (x1 - x0) * 0.45 if date_left else x0 + pad
        n = 9
        points = [(sx0 + k * (x1 - x0) * 0.4 / n, baseline - self.cap * (0.2 + 0.6 * (k % 2)) *
                   float(self.rng.uniform(0.6, 1.0))) for k in range(n + 1)]
        self.draw.line(points, fill=(30, 40, 120), width=max(1, round(self.cap / 8)))
        self.draw.line([(sx0, baseline + 2), (sx0 + (x1 - x0) * 0.4, baseline + 2)], fill=INK, width=1)
