"""Regenerate the shipped examples (`arrcoc_lab/assets/examples/`: PNGs + questions.json, read by
`arrcoc_lab.examples`):

    python -m arrcoc_lab.data.make_examples            # into the package's own folder
    python -m arrcoc_lab.data.make_examples /tmp/ex    # anywhere else

SceneBench scenes and DocSynth pages come from the test split, rendered by the generators of this
package at the lab preset's input (256 px, patch 8), so their questions are the datasets' own, in
their own phrasing, with the reference answers. The real images are scikit-image sample data
that ship inside its wheel (no download). The output is deterministic: pinned Pillow, numpy and
matplotlib (whose DejaVu font the generators draw with) give the same pixels.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SIZE, PATCH_SIZE = 256, 8  # the lab preset's input: what the shipped weights see
# name, dataset, test-split index. Scenes with readable sign text of three question families
# (formula, number, code) under three landmarks; pages with and without a chart.
SYNTHETIC = (
    ("scenebench-paris", "scenebench", 0),  # the seeds' running example: billboard + blue number sign
    ("scenebench-agra", "scenebench", 1),  # billboard + red code sign
    ("scenebench-rome", "scenebench", 4),  # billboard + yellow number sign
    ("docsynth-chart", "docsynth", 1),  # bar chart with value labels
    ("docsynth-report", "docsynth", 0),  # no chart: page number, title and date
)
# the families asked, in order (at most four questions an image)
FAMILIES = {"scenebench": ("formula", "code", "number", "city", "count"),
            "docsynth": ("revenue", "page", "date", "title", "sidebar")}
SYNTHETIC_SOURCE = "ARR-COC Lab's own generator, {cls}('test', image_size=256, patch_size=8).scene({index}); the project's licence"
REAL = (
    {"name": "astronaut", "kind": "photo", "loader": "astronaut",
     "description": "Real photo: astronaut Eileen Collins in an orange flight suit, a US flag and a Space Shuttle "
                    "model behind her",
     "source": "scikit-image sample data, skimage.data.astronaut(): NASA photograph (NASA Great Images "
               "database); no known copyright restrictions, public domain",
     "questions": [("What is written on the round patch on her suit?", None, "detail"),
                   ("What is the model standing on the right?", "a space shuttle", "detail"),
                   ("What colour is her suit?", "orange", "gist"),
                   ("Which flag is behind her?", "the flag of the United States", "gist")]},
    {"name": "scanned-page", "kind": "scan", "loader": "page",
     "description": "Real scan: an unevenly lit textbook page on region-based segmentation, ending in a line of "
                    "Python code",
     "source": "scikit-image sample data, skimage.data.page(): a scanned page of printed text distributed with "
               "scikit-image (BSD-3-Clause); scikit-image records no other terms for it",
     "questions": [("What is the heading of the page?", "Region-based segmentation", "detail"),
                   ("What is the line of code at the bottom?", ">>> markers = np.zeros_like(coins)", "detail"),
                   ("What kind of document is this?", None, "gist")]},
)
MAX_QUESTIONS = 4


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _signs(scene) -> str:
    boards = [_a(r.name.replace("_", " ")) for r in scene.regions if r.role in ("billboard", "sign")]
    return " and ".join(", ".join(boards).rsplit(", ", 1))


def _scenebench(scene, index: int) -> str:
    answer = {s.family: s.answer for s in scene.samples}
    return (f"SceneBench test scene {index}: {_a(answer['landmark'])} ({answer['city'].title()}) under "
            f"{_a(answer['sky'])} sky, with {_signs(scene)}")


def _docsynth(scene, index: int) -> str:
    answer = {s.family: s.answer for s in scene.samples}
    chart = "a bar chart, " if answer["has_chart"] == "yes" else ""
    return (f"DocSynth test page {index}: a report page with a title, {chart}a {answer['table_rows']}-row table, "
            f"a sidebar on the {answer['sidebar']}, a page number and a signature date")


def synthetic_entry(name: str, dataset: str, index: int) -> tuple[dict, np.ndarray]:
    """The manifest entry and the pixels of one SceneBench/DocSynth test scene."""
    from . import SYNTHETIC as DATASETS

    cls = DATASETS[dataset]
    scene = cls("test", image_size=IMAGE_SIZE, patch_size=PATCH_SIZE).scene(index)
    by_family = {s.family: s for s in scene.samples}
    asked = [by_family[f] for f in FAMILIES[dataset] if f in by_family][:MAX_QUESTIONS]
    describe = _scenebench if dataset == "scenebench" else _docsynth
    entry = {"name": name, "file": f"{name}.png", "kind": dataset, "description": describe(scene, index),
             "source": SYNTHETIC_SOURCE.format(cls=cls.__name__, index=index),
             "questions": [{"question": s.question, "answer": s.answer, "kind": s.difficulty} for s in asked]}
    return entry, scene.image


def real_entry(spec: dict) -> tuple[dict, np.ndarray]:
    import skimage.data  # a dependency of the project; its sample images ship in the wheel

    pixels = getattr(skimage.data, spec["loader"])()
    entry = {"name": spec["name"], "file": f"{spec['name']}.png", "kind": spec["kind"],
             "description": spec["description"], "source": spec["source"],
             "questions": [{"question": q, "answer": a, "kind": k} for q, a, k in spec["questions"]]}
    return entry, pixels


def build_examples() -> list[tuple[dict, np.ndarray]]:
    """(manifest entry, pixels) for every shipped example, in their order."""
    return [synthetic_entry(*s) for s in SYNTHETIC] + [real_entry(spec) for spec in REAL]


def manifest_text(entries: list[dict]) -> str:
    return json.dumps({"about": "Example images shipped with ARR-COC Lab (arrcoc_lab.examples); regenerate with "
                                "python -m arrcoc_lab.data.make_examples",
                       "examples": entries}, indent=2, ensure_ascii=False) + "\n"


def write_examples(folder: str | Path | None = None) -> list[Path]:
    """Write every example's PNG and questions.json into `folder` (default: the package's
    assets/examples/); returns the files written."""
    from PIL import Image

    out = Path(folder) if folder is not None else Path(__file__).resolve().parents[1] / "assets" / "examples"
    out.mkdir(parents=True, exist_ok=True)
    written, entries = [], []
    for entry, pixels in build_examples():
        path = out / entry["file"]
        Image.fromarray(pixels).save(path, format="PNG", optimize=True)
        written.append(path)
        entries.append(entry)
        log.info("wrote %s (%d bytes)", path, path.stat().st_size)
    (out / "questions.json").write_text(manifest_text(entries), encoding="utf-8")
    written.append(out / "questions.json")
    return written


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    write_examples(args[0] if args else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
