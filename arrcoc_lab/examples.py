"""The example images that ship inside the package (`arrcoc_lab/assets/examples/`): three
SceneBench scenes and two DocSynth pages rendered by the project's own generators, a real photo
and a scanned page from scikit-image's sample data. `questions.json` beside them gives each image
its source and licence, a one-line description and a few questions (with the reference answer
where one is known). They are package data, found through `importlib.resources`, so an installed
package finds them and nothing is downloaded.

    from arrcoc_lab import list_examples, example_path
    [e.name for e in list_examples()]      # ['scenebench-paris', ..., 'scanned-page']
    pipe(example_path("scenebench-paris"), "What does the billboard say?")
    pipe("example:scenebench-paris", ...)   # the same: every image argument accepts example:NAME

`arrcoc-lab examples` lists them; `python -m arrcoc_lab.data.make_examples` regenerates them.
(`arrcoc_lab.data.examples` is another thing: any SceneBench/DocSynth test scene, rendered on
demand.)
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError

EXAMPLE_PREFIX = "example:"  # an image argument "example:NAME" names a shipped example
MANIFEST = "questions.json"
KINDS = ("scenebench", "docsynth", "photo", "scan")
QUESTION_KINDS = ("detail", "gist")  # detail: one small region answers it; gist: a coarse view does
_EXTRACTED = contextlib.ExitStack()  # zipped installs: files extracted on first use, removed at exit
atexit.register(_EXTRACTED.close)


@dataclass(frozen=True)
class ExampleQuestion:
    question: str
    answer: str | None = None  # the reference answer; None where none is recorded (open questions)
    kind: str = "detail"  # "detail" or "gist"


@dataclass(frozen=True)
class ShippedExample:
    """One shipped image: its name (what `example:NAME` takes), file, description and questions."""

    name: str
    path: Path
    description: str  # one line
    questions: tuple[ExampleQuestion, ...]
    kind: str  # scenebench | docsynth | photo | scan
    source: str  # where the image comes from, and its licence

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, read from the file's header."""
        from PIL import Image

        with Image.open(self.path) as img:
            return img.size

    def question_pair(self) -> tuple[str, str]:
        """A detail question and a gist question (the first of each; else the first two questions):
        the pair that shows one image allocated two ways."""
        detail = [q.question for q in self.questions if q.kind == "detail"]
        gist = [q.question for q in self.questions if q.kind == "gist"]
        if detail and gist:
            return detail[0], gist[0]
        texts = [q.question for q in self.questions]
        return texts[0], texts[1 % len(texts)]

    def answer_for(self, question: str) -> str | None:
        """The reference answer of one of this example's questions (None for any other question)."""
        text = " ".join(str(question).split())
        return next((q.answer for q in self.questions if q.question == text), None)

    def load(self):
        """The image as HxWx3 uint8 RGB (inputs.load_image)."""
        from .inputs import load_image

        return load_image(self.path, name=f"{EXAMPLE_PREFIX}{self.name}")


def examples_dir():
    """The shipped examples' folder as an importlib.resources Traversable (a Path in a normal install)."""
    return resources.files("arrcoc_lab") / "assets" / "examples"


def _real_path(ref) -> Path:
    if isinstance(ref, Path):
        return ref
    return _EXTRACTED.enter_context(resources.as_file(ref))  # a zipped install: extracted once


@functools.cache
def _catalogue() -> tuple[ShippedExample, ...]:
    folder = examples_dir()
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(f"the shipped examples are missing: no {MANIFEST} in {folder}. The package was installed "
                         "without its data files; reinstall it (pip install arrcoc-lab, or pip install -e . in a "
                         "checkout), or regenerate them with python -m arrcoc_lab.data.make_examples")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["examples"]
        out = tuple(_record(folder, e) for e in entries)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{manifest} is malformed ({type(e).__name__}: {e}); regenerate it with "
                         "python -m arrcoc_lab.data.make_examples") from None
    return out


def _record(folder, entry: dict) -> ShippedExample:
    ref = folder / entry["file"]
    if not ref.is_file():
        raise InputError(f"the shipped example {entry['name']!r} is missing its image {entry['file']} in {folder}; "
                         "reinstall the package or regenerate the examples (python -m arrcoc_lab.data.make_examples)")
    questions = tuple(ExampleQuestion(q["question"], q.get("answer"), q.get("kind", "detail"))
                      for q in entry["questions"])
    if entry["kind"] not in KINDS or not questions or any(q.kind not in QUESTION_KINDS for q in questions):
        raise ValueError(f"example {entry['name']!r}: kind must be one of {KINDS}, with at least one question of "
                         f"kind {QUESTION_KINDS}")
    return ShippedExample(name=entry["name"], path=_real_path(ref), description=entry["description"],
                          questions=questions, kind=entry["kind"], source=entry["source"])


def list_examples() -> list[ShippedExample]:
    """Every shipped example, in the order of questions.json (scenes, pages, then real images)."""
    return list(_catalogue())


def example_names() -> list[str]:
    return [e.name for e in _catalogue()]


def get_example(name: str) -> ShippedExample:
    """The shipped example called `name` (a leading "example:" is allowed); an unknown name is an
    InputError listing the names."""
    key = str(name).strip()
    key = key[len(EXAMPLE_PREFIX):] if key.startswith(EXAMPLE_PREFIX) else key
    for e in _catalogue():
        if e.name == key:
            return e
    raise InputError(f"unknown example {name!r}; shipped examples: {', '.join(example_names())} "
                     "(arrcoc-lab examples lists them)")


def example_path(name: str) -> Path:
    """The image file of the shipped example `name`; an unknown name is an InputError listing the names."""
    return get_example(name).path


def is_example_ref(value) -> bool:
    """Whether an image argument names a shipped example ("example:NAME") rather than a file. A file
    that exists at that exact path is read as a file, as before."""
    if not (isinstance(value, str) and value.startswith(EXAMPLE_PREFIX)):
        return False
    try:
        return not Path(value).exists()
    except (OSError, ValueError):
        return True
