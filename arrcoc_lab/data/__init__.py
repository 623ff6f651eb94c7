"""Datasets of ARR-COC Lab: two synthetic benchmarks and loaders for real VQA files.

`load_dataset("scenebench:train")` is the one entry point the notebooks, the CLI and the
benchmarks use; every dataset it returns is a sequence of `Sample`. See docs/DATA.md.
"""

from __future__ import annotations

from typing import Sequence

from .docsynth import DocSynth
from .glyphs import GlyphCalibration, glyph_calibration
from .phrasing import HELDOUT, Phrase, parse, rephrase, rephrase_samples
from .scenebench import SceneBench
from .types import SPLIT_SEEDS, Region, Sample, Scene, SyntheticDataset
from .vqa import ChartQA, DocVQA, TextVQA, VQAFile

SYNTHETIC = {"scenebench": SceneBench, "docsynth": DocSynth}  # spec "name:split"
REAL = {"docvqa": DocVQA, "textvqa": TextVQA, "chartqa": ChartQA}  # spec "name:/path/to/file.json"
DATASETS = (*SYNTHETIC, *REAL)

__all__ = ["ChartQA", "DATASETS", "DocSynth", "DocVQA", "GlyphCalibration", "HELDOUT", "Phrase", "Region",
           "SPLIT_SEEDS", "Sample", "Scene", "SceneBench", "SyntheticDataset", "TextVQA", "VQAFile",
           "glyph_calibration", "load_dataset", "parse", "rephrase", "rephrase_samples"]


def load_dataset(spec: str, n: int | None = None, image_size: int = 256, patch_size: int = 8,
                 **options) -> Sequence[Sample]:
    """Open a dataset by spec: "scenebench:train|val|test", "docsynth:…", "docvqa:/path.json", …

    `n` caps the number of samples (synthetic sets default to 1000 scenes for train, 100 for
    val/test). Synthetic sets render at `image_size` with text calibrated to `patch_size`; real
    images are letterboxed to `image_size`. `options` go to the real loaders (e.g. `image_dir`).
    """
    name, sep, arg = str(spec).partition(":")
    if not sep or not arg:
        raise ValueError(f"dataset spec {spec!r}; accepted: 'scenebench:<split>', 'docsynth:<split>' "
                         f"with split in {sorted(SPLIT_SEEDS)}, or '<name>:/path/to/annotations.json' "
                         f"with name in {sorted(REAL)}")
    if name in SYNTHETIC:
        if arg not in SPLIT_SEEDS:
            raise ValueError(f"{name}: unknown split {arg!r}; known: {sorted(SPLIT_SEEDS)}")
        if options:
            raise ValueError(f"{name}: unexpected options {sorted(options)}; synthetic sets take none")
        return SYNTHETIC[name](arg, n=n, image_size=image_size, patch_size=patch_size)
    if name in REAL:
        return REAL[name](arg, n=n, image_size=image_size, **options)
    raise ValueError(f"unknown dataset {name!r}; known: {list(DATASETS)}")
