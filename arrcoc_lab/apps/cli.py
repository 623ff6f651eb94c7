"""`arrcoc-lab` command line.

    arrcoc-lab demo                          # the Gradio app (make demo)
    arrcoc-lab example                       # the seeds' example in the terminal: one image, two questions
    arrcoc-lab inspect IMAGE "QUESTION" --budget 64 --policy arrcoc --out alloc.png
    arrcoc-lab eval --preset lab --data scenebench:test --policy arrcoc,uniform --budget 64
    arrcoc-lab bench --preset lab --weights W --n-scenes 20      # reports/bench/lab/report.md
    arrcoc-lab latency --preset paper --device cuda          # per-stage latency vs tokens, random weights
    arrcoc-lab run-phase phase0 -p steps 1500 -p output_dir reports/lab/phase0
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InputError
from .commands import (cmd_bench, cmd_demo, cmd_eval, cmd_example, cmd_export, cmd_inspect, cmd_latency,
                       cmd_run_phase, cmd_train)

log = logging.getLogger("arrcoc_lab")


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


def _max_new_tokens(text):
    from ..inputs import check_max_new_tokens

    try:
        return check_max_new_tokens(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="arrcoc-lab", description="ARR-COC Lab: query-aware adaptive visual-token compression")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_example, _add_inspect, _add_demo, _add_eval, _add_bench, _add_latency, _add_run_phase, _add_train, _add_export):
        add(sub)
    return p


def _pipeline_options(sp, allocation: bool = True) -> None:
    """What `commands.load` loads (preset, weights, config, device, paper checkpoints); `allocation`: policy, budget."""
    sp.add_argument("--preset", default="lab", help="lab | paper | tiny (default lab)")
    sp.add_argument("--weights", default=None, help="our safetensors weights (default: the shipped lab weights)")
    sp.add_argument("--config", default=None, help="a config.json that replaces the preset")
    sp.add_argument("--device", default=None, help="cpu, cuda, … (default cpu)")
    if allocation:
        sp.add_argument("--policy", default="arrcoc", help="allocation policy (default arrcoc)")
        sp.add_argument("--budget", type=_budget, default=None, help="tokens, or fast/balanced/accurate/default")
    sp.add_argument("--sam-checkpoint", dest="sam_checkpoint", default=None, help="paper: official SAM .pth")
    sp.add_argument("--clip-pretrained", dest="clip_pretrained", default=None, help="paper: open_clip checkpoint")
    sp.add_argument("--llm-path", dest="llm_path", default=None, help="paper: Hugging Face model directory")


def _add_example(sub) -> None:
    d = sub.add_parser("example", help="one bundled image, two questions: answers, tokens, allocation maps (text)")
    _pipeline_options(d)
    d.add_argument("--index", type=_count(0), default=0, help="SceneBench test scene (default 0)")
    d.add_argument("--out", default="runs/example", help="folder for the allocation PNG")
    d.set_defaults(fn=cmd_example)


def _add_inspect(sub) -> None:
    i = sub.add_parser("inspect", help="one image, one question")
    _pipeline_options(i)
    i.add_argument("image")
    i.add_argument("question")
    i.add_argument("--out", default=None, help="save the overlay PNG here")
    i.add_argument("--mode", default="tokens", choices=["relevance", "tokens", "levels"])
    i.set_defaults(fn=cmd_inspect)


def _add_demo(sub) -> None:
    from .demo import add_arguments  # light: imports neither gradio nor torch

    dm = sub.add_parser("demo", help="Gradio web demo on the shipped lab weights (prints its URL; --share for a public link)")
    add_arguments(dm)
    dm.set_defaults(fn=cmd_demo)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate policies on a dataset split; writes metrics JSON and figures")
    _pipeline_options(e)
    e.add_argument("--data", default="scenebench:test", help="scenebench|docsynth:train|val|test")
    e.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=100)
    e.add_argument("--batch-size", dest="batch_size", type=_count(1), default=32)
    e.add_argument("--cache-dir", dest="cache_dir", default="cache")
    e.add_argument("--out", default=None, help="report folder (default reports/eval/...)")
    e.add_argument("--phrasing", choices=("seen", "heldout"), default="seen", help="heldout: phrasings never used in training")
    e.set_defaults(fn=cmd_eval)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="every policy at equal budgets on SceneBench/DocSynth: accuracy, tokens, FLOPs, "
                                     "latency; writes reports/bench/<preset>/ (metrics.json, report.md, plots)")
    _pipeline_options(b, allocation=False)
    b.add_argument("--data", default="scenebench:test,docsynth:test", help="comma-separated splits")
    b.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=5, help="scenes per split, 6 questions each")
    b.add_argument("--policies", default="all", help="comma-separated policy names, or all (default)")
    b.add_argument("--budgets", type=_budgets, default=(64, 100, 144, 256, 400),
                   help="paper-geometry budgets, scaled to the preset by n_cells/64; full is always added")
    b.add_argument("--batch-size", dest="batch_size", type=_count(1), default=8)
    b.add_argument("--flop-samples", dest="flop_samples", type=_count(0), default=2, help="questions whose FLOPs are counted")
    b.add_argument("--max-new-tokens", dest="max_new_tokens", type=_max_new_tokens, default=None)
    b.add_argument("--no-paper-flops", dest="no_paper_flops", action="store_true",
                   help="skip counting FLOPs at the paper geometry")
    b.add_argument("--cache-dir", dest="cache_dir", default="cache")
    b.add_argument("--own", action="append", default=[], metavar="POLICY=WEIGHTS",
                   help="also run POLICY on a downstream trained for it (e.g. uniform=runs/lab/uniform_ft/model.safetensors); repeatable")
    b.add_argument("--out", default=None, help="report folder (default reports/bench/<preset>)")
    b.set_defaults(fn=cmd_bench)


def _add_latency(sub) -> None:
    lt = sub.add_parser("latency", help="latency per stage vs tokens (paper geometry with random weights by default; "
                                         "on a GPU with --device cuda); writes latency.json/.md and a plot")
    lt.add_argument("--preset", default="paper")
    lt.add_argument("--device", default="cuda", help="cpu | cuda | cuda:N")
    lt.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    lt.add_argument("--policies", default="arrcoc,uniform,random,full")
    lt.add_argument("--budgets", type=_budgets, default=(64, 100, 144, 256, 400), help="paper-geometry budgets (scaled for other presets)")
    lt.add_argument("--runs", type=_count(1), default=10)
    lt.add_argument("--warmup", type=_count(0), default=3)
    lt.add_argument("--out", default=None, help="report folder (default reports/bench/<preset>_latency_<device>)")
    lt.add_argument("--quiet", action="store_true")
    lt.set_defaults(fn=cmd_latency)


def _add_run_phase(sub) -> None:
    r = sub.add_parser("run-phase", help="run a phase notebook through papermill (reports/<preset>/<phase>/)")
    r.add_argument("name", help="phase0 | phase1a | phase1 | phase2 | phase3 | evaluation | probe | benchmark")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="notebook parameter")
    r.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    r.set_defaults(fn=cmd_run_phase)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="run one training phase directly (use with accelerate launch / torchrun)")
    t.add_argument("--phase", required=True,
                   help="encoder (lab SAM pre-training, before phase0) | phase0 | phase1a | phase1 | phase2 | phase3 | uniform_ft")
    t.add_argument("--preset", default="lab")
    t.add_argument("--init-from", dest="init_from", default=None,
                   help="weights to start from, or 'random' for the seeded initialisation (the default of --phase "
                        "encoder; other phases default to the preset's shipped weights)")
    t.add_argument("--out", required=True, help="run folder: checkpoints, model.safetensors, history.json")
    t.add_argument("--steps", type=_count(1), default=100)
    t.add_argument("--batch-size", dest="batch_size", type=_count(1), default=32, help="global batch")
    t.add_argument("--n-scenes", dest="n_scenes", type=_count(1), default=1000)
    t.add_argument("--data", default="scenebench:train")
    t.add_argument("--seed", type=_count(0), default=0)
    t.add_argument("--lr", type=_positive_float, default=None)
    t.add_argument("--device", default="cpu")
    t.add_argument("--mixed-precision", dest="mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    t.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true")
    t.add_argument("--cache-dir", dest="cache_dir", default="cache")
    t.add_argument("--render-workers", dest="render_workers", type=_count(0), default=None,
                   help="processes rendering scenes while the feature cache is built (default: cores - 1, at most 8)")
    t.add_argument("--log-every", dest="log_every", type=_count(1), default=25)
    t.add_argument("--ckpt-every", dest="ckpt_every", type=_count(1), default=100)
    t.add_argument("--no-resume", dest="no_resume", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=cmd_train)


def _add_export(sub) -> None:
    x = sub.add_parser("export", help="write trained weights as fp16 safetensors + config (the shipped lab weights)")
    x.add_argument("weights", help="a phase's model.safetensors")
    x.add_argument("--preset", default="lab")
    x.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "weights" / "lab"))  # arrcoc_lab/weights/lab
    x.set_defaults(fn=cmd_export)


def main(argv=None) -> int:
    """Run one subcommand. Refused input (a usage error, InputError, CheckpointError) is one line on
    stderr and exit status 2; a failed phase notebook is exit status 1."""
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
        print(f"arrcoc-lab: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arrcoc-lab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
