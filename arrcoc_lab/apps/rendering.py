"""Pictures of a PipelineOutput (and, re-exported from arrcoc_lab.inputs where the API reads it
too, the one budget parser): relevance heatmap, tokens-per-cell map and LOD grid over the image,
the A − B difference overlay, colour bars with their legend, pictures with a heading and a colour
bar composited in, a side-by-side comparison, and a plain-text allocation map for terminals.
Shared by the CLI, the widgets and the Gradio demo so that every view shows the same thing and
reads a budget the same way.

All text is drawn in DejaVu Sans, the TrueType font matplotlib (a core dependency) ships, so every
glyph the pictures use (—, −, ×, …) exists; PIL's default bitmap font has none of them. Text scales
with the picture (`text_size`, `label_size`) so that it stays readable where the picture is shown."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..inputs import DEFAULT_WORDS, QUALITY_MODES, parse_budget  # noqa: F401 - the one budget grammar

MODES = ("relevance", "tokens", "levels")
DIFF_CMAP = "RdBu_r"  # A − B maps: red where question A spends more tokens, blue where B does
DEFAULT_LEVELS = (1, 4, 16, 64)  # tokens per cell at each LOD level (every preset's geometry.levels)
CELL_NOTE = "numbers: tokens in each cell"  # what the numbers drawn in the cells are
DIFF_NOTE = "numbers: A − B tokens in each cell"
FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}  # in matplotlib's mpl-data/fonts/ttf/
WHITE, BLACK, INK, GREY = (255, 255, 255), (0, 0, 0), (30, 30, 30), (95, 95, 95)
MIN_WIDTH = 240  # pictures with a colour bar are at least this wide (narrower ones are centred on white)


# ------------------------------------------------------------------------------ text
@functools.lru_cache(maxsize=64)
def font(size: int = 12, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (bold: DejaVu Sans Bold) at `size` pixels, loaded once per size."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_FILES[bool(bold)]
    return ImageFont.truetype(str(path), int(size))


def text_size(width: int) -> int:
    """Font size (px) of headings and legends on a picture `width` px wide: 1/28 of it, at least
    12 px, so that the text is still about 12 px on screen where the demo shows a 512–768 px
    picture about 350 px wide."""
    return max(12, round(width / 28))


def label_size(width: int, height: int) -> int:
    """Font size (px) of the numbers written in the cells: 1/24 of the long side, at least 11 px."""
    return max(11, round(max(width, height) / 24))


def _fit(draw: ImageDraw.ImageDraw, text: str, f, width: float) -> str:
    """`text`, cut with an ellipsis where it is wider than `width` pixels."""
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, f, width: float) -> list[str]:
    """`text` broken at spaces (not at no-break spaces) into lines at most `width` pixels wide (a
    single long word is cut)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in filter(None, paragraph.split(" ")):
            trial = f"{line} {word}" if line else word
            if line and draw.textlength(trial, font=f) > width:
                lines.append(_fit(draw, line, f, width))
                trial = word
            line = trial
        lines.append(_fit(draw, line, f, width))
    return lines


def _line_height(f) -> int:
    ascent, descent = f.getmetrics()
    return ascent + descent


def heading(text: str, width: int, size: int | None = None) -> np.ndarray:
    """White strip `width` px wide with `text` wrapped to it: its first line (up to the first
    newline) in bold, the rest in grey."""
    size = size or text_size(width)
    bold, regular = font(size, bold=True), font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    first, _, rest = str(text).partition("\n")
    lines = [(s, bold, INK) for s in _wrap(probe, first, bold, width - 8)]
    lines += [(s, regular, GREY) for s in (_wrap(probe, rest, regular, width - 8) if rest else [])]
    step = _line_height(regular) + 2
    img = Image.new("RGB", (width, 4 + step * len(lines) + 2), WHITE)
    draw = ImageDraw.Draw(img)
    for k, (line, f, colour) in enumerate(lines):
        draw.text((4, 4 + k * step), line, font=f, fill=colour)
    return np.asarray(img)


