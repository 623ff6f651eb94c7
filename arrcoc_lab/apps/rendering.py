"""Pictures of a PipelineOutput (and, re-exported from arrcoc_lab.inputs where the API reads it
too, the one budget parser): relevance heatmap, tokens-per-cell map
and LOD grid over the image, the A − B difference overlay, colour bars, a side-by-side comparison,
and a plain-text allocation map for terminals. Shared by the CLI, the widgets and the Gradio demo
so that every view shows the same thing and reads a budget the same way."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..inputs import DEFAULT_WORDS, QUALITY_MODES, parse_budget  # noqa: F401 - the one budget grammar

MODES = ("relevance", "tokens", "levels")
DIFF_CMAP = "RdBu_r"  # A − B maps: red where question A spends more tokens, blue where B does


# ------------------------------------------------------------------------------ overlays
def colormap(values: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """Values in [0, 1] (clipped) → uint8 RGB through a matplotlib colormap, shape (..., 3)."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _blend(image: np.ndarray, heat: np.ndarray, alpha: float) -> Image.Image:
    return Image.fromarray((image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8))


def _draw_grid(img: Image.Image, boxes: np.ndarray, label=None, fill=None) -> None:
    """White cell outlines, and `label(i, j)` written in each cell's corner (cells ≥ 24 px wide)
    in the colour `fill(i, j)` (default white)."""
    draw = ImageDraw.Draw(img)
    for (i, j) in np.ndindex(boxes.shape[:2]):
        x0, y0, x1, y1 = boxes[i, j]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255))
        if label is not None and x1 - x0 >= 24:
            draw.text((x0 + 3, y0 + 2), label(i, j), fill=fill(i, j) if fill else (255, 255, 255))


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
    _draw_grid(img, boxes, label=lambda i, j: f"{int(diff[i, j]):+d}" if diff[i, j] else "0",
               fill=lambda i, j: (0, 0, 0) if diff[i, j] == 0 else (255, 255, 255))
    return np.asarray(img)


# ------------------------------------------------------------------------------ colour bars
def colorbar_ticks(out, mode: str, levels: tuple[int, ...]) -> tuple[str, list[tuple[float, str]]]:
    """(title, [(position in [0, 1], label)]) for the map `map_values(out, mode)` shows."""
    if mode == "relevance":
        return "relevance", [(p, f"{p:.2g}") for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
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
    return "tokens per cell, A - B", [(0.0, f"-{vmax}"), (0.5, "0"), (1.0, f"+{vmax}")]  # ASCII: PIL's default font


def colorbar(cmap: str, ticks: list[tuple[float, str]], title: str, width: int = 384, bar: int = 12) -> np.ndarray:
    """A horizontal colour bar, `width` pixels wide, with tick labels and a title."""
    pad = 10
    img = Image.new("RGB", (width, bar + 34), (255, 255, 255))
    strip = colormap(np.linspace(0, 1, width - 2 * pad)[None, :].repeat(bar, 0), cmap)
    img.paste(Image.fromarray(strip), (pad, 2))
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad - 1, 1, width - pad, bar + 2], outline=(90, 90, 90))
    for pos, label in ticks:
        x = pad + pos * (width - 2 * pad - 1)
        draw.line([x, bar + 2, x, bar + 5], fill=(0, 0, 0))
        tw = draw.textlength(label)
        draw.text((min(max(x - tw / 2, 0), width - tw), bar + 6), label, fill=(0, 0, 0))
    draw.text((pad, bar + 20), title, fill=(60, 60, 60))
    return np.asarray(img)


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
                 titles: list[str] | None = None) -> np.ndarray:
    """Several overlays of the same image in one row, each titled with its query."""
    tiles = []
    for k, o in enumerate(outs):
        tile = Image.fromarray(overlay(image, o, mode=mode, alpha=alpha))
        canvas = Image.new("RGB", (tile.width, tile.height + 18), (255, 255, 255))
        canvas.paste(tile, (0, 18))
        title = titles[k] if titles else f"{o.query} - {o.num_tokens} tok"  # ASCII: PIL's default font has no dashes
        ImageDraw.Draw(canvas).text((3, 3), title[: max(tile.width // 6, 10)], fill=(0, 0, 0))
        tiles.append(canvas)
    total = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height), (255, 255, 255))
    x = 0
    for t in tiles:
        total.paste(t, (x, 0))
        x += t.width + 6
    return np.asarray(total)
