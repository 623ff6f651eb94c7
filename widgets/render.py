"""Pictures and HTML for the inspector: PNG encoding, colour bars, the A − B difference overlay
and the per-cell / timing tables. The overlays themselves come from `arrcoc_lab.apps.rendering` so the
widget shows exactly what the CLI and the Gradio demo show."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image, ImageDraw

DIFF_CMAP = "RdBu_r"  # red: query A spends more tokens there, blue: query B does


def encode(array: np.ndarray, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    else:  # webp / jpeg: lossy, several times smaller for photos
        img.save(buf, format=fmt.upper(), quality=90)
    return buf.getvalue()


def data_url(array: np.ndarray, fmt: str = "png") -> str:
    return f"data:image/{fmt};base64," + base64.b64encode(encode(array, fmt)).decode("ascii")


def cmap_rgb(values: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


# ------------------------------------------------------------------------------ colour bars
def colorbar_ticks(out, mode: str, levels: tuple[int, ...]) -> tuple[str, list[tuple[float, str]]]:
    """(title, [(position in [0, 1], label)]) for the map `viz.map_values(out, mode)` shows."""
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
    vmax = max(vmax, 1)
    return "tokens per cell, A - B", [(0.0, f"-{vmax}"), (0.5, "0"), (1.0, f"+{vmax}")]  # ASCII: PIL's default font


def colorbar(cmap: str, ticks: list[tuple[float, str]], title: str, width: int = 384, bar: int = 12) -> np.ndarray:
    """A horizontal colour bar, `width` pixels wide, with tick labels and a title."""
    pad = 10
    img = Image.new("RGB", (width, bar + 34), (255, 255, 255))
    strip = cmap_rgb(np.linspace(0, 1, width - 2 * pad)[None, :].repeat(bar, 0), cmap)
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


# ------------------------------------------------------------------------------ difference map
def difference_overlay(image: np.ndarray, diff: np.ndarray, boxes: np.ndarray, alpha: float = 0.5,
                       cmap: str = DIFF_CMAP) -> np.ndarray:
    """The image with each cell tinted by its token difference (diverging map, 0 = the map's
    neutral middle), the cell grid, and the signed difference written in each cell."""
    vmax = max(int(np.abs(diff).max()), 1)
    colours = cmap_rgb(0.5 + 0.5 * diff / vmax, cmap)  # (cells_h, cells_w, 3)
    heat = np.zeros_like(image)
    for (i, j), _ in np.ndenumerate(diff):
        x0, y0, x1, y1 = boxes[i, j]
        heat[y0:y1, x0:x1] = colours[i, j]
    blended = (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    img = Image.fromarray(blended)
    draw = ImageDraw.Draw(img)
    for (i, j), d in np.ndenumerate(diff):
        x0, y0, x1, y1 = boxes[i, j]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255))
        if x1 - x0 >= 24:
            draw.text((x0 + 3, y0 + 2), f"{int(d):+d}" if d else "0", fill=(0, 0, 0) if d == 0 else (255, 255, 255))
    return np.asarray(img)


# ------------------------------------------------------------------------------ tables
def cell_rows(out, compare: list | None = None) -> list[dict]:
    """One row per cell (row-major): relevance, tokens, level; with `compare` (the other
    queries' outputs) also their tokens and A − their tokens."""
    rows = []
    for (i, j), tokens in np.ndenumerate(out.tokens_per_cell):
        row = {"cell": (i, j), "box": tuple(int(v) for v in out.cell_boxes[i, j]),
               "relevance": float(out.cell_relevance[i, j]), "tokens": int(tokens), "level": int(out.levels[i, j])}
        if compare:
            row["tokens_other"] = [int(o.tokens_per_cell[i, j]) for o in compare]
            row["diff"] = [int(tokens) - t for t in row["tokens_other"]]
        rows.append(row)
    return rows


def cell_table_html(rows: list[dict], selected: int = -1) -> str:
    n_other = len(rows[0].get("tokens_other", [])) if rows else 0
    other = "".join(f"<th>tokens {chr(66 + k)}</th><th>A − {chr(66 + k)}</th>" for k in range(n_other))
    head = f"<tr><th>cell</th><th>relevance</th><th>tokens</th><th>level</th>{other}</tr>"
    body = []
    for k, r in enumerate(rows):
        style = ' class="selected" style="background:#fff3a0;font-weight:bold"' if k == selected else ""
        extra = "".join(f"<td>{t}</td><td>{d:+d}</td>" for t, d in zip(r.get("tokens_other", []), r.get("diff", [])))
        body.append(f"<tr data-cell='{k}'{style}><td>({r['cell'][0]}, {r['cell'][1]})</td>"
                    f"<td>{r['relevance']:.3f}</td><td>{r['tokens']}</td><td>L{r['level']}</td>{extra}</tr>")
    return (f"<div class='arrcoc-cells' style='max-height:300px;overflow:auto'>"
            f"<table class='arrcoc-cell-table' style='border-collapse:collapse;font-size:12px'>"
            "<style>.arrcoc-cell-table td, .arrcoc-cell-table th {padding: 1px 7px; text-align: right}</style>"
            f"{head}{''.join(body)}</table></div>")


def timings_html(timings: dict[str, float]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{1000 * v:.1f} ms"
        f"{' (cached)' if k == 'sam' and v == 0.0 else ''}</td></tr>" for k, v in timings.items())
    total = 1000 * sum(timings.values())
    return (f"<table class='arrcoc-timings' style='font-size:12px'>{rows}"
            f"<tr><td><b>total</b></td><td style='text-align:right'><b>{total:.1f} ms</b></td></tr></table>")


def summary_html(out) -> str:
    tier = f", tier <b>{html.escape(out.tier)}</b>" if out.tier else ""
    return (f"<div class='arrcoc-stats'><b>{out.num_tokens}</b> visual tokens (budget {out.budget}{tier}) of "
            f"{out.full_tokens} full → compression <b>{out.compression_ratio:.1f}×</b>, policy "
            f"<code>{html.escape(out.policy)}</code></div>")


def answer_html(out) -> str:
    return (f"<div class='arrcoc-answer'><b>Q:</b> {html.escape(out.query)}<br>"
            f"<b>A:</b> <span class='arrcoc-answer-text'>{html.escape(out.answer) or '∅ (empty)'}</span></div>")
