"""The example images shipped inside the package (arrcoc_lab/assets/examples/, arrcoc_lab.examples):
what they are, that the synthetic ones carry their datasets' own questions and answers, that the
generator reproduces them, that they are found through importlib.resources, and that every image
argument accepts example:NAME."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab import examples as shipped
from arrcoc_lab.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "arrcoc_lab" / "assets" / "examples"
NAMES = ["scenebench-paris", "scenebench-agra", "scenebench-rome", "docsynth-chart", "docsynth-report", "astronaut",
         "scanned-page"]


@pytest.fixture
def fresh_catalogue():
    shipped._catalogue.cache_clear()
    yield
    shipped._catalogue.cache_clear()


def test_what_ships():
    exs = shipped.list_examples()
    assert [e.name for e in exs] == NAMES == shipped.example_names()
    assert [e.kind for e in exs] == ["scenebench"] * 3 + ["docsynth"] * 2 + ["photo", "scan"]
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 1_500_000  # small enough to ship in the wheel
    assert sorted(p.name for p in FOLDER.iterdir()) == sorted([f"{n}.png" for n in NAMES] + ["questions.json"])
    for e in exs:
        assert e.path == FOLDER / f"{e.name}.png" and e.path.is_file()
        assert Image.open(e.path).format == "PNG" and min(e.size) >= 128
        assert e.description and "\n" not in e.description and len(e.description) <= 160
        assert e.source and ("licence" in e.source or "public domain" in e.source or "BSD" in e.source)
        assert 2 <= len(e.questions) <= 4 and len({q.question for q in e.questions}) == len(e.questions)
        assert {q.kind for q in e.questions} == {"detail", "gist"}  # a pair that allocates two ways
        detail, gist = e.question_pair()
        assert detail != gist
        if e.kind in ("scenebench", "docsynth"):
            assert e.size == (256, 256) and all(q.answer for q in e.questions)  # known answers


@pytest.mark.parametrize("name, dataset, index", [("scenebench-paris", "scenebench", 0), ("scenebench-agra", "scenebench", 1),
                                                  ("scenebench-rome", "scenebench", 4), ("docsynth-chart", "docsynth", 1),
                                                  ("docsynth-report", "docsynth", 0)])
def test_synthetic_examples_are_the_datasets_own_scenes(name, dataset, index):
    """The picture is the test scene the generator renders at the lab input, and every question is
    one the dataset itself asks of it, with its reference answer."""
    from arrcoc_lab.data import SYNTHETIC

    scene = SYNTHETIC[dataset]("test", image_size=256, patch_size=8).scene(index)
    e = shipped.get_example(name)
    asked = {s.question: (s.answer, s.difficulty) for s in scene.samples}
    assert all(asked[q.question] == (q.answer, q.kind) for q in e.questions)
    assert any(q.kind == "detail" and q.question in asked for q in e.questions)
    assert _same_pixels(e.load(), scene.image)
    if dataset == "scenebench":  # sign text the detail questions read
        texts = {r.text for r in scene.regions if r.text}
        assert all(q.answer in texts for q in e.questions if q.kind == "detail")


def test_the_generator_reproduces_them(tmp_path):
    pytest.importorskip("skimage")  # the real images come from scikit-image's sample data (the lab extra)
    from arrcoc_lab.data.make_examples import write_examples

    written = write_examples(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in FOLDER.iterdir())
    assert (tmp_path / "questions.json").read_text() == (FOLDER / "questions.json").read_text()
    for name in NAMES:
        assert _same_pixels(np.asarray(Image.open(tmp_path / f"{name}.png")), np.asarray(Image.open(FOLDER / f"{name}.png")))


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal, up to anti-aliasing differences between FreeType builds (text is drawn by Pillow)."""
    if a.shape != b.shape:
        return False
    diff = np.abs(a.astype(int) - b.astype(int))
    return float((diff > 0).mean()) < 0.01 and float(diff.mean()) < 1.0


def test_unknown_names_list_the_shipped_ones():
    for bad in ("nope", "example:nope", "", "../questions.json", "scenebench-paris.png"):
        with pytest.raises(InputError) as err:
            shipped.example_path(bad)
        assert all(n in str(err.value) for n in NAMES) and "arrcoc-lab examples" in str(err.value)
    assert shipped.example_path("example:astronaut") == shipped.example_path(" astronaut ") == FOLDER / "astronaut.png"


def test_found_through_importlib_resources(fresh_catalogue):
    from importlib import resources

    assert Path(str(shipped.examples_dir())) == Path(str(resources.files("arrcoc_lab") / "assets" / "examples"))
    assert all(e.path.parent == FOLDER for e in shipped.list_examples())


def test_an_install_without_its_data_files_is_a_clear_error(monkeypatch, tmp_path, fresh_catalogue):
    monkeypatch.setattr(shipped, "examples_dir", lambda: tmp_path)
    with pytest.raises(InputError, match="installed without its data files"):
        shipped.list_examples()
    shipped._catalogue.cache_clear()
    (tmp_path / "questions.json").write_text((FOLDER / "questions.json").read_text())
    with pytest.raises(InputError, match="missing its image scenebench-paris.png"):
        shipped.example_path("astronaut")
    shipped._catalogue.cache_clear()
    (tmp_path / "questions.json").write_text('{"examples": [{"name": 1}]}')
    with pytest.raises(InputError, match="malformed"):
        shipped.list_examples()


def test_every_image_argument_accepts_example_name(tiny_pipe, tmp_path, monkeypatch):
    from arrcoc_lab.inputs import load_image

    rgb = load_image("example:scanned-page")
    assert rgb.shape == (191, 384, 3) and rgb.dtype == np.uint8  # a grey scan, as RGB
    np.testing.assert_array_equal(rgb, load_image(shipped.example_path("scanned-page")))
    with pytest.raises(InputError, match="unknown example 'example:nope'; shipped examples: scenebench-paris"):
        load_image("example:nope")
    out = tiny_pipe("example:scenebench-paris", "What does the billboard say?", budget=12)
    assert out.image_size == (256, 256) and out.num_tokens <= 12
    # a file that exists at that exact path is still a file, as before
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "example:astronaut", format="PNG")
    assert load_image("example:astronaut").shape == (30, 40, 3)


def test_exported_from_the_package_without_heavy_imports():
    import arrcoc_lab

    assert arrcoc_lab.list_examples is shipped.list_examples and arrcoc_lab.example_path is shipped.example_path
    code = ("import sys, arrcoc_lab; arrcoc_lab.list_examples(); arrcoc_lab.example_path('astronaut'); "
            "print(sorted(m for m in ('torch', 'gradio', 'skimage', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def _wheel_files() -> set[str]:
    """The package files pyproject's package-data globs select, as setuptools expands them (glob:
    "*" does not descend into folders)."""
    import glob
    import tomllib

    base = ROOT / "arrcoc_lab"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["arrcoc_lab"]
    return {Path(p).relative_to(base).as_posix() for g in globs for p in glob.glob(str(base / g), recursive=True)
            if Path(p).is_file()}


_FILES = sorted(p.relative_to(ROOT / "arrcoc_lab").as_posix() for p in FOLDER.iterdir())


def test_package_data_ships_the_examples():
    """pyproject's package-data puts every shipped example in the wheel ("assets/*" alone would not:
    it does not descend into assets/examples/)."""
    assert set(_FILES) <= _wheel_files(), sorted(set(_FILES) - _wheel_files())
    assert json.loads((FOLDER / "questions.json").read_text())["examples"]
