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
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InputError

log = logging.getLogger("arrcoc_lab")


def _pipe(args):
    from ..pipeline import load_pipeline

    kwargs = {}
    if args.preset == "paper":
        kwargs = {k: getattr(args, k) for k in ("sam_checkpoint", "clip_pretrained", "llm_path") if getattr(args, k, None)}
    return load_pipeline(args.preset, weights=args.weights, config=args.config, device=args.device, **kwargs)


def _budget(text):
    """--budget, read by `rendering.parse_budget`; what it refuses is argparse's usage error."""
    from .rendering import parse_budget

    try:
        return parse_budget(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _report(out, expected: str | None = None) -> str:
    lines = [f"Q: {out.query}",
             f"A: {out.answer!r}" + (f"   (reference: {expected!r})" if expected is not None else ""),
             f"   policy {out.policy}, budget {out.budget}, {out.num_tokens} visual tokens "
             f"({out.compression_ratio:.1f}x fewer than full {out.full_tokens})"
             + (f", tier {out.tier}" if out.tier else ""),
             "   tokens per cell (shade = cell relevance):"]
    from .rendering import ascii_map

    lines += ["     " + row for row in ascii_map(out).splitlines()]
    lines.append("   timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in out.timings.items()))
    return "\n".join(lines)


def cmd_example(args) -> int:
    from PIL import Image

    from ..data.examples import example
    from .rendering import side_by_side

    pipe = _pipe(args)
    g = pipe.geometry
    ex = example("scenebench", args.index, image_size=g.image_size, patch_size=g.patch_size)
    print(f"ARR-COC Lab demo — preset {pipe.config.preset}, image {ex.name} ({ex.image.shape[1]}x{ex.image.shape[0]})")
    print(f"Same image, two questions, budget {args.budget or 'default'}:\n")
    outs = pipe.compare(ex.image, ex.questions, budget=args.budget, policy=args.policy)
    for out, ref in zip(outs, ex.answers):
        print(_report(out, ref) + "\n")
    diff = (outs[0].tokens_per_cell != outs[1].tokens_per_cell).sum()
    print(f"The two allocations differ in {diff} of {outs[0].tokens_per_cell.size} cells.")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "example_allocation.png"
    Image.fromarray(side_by_side(ex.image, outs, mode="tokens")).save(path)
    print(f"Allocation maps saved to {path}")
    return 0


def cmd_inspect(args) -> int:
    from PIL import Image

    from ..inputs import load_image
    from .rendering import overlay

    pipe = _pipe(args)
    out = pipe(args.image, args.question, budget=args.budget, policy=args.policy)
    print(_report(out))
    if args.out:
        Image.fromarray(overlay(load_image(args.image), out, mode=args.mode)).save(args.out)
        print(f"overlay saved to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run

    return run(args)


def cmd_run_phase(args) -> int:
    from .runner import PhaseFailed, parse_value, run_phase_notebook

    params = {k: parse_value(v) for k, v in (args.param or [])}
    try:
        path = run_phase_notebook(args.name, params, kernel=args.kernel)
    except PhaseFailed as e:
        print(f"arrcoc-lab: error: {e}", file=sys.stderr)
        return 1
    print(f"executed notebook: {path}")
    return 0


def cmd_eval(args) -> int:
    from ..evaluation.evaluate import run_eval

    pipe = _pipe(args)
    policies = args.policy.split(",")
    out_dir = args.out or (f"reports/eval/{args.data.replace(':', '-')}-{'-'.join(policies)}-{args.budget or 'default'}"
                           + ("-heldout" if args.phrasing == "heldout" else ""))
    report = run_eval(pipe, args.data, policies, args.budget, args.n_scenes, out_dir, cache_dir=args.cache_dir,
                      batch_size=args.batch_size, phrasing=args.phrasing)
    for policy, s in report["policies"].items():
        print(f"{policy:>12}: accuracy {s['accuracy']:.3f} (gist {s['accuracy_gist']:.3f}, detail {s['accuracy_detail']:.3f}), "
              f"{s['avg_tokens']:.1f} tokens, detail target lift {s['target_lift_detail']:.2f}, "
              f"query dependence {s['query_dependence'].get('rate', float('nan')):.2f}")
    print(f"report: {out_dir}/metrics.json")
    return 0


def _own(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        policy, sep, path = pair.partition("=")
        if not sep or not policy or not path:
            raise InputError(f"--own expects POLICY=WEIGHTS, got {pair!r}")
        out[policy] = path
    return out


def cmd_latency(args) -> int:
    from ..evaluation.latency import LatencyConfig, measure_latency, write_latency_report

    policies = tuple(args.policies.split(","))
    cfg = LatencyConfig(preset=args.preset, device=args.device, dtype=args.dtype, policies=policies,
                        paper_budgets=tuple(int(b) for b in args.budgets.split(",")), runs=args.runs,
                        warmup=args.warmup)
    out = write_latency_report(measure_latency(cfg, progress=not args.quiet),
                               args.out or f"reports/bench/{args.preset}_latency_{args.device.split(':')[0]}")
    print((out / "latency.md").read_text())
    return 0


def cmd_bench(args) -> int:
    from ..policies import POLICIES
    from ..evaluation.bench import BenchConfig, run_bench

    pipe = _pipe(args)
    policies = tuple(sorted(POLICIES)) if args.policies == "all" else tuple(args.policies.split(","))
    cfg = BenchConfig(data=tuple(args.data.split(",")), n_scenes=args.n_scenes, policies=policies,
                      paper_budgets=tuple(int(b) for b in args.budgets.split(",")), batch_size=args.batch_size,
                      flop_samples=args.flop_samples, paper_flops=not args.no_paper_flops,
                      max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir, own_weights=_own(args.own))
    out_dir = args.out or f"reports/bench/{pipe.config.preset}"
    report = run_bench(pipe, cfg, out_dir)
    for name in ("allocation_overhead", "pipeline_ratio"):
        if name in report["targets"]:
            t = report["targets"][name]
            print(f"{t['what']}: {100 * t['value']:.1f} % (target ≤ {100 * t['target']:.0f} %, "
                  f"{'met' if t['met'] else 'missed'} by {100 * abs(t['margin']):.1f} points)")
    for split, rows in report["targets"]["accuracy"].items():
        met = sum(r["met"] for r in rows)
        print(f"{split}: arrcoc beats uniform and random on detail (gist within 2 points) at {met}/{len(rows)} budgets")
    print(f"report: {out_dir}/report.md")
    return 0


def cmd_train(args) -> int:
    """One phase without a notebook (what `accelerate launch` / torchrun start for multi-process runs)."""
    from ..training.phases import get_phase
    from ..pipeline import RANDOM, load_pipeline
    from ..training.config import TrainConfig
    from ..training.loop import run_phase
    from ..training.sampling import load_train_data

    init_from = RANDOM if args.phase == "encoder" and args.init_from is None else args.init_from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(args.preset, weights=init_from)
    if args.phase == "encoder":
        return _train_encoder(pipe, args)
    overrides = {"steps": args.steps} | ({"lr": args.lr} if args.lr else {})
    phase = get_phase(args.phase, **overrides)
    cfg = TrainConfig(data=args.data, n_scenes=args.n_scenes, batch_size=args.batch_size, seed=args.seed,
                      device=args.device, mixed_precision=args.mixed_precision, cache_dir=args.cache_dir,
                      render_workers=args.render_workers, log_every=args.log_every, ckpt_every=args.ckpt_every, sample_log_every=args.log_every,
                      gradient_checkpointing=args.gradient_checkpointing, progress=not args.quiet)
    data = load_train_data(pipe.model, cfg)
    result = run_phase(pipe.model, data, phase, cfg, args.out, resume=not args.no_resume,
                       pipeline_config=pipe.config.to_dict())
    if result.history:
        print(f"{phase.name}: {result.steps} steps, last: " + ", ".join(
            f"{k} {v:.4g}" for k, v in result.history[-1].items() if isinstance(v, float)))
    return 0


def _train_encoder(pipe, args) -> int:
    """`train --phase encoder`: the lab SAM's pre-training (encoder_pretrain.py), before phase 0."""
    from ..training.encoder_pretrain import EncoderPretrainConfig, pretrain_encoder, scene_pixels

    if args.device != "cpu":
        pipe.model.to(args.device)
    cfg = EncoderPretrainConfig(data=args.data, n_scenes=args.n_scenes, steps=args.steps, batch_size=args.batch_size,
                                seed=args.seed, device=args.device, mixed_precision=args.mixed_precision,
                                log_every=args.log_every, ckpt_every=args.ckpt_every, progress=not args.quiet,
                                **({"lr": args.lr} if args.lr else {}))
    result = pretrain_encoder(pipe.model, scene_pixels(pipe.model, cfg), cfg, args.out, resume=not args.no_resume,
                              pipeline_config=pipe.config.to_dict())
    print(f"encoder: {result.steps} steps, last: " + ", ".join(
        f"{k} {v:.4g}" for k, v in result.history[-1].items() if isinstance(v, float)))
    return 0


def cmd_export(args) -> int:
    """Ship trained weights: fp16 safetensors + resolved config into the package (lab) or a folder."""
    import torch

    from dataclasses import replace

    from ..checkpoint import load_weights, save_weights
    from ..modeling.build import build
    from ..modeling.presets import get_preset

    built = build(get_preset(args.preset), load=False)
    model = built.model
    load_weights(model, args.weights)
    dest = Path(args.dest) / "model.safetensors"
    cfg = replace(built.config, weights=None)
    save_weights(model, dest, config=cfg.to_dict(), dtype=torch.float16, metadata={"source": args.weights})
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB) and {dest.with_name('config.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arrcoc-lab", description="ARR-COC Lab: query-aware adaptive visual-token compression")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_example, _add_inspect, _add_demo, _add_eval, _add_bench, _add_latency, _add_run_phase, _add_train, _add_export):
        add(sub)
    return p


def _pipeline_options(sp, allocation: bool = True) -> None:
    """What `_pipe` loads (preset, weights, config, device, paper checkpoints); `allocation`: policy, budget."""
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
    d.add_argument("--index", type=int, default=0, help="SceneBench test scene (default 0)")
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
    e.add_argument("--n-scenes", dest="n_scenes", type=int, default=100)
    e.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    e.add_argument("--cache-dir", dest="cache_dir", default="cache")
    e.add_argument("--out", default=None, help="report folder (default reports/eval/...)")
    e.add_argument("--phrasing", choices=("seen", "heldout"), default="seen", help="heldout: phrasings never used in training")
    e.set_defaults(fn=cmd_eval)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="every policy at equal budgets on SceneBench/DocSynth: accuracy, tokens, FLOPs, "
                                     "latency; writes reports/bench/<preset>/ (metrics.json, report.md, plots)")
    _pipeline_options(b, allocation=False)
    b.add_argument("--data", default="scenebench:test,docsynth:test", help="comma-separated splits")
    b.add_argument("--n-scenes", dest="n_scenes", type=int, default=5, help="scenes per split, 6 questions each")
    b.add_argument("--policies", default="all", help="comma-separated policy names, or all (default)")
    b.add_argument("--budgets", default="64,100,144,256,400",
                   help="paper-geometry budgets, scaled to the preset by n_cells/64; full is always added")
    b.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    b.add_argument("--flop-samples", dest="flop_samples", type=int, default=2, help="questions whose FLOPs are counted")
    b.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None)
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
    lt.add_argument("--budgets", default="64,100,144,256,400", help="paper-geometry budgets (scaled for other presets)")
    lt.add_argument("--runs", type=int, default=10)
    lt.add_argument("--warmup", type=int, default=3)
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
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--batch-size", dest="batch_size", type=int, default=32, help="global batch")
    t.add_argument("--n-scenes", dest="n_scenes", type=int, default=1000)
    t.add_argument("--data", default="scenebench:train")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default="cpu")
    t.add_argument("--mixed-precision", dest="mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    t.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", action="store_true")
    t.add_argument("--cache-dir", dest="cache_dir", default="cache")
    t.add_argument("--render-workers", dest="render_workers", type=int, default=None,
                   help="processes rendering scenes while the feature cache is built (default: cores - 1, at most 8)")
    t.add_argument("--log-every", dest="log_every", type=int, default=25)
    t.add_argument("--ckpt-every", dest="ckpt_every", type=int, default=100)
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("default", category=UserWarning)  # ours: untrained weights, truncation
            return args.fn(args)
    except (InputError, CheckpointError) as e:
        print(f"arrcoc-lab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
