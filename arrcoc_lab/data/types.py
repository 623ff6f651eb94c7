"""Shared record types of every dataset, and the indexing scheme of the synthetic ones.

Every loader (SceneBench, DocSynth, DocVQA, TextVQA, ChartQA) yields the same `Sample`, so the
pipeline, the benchmarks and the metrics never branch on where a question came from. The synthetic
benchmarks also say *where* the answer lies (`target_box`), which is what the allocation metrics
(target token share, query dependence) need.

`SyntheticDataset` holds what SceneBench and DocSynth share: disjoint seed ranges per split, a
fixed number of questions per scene (so sample i maps to scene i // Q without rendering anything),
and a one-scene cache so that iterating over a scene's questions renders it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

DIFFICULTIES = ("gist", "detail")
GLOBAL_TARGET = "global"
# Split seed ranges are disjoint: scene i of a split is seeded SPLIT_SEEDS[split] + i.
SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
MAX_SCENES_PER_SPLIT = 1_000_000

Box = tuple[int, int, int, int]


def check_box(box: Sequence[int], what: str) -> Box:
    """Return `box` as an int tuple (x0, y0, x1, y1); boxes with no area are rejected."""
    if len(box) != 4:
        raise ValueError(f"{what}: a box is 4 ints (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"{what}: box {box!r} needs x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Region:
    """A named part of an image; questions point at regions by name."""

    name: str  # unique within its image, e.g. "billboard", "red_sign", "chart_q4"
    role: str  # what kind of thing it is, e.g. "sky", "landmark", "sign", "chart_label"
    box: Box  # pixel box (x0, y0, x1, y1), x1/y1 exclusive
    text: str | None = None  # the text written in the region, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", check_box(self.box, f"region {self.name!r}"))


@dataclass
class Sample:
    """One question about one image, with its reference answer(s) and where the answer lies."""

    id: str  # stable identifier, e.g. "scenebench/train/000012/4"
    image: np.ndarray  # H x W x 3 uint8
    question: str  # natural-language question
    answer: str  # the reference answer (the most common one for multi-answer datasets)
    family: str  # question family, e.g. "formula", "landmark", or the dataset name
    difficulty: str  # "gist" (coarse view suffices) or "detail" (needs one region in full)
    target: str  # name of the region holding the answer, or "global"
    target_box: Box | None  # that region's box; None for "global"
    regions: list[Region]  # every annotated region of the image (empty for real datasets)
    dataset: str  # "scenebench", "docsynth", "docvqa", "textvqa", "chartqa"
    scene_index: int  # samples of one image share it
    answers: tuple[str, ...] = field(default=())  # all references (ANLS takes the max)

    def __post_init__(self) -> None:
        if not (isinstance(self.image, np.ndarray) and self.image.ndim == 3
                and self.image.shape[2] == 3 and self.image.dtype == np.uint8):
            got = f"{getattr(self.image, 'shape', None)} {getattr(self.image, 'dtype', type(self.image))}"
            raise ValueError(f"sample {self.id}: image must be an HxWx3 uint8 array, got {got}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"sample {self.id}: difficulty {self.difficulty!r}; accepted: {DIFFICULTIES}")
        self._check_target()
        if not self.answers:
            self.answers = (self.answer,) if self.answer else ()

    def _check_target(self) -> None:
        """The target must be "global" (no box) or a region of this image (with its box)."""
        if self.target == GLOBAL_TARGET:
            if self.target_box is not None:
                raise ValueError(f"sample {self.id}: target 'global' takes no target_box")
            return
        boxes = {r.name: r.box for r in self.regions}
        if self.target not in boxes:
            raise ValueError(f"sample {self.id}: target {self.target!r} is not a region; "
                             f"known: {sorted(boxes)} or 'global'")
        if tuple(self.target_box or ()) != boxes[self.target]:
            raise ValueError(f"sample {self.id}: target_box {self.target_box} differs from "
                             f"region {self.target!r} box {boxes[self.target]}")


@dataclass
class Scene:
    """One rendered image with its regions and every question the dataset asks about it."""

    index: int  # scene index within its split
    image: np.ndarray  # H x W x 3 uint8
    regions: list[Region]  # annotated regions
    samples: list[Sample]  # the questions, in slot order


class SyntheticDataset:
    """Sequence of Samples over deterministic scenes; subclasses implement `_build(index, seed)`.

    Each scene carries exactly `QUESTIONS_PER_SCENE` questions, so sample i is question
    i % Q of scene i // Q and any sample regenerates from its index alone.
    """

    NAME = "synthetic"
    QUESTIONS_PER_SCENE = 1
    DEFAULT_SCENES = {"train": 1000, "val": 100, "test": 100}

    def __init__(self, split: str = "train", n: int | None = None,
                 image_size: int = 256, patch_size: int = 8) -> None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"{self.NAME}: unknown split {split!r}; known: {sorted(SPLIT_SEEDS)}")
        q = self.QUESTIONS_PER_SCENE
        n = self.DEFAULT_SCENES[split] * q if n is None else int(n)
        if not 0 < n <= MAX_SCENES_PER_SPLIT * q:
            raise ValueError(f"{self.NAME}: n={n} samples; accepted: 1..{MAX_SCENES_PER_SPLIT * q}")
        if patch_size < 1 or image_size % patch_size or image_size // patch_size < 32:
            raise ValueError(f"{self.NAME}: image_size={image_size}, patch_size={patch_size}; accepted: "
                             "image_size a multiple of patch_size with at least 32 patches per side")
        self.split, self.n = split, n
        self.image_size, self.patch_size = image_size, patch_size
        self._cached: Scene | None = None

    @property
    def num_scenes(self) -> int:
        """Scenes touched by the first n samples (the last one may be partly used)."""
        return math.ceil(self.n / self.QUESTIONS_PER_SCENE)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"{self.NAME}: index must be an int, got {type(i).__name__}")
        j = int(i) + self.n if i < 0 else int(i)
        if not 0 <= j < self.n:
            raise IndexError(f"{self.NAME}: index {i} out of range for {self.n} samples")
        q = self.QUESTIONS_PER_SCENE
        sample = self.scene(j // q).samples[j % q]
        return replace(sample, image=sample.image.copy())  # callers may write; the cache must not change

    def __iter__(self) -> Iterator[Sample]:
        for j in range(self.n):
            yield self[j]

    def scene(self, index: int) -> Scene:
        """Render scene `index` (cached: consecutive samples of one scene render it once).

        The returned Scene is the cached object, shared by its samples: treat it as read-only
        (indexing the dataset hands out samples with their own image copy).
        """
        if not 0 <= index < MAX_SCENES_PER_SPLIT:
            raise IndexError(f"{self.NAME}: scene {index}; accepted: 0..{MAX_SCENES_PER_SPLIT - 1}")
        if self._cached is None or self._cached.index != index:
            self._cached = self._build(index, SPLIT_SEEDS[self.split] + index)
        return self._cached

    def pairs(self, mode: str = "detail") -> Iterator[tuple[Sample, Sample]]:
        """Per scene, two questions about different, non-overlapping regions (query dependence).

        The same image asked about region a and then region b should move tokens from b to a;
        `metrics.query_dependence` scores exactly that. Modes are defined by the subclass.
        """
        for index in range(self.num_scenes):
            scene = self.scene(index)
            a, b = self._pair_slots(scene, mode)
            yield scene.samples[a], scene.samples[b]

    def _pair_slots(self, scene: Scene, mode: str) -> tuple[int, int]:
        raise NotImplementedError

    def _build(self, index: int, seed: int) -> Scene:
        raise NotImplementedError

    def sample_id(self, index: int, slot: int) -> str:
        return f"{self.NAME}/{self.split}/{index:06d}/{slot}"
