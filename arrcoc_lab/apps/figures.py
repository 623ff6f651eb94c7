"""The README's pictures, regenerated from the shipped weights (`make figures`).

    python -m arrcoc_lab.apps.figures --out docs/figures          # two_questions.png + the data previews

`two_questions.png` is the workbench in one picture: one shipped example, two questions (one sign's
text, the whole scene's city), the same budget, and the two allocations side by side (tokens per cell over
the image, with the colour bar and the answers). Screenshots of the demo and the inspector come from
the browser tests (`make figures` runs them with ARRCOC_UPDATE_FIGURES=1).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)
DPI = 150
# a fine-detail question and a gist question about one shipped scene: the allocation the budget gets
# for reading one sign against the one for the whole scene (session 31: agra, whose billboard the
# shipped weights read at 64 tokens; the seeds' paris billboard they read a character off)
HERO_EXAMPLE = "scenebench-agra"
HERO_QUESTIONS = ("What does the billboard say?", "What city is this?")


def two_questions_figure(pipe, image: np.ndarray, questions: Sequence[str], budget: int = 64,
                         policy: str = "arrcoc", answers: Sequence[str | None] | None = None):
    """A matplotlib Figure: one panel per question (tokens per cell over the image, cell grid and
    counts: `rendering.overlay`, the pixels the demo and the inspector show), one shared log-scale
    colour bar of tokens per cell with its legend, titles with the question, the answer and the
    tokens spent."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    from .rendering import CELL_NOTE, overlay

    outs = pipe.compare(image, list(questions), budget=budget, policy=policy)
    k = max(1, round(512 / max(image.shape[:2])))  # drawn at ≥ 512 px (pixels repeated) so the cell numbers are crisp
    big = image.repeat(k, axis=0).repeat(k, axis=1)
    per_cell_full = outs[0].full_tokens / outs[0].tokens_per_cell.size
    fig, axes = plt.subplots(1, len(outs), figsize=(3.6 * len(outs), 4.8), dpi=DPI, layout="constrained")
    for n, (ax, out) in enumerate(zip(np.atleast_1d(axes), outs)):
        ax.imshow(overlay(big, dataclasses.replace(out, cell_boxes=out.cell_boxes * k), mode="tokens", alpha=0.5))
        reference = answers[n] if answers else None
        said = f"answer “{out.answer}”" + (f" (reference “{reference}”)" if reference else "")
        ax.set_title(f"{out.query}\n{said}\n{out.num_tokens} of {budget} tokens", fontsize=8.5)
        ax.set_axis_off()
    bar = fig.colorbar(ScalarMappable(LogNorm(vmin=1, vmax=per_cell_full), "magma"), ax=axes,
                       orientation="horizontal", fraction=0.05, pad=0.02, shrink=0.8)
    ticks = [t for t in pipe.geometry.levels if t <= per_cell_full]
    bar.set_ticks(ticks, labels=[str(t) for t in ticks])
    bar.minorticks_off()
    bar.set_label(f"visual tokens per cell (log scale); {CELL_NOTE}", fontsize=8.5)
    bar.ax.tick_params(labelsize=8)
    return fig


def write_two_questions(pipe, out_dir: Path, example: str = HERO_EXAMPLE,
                        questions: Sequence[str] = HERO_QUESTIONS, budget: int = 64) -> Path:
    from ..examples import get_example

    shipped = get_example(example)
    fig = two_questions_figure(pipe, shipped.load(), questions, budget=budget,
                               answers=[shipped.answer_for(q) for q in questions])
    path = Path(out_dir) / "two_questions.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_figures(out_dir: str | Path = "docs/figures", weights=None) -> list[Path]:
    """two_questions.png from the shipped (or given) weights, and the data previews."""
    from ..data.preview import write_previews
    from ..pipeline import load_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline("lab", weights=weights)
    written = [write_two_questions(pipe, out)]
    written += [Path(p) for p in write_previews(out)]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arrcoc_lab.apps.figures",
                                     description="Regenerate the README's pictures from the shipped lab weights.")
    parser.add_argument("--out", default="docs/figures", help="folder to write the PNGs to (default: docs/figures)")
    parser.add_argument("--weights", default=None, help="weights to use instead of the shipped ones")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in write_figures(args.out, args.weights):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
