"""`arrcoc-lab run-phase NAME -p key value …`: run a phase notebook through papermill.

The executed notebook lands in the output folder (`output_dir`) beside the metrics and figures it
writes. The curriculum, evaluation, probe, reading and benchmark notebooks are report runs: their
default is the report folder reports/<preset>/<name>/ (what `make train-lab` refreshes). The
quickstart is a tour: its default is the git-ignored run folder runs/quickstart/, and its tracked
copy in reports/quickstart/ is rewritten only with --update-reports (update_reports=True). A
failing cell makes the command exit non-zero and say which cell failed and why."""
from __future__ import annotations

import ast
import logging
import os
import re
from pathlib import Path

from ..errors import InputError
from ..training.phases import PHASES

log = logging.getLogger(__name__)
NOTEBOOKS_ENV = "ARRCOC_NOTEBOOKS"  # a folder holding the phase notebooks, for an installed (non-checkout) package


CONTINUATION = re.compile(r"phase0([a-z])")  # a phase-0 continuation's name (phase0b, phase0c, …)


def _continuations() -> dict[str, str]:
    """The phase-0 continuations of the phase table, each with its notebook 10<letter>_<name>_downstream,
    so that a new one is a phase (training/phases.py) and a notebook builder entry, nothing more here."""
    return {name: f"10{m[1]}_{name}_downstream.ipynb" for name in PHASES if (m := CONTINUATION.fullmatch(name))}


NOTEBOOK_FILES = {  # run-phase name → notebook (notebooks/build_notebooks.py writes the phase ones)
    "encoder": "09_encoder_pretrain.ipynb",  # notebooks/build_encoder.py
    "phase0": "10_phase0_downstream.ipynb",
    **_continuations(),
    "phase1a": "11_phase1a_allocator_pretrain.ipynb",
    "phase1": "12_phase1_allocator_adapter.ipynb",
    "phase2": "13_phase2_clip_adapter.ipynb",
    "phase3": "14_phase3_end_to_end.ipynb",
    "evaluation": "20_lab_evaluation.ipynb",
    "probe": "21_stage_probe.ipynb",
    "reading": "22_reading_scaling.ipynb",  # notebooks/build_reading.py
    "benchmark": "40_benchmark.ipynb",
    "quickstart": "00_quickstart.ipynb",  # a tour, not a report run: TOURS
}
TOURS = {"quickstart": "reports/quickstart"}  # notebooks whose reports/ copy is refreshed only on request


def notebooks_dir() -> Path:
    """Where the phase notebooks are: $ARRCOC_NOTEBOOKS, else the `notebooks/` folder of the source
    checkout this package was installed from (the folder that holds pyproject.toml and arrcoc_lab/).
    Anything else is a clear error, never a guess outside the project."""
    if os.environ.get(NOTEBOOKS_ENV):
        where = Path(os.environ[NOTEBOOKS_ENV]).expanduser()
        if not where.is_dir():
            raise InputError(f"${NOTEBOOKS_ENV} is {where}, which is not a folder")
        return where
    package = Path(__file__).resolve().parents[1]  # arrcoc_lab/
    root = package.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root / "notebooks"
    raise InputError(f"run-phase needs the project's notebooks/ folder: {package} is not inside a source checkout "
                     f"(no pyproject.toml and notebooks/ beside it). Run from a clone (pip install -e .) or set "
                     f"{NOTEBOOKS_ENV}=/path/to/arrcoc-lab/notebooks")


def phase_notebooks() -> dict[str, Path]:
    where = notebooks_dir()
    return {name: where / f for name, f in NOTEBOOK_FILES.items()}


def parse_value(text: str):
    """-p values are Python literals when they parse (3, 0.1, None, True, "x"), else strings.
    Tuples come back as lists, at any depth: papermill writes a tuple parameter into the notebook as
    its string ("('clip', 'llm')"), a list as a list."""
    try:
        return _tuples_as_lists(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def _tuples_as_lists(value):
    if isinstance(value, (tuple, list)):
        return [_tuples_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _tuples_as_lists(v) for k, v in value.items()}
    return value


def default_output_dir(name: str, preset: str = "lab", update_reports: bool = False) -> str:
    """Where a notebook writes when no output_dir is given: reports/<preset>/<name> for report runs;
    runs/<name> for tours (TOURS), or their reports/ folder with update_reports."""
    if name in TOURS:
        return TOURS[name] if update_reports else f"runs/{name}"
    return f"reports/{preset}/{name}"


def run_phase_notebook(name: str, params: dict, kernel: str | None = None, progress: bool = True,
                       update_reports: bool = False) -> Path:
    if update_reports and "output_dir" in params:
        raise InputError(f"{name}: give either --update-reports or -p output_dir, not both")
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    books = phase_notebooks()
    if name not in books:
        raise InputError(f"unknown phase notebook {name!r}; known: {sorted(books)}")
    nb = books[name]
    preset = params.get("preset", "lab")
    known = pm.inspect_notebook(str(nb))  # the notebook's `parameters` cell
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"{name}: unknown parameter(s) {unknown}; the notebook takes {sorted(known)}")
    out_dir = Path(params.setdefault("output_dir", default_output_dir(name, preset, update_reports)))
    if "run_dir" in known:
        params.setdefault("run_dir", f"runs/{preset}/{name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / nb.name
    try:
        pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name=kernel, progress_bar=progress,
                            cwd=str(Path.cwd()))
    except PapermillExecutionError as e:
        raise PhaseFailed(f"phase {name}: cell {e.exec_count} failed with {e.ename}: {e.evalue} "
                          f"(executed notebook with the traceback: {target})") from e
    return target


class PhaseFailed(RuntimeError):
    pass
