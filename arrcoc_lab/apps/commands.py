"""What each `arrcoc-lab` subcommand does (cli.py holds the parser). Every handler checks its
arguments first — paths, datasets, policies, devices, what a resumed run was started with — and
raises InputError / CheckpointError before any model is built or any scene is rendered; `main`
prints that as one line and exits 2."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InputError

PAPER_PATHS = ("sam_checkpoint", "clip_pretrained", "llm_path")


# ------------------------------------------------------------------------------ checks
def paper_paths(args) -> dict:
    """--sam-checkpoint / --clip-pretrained / --llm-path: only the paper preset reads them."""
    paths = {k: getattr(args, k) for k in PAPER_PATHS if getattr(args, k, None)}
    if paths and args.preset != "paper":
        flags = ", ".join("--" + k.replace("_", "-") for k in paths)
        raise InputError(f"{flags} apply to the paper preset, not {args.preset!r}; add --preset paper")
    return paths


def check_pipeline_args(args) -> None:
    """What `load` will load, checked before anything else: the preset, the paper paths, the device
    and that the weights and config files exist."""
    from ..modeling.presets import get_preset
    from ..pipeline import RANDOM, check_device

    if args.config is None:
        get_preset(args.preset)
    paper_paths(args)
    check_device(args.device)
    if args.weights not in (None, RANDOM) and not Path(args.weights).is_file():
        raise CheckpointError(f"--weights: file not found: {args.weights}")
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"--config: file not found: {args.config}")


def check_policies(names) -> list[str]:
    from ..policies import get_policy

    return [get_policy(n.strip()).name for n in names]


def check_out_image(path: str | None) -> Path | None:
    """An image file to write: an extension PIL writes, in a folder that exists or can be made."""
    if path is None:
        return None
    from PIL import Image

    out = Path(path)
    Image.init()
    ext = out.suffix.lower()
    if Image.registered_extensions().get(ext) not in Image.SAVE:
        raise InputError(f"--out {path}: cannot write {ext or 'a file without an extension'}; accepted: .png, .jpg, "
                         ".webp, .bmp, .tif")
    if out.is_dir():
        raise InputError(f"--out {path} is a folder; give a file name, e.g. {out / 'overlay.png'}")
    check_out_dir(out.parent, f"--out {path}")
    return out


def check_out_dir(folder: str | Path, what: str) -> Path:
    """A folder to write into: it exists, or its nearest existing parent is a writable folder."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise InputError(f"{what}: cannot write into {probe}")
    return folder


def check_eval_data(spec: str, n_scenes: int, geometry) -> None:
    """A split `load_eval_set` can open for this geometry: a synthetic dataset and a known split."""
    from ..data import SYNTHETIC, load_dataset

    name = str(spec).split(":", 1)[0]
    if name not in SYNTHETIC:
        raise InputError(f"--data {spec!r}: evaluation needs a synthetic split, e.g. scenebench:test; known datasets: "
                         f"{sorted(SYNTHETIC)}")
    render = max(geometry.image_size, 32 * geometry.patch_size)
    try:
        load_dataset(spec, n=n_scenes * SYNTHETIC[name].QUESTIONS_PER_SCENE, image_size=render,
                     patch_size=geometry.patch_size)
    except ValueError as e:
        raise InputError(f"--data {spec!r}: {e}") from None


