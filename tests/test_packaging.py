"""pyproject.toml and environment.yml pin the same packages at the same versions."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+!_-]*)\s*$")


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


def _pyproject_pins(root: Path = ROOT) -> dict[str, str]:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["test"], "pyproject.toml")


def _environment_pins(root: Path = ROOT) -> dict[str, str]:
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: list"
    return _pins(pip_lists[0], "environment.yml pip list")


def _disagreements(root: Path = ROOT) -> tuple[list[str], list[str], dict[str, tuple[str, str]]]:
    py, env = _pyproject_pins(root), _environment_pins(root)
    assert py, "no pins found in pyproject.toml"
    differ = {n: (py[n], env[n]) for n in sorted(set(py) & set(env)) if py[n] != env[n]}
    return sorted(set(py) - set(env)), sorted(set(env) - set(py)), differ


def test_every_pin_agrees_both_ways():
    only_py, only_env, differ = _disagreements()
    assert not only_py, f"pinned in pyproject.toml but not in environment.yml: {only_py}"
    assert not only_env, f"pinned in environment.yml but not in pyproject.toml: {only_env}"
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"


def test_the_check_sees_each_kind_of_disagreement(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)["pip"]
    first, removed = pip[0], pip[-1]  # two different pins
    name = first.split("==")[0]
    pip[0] = f"{name}==0.0.1"
    pip.remove(removed)
    pip.append("not-in-pyproject==1.0")
    (tmp_path / "environment.yml").write_text(yaml.safe_dump(env))
    only_py, only_env, differ = _disagreements(tmp_path)
    assert only_py == [_name(removed.split("==")[0])]
    assert only_env == ["not-in-pyproject"]
    assert list(differ) == [_name(name)] and differ[_name(name)][1] == "0.0.1"


def test_environment_python_satisfies_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and _name(d.split("=")[0]) == "python")
    version = tuple(int(x) for x in python.split("=")[-1].split(".")[:2])
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert m, f"unexpected requires-python {spec!r}"
    assert version >= (int(m.group(1)), int(m.group(2)))


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
