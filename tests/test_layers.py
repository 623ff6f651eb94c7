"""The package's layout is its architecture (docs/ARCHITECTURE.md): imports point downward only,
and every module stays readable in one sitting."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("arrcoc_lab",)
# lower rank = lower layer; a module may import its own layer and the layers below it, never above
RANK = {
    "base": 0,  # arrcoc_lab.errors, .inputs, .checkpoint: what every layer shares
    "modeling": 1, "data": 1,  # the bottom: the model and the datasets, independent of each other
    "policies": 2,
    "pipeline": 3,  # arrcoc_lab.pipeline: the public contract (load_pipeline)
    "training": 4,
    "hf": 4,  # arrcoc_lab.hf: transformers' ArrcocConfig / ArrcocModel around the pipeline
    "evaluation": 5,
    "apps": 6,
    "widgets": 6,  # arrcoc_lab.widgets: the JupyterLab front end, at the level of the other apps
}
# same-rank layers stay independent (modeling and data), except these one-way pairs: the widgets
# draw with apps.rendering, while apps never import the widgets (so the CLI and demo never load ipywidgets)
BESIDE = {("widgets", "apps")}
FACADES = {"arrcoc_lab", "arrcoc_lab.__main__"}  # the package's front door re-exports from above, lazily
MAX_LINES = 400


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] in RANK:
        return parts[1]
    return "pipeline" if parts[1] == "pipeline" else "base"


def refused(own: str, target: str) -> bool:
    """Whether a module of layer `own` may not import from layer `target`."""
    return target != own and RANK[target] >= RANK[own] and (own, target) not in BESIDE


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every import of the package's own modules in the file (top-level and inside functions),
    as absolute module names."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]  # a.name: a module or a name in one
    return [(line, t) for line, t in out if t.split(".")[0] in PACKAGES]


SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downward(path):
    mod = module_name(path)
    if mod in FACADES:
        return
    own = layer(mod)
    upward = [f"line {line}: {target} ({layer(target)})" for line, target in imports(path)
              if refused(own, layer(target))]
    assert not upward, f"{mod} ({own}) imports from its own level or above: {upward}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_readable_in_one_sitting(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (limit {MAX_LINES}): split it by responsibility"


def test_layers_exist_as_folders():
    for name in ("modeling", "data", "policies", "training", "evaluation", "apps", "widgets"):
        assert (ROOT / "arrcoc_lab" / name / "__init__.py").is_file(), name


def test_checker_sees_upward_imports(tmp_path, monkeypatch):
    """The rule above would catch a modeling module reaching into evaluation, however it imports."""
    fake = ROOT / "arrcoc_lab" / "modeling" / "_probe_upward.py"
    src = "from ..evaluation import metrics\n\ndef f():\n    from arrcoc_lab.apps import cli\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: src if self == fake else Path.read_bytes(self).decode())
    found = [t for _, t in imports(fake)]
    assert found == ["arrcoc_lab.evaluation.metrics", "arrcoc_lab.apps.cli"]
    assert all(RANK[layer(t)] > RANK[layer(module_name(fake))] for t in found)


def test_widgets_sit_beside_the_apps():
    """arrcoc_lab.widgets is checked like every module (imports, 400 lines); it may draw with the apps,
    the apps may not import it, and same-level layers otherwise stay apart."""
    assert {p.name for p in SOURCES if p.parent.name == "widgets"} >= {"__init__.py", "inspector.py", "canvas.py"}
    assert layer("arrcoc_lab.widgets.inspector") == "widgets" and RANK["widgets"] == RANK["apps"]
    assert not refused("widgets", "apps") and not refused("widgets", "pipeline")
    assert refused("apps", "widgets") and refused("modeling", "data") and refused("evaluation", "widgets")
