"""Every notebook runs under papermill with small parameters and produces its outputs.

Add a notebook by adding an entry to NOTEBOOKS: its small parameters and a check of what it wrote
(a phase-0 continuation, phase0b, phase0c, …, gets its entry from the phase table).
Notebooks run with the kernel of the interpreter running the tests (a kernel spec in a temporary
JUPYTER_PATH), from the notebooks/ directory, into a temporary directory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from arrcoc_lab.apps.runner import CONTINUATION, NOTEBOOK_FILES

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SHIPPED = NOTEBOOK_DIR.parent / "arrcoc_lab" / "weights" / "lab" / "model.safetensors"
KERNEL = "arrcoc-test-venv"


def _outputs(nb, mime: str) -> list:
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if mime in o.get("data", {})]


def check_quickstart(nb, out_dir: Path, executed: Path) -> None:
    assert sorted(p.name for p in out_dir.iterdir()) == ["compare.png", "policies.png", "summary.json", "views.png"]
    summary = json.loads((out_dir / "summary.json").read_text())
    queries = [q["query"] for q in summary["queries"]]
    assert "What's the formula on the billboard?" in queries and "What city is this?" in queries
    assert len(queries) == len(set(queries)) >= 3  # the example's detail question, gist question, the seeds'
    assert summary["image_encodes"] == 1  # one image, encoded once for every question
    assert [q["timings"]["sam"] > 0 for q in summary["queries"]] == [True] + [False] * (len(queries) - 1)
    assert len(summary["differences"]) == len(queries) - 1 and set(summary["policies"]) >= {"arrcoc", "heuristic"}
    heuristic = summary["policies"]["heuristic"]
    assert heuristic[0] > heuristic[1]  # detail question above the gist question's budget
    widgets = _outputs(nb, "application/vnd.jupyter.widget-view+json")
    assert len(widgets) == 1  # the inspector
    pngs = _outputs(nb, "image/png")
    assert len(pngs) == 3 and all(len(p) < 200_000 for p in pngs)  # static figures, downscaled
    assert executed.stat().st_size < 1_500_000


def check_phase(nb, out_dir: Path, executed: Path) -> None:
    names = {p.name for p in out_dir.iterdir()}
    assert {"metrics.json", "config.json", "history.json", "training_curves.png"} <= names
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(metrics["val"]) == {"arrcoc", "uniform", "random", "full"}
    assert metrics["val"]["full"]["avg_tokens"] == 1024  # the lab geometry's full resolution
    assert [r["level"] for r in metrics["sign_reading"]] == [3, 2]  # the top two levels, signs alone
    history = json.loads((out_dir / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2]
    assert json.loads((out_dir / "config.json").read_text())["pipeline"]["preset"] == "lab"


def check_evaluation(nb, out_dir: Path, executed: Path) -> None:
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics["policies"]) == {"arrcoc", "uniform", "random", "full", "heuristic", "learned-tier", "arrcoc@accurate"}
    assert {"target_lift_detail >= 3", "arrcoc: detail >= 50%", "held-out phrasings: accuracy within 10 pts of seen",
            "docsynth detail: arrcoc >= uniform + 15 pts"} <= set(metrics["bars"])
    assert set(metrics["heldout"]) == {"arrcoc", "uniform"} and set(metrics["docsynth"]) == {"arrcoc", "uniform", "full"}
    assert all(set(v) == {"value", "met"} for v in metrics["bars"].values())
    assert (out_dir / "allocation_examples.png").is_file() and (out_dir / "accuracy_by_tokens.png").is_file()


def check_encoder(nb, out_dir: Path, executed: Path) -> None:
    names = {p.name for p in out_dir.iterdir()}
    assert {"metrics.json", "config.json", "history.json", "training_curves.png", "reconstruction.png",
            "text_probe.png"} <= names
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and [h["step"] for h in json.loads((out_dir / "history.json").read_text())] == [1, 2]
    for when in ("random_sam", "pretrained_sam"):  # the acceptance check, before and after, with its references
        assert set(metrics["text_probe"][when]) == {f"{h}/{s}" for h in ("max", "cnn") for s in ("pixels", "patch_grid", "sam")}
    assert json.loads((out_dir / "config.json").read_text())["encoder_pretrain"]["steps"] == 2


PHASE_SMALL = {"preset": "lab", "steps": 2, "batch_size": 4, "n_scenes": 4, "eval_scenes": 2, "cache_dir": "{cache}",
               "run_dir": "{tmp}/run", "resume": False}
NOTEBOOKS = {
    "00_quickstart": ({"preset": "tiny", "example": "scenebench-paris", "figure_dpi": 40, "policies": ["arrcoc", "heuristic"]},
                      check_quickstart),
    "09_encoder_pretrain": ({"steps": 2, "batch_size": 2, "n_scenes": 4, "probe_scenes": 12, "probe_epochs": 1,
                             "cache_dir": "{cache}", "run_dir": "{tmp}/run", "resume": False}, check_encoder),
    "10_phase0_downstream": (PHASE_SMALL, check_phase),
    **{Path(f).stem: (PHASE_SMALL, check_phase) for name, f in NOTEBOOK_FILES.items()  # phase0b, phase0c, …
       if CONTINUATION.fullmatch(name)},
    "11_phase1a_allocator_pretrain": (PHASE_SMALL, check_phase),
    "12_phase1_allocator_adapter": (PHASE_SMALL, check_phase),
    "13_phase2_clip_adapter": (PHASE_SMALL, check_phase),
    "14_phase3_end_to_end": (PHASE_SMALL, check_phase),
    "20_lab_evaluation": ({"n_scenes": 2, "doc_scenes": 1, "cache_dir": "{cache}", "train_reports": "{tmp}/none"},
                          check_evaluation),
    "21_stage_probe": ({"n_scenes": 12, "epochs": 1, "cache_dir": "{cache}", "scaling_samples": [4, 8],
                        "reading_steps": 2}, lambda nb, out, ex: check_probe(out)),
    "22_reading_scaling": ({"n_scenes": 12, "counts": [4, 8], "heldout": 6, "steps": 2, "eval_every": 1,
                            "stages": ["sam", "patch_grid"], "cache_dir": "{cache}"}, lambda nb, out, ex: check_reading(out)),
    "40_benchmark": ({"n_scenes": 1, "data": ["scenebench:test"], "budgets": [64, 256], "policies": ["arrcoc", "uniform", "full", "visionzip"],
                      "paper_flops": False, "max_new_tokens": 1, "cache_dir": "{cache}",
                      # the shipped weights stand in for uniform's own downstream (same architecture)
                      "own_weights": {"uniform": str(SHIPPED)}}, lambda nb, out, ex: check_benchmark(out)),
}


def check_probe(out_dir: Path) -> None:
    report = json.loads((out_dir / "metrics.json").read_text())
    assert [r["stage"] for r in report["results"]] == ["sam", "compressor", "clip", "adapter", "projector"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in report["results"]) and (out_dir / "stage_probe.png").is_file()
    # the image window and the lossless patch grid are the text probe's references
    stages = ["pixels", "patch_grid"] + [r["stage"] for r in report["results"]]
    assert [(r["head"], r["stage"]) for r in report["text_results"]] == [(h, s) for h in ("max", "cnn") for s in stages]
    assert (out_dir / "text_probe.png").is_file() and (out_dir / "text_scaling.png").is_file()
    assert {k: list(v) for k, v in report["text_scaling"].items()} == {s: ["4", "8"] for s in ("pixels", "patch_grid", "sam")}
    assert [r["stage"] for r in report["reading_results"]] == ["patch_grid", "sam", "sam_half"]
    assert (out_dir / "reading_probe.png").is_file()


def check_reading(out_dir: Path) -> None:
    report = json.loads((out_dir / "metrics.json").read_text())
    assert [(r["stage"], r["n_train"], r["n_heldout"]) for r in report["results"]] == [
        (s, n, 6) for s in ("sam", "patch_grid") for n in (4, 8)]
    assert all([c[0] for c in r["curve"]] == [1, 2] for r in report["results"])
    assert (out_dir / "reading_scaling.png").is_file() and (out_dir / "config.json").is_file()


def check_benchmark(out_dir: Path) -> None:
    names = {p.name for p in out_dir.rglob("*")}
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".png") for n in names), names
    report = json.loads((out_dir / "metrics.json").read_text())
    labels = {(p["policy"], p["label"]) for p in report["results"]["scenebench:test"]}
    assert {("uniform/own", "16"), ("uniform/own", "64")} <= labels
    assert "## Own trained downstream" in (out_dir / "report.md").read_text()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One SAM feature cache for all notebooks of the module (the scenes are the same)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """A kernel spec for this interpreter, found first through JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ARR-COC Lab (test venv)", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    yield KERNEL
    mp.undo()


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path, venv_kernel, shared_cache):
    import papermill as pm

    params, check = NOTEBOOKS[name]
    params = {k: v.format(cache=shared_cache, tmp=tmp_path) if isinstance(v, str) else v for k, v in params.items()}
    out_dir, executed = tmp_path / "out", tmp_path / f"{name}.ipynb"
    pm.execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", executed, parameters=dict(params, output_dir=str(out_dir)),
                        kernel_name=venv_kernel, cwd=str(NOTEBOOK_DIR), progress_bar=False, execution_timeout=300)
    nb = nbformat.read(executed, as_version=4)
    assert not nb.metadata["papermill"]["exception"]
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    check(nb, out_dir, executed)


