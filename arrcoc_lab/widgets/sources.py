"""Images the inspector's picker offers: the example images that ship inside the package
(`arrcoc_lab.list_examples()`: SceneBench scenes, DocSynth pages, a photo and a scanned page), each
with its own detail and gist question, read from their PNG files when first picked (nothing is
rendered or downloaded). Images you pass in or upload are added beside them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

KIND_LABELS = {"scenebench": "SceneBench scene", "docsynth": "DocSynth page", "photo": "photo", "scan": "scan"}


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


def _shipped(example) -> tuple[np.ndarray, list[str]]:
    return example.load(), list(example.question_pair())


def default_sources() -> dict[str, Source]:
    """Picker entries keyed by value ("example:NAME", the name every image argument accepts), one
    per shipped example, in `list_examples()` order; labelled "NAME (kind)". Empty when the package
    was installed without its data files (the picker then offers only what is passed in)."""
    from arrcoc_lab.errors import InputError
    from arrcoc_lab.examples import EXAMPLE_PREFIX, list_examples

    try:
        examples = list_examples()
    except InputError:
        return {}
    return {f"{EXAMPLE_PREFIX}{e.name}": Source(f"{EXAMPLE_PREFIX}{e.name}", f"{e.name} ({KIND_LABELS.get(e.kind, e.kind)})",
                                                lambda e=e: _shipped(e))
            for e in examples}