def check_train_data(spec: str, n_scenes: int, geometry, preset: str) -> None:
    """Every part of a training mix (sampling.parse_mix) opens at the model's own input size."""
    from ..data import SYNTHETIC, load_dataset
    from ..training.sampling import parse_mix

    for part, count in parse_mix(spec, n_scenes):
        name = part.split(":", 1)[0]
        per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
        try:
            load_dataset(part, n=count * per_scene, image_size=geometry.image_size, patch_size=geometry.patch_size)
        except ValueError as e:
            hint = (f"; the {preset} preset's {geometry.image_size}-px input is too small for the synthetic sets' "
                    "training renders: train the lab or paper preset" if name in SYNTHETIC
                    and geometry.image_size // geometry.patch_size < 32 else "")
            raise InputError(f"--data {part!r}: {e}{hint}") from None


# ------------------------------------------------------------------------------ shared
def load(args):
    from ..pipeline import load_pipeline

    return load_pipeline(args.preset, weights=args.weights, config=args.config, device=args.device,
                         **paper_paths(args))


def report(out, expected: str | None = None) -> str:
    from .rendering import ascii_map

    lines = [f"Q: {out.query}",
             f"A: {out.answer!r}" + (f"   (reference: {expected!r})" if expected is not None else ""),
             f"   policy {out.policy}, budget {out.budget}, {out.num_tokens} visual tokens "
             f"({out.compression_ratio:.1f}x fewer than full {out.full_tokens})"
             + (f", tier {out.tier}" if out.tier else ""),
             "   tokens per cell (shade = cell relevance):"]
    lines += ["     " + row for row in ascii_map(out).splitlines()]
    lines.append("   timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in out.timings.items()))
    return "\n".join(lines)


def _save_png(rgb, path: Path) -> None:
    from PIL import Image

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot write {path}: {e}") from None


# ------------------------------------------------------------------------------ commands
def cmd_example(args) -> int:
    from ..data.examples import example
    from ..data.types import MAX_SCENES_PER_SPLIT
    from .rendering import side_by_side

    check_pipeline_args(args)
    if not 0 <= args.index < MAX_SCENES_PER_SPLIT:
        raise InputError(f"--index {args.index}: accepted: 0..{MAX_SCENES_PER_SPLIT - 1}")
    out_dir = check_out_dir(args.out, "--out")
    if out_dir.is_file():
        raise InputError(f"--out {args.out} is a file; give a folder")
    check_policies([args.policy])
    pipe = load(args)
    g = pipe.geometry
    try:
        ex = example("scenebench", args.index, image_size=g.image_size, patch_size=g.patch_size)
    except ValueError:  # geometries too small for the generator (tiny): the default size, as any image
        ex = example("scenebench", args.index)
    print(f"ARR-COC Lab demo — preset {pipe.config.preset}, image {ex.name} ({ex.image.shape[1]}x{ex.image.shape[0]})")
    print(f"Same image, two questions, budget {args.budget or 'default'}:\n")
    outs = pipe.compare(ex.image, ex.questions, budget=args.budget, policy=args.policy)
    for out, ref in zip(outs, ex.answers):
        print(report(out, ref) + "\n")
    diff = (outs[0].tokens_per_cell != outs[1].tokens_per_cell).sum()
    print(f"The two allocations differ in {diff} of {outs[0].tokens_per_cell.size} cells.")
    path = out_dir / "example_allocation.png"
    _save_png(side_by_side(ex.image, outs, mode="tokens"), path)
    print(f"Allocation maps saved to {path}")
    return 0


def cmd_inspect(args) -> int:
    from ..inputs import check_query, load_image
    from .rendering import overlay

    check_pipeline_args(args)
    out_path = check_out_image(args.out)
    check_query(args.question)
    check_policies([args.policy])
    image = load_image(args.image)  # read and checked once, before the model loads
    pipe = load(args)
    out = pipe(image, args.question, budget=args.budget, policy=args.policy)
    print(report(out))
    if out_path is not None:
        _save_png(overlay(image, out, mode=args.mode), out_path)
        print(f"overlay saved to {out_path}")
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
    from ..modeling.presets import get_preset

    check_pipeline_args(args)
    policies = check_policies(args.policy.split(","))
    check_eval_data(args.data, args.n_scenes, get_preset(args.preset).geometry)
    pipe = load(args)
    check_eval_data(args.data, args.n_scenes, pipe.geometry)  # a --config may change the geometry
    out_dir = args.out or (f"reports/eval/{args.data.replace(':', '-')}-{'-'.join(policies)}-{args.budget or 'default'}"
                           + ("-heldout" if args.phrasing == "heldout" else ""))
    check_out_dir(out_dir, "--out")
    pipe.resolve(policies[0], args.budget)  # the budget against this geometry, before any scene renders
    report_ = run_eval(pipe, args.data, policies, args.budget, args.n_scenes, out_dir, cache_dir=args.cache_dir,
                       batch_size=args.batch_size, phrasing=args.phrasing)
    for policy, s in report_["policies"].items():
        print(f"{policy:>12}: accuracy {s['accuracy']:.3f} (gist {s['accuracy_gist']:.3f}, detail {s['accuracy_detail']:.3f}), "
              f"{s['avg_tokens']:.1f} tokens, detail target lift {s['target_lift_detail']:.2f}, "
              f"query dependence {s['query_dependence'].get('rate', float('nan')):.2f}")
    print(f"report: {out_dir}/metrics.json")
    return 0


def own_weights(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        policy, sep, path = pair.partition("=")
        if not sep or not policy or not path:
            raise InputError(f"--own expects POLICY=WEIGHTS, got {pair!r}")
        check_policies([policy])
        if not Path(path).is_file():
            raise CheckpointError(f"--own {pair}: weights file not found: {path}")
        out[policy] = path
    return out


def cmd_latency(args) -> int:
    from ..evaluation.latency import LatencyConfig, measure_latency, write_latency_report
    from ..modeling.presets import get_preset
    from ..pipeline import check_device

    get_preset(args.preset)
    check_device(args.device)
    policies = tuple(check_policies(args.policies.split(",")))
    cfg = LatencyConfig(preset=args.preset, device=args.device, dtype=args.dtype, policies=policies,
                        paper_budgets=args.budgets, runs=args.runs, warmup=args.warmup)
    out_dir = check_out_dir(args.out or f"reports/bench/{args.preset}_latency_{args.device.split(':')[0]}", "--out")
    out = write_latency_report(measure_latency(cfg, progress=not args.quiet), out_dir)
    print((out / "latency.md").read_text())
    return 0


def cmd_bench(args) -> int:
    from ..evaluation.bench import BenchConfig, run_bench
    from ..modeling.presets import get_preset
    from ..policies import POLICIES

    check_pipeline_args(args)
    policies = tuple(sorted(POLICIES)) if args.policies == "all" else tuple(check_policies(args.policies.split(",")))
    data = tuple(s.strip() for s in args.data.split(","))
    for spec in data:
        check_eval_data(spec, args.n_scenes, get_preset(args.preset).geometry)
    own = own_weights(args.own)
    pipe = load(args)
    cfg = BenchConfig(data=data, n_scenes=args.n_scenes, policies=policies, paper_budgets=args.budgets,
                      batch_size=args.batch_size, flop_samples=args.flop_samples, paper_flops=not args.no_paper_flops,
                      max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir, own_weights=own)
    out_dir = check_out_dir(args.out or f"reports/bench/{pipe.config.preset}", "--out")
    result = run_bench(pipe, cfg, out_dir)
    for name in ("allocation_overhead", "pipeline_ratio"):
        if name in result["targets"]:
            t = result["targets"][name]
            print(f"{t['what']}: {100 * t['value']:.1f} % (target ≤ {100 * t['target']:.0f} %, "
                  f"{'met' if t['met'] else 'missed'} by {100 * abs(t['margin']):.1f} points)")
    for split, rows in result["targets"]["accuracy"].items():
        met = sum(r["met"] for r in rows)
        print(f"{split}: arrcoc beats uniform and random on detail (gist within 2 points) at {met}/{len(rows)} budgets")
    print(f"report: {out_dir}/report.md")
    return 0


def cmd_train(args) -> int:
    """One phase without a notebook (what `accelerate launch` / torchrun start for multi-process runs).
    Checked first: the phase, the device, the data at the preset's size, and (resuming) that the
    run folder's checkpoint was written with these settings — all before any scene is rendered."""
    from ..modeling.presets import get_preset
    from ..pipeline import RANDOM, check_device, load_pipeline
    from ..training.checkpoints import check_resume
    from ..training.config import TrainConfig
    from ..training.loop import run_config, run_phase
    from ..training.phases import get_phase
    from ..training.sampling import load_train_data

    check_device(args.device)
    geometry = get_preset(args.preset).geometry
    check_out_dir(args.out, "--out")
    phase = None
    if args.phase != "encoder":
        phase = get_phase(args.phase, **({"steps": args.steps} | ({"lr": args.lr} if args.lr else {})))
        check_train_data(args.data, args.n_scenes, geometry, args.preset)
    init_from = RANDOM if args.phase == "encoder" and args.init_from is None else args.init_from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(args.preset, weights=init_from)
    if args.phase == "encoder":
        return _train_encoder(pipe, args)
    cfg = TrainConfig(data=args.data, n_scenes=args.n_scenes, batch_size=args.batch_size, seed=args.seed,
                      device=args.device, mixed_precision=args.mixed_precision, cache_dir=args.cache_dir,
                      render_workers=args.render_workers, log_every=args.log_every, ckpt_every=args.ckpt_every,
                      sample_log_every=args.log_every, gradient_checkpointing=args.gradient_checkpointing,
                      progress=not args.quiet)
    if not args.no_resume:  # the same check run_phase makes, before the feature cache is built
        check_resume(Path(args.out), run_config(phase, cfg, pipe.config.to_dict()))
    data = load_train_data(pipe.model, cfg)
    result = run_phase(pipe.model, data, phase, cfg, args.out, resume=not args.no_resume,
                       pipeline_config=pipe.config.to_dict())
    if result.history:
        print(f"{phase.name}: {result.steps} steps, last: " + ", ".join(
            f"{k} {v:.4g}" for k, v in result.history[-1].items() if isinstance(v, float)))
    return 0


def _train_encoder(pipe, args) -> int:
    """`train --phase encoder`: the lab SAM's pre-training (encoder_pretrain.py), before phase 0."""
    from dataclasses import asdict

    from ..training.checkpoints import check_resume
    from ..training.encoder_pretrain import EncoderPretrainConfig, pretrain_encoder, scene_pixels

    if args.device != "cpu":
        pipe.model.to(args.device)
    cfg = EncoderPretrainConfig(data=args.data, n_scenes=args.n_scenes, steps=args.steps, batch_size=args.batch_size,
                                seed=args.seed, device=args.device, mixed_precision=args.mixed_precision,
                                log_every=args.log_every, ckpt_every=args.ckpt_every, progress=not args.quiet,
                                **({"lr": args.lr} if args.lr else {}))
    if not args.no_resume:  # the settings a resumed run was started with, before any scene renders
        check_resume(Path(args.out), {"encoder_pretrain": asdict(cfg), "pipeline": pipe.config.to_dict()})
    result = pretrain_encoder(pipe.model, scene_pixels(pipe.model, cfg), cfg, args.out, resume=not args.no_resume,
                              pipeline_config=pipe.config.to_dict())
    print(f"encoder: {result.steps} steps, last: " + ", ".join(
        f"{k} {v:.4g}" for k, v in result.history[-1].items() if isinstance(v, float)))
    return 0


def cmd_export(args) -> int:
    """Ship trained weights: fp16 safetensors + resolved config into the package (lab) or a folder."""
    from dataclasses import replace

    import torch

    from ..checkpoint import load_weights, save_weights
    from ..modeling.build import build
    from ..modeling.presets import get_preset

    cfg = get_preset(args.preset)
    if not Path(args.weights).is_file():
        raise CheckpointError(f"weights file not found: {args.weights}")
    dest = check_out_dir(args.dest, "--dest") / "model.safetensors"
    built = build(cfg, load=False)
    model = built.model
    load_weights(model, args.weights)
    save_weights(model, dest, config=replace(built.config, weights=None).to_dict(), dtype=torch.float16,
                 metadata={"source": args.weights})
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB) and {dest.with_name('config.json')}")
    return 0
