"""Pictures of a PipelineOutput: relevance heatmap, tokens-per-cell map and LOD grid over the
image, a side-by-side comparison, and a plain-text allocation map for terminals. Shared by the
CLI, the widgets and the Gradio demo so that every view shows the same thing."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

MODES = ("relevance", "tokens", "levels")


def _colormap(values: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, out, mode: str = "tokens", alpha: float = 0.5, cmap: str = "magma",
            grid: bool = True) -> np.ndarray:
    """HxWx3 uint8 image with the chosen map blended on top (and the cell grid drawn)."""
    if mode not in MODES:
        raise ValueError(f"unknown overlay mode {mode!r}; known: {list(MODES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = image.shape[:2]
    values = map_values(out, mode)
    heat = np.asarray(Image.fromarray(_colormap(values, cmap)).resize(
        (w, h), Image.BILINEAR if mode == "relevance" else Image.NEAREST))
    blended = (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    img = Image.fromarray(blended)
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
    draw = ImageDraw.Draw(img)
    for (i, j), t in np.ndenumerate(out.tokens_per_cell):
        x0, y0, x1, y1 = out.cell_boxes[i, j]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255))
        if labels and x1 - x0 >= 24:
            draw.text((x0 + 3, y0 + 2), str(int(t)), fill=(255, 255, 255))


def difference(a, b) -> np.ndarray:
    """Per-cell token difference a − b (int, cells_h × cells_w): where question A spends more."""
    return a.tokens_per_cell.astype(int) - b.tokens_per_cell.astype(int)


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
