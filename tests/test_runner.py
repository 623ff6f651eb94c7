"""run-phase finds the notebooks explicitly: $ARRCOC_NOTEBOOKS, else the source checkout's notebooks/,
else a clear error (never a path outside the project)."""
from __future__ import annotations

from pathlib import Path

import pytest

from arrcoc_lab.apps import runner
from arrcoc_lab.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_notebooks_are_found(monkeypatch):
    monkeypatch.delenv(runner.NOTEBOOKS_ENV, raising=False)
    assert runner.notebooks_dir() == ROOT / "notebooks"
    assert all(p.is_file() for p in runner.phase_notebooks().values())


def test_environment_variable_wins_and_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(runner.NOTEBOOKS_ENV, str(tmp_path))
    assert runner.notebooks_dir() == tmp_path
    monkeypatch.setenv(runner.NOTEBOOKS_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not a folder"):
        runner.notebooks_dir()


def test_an_installed_package_outside_a_checkout_gets_a_clear_error(monkeypatch, tmp_path):
    site = tmp_path / "site-packages" / "arrcoc_lab" / "apps"
    site.mkdir(parents=True)
    monkeypatch.delenv(runner.NOTEBOOKS_ENV, raising=False)
    monkeypatch.setattr(runner, "__file__", str(site / "runner.py"))
    with pytest.raises(InputError, match="ARRCOC_NOTEBOOKS"):
        runner.notebooks_dir()


def test_public_names_still_import_from_the_package():
    import arrcoc_lab
    from arrcoc_lab import POLICIES, CheckpointError, InputError as IE, get_policy, load_pipeline, register_policy

    assert IE is InputError and issubclass(CheckpointError, Exception) and callable(load_pipeline)
    assert get_policy("arrcoc") is POLICIES["arrcoc"] and callable(register_policy)
    with pytest.raises(AttributeError):
        arrcoc_lab.nothing_here
