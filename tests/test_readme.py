"""The README a newcomer follows: its links resolve, every `arrcoc-lab` command it shows parses,
its make targets exist, and its Python API example runs on the shipped weights."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from arrcoc_lab.apps.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "reports" / "lab" / "RUN.md"]


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(prefix: str, text: str = README) -> list[str]:
    """Command lines of the bash blocks that start with `prefix` (continuation lines joined, comments cut)."""
    lines = []
    for block in _code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix):
                lines.append(line)
    return lines


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_no_reference_to_documents_outside_the_repository():
    for doc in DOCS:
        assert "DESIGN" not in doc.read_text(encoding="utf-8"), f"{doc.name} cites DESIGN, which is not in the repository"


def test_readme_starts_with_the_two_commands():
    first_block = _code_blocks(README, "bash")[0]
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"], ["make", "test"]]


def test_every_cli_command_in_the_readme_parses():
    commands = _commands("arrcoc-lab ")
    assert len(commands) >= 6, commands
    parser = build_parser()
    for line in commands:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.command, line


def test_every_make_target_in_the_readme_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    shown = _commands("make ") + re.findall(r"`(make [a-z-]+)`", README)
    targets = {t for line in shown for t in line.split()[1:] if "=" not in t}
    assert {"demo", "test", "train-lab", "figures"} <= targets
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"make {target} is not a Makefile target"


def test_readme_figures_exist():
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / path).is_file(), path


def test_python_api_example_runs():
    block = next(b for b in _code_blocks(README, "python") if "load_pipeline(\"lab\")" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # the shipped weights, on CPU, a few seconds
    out, a, b = scope["out"], scope["a"], scope["b"]
    assert isinstance(out.answer, str) and out.num_tokens <= 64
    assert out.tokens_per_cell.shape == out.cell_boxes.shape[:2]
    assert a.query != b.query and a.num_tokens <= 64 and b.num_tokens <= 64


def _git_status() -> set[str]:
    import subprocess

    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return set(out.splitlines())


def test_the_tour_leaves_the_checkout_clean(monkeypatch, capsys):
    """The README's command-line tour, run from the checkout as a newcomer would (eval on 2 scenes
    instead of 20), changes no tracked file and leaves no untracked one: outputs go to runs/."""
    import subprocess

    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    from arrcoc_lab.apps.cli import main

    tour = [line for line in _commands("arrcoc-lab ", _section("A five-minute tour"))
            if line.split()[1] in ("examples", "inspect", "eval")]
    assert len(tour) >= 4, tour
    monkeypatch.chdir(ROOT)
    before = _git_status()
    for line in tour:
        argv = shlex.split(line)[1:]
        if argv[0] == "eval":
            argv[argv.index("--n-scenes") + 1] = "2"
        assert main(argv) == 0, line
    capsys.readouterr()
    assert _git_status() == before, "the tour changed the checkout"
