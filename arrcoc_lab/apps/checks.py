"""The checks every `arrcoc-lab` handler (commands.py) makes before any work: the preset, paths,
datasets, policies, devices and output folders, each refused with an InputError / CheckpointError
that `main` prints as one line (exit status 2) before any model is built or scene rendered."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError, InputError

PAPER_PATHS = ("sam_checkpoint", "clip_pretrained", "llm_path")
PRESET_OPTIONS = {"paper": PAPER_PATHS, "hf-vlm": ("vlm_path", "vlm_image_size", "vlm_dtype")}
_PRESET_KWARG = {"vlm_image_size": "image_size", "vlm_dtype": "dtype"}  # the CLI flag's name → the preset's argument


def paper_paths(args) -> dict:
    """The preset's own options, as get_preset / load_pipeline keywords: --sam-checkpoint /
    --clip-pretrained / --llm-path for paper, --vlm-path / --vlm-image-size / --vlm-dtype for
    hf-vlm. An option given to a preset that does not read it is refused."""
    given = {k: getattr(args, k) for opts in PRESET_OPTIONS.values() for k in opts if getattr(args, k, None)}
    own = PRESET_OPTIONS.get(str(args.preset), ())
    foreign = [k for k in given if k not in own]
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        owner = next(p for p, opts in PRESET_OPTIONS.items() if foreign[0] in opts)
        raise InputError(f"{flags} apply to the {owner} preset, not {args.preset!r}; add --preset {owner}")
    return {_PRESET_KWARG.get(k, k): v for k, v in given.items()}


def check_pipeline_args(args) -> None:
    """What `load` will load, checked before anything else: the preset, the paper paths, the device
    and that the weights and config files exist."""
    from ..checkpoint import check_folder
    from ..pipeline import RANDOM, preset_folder, check_device

    paper_paths(args)
    folder = preset_folder(args.preset)
    if folder is not None:
        check_folder(folder, weights=args.weights is None)
    elif args.config is None:
        preset_config(args)
    check_device(args.device)
    if args.weights not in (None, RANDOM) and not Path(args.weights).is_file():
        raise CheckpointError(f"--weights: file not found: {args.weights}")
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"--config: file not found: {args.config}")


def preset_geometry(args):
    """The geometry the command will run at, known before any model is built: the preset's, or the
    config.json of a saved folder or of --config."""
    from ..pipeline import preset_folder, read_config

    folder = preset_folder(args.preset)
    if getattr(args, "config", None) is not None:
        return read_config(args.config).geometry
    if folder is not None:
        return read_config(folder / "config.json", CheckpointError).geometry
    return preset_config(args).geometry


def preset_config(args):
    """The preset's config as the command will build it (hf-vlm reads its VLM's config.json; the
    paper preset's checkpoint files are checked when the model loads)."""
    from ..modeling.presets import get_preset

    return get_preset(args.preset, **paper_paths(args)) if args.preset == "hf-vlm" else get_preset(args.preset)


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


def output_folder(args, name: str) -> Path:
    """--out; else runs/<name> (git-ignored), or reports/<name> with --update-reports: a command
    leaves the tracked reports alone unless asked."""
    out, update = getattr(args, "out", None), getattr(args, "update_reports", False)
    if out and update:
        raise InputError("give either --out or --update-reports, not both")
    return check_out_dir(out or f"{'reports' if update else 'runs'}/{name}", "--out")


def check_eval_data(spec: str, n_scenes: int, geometry) -> None:
    """A split `load_eval_set` can open for this geometry: a synthetic dataset and a known split, or
    a real dataset file in its own format (docvqa:/path/val_v1.0.json, textvqa:…, chartqa:…)."""
    from ..data import REAL, SYNTHETIC, load_dataset

    name = str(spec).split(":", 1)[0]
    if name not in SYNTHETIC and name not in REAL:
        raise InputError(f"--data {spec!r}: unknown dataset {name!r}; known: synthetic splits {sorted(SYNTHETIC)} "
                         f"(e.g. scenebench:test) and real files {sorted(REAL)} (e.g. docvqa:/data/val_v1.0.json)")
    if name in REAL:
        n, size = n_scenes, geometry.image_size
    else:
        n, size = n_scenes * SYNTHETIC[name].QUESTIONS_PER_SCENE, max(geometry.image_size, 32 * geometry.patch_size)
    try:
        load_dataset(spec, n=n, image_size=size, patch_size=geometry.patch_size)
    except (ValueError, OSError) as e:
        raise InputError(f"--data {spec!r}: {e}") from None


def check_train_data(spec: str, n_scenes: int, geometry, preset: str) -> None:
    """Every part of a training mix (sampling.parse_mix) opens at the size training renders it
    (sampling.render_size: the model's input, or 32 patches a side for the synthetic sets when the
    model has fewer, resized to its input as in evaluation)."""
    from ..data import SYNTHETIC, load_dataset
    from ..training.sampling import parse_mix, render_size

    for part, count in parse_mix(spec, n_scenes):
        name = part.split(":", 1)[0]
        per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
        try:
            load_dataset(part, n=count * per_scene, image_size=render_size(geometry, name),
                         patch_size=geometry.patch_size)
        except ValueError as e:
            raise InputError(f"--data {part!r}: {e}") from None


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