def describe(out, reference: str | None = None) -> str:
    """A heading for a picture of `out`: the question, then the answer, tokens and policy."""
    def glued(text: str) -> str:  # no-break spaces: heading() wraps lines between these phrases only
        return text.replace(" ", "\u00a0")

    said = f"answer “{out.answer}”" + (f" (reference “{reference}”)" if reference else "")
    return (f"{out.query}\n{said}\u00a0· {glued(f'{out.num_tokens} of {out.budget} tokens')}, "
            f"{glued(f'{out.compression_ratio:.1f}× fewer than full')}\u00a0· {glued(f'policy {out.policy}')}")


# ------------------------------------------------------------------------------ overlays
def colormap(values: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """Values in [0, 1] (clipped) → uint8 RGB through a matplotlib colormap, shape (..., 3)."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _blend(image: np.ndarray, heat: np.ndarray, alpha: float) -> Image.Image:
    return Image.fromarray((image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8))


def _draw_grid(img: Image.Image, boxes: np.ndarray, label=None, fill=None) -> None:
    """White cell outlines, and `label(i, j)` written in each cell's corner (where it fits) in the
    colour `fill(i, j)` (default white), outlined in the opposite colour so it reads on any cell."""
    draw = ImageDraw.Draw(img)
    f = font(label_size(img.width, img.height))
    for (i, j) in np.ndindex(boxes.shape[:2]):
        x0, y0, x1, y1 = (int(v) for v in boxes[i, j])
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=WHITE)
        if label is None:
            continue
        text, colour = label(i, j), fill(i, j) if fill else WHITE
        if draw.textlength(text, font=f) + 6 <= x1 - x0 and _line_height(f) + 4 <= y1 - y0:
            draw.text((x0 + 3, y0 + 2), text, font=f, fill=colour, stroke_width=1,
                      stroke_fill=BLACK if colour == WHITE else WHITE)


def overlay(image: np.ndarray, out, mode: str = "tokens", alpha: float = 0.5, cmap: str = "magma",
            grid: bool = True) -> np.ndarray:
    """HxWx3 uint8 image with the chosen map blended on top (and the cell grid drawn)."""
    if mode not in MODES:
        raise ValueError(f"unknown overlay mode {mode!r}; known: {list(MODES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = image.shape[:2]
    heat = np.asarray(Image.fromarray(colormap(map_values(out, mode), cmap)).resize(
        (w, h), Image.BILINEAR if mode == "relevance" else Image.NEAREST))
    img = _blend(image, heat, alpha)
    if grid:
        draw_cells(img, out)
    return np.asarray(img)


def map_values(out, mode: str) -> np.ndarray:
    """The map behind an overlay, scaled to [0, 1]."""
    if mode == "relevance":
        return out.relevance
    if mode == "tokens":  # log scale: 1, 4, 16, 64 tokens are evenly spaced (token-level baselines may leave 0: shown as 1)
        tokens = np.log(np.maximum(out.tokens_per_cell.astype(np.float64), 1))
        top = np.log(out.full_tokens / out.tokens_per_cell.size)
        return tokens / max(top, 1e-9)
    return out.levels / max(out.levels.max(), 1) if out.levels.max() else out.levels.astype(float)


def draw_cells(img: Image.Image, out, labels: bool = True) -> None:
    """Cell grid with each cell's token count written in its corner."""
    _draw_grid(img, out.cell_boxes, (lambda i, j: str(int(out.tokens_per_cell[i, j]))) if labels else None)


def difference(a, b) -> np.ndarray:
    """Per-cell token difference a − b (int, cells_h × cells_w): where question A spends more."""
    return a.tokens_per_cell.astype(int) - b.tokens_per_cell.astype(int)


def difference_overlay(image: np.ndarray, diff: np.ndarray, boxes: np.ndarray, alpha: float = 0.5,
                       cmap: str = DIFF_CMAP) -> np.ndarray:
    """The image with each cell (`boxes`, pixel boxes tiling it) tinted by its token difference
    `diff` = difference(a, b) on a diverging map (0 = the map's neutral middle), the cell grid,
    and the signed difference written in each cell."""
    vmax = max(int(np.abs(diff).max()), 1)
    colours = colormap(0.5 + 0.5 * diff / vmax, cmap)  # (cells_h, cells_w, 3)
    heat = np.zeros_like(image)
    for (i, j) in np.ndindex(diff.shape):
        x0, y0, x1, y1 = boxes[i, j]
        heat[y0:y1, x0:x1] = colours[i, j]
    img = _blend(image, heat, alpha)
    _draw_grid(img, boxes, label=lambda i, j: f"{int(diff[i, j]):+d}".replace("-", "−") if diff[i, j] else "0",
               fill=lambda i, j: BLACK if diff[i, j] == 0 else WHITE)
    return np.asarray(img)


# ------------------------------------------------------------------------------ colour bars
def colorbar_ticks(out, mode: str, levels: tuple[int, ...] = DEFAULT_LEVELS) -> tuple[str, list[tuple[float, str]]]:
    """(title, [(position in [0, 1], label)]) for the map `map_values(out, mode)` shows."""
    if mode == "relevance":
        return "relevance to the question", [(p, f"{p:.2g}") for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    if mode == "tokens":
        top = np.log(out.full_tokens / out.tokens_per_cell.size)
        ticks = [(float(np.log(t) / max(top, 1e-9)), str(t)) for t in levels if np.log(t) <= top + 1e-9]
        return "tokens per cell (log scale)", ticks
    high = int(out.levels.max())
    if high == 0:
        return "LOD level (tokens per cell)", [(0.0, f"L0 ({levels[0]})")]
    return "LOD level (tokens per cell)", [(k / high, f"L{k} ({levels[k]})") for k in range(high + 1)]


def difference_ticks(vmax: int) -> tuple[str, list[tuple[float, str]]]:
    """(title, ticks) for the colour bar of a difference_overlay whose largest |A − B| is vmax."""
    vmax = max(vmax, 1)
    return "tokens per cell, A − B", [(0.0, f"−{vmax}"), (0.5, "0"), (1.0, f"+{vmax}")]


def colorbar(cmap: str, ticks: list[tuple[float, str]], title: str, width: int = 384, bar: int | None = None,
             note: str | None = None, size: int | None = None) -> np.ndarray:
    """A horizontal colour bar `width` pixels wide: the gradient, tick labels, the title and an
    optional `note` (the legend of the numbers in the cells) beside it, or under it where both do
    not fit on one line. Text is `size` px (default `text_size(width)`); the bar is at least
    2·pad + 40 px wide."""
    size = size or text_size(width)
    f = font(size)
    bar = bar or max(10, round(size * 0.9))
    pad, line = max(10, size), _line_height(f)
    width = max(int(width), 2 * pad + 40)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inner = width - 2 * pad
    title = _fit(probe, title, f, inner)
    note = _fit(probe, note, f, inner) if note else ""
    one_line = not note or probe.textlength(title, font=f) + 2 * size + probe.textlength(note, font=f) <= inner
    img = Image.new("RGB", (width, 2 + bar + 4 + line + 3 + line * (1 if one_line else 2) + 4), WHITE)
    strip = colormap(np.linspace(0, 1, inner)[None, :].repeat(bar, 0), cmap)
    img.paste(Image.fromarray(strip), (pad, 2))
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad - 1, 1, width - pad, bar + 2], outline=(90, 90, 90))
    for pos, label in ticks:
        x = pad + pos * (inner - 1)
        draw.line([x, bar + 2, x, bar + 5], fill=BLACK)
        tw = draw.textlength(label, font=f)
        draw.text((min(max(x - tw / 2, 0), width - tw), bar + 5), label, font=f, fill=BLACK)
    y = bar + 6 + line + 3
    draw.text((pad, y), title, font=f, fill=INK)
    if note:
        draw.text((width - pad - draw.textlength(note, font=f), y) if one_line else (pad, y + line), note,
                  font=f, fill=GREY)
    return np.asarray(img)


