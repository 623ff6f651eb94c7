"""Preview figures of the synthetic datasets, for docs/DATA.md and for eyeballing changes.

    python -m arrcoc_lab.data.preview --out docs/figures

writes one PNG per SceneBench scene and DocSynth page (regions boxed, cell grid faint, the
questions and answers listed beside) and `calibration.png`, a sign seen at the effective
resolution of each LOD level. Figures use matplotlib's object API (no pyplot), so importing this module or calling
it from a notebook changes no global state.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .docsynth import DocSynth
from .glyphs import CELL_PATCHES, LOD_LEVELS
from .scenebench import SceneBench
from .types import Scene

logger = logging.getLogger(__name__)

ROLE_COLOURS = {"sign": "#ff2d2d", "billboard": "#ff8c00", "landmark": "#00c0ff", "chart_label": "#ff2d2d",
                "signature": "#ff8c00", "title": "#b000ff", "page_number": "#b000ff", "table": "#00a050",
                "sidebar": "#0070ff", "chart": "#00c0ff"}
SKIPPED_ROLES = {"sky", "street", "margin", "header", "abstract", "body"}  # large or texture only


def scene_figure(scene: Scene, patch_size: int, title: str) -> Figure:
    """The image with its regions and cell grid on the left, its questions on the right."""
    image = scene.image
    fig = Figure(figsize=(7.2, 3.0), dpi=80)
    ax = fig.add_axes((0.0, 0.0, 0.42, 0.92))
    ax.imshow(image, interpolation="nearest")
    cell = CELL_PATCHES * patch_size
    for k in range(cell, image.shape[0], cell):
        ax.axhline(k - 0.5, color="white", lw=0.4, alpha=0.5)
        ax.axvline(k - 0.5, color="white", lw=0.4, alpha=0.5)
    for region in scene.regions:
        if region.role in SKIPPED_ROLES:
            continue
        x0, y0, x1, y1 = region.box
        colour = ROLE_COLOURS.get(region.role, "#ffffff")
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.2))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8, loc="left")
    lines = [f"[{s.difficulty}] {s.question}\n      -> {s.answer!r}   target: {s.target}"
             for s in scene.samples]
    fig.text(0.44, 0.5, "\n".join(lines), fontsize=7, va="center", family="monospace")
    return fig


def _pool(crop: np.ndarray, factor: int) -> np.ndarray:
    """Average factor x factor pixel blocks, then blow them back up for display."""
    h, w = (crop.shape[0] // factor) * factor, (crop.shape[1] // factor) * factor
    blocks = crop[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1).astype(np.uint8)


def calibration_figure(scene: Scene, patch_size: int) -> Figure:
    """A sign at the effective resolution of each LOD level.

    A token of level L stands for 8 / sqrt(L) patches per side in the space of one patch, so the
    level sees the image downsampled by that factor: full pixels at 64 tokens/cell, 4x smaller at
    the uniform 4 tokens/cell, where 2-patch text shrinks to half a patch. Block averaging is
    only a picture of that budget (the compressor is learned).
    """
    sign = next(r for r in scene.regions if r.role in ("billboard", "sign"))
    cell = CELL_PATCHES * patch_size
    x0, y0 = (sign.box[0] // cell) * cell, (sign.box[1] // cell) * cell
    x1 = min(scene.image.shape[1], -(-sign.box[2] // cell) * cell)
    y1 = min(scene.image.shape[0], -(-sign.box[3] // cell) * cell)
    crop = scene.image[y0:y1, x0:x1]
    fig = Figure(figsize=(7.2, 1.7), dpi=80)
    for k, level in enumerate(sorted(LOD_LEVELS, reverse=True)):
        ax = fig.add_subplot(1, len(LOD_LEVELS), k + 1)
        ax.imshow(_pool(crop, CELL_PATCHES // int(round(level ** 0.5))), interpolation="nearest")
        ax.set_title(f"{level} tokens/cell", fontsize=8)
        ax.set_axis_off()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=80)
    logger.info("wrote %s", path)
    return path


def _varied_pages(docs: DocSynth, pages: int) -> list[int]:
    """Page indices alternating with and without a chart, so the figures show both layouts."""
    with_chart, without = [], []
    for i in range(docs.num_scenes):
        (with_chart if docs.scene(i).samples[0].answer == "yes" else without).append(i)
    mixed = [i for pair in zip(with_chart, without) for i in pair] + with_chart + without
    return list(dict.fromkeys(mixed))[:pages]


def write_previews(out: str | Path, scenes: int = 3, pages: int = 2, split: str = "val",
                   image_size: int = 256, patch_size: int = 8) -> list[Path]:
    """Render `scenes` SceneBench scenes, `pages` DocSynth pages and the calibration strip."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bench = SceneBench(split, n=6 * max(1, scenes), image_size=image_size, patch_size=patch_size)
    docs = DocSynth(split, n=6 * max(8, pages), image_size=image_size, patch_size=patch_size)
    paths = [_save(scene_figure(bench.scene(i), patch_size, f"SceneBench {split} scene {i}"),
                   out / f"scenebench_{i}.png") for i in range(scenes)]
    paths += [_save(scene_figure(docs.scene(i), patch_size, f"DocSynth {split} page {i}"),
                    out / f"docsynth_{k}.png") for k, i in enumerate(_varied_pages(docs, pages))]
    paths.append(_save(calibration_figure(bench.scene(0), patch_size), out / "calibration.png"))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write preview PNGs of SceneBench and DocSynth.")
    parser.add_argument("--out", default="docs/figures", help="output folder")
    parser.add_argument("--scenes", type=int, default=3, help="SceneBench scenes to draw")
    parser.add_argument("--pages", type=int, default=2, help="DocSynth pages to draw")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--patch-size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_previews(args.out, args.scenes, args.pages, args.split, args.image_size, args.patch_size)


if __name__ == "__main__":
    main()
