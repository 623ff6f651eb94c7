"""What each `arrcoc-lab` subcommand does (cli.py holds the parser). Every handler checks its
arguments first (checks.py: paths, datasets, policies, devices, output folders; what a resumed
run was started with) and raises InputError / CheckpointError before any model is built or any
scene is rendered; `main` prints that as one line and exits 2."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ..errors import CheckpointError, InputError
from .checks import (check_eval_data, check_out_dir, check_out_image, check_pipeline_args, check_policies,
                     check_train_data, output_folder, own_weights, paper_paths, preset_geometry)


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


def cmd_examples(args) -> int:
    """The shipped example images: name, size, description, source, questions (answers where known)."""
    import json

    from ..examples import EXAMPLE_PREFIX, examples_dir, get_example, list_examples

    chosen = [get_example(n) for n in args.names] if args.names else list_examples()
    if args.json:
        print(json.dumps([{"name": e.name, "image": f"{EXAMPLE_PREFIX}{e.name}", "path": str(e.path),
                           "width": e.size[0], "height": e.size[1], "bytes": e.path.stat().st_size, "kind": e.kind,
                           "description": e.description, "source": e.source,
                           "questions": [{"question": q.question, "answer": q.answer, "kind": q.kind}
                                         for q in e.questions]} for e in chosen], indent=2, ensure_ascii=False))
        return 0
    first = chosen[0]
    print(f"{len(chosen)} example image{'s' if len(chosen) > 1 else ''} shipped with arrcoc-lab ({examples_dir()}).")
    print(f"Give one wherever a command takes an IMAGE, as {EXAMPLE_PREFIX}NAME:")
    print(f'  arrcoc-lab inspect {EXAMPLE_PREFIX}{first.name} "{first.questions[0].question}"')
    print(f"  arrcoc-lab inspect {EXAMPLE_PREFIX}{first.name}     (its first question, with the reference answer)")
    for e in chosen:
        w, h = e.size
        print(f"\n{e.name}   {w}x{h} px, {e.path.stat().st_size / 1024:.0f} KB")
        print(f"  {e.description}")
        print(f"  source: {e.source}")
        for q in e.questions:
            print(f"  - ({q.kind}) {q.question}" + (f"  -> {q.answer}" if q.answer is not None else ""))
    return 0


def cmd_inspect(args) -> int:
    from ..examples import get_example, is_example_ref
    from ..inputs import check_query, load_image
    from .rendering import describe, overlay_figure

    check_pipeline_args(args)
    out_path = check_out_image(args.out)
    shipped = get_example(args.image) if is_example_ref(args.image) else None  # unknown names: the list
    question = args.question
    if question is None:
        if shipped is None:
            raise InputError("inspect needs a QUESTION after the image; only example:NAME images bring questions of "
                             "their own (arrcoc-lab examples lists them)")
        question = shipped.questions[0].question
    check_query(question)
    check_policies([args.policy])
    image = load_image(args.image)  # read and checked once, before the model loads
    pipe = load(args)
    out = pipe(image, question, budget=args.budget, policy=args.policy)
    reference = shipped.answer_for(question) if shipped is not None else None
    print(report(out, reference))
    if out_path is not None:  # the overlay with a heading (question, answer, tokens) and its colour bar and legend
        _save_png(overlay_figure(image, out, mode=args.mode, levels=pipe.geometry.levels,
                                 head=describe(out, reference)), out_path)
        print(f"overlay saved to {out_path}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run

    return run(args)


def cmd_run_phase(args) -> int:
    from .runner import PhaseFailed, parse_value, run_phase_notebook

    params = {k: parse_value(v) for k, v in (args.param or [])}
    try:
        path = run_phase_notebook(args.name, params, kernel=args.kernel,
                                  update_reports=getattr(args, "update_reports", False))
    except PhaseFailed as e:
        print(f"arrcoc-lab: error: {e}", file=sys.stderr)
        return 1
    print(f"executed notebook: {path}")
    return 0


def _shard(args):
    """This process's share under a launcher (torchrun, accelerate launch; a lone process: all of
    it), with args.device made this process's own GPU where a bare "cuda" was given."""
    from ..evaluation.distributed import current_shard, process_device

    args.device = process_device(args.device)
    return current_shard(args.device)


def cmd_eval(args) -> int:
    """Several processes (a launcher) share the scenes; the main one merges, writes and prints."""
    from ..evaluation.distributed import finish
    from ..evaluation.evaluate import run_eval

    check_pipeline_args(args)
    policies = check_policies(args.policy.split(","))
    check_eval_data(args.data, args.n_scenes, preset_geometry(args))
    out_dir = output_folder(args, f"eval/{args.data.replace(':', '-')}-{'-'.join(policies)}-{args.budget or 'default'}"
                                  + ("-heldout" if args.phrasing == "heldout" else ""))
    shard = _shard(args)
    pipe = load(args)
    check_eval_data(args.data, args.n_scenes, pipe.geometry)  # a --config may change the geometry
    pipe.resolve(policies[0], args.budget)  # the budget against this geometry, before any scene renders
    report_ = run_eval(pipe, args.data, policies, args.budget, args.n_scenes, out_dir, cache_dir=args.cache_dir,
                       batch_size=args.batch_size, phrasing=args.phrasing, shard=shard)
    finish(shard)
    if report_ is None:  # not the main process
        return 0
    from ..evaluation.evaluate import eval_table

    print(eval_table(report_) + (f"({shard.world} processes)\n" if shard.world > 1 else ""))
    print(f"report: {out_dir}/metrics.json")
    return 0


