"""Training: every phase runs, losses fall on a fixed batch, a SIGKILLed run resumes to the same
weights, a 2-process DDP run matches a 1-process run, a NaN stops the run with a clear message."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arrcoc_lab.errors import NonFiniteLossError
from arrcoc_lab.training.phases import PHASES, Curriculum, PhaseConfig, get_phase
import numpy as np

from arrcoc_lab.modeling.allocator import solve_knapsack
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.loop import run_phase
from arrcoc_lab.training.sampling import load_train_data, mixed_allocation, sample_indices, target_full_budget

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "arrcoc_lab.apps.cli", "train", "--preset", "lab", "--n-scenes", "6", "--batch-size", "4",
       "--log-every", "2", "--ckpt-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory):
    from arrcoc_lab import load_pipeline

    cache = tmp_path_factory.mktemp("cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("lab")
    cfg = TrainConfig(n_scenes=6, batch_size=4, cache_dir=str(cache), log_every=1, ckpt_every=100, progress=False)
    return pipe, load_train_data(pipe.model, cfg), cfg


@pytest.mark.parametrize("name", sorted(PHASES))
def test_every_phase_runs_and_trains_only_its_modules(lab_data, tmp_path, name):
    pipe, data, cfg = lab_data
    model = pipe.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_phase(model, data, get_phase(name, steps=2), cfg, tmp_path, resume=False)
    assert len(result.history) == 2 and Path(result.weights).is_file()
    phase = PHASES[name]
    for k, v in model.state_dict().items():
        changed = not torch.equal(v, before[k])
        top = k.split(".")[0]
        if changed:
            assert top in phase.trainable, f"{k} changed in {name} but {top} is frozen"
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()
               if k.split(".")[0] in phase.trainable), f"{name} trained nothing"
    for k in phase.losses:
        assert k in result.history[-1], f"loss {k} not logged"
    model.load_state_dict(before)  # leave the shared fixture as it was


def test_losses_fall_when_training_on_one_batch(lab_data, tmp_path):
    """From the seeded init, where the relevance loss has room to fall (the shipped analyzer is trained)."""
    from arrcoc_lab import load_pipeline

    _, _, shared = lab_data
    # every step the same 6 questions of one scene; a cache of its own, not the shared fixture's
    one = replace(shared, batch_size=6, cache_dir=str(tmp_path / "cache"))
    pipe = load_pipeline("lab", weights="random")
    data = load_train_data(pipe.model, one)
    data1 = type(data)(data.scenes, data.questions[:6], data.answers[:6], data.boxes[:6], data.difficulty[:6],
                       data.scene_index[:6], data.image_hw)
    result = run_phase(pipe.model, data1, get_phase("phase1a", steps=12, warmup=1), one, tmp_path, resume=False)
    assert result.history[-1]["relevance"] < 0.7 * result.history[0]["relevance"]


def test_non_finite_loss_names_step_and_component(lab_data, tmp_path, monkeypatch):
    pipe, data, cfg = lab_data
    feats = data.scenes.features.clone()
    data.scenes.features[:] = float("nan")
    try:
        with pytest.raises(NonFiniteLossError, match=r"non-finite relevance loss at step 0 of phase1a.*relevance analyzer"):
            run_phase(pipe.model, data, get_phase("phase1a", steps=2), cfg, tmp_path, resume=False)
    finally:
        data.scenes.features.copy_(feats)


def test_phase_config_validation():
    with pytest.raises(ValueError, match="unknown modules"):
        PhaseConfig("x", ("sam",), {"answer": 1.0})
    with pytest.raises(ValueError, match="unknown losses"):
        PhaseConfig("x", ("llm",), {"bleu": 1.0})
    with pytest.raises(ValueError, match="known"):
        get_phase("phase9")
    with pytest.raises(ValueError, match="takes a list of module names"):
        get_phase("phase0", trainable="('llm',)")  # what papermill made of a tuple parameter
    listed = get_phase("phase0", trainable=["clip", "llm"], lr_scale={}, segments=[[10, {"rephrase": 0.5}]])
    assert listed.trainable == ("clip", "llm") and listed.segments == ((10, {"rephrase": 0.5}),)
    assert Curriculum(rounds=2).expanded() == ["phase1a", "phase0", "phase1", "phase2", "phase1", "phase2", "phase3"]


def _weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def _run(args, cache, env=None, **kw):
    return subprocess.run(CMD + ["--cache-dir", str(cache)] + args, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_weights(tmp_path):
    cache = tmp_path / "cache"
    args = ["--phase", "phase0", "--steps", "8", "--out"]
    ref = _run(args + [str(tmp_path / "ref")], cache)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(CMD + ["--cache-dir", str(cache)] + args + [str(run)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() >= "step_000004"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.is_file(), "no checkpoint was written before the kill"
    assert not (run / "model.safetensors").exists(), "the run finished before it could be killed"
    killed_at = latest.read_text().strip()
    resumed = _run(args + [str(run)], cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0.0, f"resumed from {killed_at}: max weight difference {worst}"
    assert json.loads((run / "history.json").read_text())[-1]["step"] == 8


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    cache = tmp_path / "cache"
    args = ["--phase", "phase1a", "--steps", "4", "--no-resume", "--out"]
    one = _run(args + [str(tmp_path / "one")], cache)
    assert one.returncode == 0, one.stderr[-2000:]
    # torchrun: on a CPU-only machine `accelerate launch --cpu --num_processes 2` starts one process
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    two = subprocess.run(launch + [CMD[2], "--verbose"] + CMD[3:] + ["--cache-dir", str(cache)] + args + [str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("phase1a on 2 process(es)") == 2, two.stderr[-3000:]  # both ranks in one process group
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    changed = [k for k in a if k.startswith("relevance.")]
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in changed)
    assert worst < 1e-4, f"1-process vs 2-process max parameter difference {worst}"


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_detail_share_sets_the_batch_mix(lab_data, share):
    _, data, cfg = lab_data
    phase = get_phase("phase0", detail_share=share)
    picks = [sample_indices(data, phase, step, cfg) for step in range(200)]
    assert all(len(set(p.tolist())) == cfg.batch_size for p in picks)  # without replacement
    frac = np.mean([data.difficulty[i] == "detail" for p in picks for i in p])
    assert abs(frac - share) < 0.06
    again = sample_indices(data, phase, 7, cfg)
    assert np.array_equal(again, picks[7])  # a step's batch depends only on (seed, step)


def test_high_res_steps_put_detail_targets_at_full_resolution(lab_data):
    pipe, data, _ = lab_data
    g = pipe.geometry
    detail = [i for i, d in enumerate(data.difficulty) if d == "detail" and data.boxes[i] is not None][:4]
    targets = target_cells([data.boxes[i] for i in detail], g, data.image_hw)
    budgets, utility = mixed_allocation(targets, g, seed=0, step=5, rank=0, world=1, global_batch=len(detail),
                                        detail=[True] * len(detail), high_res_steps=1.0)
    oracle = 0
    for t, b, u in zip(targets.numpy(), budgets, utility.numpy()):
        t = np.nan_to_num(t) > 0
        assert b == target_full_budget(t.astype(float), g)
        levels = solve_knapsack(u, g, b)
        assert np.asarray(g.levels)[levels].sum() <= b
        if u[~t].max() < 0.1:  # the oracle draw: the whole budget goes to reaching the target at full
            oracle += 1
            assert (levels[t] == g.max_level_index).all()
    assert oracle >= 1
    # on ordinary steps detail budgets are the readable ones (uniform and accurate), never gist-only
    budgets, _ = mixed_allocation(targets, g, seed=0, step=5, rank=0, world=1, global_batch=len(detail),
                                  detail=[True] * len(detail), high_res_steps=0.0)
    assert set(budgets) <= {g.uniform_budget, g.budget_for_mode("accurate"), g.max_tokens}


def test_target_full_budget_counts_the_smooth_ramp():
    from arrcoc_lab.modeling.geometry import Geometry
    g = Geometry(image_size=256, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64))
    t = np.zeros((4, 4))
    t[0, 0] = 1
    # the target at 64, its two neighbours at 16, the three cells at distance 2 at 4, the rest at 1
    assert target_full_budget(t, g) == 64 + 2 * 16 + 3 * 4 + 10 * 1


@pytest.mark.parametrize("field,value", [("detail_share", 1.5), ("high_res_steps", -0.1), ("budget_floor", -1.0)])
def test_phase_config_rejects_out_of_range_sampling(field, value):
    with pytest.raises(ValueError, match=field):
        get_phase("phase0", **{field: value})


def test_one_render_fills_features_and_fields_in_parallel_and_in_process(lab_data, tmp_path):
    """Workers render, this process encodes: the cache (features, pixels, questions, boxes) is the
    same with 0 or 2 rendering processes, matches the dataset, and a later load renders nothing."""
    from arrcoc_lab.data import load_dataset
    from arrcoc_lab.data.features import SAMPLE_FIELDS, encode_scenes

    model = lab_data[0].model
    built = {}
    for workers in (0, 2):
        ds = load_dataset("scenebench:train", n=18)  # three scenes of six questions
        built[workers] = encode_scenes(model, ds, tmp_path / f"w{workers}", batch_size=2, progress=False,
                                       workers=workers)
    a, b = built[0], built[2]
    assert torch.equal(a.features, b.features) and torch.equal(a.pixels, b.pixels)
    assert a.fields == b.fields and a.image_hw == b.image_hw == (256, 256)
    for j in (0, 7, 17):
        assert [a.fields[k][j] for k in SAMPLE_FIELDS] == [getattr(ds[j], k) for k in SAMPLE_FIELDS]
    rendered, scene = [], ds.scene
    ds.scene = lambda i: rendered.append(i) or scene(i)
    again = encode_scenes(model, ds, tmp_path / "w2", progress=False, workers=0)
    assert rendered == [] and again.fields == a.fields and torch.equal(again.features, a.features)
    with pytest.raises(ValueError, match="workers"):
        encode_scenes(model, load_dataset("scenebench:train", n=6), tmp_path / "new", progress=False, workers=-1)


def test_cache_chunks_written_without_fields_get_them_added_once(lab_data, tmp_path):
    """Cache files written before they carried questions still load: their questions are rendered
    once and added to the file; the next load renders nothing."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from arrcoc_lab.data import load_dataset
    from arrcoc_lab.data.features import encode_scenes

    pipe, data, cfg = lab_data
    chunks = list(Path(cfg.cache_dir).glob("scenebench-train-*.safetensors"))
    for f in chunks:  # the same chunks, stripped of their metadata
        save_file(load_file(str(f)), str(tmp_path / f.name))
    old = load_train_data(pipe.model, TrainConfig(n_scenes=6, cache_dir=str(tmp_path), progress=False))
    assert old.questions == data.questions and old.boxes == data.boxes and old.image_hw == data.image_hw
    for f in chunks:
        with safe_open(str(tmp_path / f.name), "pt") as fh:
            assert "scene_fields" in fh.metadata()
        assert torch.equal(load_file(str(tmp_path / f.name))["features"], load_file(str(f))["features"])
    ds = load_dataset("scenebench:train", n=36)
    rendered, scene = [], ds.scene
    ds.scene = lambda i: rendered.append(i) or scene(i)
    again = encode_scenes(pipe.model, ds, tmp_path, progress=False, workers=0)
    assert rendered == [] and again.fields["question"] == data.questions