def test_run_phase_names_the_failing_cell_and_refuses_unknown_parameters(tmp_path, venv_kernel, shared_cache, capsys):
    """`arrcoc-lab run-phase`: a failing cell exits non-zero and says which cell failed and why, with
    the executed notebook kept; a misspelt parameter is refused before anything runs."""
    from arrcoc_lab.apps.cli import main

    out = tmp_path / "out"
    common = ["run-phase", "reading", "--kernel", venv_kernel, "-p", "n_scenes", "2", "-p", "cache_dir",
              str(shared_cache), "-p", "output_dir", str(out)]
    assert main(common + ["-p", "counts", "[100000]"]) == 1
    err = capsys.readouterr().err
    assert "phase reading: cell" in err and "InputError" in err and "need more signs" in err
    assert (out / "22_reading_scaling.ipynb").is_file()  # the executed notebook, traceback included
    assert main(common + ["-p", "stpes", "10"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['stpes']" in err and "'steps'" in err


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(path):
    """papermill skips a parameter line it cannot parse (an apostrophe in the comment did it once),
    and `run-phase -p` then refuses that name: every assignment in the parameters cell must be seen."""
    import ast

    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return
    names = [t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    assert names and sorted(pm.inspect_notebook(str(path))) == sorted(names)


def test_committed_notebooks_are_what_their_builders_write(tmp_path, monkeypatch):
    """The notebooks are generated (notebooks/build_*.py) and committed: an edit to a builder that
    was not rebuilt, or a hand edit to a notebook, shows here."""
    import importlib

    monkeypatch.syspath_prepend(str(NOTEBOOK_DIR))
    builders = importlib.import_module("build_notebooks")
    monkeypatch.setattr(builders, "OUT_DIR", tmp_path)
    for name, args in builders.PHASES.items():
        builders.build(name, *args)
    builders.build_evaluation()
    for other in sorted(p.stem for p in NOTEBOOK_DIR.glob("build_*.py") if p.stem != "build_notebooks"):
        importlib.import_module(other).build()  # a new builder is covered without naming it here
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert len(written) == len(builders.PHASES) + 5
    stale = [n for n in written if (tmp_path / n).read_bytes() != (NOTEBOOK_DIR / n).read_bytes()]
    assert not stale, f"rebuild with `python notebooks/build_notebooks.py` (and build_*.py): {stale}"


def test_every_phase_has_its_notebook_and_every_notebook_a_smoke_run():
    """A phase added to training/phases.py is runnable by `run-phase` (its notebook written by a builder
    and committed) and smoke-run here; uniform_ft alone is trained by `arrcoc-lab train`."""
    from arrcoc_lab.training.phases import PHASES

    assert set(PHASES) - set(NOTEBOOK_FILES) == {"uniform_ft"}
    missing = [f for f in NOTEBOOK_FILES.values() if not (NOTEBOOK_DIR / f).is_file()]
    assert not missing, f"no notebook (add the phase to notebooks/build_notebooks.py PHASES and rebuild): {missing}"
    assert {Path(f).stem for f in NOTEBOOK_FILES.values()} == set(NOTEBOOKS)