def cmd_read_signs(args) -> int:
    from ..evaluation.evaluate import load_eval_set
    from ..evaluation.sign_reading import check_levels, reading_table, sign_reading

    check_pipeline_args(args)
    geometry = preset_geometry(args)
    check_eval_data(args.data, args.n_scenes, geometry)
    if args.levels is not None:
        check_levels(args.levels, geometry)
    out_dir = output_folder(args, f"read-signs/{args.data.replace(':', '-')}")
    pipe = load(args)
    es = load_eval_set(pipe.model, args.data, args.n_scenes, args.cache_dir, progress=args.verbose)
    results = sign_reading(pipe.model, es, args.levels, progress=args.verbose)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"data": args.data, "n_scenes": args.n_scenes,
                                                      "weights": pipe.config.weights,
                                                      "levels": [r.to_dict() for r in results]}, indent=2))
    print(reading_table(results) + f"report: {out_dir}/metrics.json")
    return 0


def cmd_latency(args) -> int:
    from ..evaluation.latency import LatencyConfig, measure_latency, write_latency_report
    from ..modeling.presets import get_preset
    from ..pipeline import check_device

    get_preset(args.preset)
    check_device(args.device)
    policies = tuple(check_policies(args.policies.split(",")))
    cfg = LatencyConfig(preset=args.preset, device=args.device, dtype=args.dtype, policies=policies,
                        paper_budgets=args.budgets, runs=args.runs, warmup=args.warmup)
    out_dir = output_folder(args, f"bench/{args.preset}_latency_{args.device.split(':')[0]}")
    out = write_latency_report(measure_latency(cfg, progress=not args.quiet), out_dir)
    print((out / "latency.md").read_text())
    return 0


def cmd_throughput(args) -> int:
    """Four speed measurements against their goals (evaluation/throughput.py), into the bench folder."""
    from ..evaluation.throughput import GOALS, ThroughputConfig, measure_throughput, write_throughput_report
    from ..modeling.presets import get_preset

    check_pipeline_args(args)
    check_policies([args.policy])
    get_preset(args.paper_preset)
    output_folder(args, f"bench/{Path(args.preset).name}")  # --out / --update-reports checked before the model loads
    pipe = load(args)
    pipe.resolve(args.policy, args.budget)
    cfg = ThroughputConfig(batch_sizes=args.batch_sizes, items=args.items, runs=args.runs, policy=args.policy,
                           budget=args.budget, max_new_tokens=args.max_new_tokens, paper_preset=args.paper_preset,
                           paper_runs=args.paper_runs, paper_warmup=args.paper_warmup, device=args.device or "cpu")
    out_dir = output_folder(args, f"bench/{pipe.config.preset}")
    result = measure_throughput(pipe, cfg, progress=not args.quiet)
    write_throughput_report(result, out_dir)
    for name, g in result["goals"].items():
        print(f"{name}: {g['value']:.3g} (goal {g['comparison']} {g['goal']:g}: {'met' if g['met'] else 'missed'}) "
              f"— {GOALS[name][2]}")
    print(f"report: {out_dir}/throughput.md")
    return 0


def cmd_bench(args) -> int:
    """Several processes (a launcher) share the scenes; the main one merges, writes and prints."""
    from ..evaluation.bench import BenchConfig, run_bench
    from ..evaluation.distributed import finish
    from ..policies import POLICIES

    check_pipeline_args(args)
    policies = tuple(sorted(POLICIES)) if args.policies == "all" else tuple(check_policies(args.policies.split(",")))
    data = tuple(s.strip() for s in args.data.split(","))
    for spec in data:
        check_eval_data(spec, args.n_scenes, preset_geometry(args))
    own = own_weights(args.own)
    output_folder(args, f"bench/{Path(args.preset).name}")  # --out / --update-reports checked before the model loads
    shard = _shard(args)
    pipe = load(args)
    cfg = BenchConfig(data=data, n_scenes=args.n_scenes, policies=policies, paper_budgets=args.budgets,
                      batch_size=args.batch_size, flop_samples=args.flop_samples, paper_flops=not args.no_paper_flops,
                      max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir, own_weights=own)
    out_dir = output_folder(args, f"bench/{pipe.config.preset}")
    result = run_bench(pipe, cfg, out_dir, shard=shard)
    finish(shard)
    if result is None:  # not the main process
        return 0
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

    from ..training.tracking import trackers

    check_device(args.device)
    trackers(args.log_with)
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
                      progress=not args.quiet, log_with=args.log_with)
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
    """Ship trained weights as a Hugging Face model folder (Pipeline.save_pretrained): fp16
    model.safetensors, the resolved config.json and a model card, into the package (lab) or --dest."""
    import torch

    from ..modeling.presets import get_preset
    from ..pipeline import load_pipeline

    get_preset(args.preset)
    if not Path(args.weights).is_file():
        raise CheckpointError(f"weights file not found: {args.weights}")
    if args.evaluation is not None and not Path(args.evaluation).exists():
        raise InputError(f"--evaluation: not found: {args.evaluation}")
    dest = check_out_dir(args.dest, "--dest")
    pipe = load_pipeline(args.preset, weights=args.weights)
    pipe.save_pretrained(dest, evaluation=args.evaluation, dtype=torch.float16)
    weights = dest / "model.safetensors"
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB), {dest / 'config.json'} and the model card "
          f"{dest / 'README.md'}")
    return 0
