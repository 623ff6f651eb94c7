"""Images the inspector's picker offers: SceneBench scenes and DocSynth pages (rendered on demand,
with their own detail and gist questions) and a few real photos and scanned pages that ship
inside scikit-image's wheel (no download)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# scikit-image sample images bundled in the wheel (skimage/data/*.png|jpg), with a detail and a gist question.
SKIMAGE = {
    "astronaut": ("photo: astronaut", ["What is written on the flag patch?", "Who is this?"]),
    "coffee": ("photo: coffee cup", ["What pattern is in the foam?", "What is in the cup?"]),
    "chelsea": ("photo: cat", ["What colour are the cat's eyes?", "What animal is this?"]),
    "rocket": ("photo: rocket launch", ["What is written on the rocket?", "What is happening?"]),
    "text": ("photo: text on a sign", ["What does the sign say?", "Is there text in this image?"]),
    "page": ("scan: book page", ["What is the first word on the page?", "What kind of document is this?"]),
}


@dataclass
class Source:
    key: str  # picker value
    label: str  # picker label
    load: Callable[[], tuple[np.ndarray, list[str]]]  # → (HxWx3 or HxW uint8 image, [detail, gist] questions)
    _loaded: tuple | None = field(default=None, repr=False)

    def fetch(self) -> tuple[np.ndarray, list[str]]:
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded


def _example(dataset: str, index: int, image_size: int, patch_size: int) -> tuple[np.ndarray, list[str]]:
    from arrcoc_lab.data.examples import example

    try:
        ex = example(dataset, index, image_size=image_size, patch_size=patch_size)
    except ValueError:  # geometries too small for the generators (e.g. tiny): their default size
        ex = example(dataset, index)
    return ex.image, list(ex.questions)


def _skimage(name: str) -> tuple[np.ndarray, list[str]]:
    import skimage.data

    return getattr(skimage.data, name)(), list(SKIMAGE[name][1])


def default_sources(geometry=None, scenes: int = 3, pages: int = 2) -> dict[str, Source]:
    """Picker entries keyed by value. Examples render lazily, at the pipeline's input size."""
    size, patch = (geometry.image_size, geometry.patch_size) if geometry is not None else (256, 8)
    out: dict[str, Source] = {}
    for dataset, label, n in (("scenebench", "SceneBench", scenes), ("docsynth", "DocSynth", pages)):
        for i in range(n):
            out[f"{dataset}/{i}"] = Source(f"{dataset}/{i}", f"{label} test {i}",
                                           lambda dataset=dataset, i=i: _example(dataset, i, size, patch))
    for name, (label, _) in SKIMAGE.items():
        out[f"skimage/{name}"] = Source(f"skimage/{name}", f"{label} (scikit-image)", lambda name=name: _skimage(name))
    return out
