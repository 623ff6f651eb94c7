"""Loaders for real VQA datasets whose annotation files and images are already on local disk.

Nothing here downloads anything: users who have DocVQA, TextVQA or ChartQA point a loader at the
official annotation file. Each loader is a sequence of the same `Sample` the synthetic benchmarks
yield (no regions, target "global", difficulty "detail": these are reading tasks), so evaluation
code never branches on the source. All reference answers are kept in `Sample.answers` because
ANLS takes the max over them. Annotations are parsed and image paths checked at construction;
images are decoded only when a sample is indexed.

Formats (official releases):
* DocVQA   `{"data": [{"questionId", "question", "image": "documents/x.png", "answers": [...]}]}`;
  image paths are relative to the split folder, which holds the annotation file.
* TextVQA  `{"data": [{"question_id", "question", "image_id", "answers": [10 strings]}]}`;
  images at `<image_dir>/<image_id>.jpg`, by default `train_images/` beside the file
  (the val split's images are in train_images too).
* ChartQA  `[{"imgname", "query", "label"}]` (e.g. `test/test_human.json`); images in `png/`
  beside the file.
Test splits without answers load with `answer == ""` and `answers == ()`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .types import Sample

MAX_PIXELS = 64_000_000  # refuse absurd images instead of exhausting memory


@dataclass(frozen=True)
class _Entry:
    """One parsed annotation: everything but the decoded image."""

    id: str  # "<dataset>/<question id>"
    question: str  # question text
    answers: tuple[str, ...]  # every reference answer, in file order
    image: Path  # absolute image path
    scene_index: int  # questions on one image share it


def load_image(path: Path, image_size: int | None = None) -> np.ndarray:
    """Decode `path` to HxWx3 uint8; with `image_size`, letterbox it onto a white square first.

    Letterboxing (pad to square, then resize) keeps text aspect ratios, as DeepSeek-OCR does.
    """
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"image {path} is {im.width}x{im.height}; accepted: up to {MAX_PIXELS} pixels")
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path}: {err}; accepted: PNG/JPEG files") from err
    if image_size is not None:
        side = max(rgb.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        rgb = square.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"annotation file {path} does not exist; pass the path of the official JSON")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"annotation file {path} is not valid JSON: {err}") from err


def _field(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise ValueError(f"{where}: missing field {key!r}; got keys {sorted(record)}")
    return record[key]


def _answers(record: dict, where: str) -> tuple:
    """The reference answers; absent on test splits (then empty)."""
    answers = record.get("answers") or []
    if not isinstance(answers, list):
        raise ValueError(f"{where}: 'answers' must be a list of strings, got {type(answers).__name__}")
    return tuple(answers)


class VQAFile:
    """Base of the three loaders: parse once, check image files exist, decode lazily."""

    NAME = "vqa"

    def __init__(self, annotation_path: str | Path, image_dir: str | Path | None = None,
                 n: int | None = None, image_size: int | None = None) -> None:
        if n is not None and n < 1:
            raise ValueError(f"{self.NAME}: n={n}; accepted: None (all) or a positive int")
        self.annotation_path = Path(annotation_path)
        records = self._records(_read_json(self.annotation_path))
        self.image_dir = Path(image_dir) if image_dir is not None else self._default_image_dir()
        self.image_size = image_size
        self.entries = self._entries(records[:n] if n else records)
        missing = [str(e.image) for e in self.entries if not e.image.is_file()]
        if missing:
            raise ValueError(f"{self.NAME}: {len(missing)} image(s) missing, e.g. {missing[:3]}; "
                             f"expected under {self.image_dir} (set image_dir to change)")

    def _records(self, obj: Any) -> list:
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, list):
            raise ValueError(f"{self.annotation_path}: expected an object {{\"data\": [...]}} "
                             f"(official {self.NAME} format)")
        return data

    def _default_image_dir(self) -> Path:
        return self.annotation_path.parent

    def _parse(self, record: Any, i: int) -> tuple[str, str, tuple[str, ...], Path]:
        """(id, question, answers, image path) of annotation record i."""
        raise NotImplementedError

    def _entries(self, records: list) -> list[_Entry]:
        scenes: dict[Path, int] = {}
        entries = []
        for i, record in enumerate(records):
            qid, question, answers, image = self._parse(record, i)
            entries.append(_Entry(qid, str(question), tuple(str(a) for a in answers), image,
                                  scenes.setdefault(image, len(scenes))))
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Sample:
        e = self.entries[i]
        answer = Counter(e.answers).most_common(1)[0][0] if e.answers else ""
        return Sample(id=e.id, image=load_image(e.image, self.image_size), question=e.question,
                      answer=answer, family=self.NAME, difficulty="detail", target="global",
                      target_box=None, regions=[], dataset=self.NAME, scene_index=e.scene_index,
                      answers=e.answers)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


class DocVQA(VQAFile):
    """DocVQA (Mathew et al. 2021); evaluate with `metrics.anls`."""

    NAME = "docvqa"

    def _parse(self, record, i):
        where = f"{self.annotation_path} data[{i}]"
        image = self.image_dir / str(_field(record, "image", where))
        return (f"docvqa/{_field(record, 'questionId', where)}", _field(record, "question", where),
                _answers(record, where), image)


class TextVQA(VQAFile):
    """TextVQA 0.5.1 (Singh et al. 2019); `answer` is the most common of the ten references."""

    NAME = "textvqa"

    def _default_image_dir(self) -> Path:
        return self.annotation_path.parent / "train_images"

    def _parse(self, record, i):
        where = f"{self.annotation_path} data[{i}]"
        image = self.image_dir / f"{_field(record, 'image_id', where)}.jpg"
        return (f"textvqa/{_field(record, 'question_id', where)}", _field(record, "question", where),
                _answers(record, where), image)


class ChartQA(VQAFile):
    """ChartQA (Masry et al. 2022); evaluate with `metrics.relaxed_accuracy`."""

    NAME = "chartqa"

    def _records(self, obj: Any) -> list:
        if not isinstance(obj, list):
            raise ValueError(f"{self.annotation_path}: expected a JSON list of "
                             "{\"imgname\", \"query\", \"label\"} (official ChartQA format)")
        return obj

    def _default_image_dir(self) -> Path:
        return self.annotation_path.parent / "png"

    def _parse(self, record, i):
        where = f"{self.annotation_path} [{i}]"
        image = self.image_dir / str(_field(record, "imgname", where))
        return (f"chartqa/{i}", _field(record, "query", where), (_field(record, "label", where),), image)
