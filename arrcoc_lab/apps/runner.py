"""`arrcoc-lab run-phase NAME -p key value …`: run a phase notebook through papermill.

The executed notebook lands in the report folder (`output_dir`, default reports/<preset>/<phase>)
beside the metrics and figures it writes. A failing cell makes the command exit non-zero and
say which cell failed and why."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


NOTEBOOK_FILES = {  # run-phase name → notebook (notebooks/build_notebooks.py writes the phase ones)
    "encoder": "09_encoder_pretrain.ipynb",  # notebooks/build_encoder.py
    "phase0": "10_phase0_downstream.ipynb",
    "phase1a": "11_phase1a_allocator_pretrain.ipynb",
    "phase1": "12_phase1_allocator_adapter.ipynb",
    "phase2": "13_phase2_clip_adapter.ipynb",
    "phase3": "14_phase3_end_to_end.ipynb",
    "evaluation": "20_lab_evaluation.ipynb",
    "probe": "21_stage_probe.ipynb",
    "reading": "22_reading_scaling.ipynb",  # notebooks/build_reading.py
    "benchmark": "40_benchmark.ipynb",
}


def phase_notebooks() -> dict[str, Path]:
    return {name: NOTEBOOKS / f for name, f in NOTEBOOK_FILES.items()}


def parse_value(text: str):
    """-p values are Python literals when they parse (3, 0.1, None, True, "x"), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_phase_notebook(name: str, params: dict, kernel: str | None = None, progress: bool = True) -> Path:
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
    out_dir = Path(params.setdefault("output_dir", f"reports/{preset}/{name}"))
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
