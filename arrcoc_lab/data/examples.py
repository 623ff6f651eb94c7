"""SceneBench/DocSynth test images with their questions, rendered on demand (deterministic by
seed, so nothing is stored), for `arrcoc-lab example`, the quickstart and the widgets. The images
that ship as files (the demo's gallery, `example:NAME`) are `arrcoc_lab.examples`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The seeds' running example: one image, a detail question and a gist question.
SEED_QUESTIONS = ("What's the formula on the billboard?", "What city is this?")


@dataclass
class Example:
    name: str  # e.g. "scenebench/test/0"
    image: np.ndarray  # H x W x 3 uint8
    questions: list[str]  # a detail question first, then a gist question
    answers: list[str]  # reference answers, same order
    targets: list[tuple | None]  # target boxes, same order


def example(dataset: str = "scenebench", index: int = 0, image_size: int = 256, patch_size: int = 8) -> Example:
    """A test-split scene with one detail and one gist question about different regions."""
    from ..data import DocSynth, SceneBench

    kinds = {"scenebench": SceneBench, "docsynth": DocSynth}
    if dataset not in kinds:
        raise ValueError(f"unknown example dataset {dataset!r}; known: {sorted(kinds)}")
    ds = kinds[dataset]("test", image_size=image_size, patch_size=patch_size)
    scene = ds.scene(index)
    detail = next(s for s in scene.samples if s.difficulty == "detail")
    gist = next((s for s in scene.samples if s.family == "city"),
                next(s for s in scene.samples if s.difficulty == "gist"))
    return Example(name=f"{dataset}/test/{index}", image=scene.image,
                   questions=[detail.question, gist.question], answers=[detail.answer, gist.answer],
                   targets=[detail.target_box, gist.target_box])


def examples(n: int = 3, image_size: int = 256, patch_size: int = 8) -> list[Example]:
    """A few SceneBench scenes and DocSynth pages, for galleries."""
    out = [example("scenebench", i, image_size, patch_size) for i in range(n)]
    return out + [example("docsynth", i, image_size, patch_size) for i in range(max(1, n - 1))]