def annotate(picture: np.ndarray, cmap: str, title: str, ticks: list[tuple[float, str]], note: str | None = None,
             head: str | None = None, bar_width: int | None = None) -> np.ndarray:
    """`picture` with a colour bar and its legend composited under it (`bar_width` wide, default
    the picture's width, centred) and, given `head`, a heading above it (see `heading`): one RGB
    image as wide as the picture, or MIN_WIDTH where the picture is narrower (it is then centred
    on white)."""
    if picture.shape[1] < MIN_WIDTH:
        left = (MIN_WIDTH - picture.shape[1]) // 2
        picture = np.pad(picture, ((0, 0), (left, MIN_WIDTH - picture.shape[1] - left), (0, 0)), constant_values=255)
    w = picture.shape[1]
    bar_width = min(max(bar_width or w, MIN_WIDTH), w)
    bar = colorbar(cmap, ticks, title, bar_width, note=note)
    parts = ([heading(head, w)] if head else []) + [picture]
    left = (w - bar_width) // 2
    parts.append(np.pad(bar, ((0, 0), (left, w - bar_width - left), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=0)


def overlay_figure(image: np.ndarray, out, mode: str = "tokens", alpha: float = 0.5, cmap: str = "magma",
                   levels: tuple[int, ...] = DEFAULT_LEVELS, head: str | None = None) -> np.ndarray:
    """`overlay(image, out, ...)` with its colour bar and legend under it (and `head` above it):
    what the demo returns and `arrcoc-lab inspect --out` writes."""
    title, ticks = colorbar_ticks(out, mode, levels)
    return annotate(overlay(image, out, mode=mode, alpha=alpha, cmap=cmap), cmap, title, ticks, note=CELL_NOTE,
                    head=head)


def difference_figure(image: np.ndarray, diff: np.ndarray, boxes: np.ndarray, alpha: float = 0.5,
                      head: str | None = None) -> np.ndarray:
    """`difference_overlay(...)` with its diverging colour bar and legend under it."""
    title, ticks = difference_ticks(int(np.abs(diff).max()))
    return annotate(difference_overlay(image, diff, boxes, alpha), DIFF_CMAP, title, ticks, note=DIFF_NOTE, head=head)


# ------------------------------------------------------------------------------ layouts and text
def ascii_map(out, width: int = 5) -> str:
    """Tokens per cell as a text grid, with a relevance shade character per cell."""
    shades = " .:-=+*#%@"
    rows = []
    for i in range(out.tokens_per_cell.shape[0]):
        cells = []
        for j in range(out.tokens_per_cell.shape[1]):
            shade = shades[min(int(out.cell_relevance[i, j] * len(shades)), len(shades) - 1)]
            cells.append(f"{shade}{int(out.tokens_per_cell[i, j]):>{width - 1}}")
        rows.append(" ".join(cells))
    return "\n".join(rows)


def side_by_side(image: np.ndarray, outs: list, mode: str = "tokens", alpha: float = 0.5,
                 titles: list[str] | None = None, cmap: str = "magma", legend: bool = True,
                 levels: tuple[int, ...] = DEFAULT_LEVELS) -> np.ndarray:
    """Several overlays of the same image in one row, each titled with its query (default
    "query — N tokens"), and (`legend`) one colour bar with its legend under the row, as wide as
    one overlay."""
    tiles = [Image.fromarray(overlay(image, o, mode=mode, alpha=alpha, cmap=cmap)) for o in outs]
    f = font(text_size(tiles[0].width))
    top = _line_height(f) + 6
    row = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height + top), WHITE)
    draw = ImageDraw.Draw(row)
    x = 0
    for k, (tile, o) in enumerate(zip(tiles, outs)):
        row.paste(tile, (x, top))
        title = titles[k] if titles else f"{o.query} — {o.num_tokens} tokens"
        draw.text((x + 3, 3), _fit(draw, title, f, tile.width - 6), font=f, fill=BLACK)
        x += tile.width + 6
    picture = np.asarray(row)
    if not legend:
        return picture
    title, ticks = colorbar_ticks(outs[0], mode, levels)
    return annotate(picture, cmap, title, ticks, note=CELL_NOTE, bar_width=tiles[0].width)
