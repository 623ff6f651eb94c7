"""PNG/WebP encoding and the HTML (per-cell and timing tables, answer, summary) for the inspector.
Every picture (overlays, the A − B difference overlay, colour bars) comes from
`arrcoc_lab.apps.rendering`, so the widget shows exactly what the CLI and the Gradio demo show."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image


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
