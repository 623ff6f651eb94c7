"""Packaging (docs/INSTALL.md): compatible ranges in pyproject.toml; today's exact pins of the whole
install in constraints.txt, which `make` and environment.yml install through; the extras; LICENSE and
CITATION.cff; and a library import that loads none of the apps' front-end libraries."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "arrcoc-lab"
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+!_-]*)\s*$")
EXTRAS = ("demo", "lab", "eval", "test", "all")
FRONT_ENDS = ("gradio", "gradio_client", "papermill", "ipywidgets", "anywidget", "jupyterlab", "skimage")


def _name(n: str) -> str:
    return re.sub(r"[-_.]+", "-", n).lower()  # PEP 503 normalisation


def _pins(reqs: list[str], where: str) -> dict[str, str]:
    pins = {}
    for r in reqs:
        m = PIN.match(r)
        assert m, f"{where}: {r!r} is not an exact pin (name==version)"
        name = _name(m.group(1))
        assert name not in pins, f"{where}: {name} is listed twice"
        pins[name] = m.group(2)
    return pins


def constraint_pins(root: Path = ROOT) -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (root / "constraints.txt").read_text().splitlines()]
    return _pins([ln for ln in lines if ln], "constraints.txt")


def project(root: Path = ROOT) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def requirements(root: Path = ROOT) -> dict[str, list[Requirement]]:
    """The core ("") and each extra's requirements, the project's own extras (in `all`) left out."""
    p = project(root)
    groups = {"": p["dependencies"], **p.get("optional-dependencies", {})}
    return {g: [r for r in map(Requirement, reqs) if _name(r.name) != PROJECT] for g, reqs in groups.items()}


def range_disagreements(root: Path = ROOT) -> tuple[list[str], list[str], dict[str, tuple[str, str]]]:
    """(requirements without a pin, exact `==` requirements, pins outside their requirement's range)."""
    pins, unpinned, exact, outside = constraint_pins(root), [], [], {}
    for group, reqs in requirements(root).items():
        for r in reqs:
            n = _name(r.name)
            if any(s.operator in ("==", "===") for s in r.specifier):
                exact.append(n)
            if n not in pins:
                unpinned.append(n)
            elif not r.specifier.contains(pins[n], prereleases=True):
                outside[n] = (str(r.specifier), pins[n])
    return sorted(unpinned), sorted(exact), outside


def environment(root: Path = ROOT) -> tuple[str, list[str]]:
    """environment.yml's python version and its pip lines."""
    env = yaml.safe_load((root / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and _name(re.split(r"[=<>! ]", d)[0]) == "python"]
    pip_lists = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(python) == 1 and len(pip_lists) == 1, "environment.yml needs one python and one pip: list"
    return python[0].split("=")[-1], pip_lists[0]


def closure(root: Path = ROOT) -> tuple[dict[str, str], list[str]]:
    """Every distribution `pip install ".[all]"` brings in on this machine (markers evaluated here), with
    its installed version, walked through the installed metadata; plus what it reached but is not installed."""
    found, missing, seen = {}, [], set()
    todo = [(r, "") for reqs in requirements(root).values() for r in reqs]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        n = _name(req.name)
        for wanted in ("", *sorted(req.extras)):
            if (n, wanted) in seen:
                continue
            seen.add((n, wanted))
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                missing.append(n)
                break
            found[n] = dist.version
            todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return found, sorted(set(missing))


# --- ranges and pins ---------------------------------------------------------------------------------

def test_every_requirement_is_a_range_with_a_pin_inside_it():
    unpinned, exact, outside = range_disagreements()
    assert not exact, f"pyproject.toml pins exactly (use a compatible range; pins go in constraints.txt): {exact}"
    assert not unpinned, f"required in pyproject.toml but not pinned in constraints.txt: {unpinned}"
    assert not outside, f"constraints.txt pins outside pyproject.toml's range (range, pin): {outside}"


def test_the_check_sees_each_kind_of_disagreement(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(
        '"accelerate~=1.15"', '"accelerate==1.15.0"'))
    pins = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines()
            if not re.match(r"(?i)(torchvision|gradio-client|gradio_client)==", ln)]
    pins.append("torchvision==0.30.0")  # outside >=0.29,<0.30
    (tmp_path / "constraints.txt").write_text("\n".join(pins) + "\n")
    unpinned, exact, outside = range_disagreements(tmp_path)
    assert unpinned == ["gradio-client"] and exact == ["accelerate"]
    assert outside == {"torchvision": ("<0.30,>=0.29", "0.30.0")}


def test_extras_and_what_the_core_leaves_out():
    p, groups = project(), requirements()
    assert set(EXTRAS) <= set(p["optional-dependencies"])
    assert [Requirement(r).extras for r in p["optional-dependencies"]["all"]] == [set(EXTRAS) - {"all"}]
    core = {_name(r.name) for r in groups[""]}
    assert not core & {"gradio", "gradio-client", "papermill", "ipywidgets", "anywidget", "jupyterlab",
                       "ipykernel", "scikit-image", "pytest", "pyyaml"}, "the core is the library's needs only"
    assert {"torch", "torchvision", "transformers", "open-clip-torch", "segment-anything"} <= core
    everything = {_name(r.name) for reqs in groups.values() for r in reqs}
    assert "plotly" not in everything  # never imported
    assert {"pyyaml", "hypothesis", "pytest-timeout", "playwright"} <= {_name(r.name) for r in groups["test"]}


def test_requires_python_fits_the_pins_python():
    spec = SpecifierSet(project()["requires-python"].split("#")[0])
    python, _ = environment()
    assert Version(python) in spec
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in spec


@pytest.mark.parametrize("req,expected", [
    ("torch==2.14.1", ("torch", "2.14.1")),
    ("Open_Clip.Torch==3.3.0", ("open-clip-torch", "3.3.0")),
    ("uvicorn[standard]==0.30.0", ("uvicorn", "0.30.0")),
])
def test_pin_parser(req, expected):
    assert list(_pins([req], "t").items()) == [expected]


@pytest.mark.parametrize("req", ["torch>=2.0", "torch", "torch==2.*", "torch==2.1; python_version<'3'"])
def test_pin_parser_rejects_loose_requirements(req):
    with pytest.raises(AssertionError, match="not an exact pin"):
        _pins([req], "t")


# --- the lock is complete and is what runs ----------------------------------------------------------

def test_constraints_lock_everything_the_install_brings_in():
    """Reproducible from nothing: every distribution the project's requirements reach (on this
    platform) is pinned, so no version is left to the day of installation."""
    found, missing = closure()
    assert not missing, f"required but not installed here (install with make): {missing}"
    unpinned = sorted(set(found) - set(constraint_pins()))
    assert not unpinned, f"installed by the project but not pinned in constraints.txt: {unpinned}"


def test_this_environment_is_the_constrained_one():
    """(PEP 440 matching: a local build such as torch 2.14.1+cpu matches the pin torch==2.14.1.)"""
    found, _ = closure()
    pins = constraint_pins()
    differ = {n: (v, pins[n]) for n, v in found.items()
              if n in pins and not SpecifierSet(f"=={pins[n]}").contains(v, prereleases=True)}
    assert not differ, f"installed versions differ from constraints.txt (installed, pinned): {differ}"


# --- environment.yml --------------------------------------------------------------------------------

def test_environment_yml_installs_the_project_through_the_constraints():
    _, pip = environment()
    lines = [re.sub(r"\s+", " ", ln.strip()) for ln in pip]
    assert any(ln in ("-c constraints.txt", "--constraint constraints.txt") for ln in lines), lines
    projects = [ln for ln in lines if re.fullmatch(r"(-e |--editable )?\.(\[[a-z,]+\])?", ln)]
    assert projects, f"environment.yml's pip section does not install the project: {lines}"
    assert set(Requirement("p" + projects[0].split(".", 1)[1]).extras) == {"all"}
    assert (ROOT / "environment.yml").parent == (ROOT / "constraints.txt").parent  # paths resolve there
    others = [ln for ln in lines if ln not in projects and not ln.startswith(("-c ", "--constraint "))]
    assert not others, f"versions belong in constraints.txt and pyproject.toml, not environment.yml: {others}"


# --- the package --------------------------------------------------------------------------------------

def test_library_import_loads_no_front_end():
    code = ("import json, sys, arrcoc_lab, arrcoc_lab.pipeline\nfrom arrcoc_lab import load_pipeline\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "torch" in loaded  # the pipeline module really was imported
    assert not loaded & set(FRONT_ENDS), sorted(loaded & set(FRONT_ENDS))


def test_widgets_ship_inside_the_package():
    from setuptools import find_namespace_packages

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_namespace_packages(str(ROOT), include=include)
    assert "arrcoc_lab.widgets" in packages and "widgets" not in packages
    assert not (ROOT / "widgets").exists()  # no generic top-level name


def test_data_files_ship_with_the_package():
    """Every non-Python file in the package (the lab weights, the bundled examples) matches package-data."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["arrcoc_lab"]
    pkg = ROOT / "arrcoc_lab"
    shipped = {p for pattern in patterns for p in pkg.glob(pattern) if p.is_file()}
    data = {p for p in pkg.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert (pkg / "weights" / "lab" / "model.safetensors") in data
    assert data <= shipped, sorted(str(p.relative_to(ROOT)) for p in data - shipped)


def test_license_and_citation():
    assert project()["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "type", "version", "license", "date-released", "abstract"):
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["title"] == "ARR-COC Lab"
    assert str(cff["version"]) == project()["version"]
    assert cff["license"] == project()["license"]
    assert cff["authors"] == [{"name": "ARR-COC Lab developers"}]  # an entity
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cff["date-released"]))
