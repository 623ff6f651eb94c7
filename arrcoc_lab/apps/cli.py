"""`arrcoc-lab` command line: the parser (commands.py holds the handlers).

    arrcoc-lab examples                      # the example images that ship with the package
    arrcoc-lab inspect example:scenebench-paris                 # one of them, with its own question
    arrcoc-lab inspect IMAGE "QUESTION" --budget 64 --policy arrcoc --out alloc.png
    arrcoc-lab example                       # the seeds' example in the terminal: one image, two questions
    arrcoc-lab demo                          # the Gradio app (make demo); Ctrl+C stops it
    arrcoc-lab eval --preset lab --data scenebench:test --policy arrcoc,uniform --budget 64
    arrcoc-lab bench --preset lab --weights W --n-scenes 20      # runs/bench/lab/report.md
    arrcoc-lab latency --preset paper --device cuda          # per-stage latency vs tokens, random weights
    arrcoc-lab throughput --preset lab                       # batching, allocation share, 64 vs 400, re-render
    arrcoc-lab run-phase phase0 -p steps 1500                # reports/lab/phase0/ (a report run)

An IMAGE is a file path or example:NAME. Commands write into git-ignored run folders (runs/…) by
default; --update-reports (or an explicit --out) writes the tracked reports/ instead. The
curriculum notebooks of run-phase are report runs: they write reports/<preset>/<name>/, as
`make train-lab` expects. `export` writes the shipped weights (arrcoc_lab/weights/lab/) unless --dest.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InputError
from .commands import (cmd_bench, cmd_demo, cmd_eval, cmd_example, cmd_examples, cmd_export, cmd_inspect, cmd_read_signs,
                       cmd_latency, cmd_run_phase, cmd_throughput, cmd_train)

log = logging.getLogger("arrcoc_lab")
PROG = "arrcoc-lab"
DESCRIPTION = "ARR-COC Lab: query-aware adaptive visual-token compression for vision-language models."


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit status 2, as every refused input)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ argument types
def _budget(text):
    """--budget, read by the one budget grammar (inputs.parse_budget)."""
    from ..inputs import parse_budget

    try:
        return parse_budget(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(low: int):
    def parse(text):
        from ..inputs import whole_number

        n = whole_number(text)
        if n is None or n < low:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {low}, got {text!r}")
        return n

    parse.__name__ = "number"
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _budgets(text):
    """--budgets: comma-separated paper-geometry token counts."""
    parse = _count(1)
    try:
        return tuple(parse(b) for b in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers ≥ 1, e.g. 64,100,256, got {text!r}") from None


def _levels(text):
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated level numbers, e.g. 3,2") from None


def _max_new_tokens(text):
    from ..inputs import check_max_new_tokens

    try:
        return check_max_new_tokens(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ------------------------------------------------------------------------------ the commands
# (group, name, one-line help, what the command's --help adds). The one-line help is lower case,
# starts with a verb and has no full stop; `arrcoc-lab --help` lists the commands by group.
COMMANDS = (
    ("Try it", "examples", "list the example images shipped with the package (use one as IMAGE: example:NAME)",
     "Each with its size, a description, its source and licence, and questions (with the reference answer "
     "where one is known)."),
    ("Try it", "inspect", "ask one question about one image: the answer, the tokens and the allocation",
     "IMAGE is a file path or example:NAME (see arrcoc-lab examples); with example:NAME the question may be "
     "left out: the example's first question is asked and its reference answer shown."),
    ("Try it", "example", "run the seeds' example: one scene, a detail and a gist question, two allocation maps",
     "A SceneBench test scene rendered on demand; the maps are saved to runs/example/."),
    ("Try it", "demo", "serve the Gradio web demo on the shipped lab weights (Ctrl+C stops it)",
     "Prints its URL; --share adds a public link (add a login: docs/SECURITY.md). Images: uploads and the "
     "shipped examples. Options and the gradio_client API: docs/DEMO.md."),
    ("Evaluate", "eval", "evaluate policies on a SceneBench/DocSynth split: accuracy, tokens, allocation metrics",
     "Writes metrics.json, rows.jsonl and figures to runs/eval/<data>-<policies>-<budget>/ "
     "(--update-reports: reports/eval/…)."),
    ("Evaluate", "read-signs", "measure how many fine-detail signs the downstream reads when shown at a level",
     "Each sign's cells at --levels, every other cell at the minimum, no allocator: what CLIP, the adapter and "
     "the LLM can read (training shows itself with it). Writes metrics.json to runs/read-signs/<data>/ "
     "(--update-reports: reports/read-signs/…)."),
    ("Evaluate", "bench", "benchmark every policy at equal budgets: accuracy, tokens, FLOPs, latency",
     "Writes metrics.json, report.md and plots to runs/bench/<preset>/ (--update-reports: reports/bench/<preset>/, "
     "the tracked benchmark; docs/BENCHMARK.md)."),
    ("Evaluate", "latency", "measure per-stage latency against the token count (random weights by default)",
     "At the paper geometry on a GPU by default (--device cuda). Writes latency.json, latency.md and a plot to "
     "runs/bench/<preset>_latency_<device>/ (--update-reports: reports/bench/…)."),
    ("Evaluate", "throughput", "measure batching speed-up, allocation cost, 64 vs 400 tokens and re-render time",
     "Each against its goal (met or missed), in one run: pipe.batch vs one-by-one calls after SAM, and a second "
     "question on an encoded image, on the loaded pipeline; allocation vs SAM time and 64 vs 400 tokens at the paper "
     "geometry with random weights (slow on a CPU: docs/BENCHMARK.md). Writes throughput.json and throughput.md to "
     "runs/bench/<preset>/ (--update-reports: reports/bench/<preset>/)."),
    ("Train and ship", "run-phase", "run a project notebook through papermill: a training phase, a report, the quickstart",
     "Report runs (phases, evaluation, probe, reading, benchmark) write reports/<preset>/<name>/ unless "
     "-p output_dir; the quickstart writes runs/quickstart/ (--update-reports: reports/quickstart/). A misspelt "
     "-p is refused; a failing cell exits 1 and names the cell."),
    ("Train and ship", "train", "train one phase without a notebook (for accelerate launch / torchrun)",
     "Checkpoints, model.safetensors and history.json go to --out; an interrupted run resumes from its last "
     "checkpoint."),
    ("Train and ship", "export", "write trained weights as fp16 safetensors + config (by default: the shipped lab weights)",
     "Without --dest this replaces arrcoc_lab/weights/lab/ (what make train-lab does after phase 3)."),
)
HELP = {name: text for _, name, text, _ in COMMANDS}


def _epilog() -> str:
    width = max(len(name) for _, name, _, _ in COMMANDS)
    lines, group = [], None
    for g, name, text, _ in COMMANDS:
        if g != group:
            lines.append(f"{'' if group is None else chr(10)}{g}:")
            group = g
        lines.append(f"  {name:<{width}}  {text}")
    lines += ["", f"An IMAGE is a file path or example:NAME ({PROG} examples lists the names).",
              "Output goes to runs/ (git-ignored) unless --out or --update-reports asks for reports/.",
              f"Run '{PROG} COMMAND --help' for a command's options."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, usage=f"{PROG} [-h] [-v] COMMAND ...", description=DESCRIPTION, epilog=_epilog(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS,
                           parser_class=Parser, prog=PROG)  # "arrcoc-lab inspect", not the usage line
    adders = {"examples": _add_examples, "inspect": _add_inspect, "example": _add_example, "demo": _add_demo,
              "eval": _add_eval, "read-signs": _add_read_signs, "bench": _add_bench, "latency": _add_latency, "throughput": _add_throughput,
              "run-phase": _add_run_phase,
              "train": _add_train, "export": _add_export}
    for _, name, text, more in COMMANDS:
        sp = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}. {more}")
        adders[name](sp)
    return p


def _pipeline_options(sp, allocation: bool = True) -> None:
    """What `commands.load` loads (preset, weights, config, device, paper checkpoints); `allocation`: policy, budget."""
    sp.add_argument("--preset", default="lab",
                    help="lab | paper | tiny | hf-vlm (with --vlm-path), or a folder written by save_pretrained / "
                         "export (default lab)")
    sp.add_argument("--weights", default=None, help="our safetensors weights, or random (default: the preset's shipped weights)")
    sp.add_argument("--config", default=None, help="a config.json that replaces the preset")
    sp.add_argument("--device", default=None, help="cpu, cuda, … (default cpu)")
    if allocation:
        sp.add_argument("--policy", default="arrcoc", help="allocation policy (default arrcoc)")
        sp.add_argument("--budget", type=_budget, default=None, help="tokens, or fast/balanced/accurate/default")
    sp.add_argument("--sam-checkpoint", dest="sam_checkpoint", default=None, help="paper: official SAM .pth")
    sp.add_argument("--clip-pretrained", dest="clip_pretrained", default=None, help="paper: open_clip checkpoint")
    sp.add_argument("--llm-path", dest="llm_path", default=None, help="paper: Hugging Face model directory")
    sp.add_argument("--vlm-path", dest="vlm_path", default=None,
                    help="hf-vlm: a local LLaVA or Qwen2-VL folder (docs/HF_VLM.md)")
    sp.add_argument("--vlm-image-size", dest="vlm_image_size", type=_count(1), default=None,
                    help="hf-vlm: input size in pixels (default: the VLM's own)")
    sp.add_argument("--vlm-dtype", dest="vlm_dtype", default=None, help="hf-vlm: auto, float32, bfloat16, … (default auto)")


def _report_options(sp, what: str) -> None:
    sp.add_argument("--out", default=None, help=f"output folder (default {what})")
    sp.add_argument("--update-reports", dest="update_reports", action="store_true",
                    help="write the tracked report folder under reports/ instead of runs/")


def _add_examples(ex) -> None:
    ex.add_argument("names", nargs="*", metavar="NAME", help="only these examples (default: all)")
    ex.add_argument("--json", action="store_true", help="print the list as JSON (paths included)")
    ex.set_defaults(fn=cmd_examples)


def _add_inspect(i) -> None:
    _pipeline_options(i)
    i.add_argument("image", metavar="IMAGE", help="an image file, or example:NAME (a shipped example)")
    i.add_argument("question", metavar="QUESTION", nargs="?", default=None,
                   help="the question (optional with example:NAME: the example's first question)")
    i.add_argument("--out", default=None, help="save the overlay PNG here")
    i.add_argument("--mode", default="tokens", choices=["relevance", "tokens", "levels"],
                   help="what the overlay shows (default tokens)")
    i.set_defaults(fn=cmd_inspect)


def _add_example(d) -> None:
    _pipeline_options(d)
    d.add_argument("--index", type=_count(0), default=0, help="SceneBench test scene (default 0)")
    d.add_argument("--out", default="runs/example", help="folder for the allocation PNG (default runs/example)")
    d.set_defaults(fn=cmd_example)


def _add_demo(dm) -> None:
    from .demo import add_arguments  # light: imports neither gradio nor torch

    add_arguments(dm)
    dm.set_defaults(fn=cmd_demo)


def _add_eval(e) -> None:
    _pipeline_options(e)
    e.add_argument("--data", default="scenebench:test", help="scenebench|docsynth:train|val|test (default scenebench:test)")
    e.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=100, help="scenes, 6 questions each (default 100)")
    e.add_argument("--batch-size", dest="batch_size", type=_count(1), default=32, help="questions a forward (default 32)")
    e.add_argument("--cache-dir", dest="cache_dir", default="cache", help="feature cache folder (default cache)")
    _report_options(e, "runs/eval/<data>-<policies>-<budget>")
    e.add_argument("--phrasing", choices=("seen", "heldout"), default="seen", help="heldout: phrasings never used in training")
    e.set_defaults(fn=cmd_eval)


def _add_read_signs(r) -> None:
    _pipeline_options(r, allocation=False)
    r.add_argument("--data", default="scenebench:test", help="scenebench|docsynth:train|val|test (default scenebench:test)")
    r.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=30, help="scenes, 6 questions each (default 30)")
    r.add_argument("--levels", type=_levels, default=None, help="comma-separated levels (default: the top two)")
    r.add_argument("--cache-dir", dest="cache_dir", default="cache", help="feature cache folder (default cache)")
    _report_options(r, "runs/read-signs/<data>")
    r.set_defaults(fn=cmd_read_signs)


def _add_bench(b) -> None:
    _pipeline_options(b, allocation=False)
    b.add_argument("--data", default="scenebench:test,docsynth:test", help="comma-separated splits")
    b.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=5, help="scenes per split, 6 questions each")
    b.add_argument("--policies", default="all", help="comma-separated policy names, or all (default)")
    b.add_argument("--budgets", type=_budgets, default=(64, 100, 144, 256, 400),
                   help="paper-geometry budgets, scaled to the preset by n_cells/64; full is always added")
    b.add_argument("--batch-size", dest="batch_size", type=_count(1), default=8, help="questions a forward (default 8)")
    b.add_argument("--flop-samples", dest="flop_samples", type=_count(1), default=2,
                   help="questions whose FLOPs are counted exactly, per point (default 2, at least 1)")
    b.add_argument("--max-new-tokens", dest="max_new_tokens", type=_max_new_tokens, default=None,
                   help="answer length cap (default: the preset's)")
    b.add_argument("--no-paper-flops", dest="no_paper_flops", action="store_true",
                   help="skip counting FLOPs at the paper geometry")
    b.add_argument("--cache-dir", dest="cache_dir", default="cache", help="feature cache folder (default cache)")
    b.add_argument("--own", action="append", default=[], metavar="POLICY=WEIGHTS",
                   help="also run POLICY on a downstream trained for it (e.g. uniform=runs/lab/uniform_ft/model.safetensors); repeatable")
    _report_options(b, "runs/bench/<preset>")
    b.set_defaults(fn=cmd_bench)


def _add_latency(lt) -> None:
    lt.add_argument("--preset", default="paper", help="lab | paper | tiny (default paper)")
    lt.add_argument("--device", default="cuda", help="cpu | cuda | cuda:N (default cuda)")
    lt.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"], help="weights and activations (default bf16)")
    lt.add_argument("--policies", default="arrcoc,uniform,random,full", help="comma-separated policy names")
    lt.add_argument("--budgets", type=_budgets, default=(64, 100, 144, 256, 400), help="paper-geometry budgets (scaled for other presets)")
    lt.add_argument("--runs", type=_count(1), default=10, help="timed runs per point (default 10)")
    lt.add_argument("--warmup", type=_count(0), default=3, help="untimed runs first (default 3)")
    _report_options(lt, "runs/bench/<preset>_latency_<device>")
    lt.add_argument("--quiet", action="store_true", help="no progress bar")
    lt.set_defaults(fn=cmd_latency)


def _add_throughput(tp) -> None:
    _pipeline_options(tp)
    tp.add_argument("--batch-sizes", dest="batch_sizes", type=_budgets, default=(1, 4, 16),
                    help="pipe.batch sizes timed against one-by-one calls (default 1,4,16)")
    tp.add_argument("--items", type=_count(1), default=16, help="questions per timed pass (default 16)")
    tp.add_argument("--runs", type=_count(1), default=3, help="timed passes per setting, median (default 3)")
    tp.add_argument("--max-new-tokens", dest="max_new_tokens", type=_max_new_tokens, default=None,
                    help="answer length cap (default: the preset's)")
    tp.add_argument("--paper-preset", dest="paper_preset", default="paper",
                    help="preset whose geometry the allocation share and 64 vs 400 use, random weights (default "
                         "paper; tiny checks the code in seconds)")
    tp.add_argument("--paper-runs", dest="paper_runs", type=_count(1), default=2,
                    help="timed forwards per paper-geometry point (default 2: SAM ViT-B takes ~18 s on 2 CPU cores)")
    tp.add_argument("--paper-warmup", dest="paper_warmup", type=_count(0), default=1,
                    help="untimed paper-geometry forwards first (default 1)")
    _report_options(tp, "runs/bench/<preset>")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")
    tp.set_defaults(fn=cmd_throughput)


def _add_run_phase(r) -> None:
    from .runner import NOTEBOOK_FILES

    r.add_argument("name", metavar="NAME", help=" | ".join(NOTEBOOK_FILES))
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="notebook parameter (repeatable; a misspelt KEY is refused)")
    r.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    r.add_argument("--update-reports", dest="update_reports", action="store_true",
                   help="quickstart: write reports/quickstart/ instead of runs/quickstart/ (report runs always "
                        "write reports/<preset>/<name>/ unless -p output_dir)")
    r.set_defaults(fn=cmd_run_phase)


def _add_train(t) -> None:
    t.add_argument("--phase", required=True,
                   help="encoder (lab SAM pre-training, before phase0) | phase0 | phase1a | phase1 | phase2 | phase3 | uniform_ft")
    t.add_argument("--preset", default="lab", help="lab | paper | tiny (default lab)")
    t.add_argument("--init-from", dest="init_from", default=None,
                   help="weights to start from, or 'random' for the seeded initialisation (the default of --phase "
                        "encoder; other phases default to the preset's shipped weights)")
    t.add_argument("--out", required=True, help="run folder: checkpoints, model.safetensors, history.json")
    t.add_argument("--steps", type=_count(1), default=100, help="optimiser steps (default 100)")
    t.add_argument("--batch-size", dest="batch_size", type=_count(1), default=32, help="global batch")
    t.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=1000, help="training scenes (default 1000)")
    t.add_argument("--data", default="scenebench:train", help="a split or a mix, e.g. scenebench:train@12000+docsynth:train@2000")
    t.add_argument("--seed", type=_count(0), default=0, help="random seed (default 0)")
    t.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: the phase's)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, … (default cpu)")
    t.add_argument("--mixed-precision", dest="mixed_precision", default="no", choices=["no", "bf16", "fp16"],
                   help="Accelerate mixed precision (default no)")
    t.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true",
                   help="trade compute for memory")
    t.add_argument("--cache-dir", dest="cache_dir", default="cache", help="feature cache folder (default cache)")
    t.add_argument("--render-workers", dest="render_workers", type=_count(0), default=None,
                   help="processes rendering scenes while the feature cache is built (default: cores - 1, at most 8)")
    t.add_argument("--log-every", dest="log_every", type=_count(1), default=25, help="steps between log lines (default 25)")
    t.add_argument("--ckpt-every", dest="ckpt_every", type=_count(1), default=100, help="steps between checkpoints (default 100)")
    t.add_argument("--log-with", dest="log_with", default="auto",
                   help="experiment tracker: auto (TensorBoard when installed, events in OUT/tensorboard/), none, "
                        "wandb, … (default auto)")
    t.add_argument("--no-resume", dest="no_resume", action="store_true", help="start over even if --out holds a checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)


def _add_export(x) -> None:
    x.add_argument("weights", help="a phase's model.safetensors")
    x.add_argument("--preset", default="lab", help="lab | paper | tiny: the architecture of WEIGHTS (default lab)")
    x.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "weights" / "lab"),  # arrcoc_lab/weights/lab
                   help="folder to write (default: the package's arrcoc_lab/weights/lab/)")
    x.add_argument("--evaluation", default=None,
                   help="an eval report (metrics.json or its folder) of these weights, for the model card's table")
    x.set_defaults(fn=cmd_export)


def main(argv=None) -> int:
    """Run one subcommand. Refused input (a usage error, InputError, CheckpointError) is one line on
    stderr and exit status 2; a failed phase notebook is exit status 1; Ctrl+C is 130 (the demo,
    which stops cleanly on Ctrl+C, exits 0)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (one line, status 2) and --help (status 0)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("default", category=UserWarning)  # ours: untrained weights, truncation
            return args.fn(args)
    except (InputError, CheckpointError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
