"""Our weights files: safetensors + config.json, written atomically, loaded all-or-nothing."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open

from arrcoc_lab import checkpoint
from arrcoc_lab.modeling.build import build_model
from arrcoc_lab.checkpoint import EXTERNAL_PREFIXES, atomic_write, atomic_write_text, load_weights, save_weights
from arrcoc_lab.errors import CheckpointError
from arrcoc_lab.pipeline import load_pipeline
from arrcoc_lab.modeling.presets import PipelineConfig, get_preset


def _load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline(*args, **kwargs)


def _file_state(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _stored(model) -> dict[str, torch.Tensor]:
    """Every tensor our files hold, by name (tied tensors under each of their names)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(EXTERNAL_PREFIXES)}


@pytest.fixture(scope="module")
def trained():
    """load_pipeline("tiny") with every stored parameter moved off its seeded initialisation, as
    training would: a fresh build of the same config must then differ from it until loaded."""
    pipe = _load("tiny")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in pipe.model.named_parameters():
            if not name.startswith(EXTERNAL_PREFIXES):
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return pipe


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    path = d / "model.safetensors"
    save_weights(trained.model, path, config=trained.config.to_dict(), metadata={"step": 3})
    return path


@pytest.fixture
def fresh():
    """A new tiny model, at its seeded initialisation."""
    cfg = get_preset("tiny")
    return build_model(cfg), cfg


@pytest.fixture
def image():
    return (np.random.default_rng(1).random((90, 110, 3)) * 255).astype(np.uint8)


def _assert_differs(a: dict, b: dict):
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point()), "test is vacuous: models already equal"


def test_round_trip_is_bit_exact_in_float32(trained, saved, fresh):
    model, _ = fresh
    src = _stored(trained.model)
    _assert_differs(_stored(model), src)
    load_weights(model, saved)
    dst = _stored(model)
    assert set(dst) == set(src)
    for k, v in src.items():
        assert dst[k].dtype == v.dtype and torch.equal(dst[k], v), k
    # the LLM's tied output head is stored once and still tied after loading
    lm = model.llm.model
    assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()


def test_file_holds_every_stored_tensor_once_and_no_external_ones(trained, saved):
    with safe_open(str(saved), "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"step": "3", checkpoint.CHECKSUM_KEY: checkpoint.state_checksum(_file_state(saved))}
    assert keys and not any(k.startswith(EXTERNAL_PREFIXES) for k in keys)
    ptrs = {}
    for k, v in _stored(trained.model).items():
        ptrs.setdefault(v.data_ptr(), []).append(k)
    assert len(keys) == len(ptrs)  # one entry per distinct tensor
    assert all(any(k in keys for k in names) for names in ptrs.values())


def test_loaded_pipeline_reproduces_the_saved_one(trained, saved, image):
    q = "What is the number on the sign?"
    a = trained(image, q, budget=12)
    for b in (_load("tiny", weights=saved)(image, q, budget=12),
              _load(config=saved.with_name("config.json"), weights=saved)(image, q, budget=12)):
        assert b.answer == a.answer
        assert np.array_equal(b.tokens_per_cell, a.tokens_per_cell)
        assert np.array_equal(b.relevance, a.relevance)


def test_fp16_storage_loads_back_within_fp16_precision(trained, fresh, tmp_path):
    model, _ = fresh
    path = tmp_path / "model_fp16.safetensors"
    save_weights(trained.model, path, dtype=torch.float16)
    src = _stored(trained.model)
    with safe_open(str(path), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if src[k].is_floating_point()} == {"F16"}
    load_weights(model, path)
    dst = _stored(model)
    for k, v in src.items():
        assert dst[k].dtype == v.dtype, k  # the model keeps its own dtype
        if v.is_floating_point():
            assert torch.equal(dst[k], v.half().float()), k
            torch.testing.assert_close(dst[k], v, rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(dst[k], v), k


def test_config_json_beside_the_weights(trained, saved):
    cfg_path = saved.with_name("config.json")
    assert json.loads(cfg_path.read_text()) == json.loads(json.dumps(trained.config.to_dict()))
    assert PipelineConfig.load(cfg_path).to_dict() == trained.config.to_dict()


def test_no_temp_files_are_left(saved, trained, tmp_path):
    assert sorted(p.name for p in saved.parent.iterdir()) == ["config.json", "model.safetensors"]
    save_weights(trained.model, tmp_path / "a" / "model.safetensors", config={"x": 1})
    save_weights(trained.model, tmp_path / "a" / "model.safetensors", config={"x": 2})  # overwrite
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == {"x": 2}


def test_missing_truncated_or_foreign_file(saved, fresh, tmp_path):
    model, _ = fresh
    before = {k: v.clone() for k, v in _stored(model).items()}
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(model, tmp_path / "nope.safetensors")
    data = saved.read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_weights(model, tmp_path / "half.safetensors")
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_weights(model, tmp_path / "text.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in _stored(model).items())


def test_other_size_model_lists_mismatches_and_stays_untouched(saved):
    """Only the LLM's MLP differs: every earlier tensor matches the file, so a loader that copied
    as it checked would have changed them before failing."""
    cfg = get_preset("tiny")
    cfg.llm.intermediate_size = 48
    model = build_model(cfg)
    before = {k: v.clone() for k, v in _stored(model).items()}
    with safe_open(str(saved), "pt") as f:
        sam_key = next(k for k in f.keys() if k.startswith("sam."))
        assert not torch.equal(f.get_tensor(sam_key), before[sam_key])  # the load would change it
    with pytest.raises(CheckpointError) as e:
        load_weights(model, saved)
    msg = str(e.value)
    assert "shape mismatches" in msg and "mlp" in msg and "file (64, 32) vs model (48, 32)" in msg
    assert "config.json" in msg  # says how to load them
    after = _stored(model)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_load_pipeline_with_weights_of_another_config(saved):
    cfg = get_preset("tiny")
    cfg.relevance.dim = 24
    with pytest.raises(CheckpointError, match="shape mismatches.*relevance"):
        _load(config=cfg, weights=saved)


def test_interrupted_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "previous")

    def writer(tmp):
        with open(tmp, "w") as f:
            f.write("half of the new cont")
        raise KeyboardInterrupt  # killed mid-write (not even an Exception)

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, writer)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_interrupted_save_keeps_the_previous_weights(trained, saved, fresh, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(saved.read_bytes())

    def failing_save(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(trained.model, path, config={"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file, no config.json
    model, _ = fresh
    load_weights(model, path)  # still the complete previous file
    assert all(torch.equal(v, _stored(trained.model)[k]) for k, v in _stored(model).items())


# ------------------------------------------------------------------------------ issue 17: damaged weights
def _rewrite(path, dst, change, keep_checksum: bool = True):
    """A copy of our file with `change(state)` applied to its tensors, keeping its metadata (so a
    kept checksum no longer matches: a flipped bit), or dropping the checksum (a legacy file)."""
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    change(state)
    if not keep_checksum:
        meta.pop(checkpoint.CHECKSUM_KEY, None)
    save_file(state, str(dst), metadata=meta)
    return dst


def _first_float(state):
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)


def test_bit_flipped_weights_are_refused_at_load(saved, fresh, tmp_path):
    model, _ = fresh
    before = {k: v.clone() for k, v in _stored(model).items()}

    def flip(state):
        k = _first_float(state)
        raw = state[k].reshape(-1).view(torch.int32)
        raw[0] ^= 1 << 22  # one mantissa bit: finite, plausible, wrong
    bad = _rewrite(saved, tmp_path / "flipped.safetensors", flip)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load_weights(model, bad)
    assert all(torch.equal(v, before[k]) for k, v in _stored(model).items())
    with pytest.raises(CheckpointError, match="checksum"):  # and through the public loader
        _load("tiny", weights=bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(saved, fresh, tmp_path, value):
    """Even in a file without a checksum (the shipped weights have none): NaN/Inf never load."""
    model, _ = fresh

    def poison(state):
        state[_first_float(state)].view(-1)[3] = value
    bad = _rewrite(saved, tmp_path / "nan.safetensors", poison, keep_checksum=False)
    with pytest.raises(CheckpointError, match="NaN or Inf in 1 tensors"):
        load_weights(model, bad)


def test_a_file_without_checksum_still_loads(saved, fresh, tmp_path, trained):
    model, _ = fresh
    legacy = _rewrite(saved, tmp_path / "legacy.safetensors", lambda state: None, keep_checksum=False)
    load_weights(model, legacy)
    assert all(torch.equal(v, _stored(trained.model)[k]) for k, v in _stored(model).items())


def test_load_pipeline_checks_before_building(tmp_path):
    """A missing weights file, a bogus device: refused before any model is built."""
    from arrcoc_lab.errors import InputError

    with pytest.raises(CheckpointError, match="not found"):
        load_pipeline("tiny", weights=tmp_path / "none.safetensors")
    for device, message in (("bogus", "unknown device 'bogus'"), ("cuda:7", "not available"), ("meta", "not supported")):
        with pytest.raises(InputError, match=message):
            load_pipeline("tiny", weights="random", device=device)
    with pytest.raises(InputError, match="unknown preset"):
        load_pipeline("huge", weights="random")
    with pytest.raises(InputError, match="preset 'tiny'"):
        load_pipeline("tiny", weights="random", sam_variant="vit_h")


# ------------------------------------------------------------------------------ issue 17: resume
def _run_state(pipe, lr: float, steps: int = 8):
    """A tiny model with an AdamW and its scheduler, as run_phase builds them."""
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.loop import run_config
    from arrcoc_lab.training.phases import get_phase

    params = [p for n, p in pipe.model.named_parameters() if n.startswith("relevance.")]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 100)
    phase = get_phase("phase1a", steps=steps, lr=lr)
    return params, opt, sched, run_config(phase, TrainConfig(batch_size=4), {"preset": "tiny"})


def _train_a_step(params, opt, sched):
    loss = sum((p.float() ** 2).mean() for p in params) + torch.rand(()) * 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with checkpoints at steps 2 and 4 of a tiny model, and what each held."""
    from arrcoc_lab.training.checkpoints import save_checkpoint

    pipe = _load("tiny", weights="random")
    params, opt, sched, config = _run_state(pipe, 1e-3)
    held = {}
    for step in (1, 2, 3, 4):
        _train_a_step(params, opt, sched)
        if step % 2 == 0:
            save_checkpoint(tmp_path, pipe.model, opt, sched, step, [{"step": step}], config)
            held[step] = ({k: v.clone() for k, v in _stored(pipe.model).items()}, torch.get_rng_state())
    return tmp_path, config, held


def _fresh_run(lr: float = 1e-3):
    pipe = _load("tiny", weights="random")
    return (pipe, *_run_state(pipe, lr))


def test_resume_restores_the_newest(run_dir):
    from arrcoc_lab.training.checkpoints import load_checkpoint

    out, config, held = run_dir
    pipe, params, opt, sched, _ = _fresh_run()
    assert load_checkpoint(out, pipe.model, opt, sched, config=config) == (4, [{"step": 4}])
    assert all(torch.equal(v, held[4][0][k]) for k, v in _stored(pipe.model).items())
    assert torch.equal(torch.get_rng_state(), held[4][1]) and sched.last_epoch == 4


@pytest.mark.parametrize("damage", ["optimizer.pt", "state.json", "model.safetensors", "folder only"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(run_dir, damage):
    from arrcoc_lab.training.checkpoints import CheckpointFallbackWarning, load_checkpoint

    out, config, held = run_dir
    newest = out / "checkpoints" / "step_000004"
    if damage == "optimizer.pt":
        data = (newest / damage).read_bytes()
        (newest / damage).write_bytes(data[: len(data) // 3])
    elif damage == "state.json":
        (newest / damage).write_text('{"step": 4, "hist')
    elif damage == "model.safetensors":
        _rewrite(newest / damage, newest / damage, lambda s: s[_first_float(s)].view(-1).__setitem__(0, 0.123))
    else:  # killed before `latest` moved on, and the newest folder lost its files
        (newest / "optimizer.pt").unlink()
    pipe, params, opt, sched, _ = _fresh_run()
    with pytest.warns(CheckpointFallbackWarning, match="step_000004"):
        step, history = load_checkpoint(out, pipe.model, opt, sched, config=config)
    assert (step, history) == (2, [{"step": 2}])
    assert all(torch.equal(v, held[2][0][k]) for k, v in _stored(pipe.model).items())  # bit-exact
    assert torch.equal(torch.get_rng_state(), held[2][1]) and sched.last_epoch == 2


def test_no_intact_checkpoint_is_an_error_not_a_silent_restart(run_dir):
    from arrcoc_lab.training.checkpoints import load_checkpoint

    out, config, _ = run_dir
    for ck in (out / "checkpoints").glob("step_*"):
        (ck / "state.json").write_text("garbage")
    pipe, params, opt, sched, _ = _fresh_run()
    with pytest.raises(CheckpointError, match="no intact checkpoint.*step_000004.*step_000002.*--no-resume"):
        load_checkpoint(out, pipe.model, opt, sched, config=config)


def test_resume_with_other_settings_is_refused_with_the_keys(run_dir):
    """A new --lr / --batch-size used to be recorded in train_config.json while the restored
    optimizer and scheduler kept the old ones."""
    from dataclasses import replace

    from arrcoc_lab.training.checkpoints import check_resume, config_differences, load_checkpoint
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.loop import run_config
    from arrcoc_lab.training.phases import get_phase

    out, config, held = run_dir
    changed = run_config(get_phase("phase1a", steps=8, lr=5e-4), TrainConfig(batch_size=8), {"preset": "tiny"})
    assert config_differences(config, changed) == ["phase.lr", "train.batch_size"]
    with pytest.raises(CheckpointError, match=r"other settings \(phase\.lr, train\.batch_size\)"):
        check_resume(out, changed)
    pipe, params, opt, sched, _ = _fresh_run(5e-4)
    before = {k: v.clone() for k, v in _stored(pipe.model).items()}
    with pytest.raises(CheckpointError, match="phase.lr, train.batch_size"):
        load_checkpoint(out, pipe.model, opt, sched, config=changed)
    assert all(torch.equal(v, before[k]) for k, v in _stored(pipe.model).items())  # nothing applied
    # settings the run can honour (where it runs, how often it logs) are not a reason to refuse
    honoured = run_config(get_phase("phase1a", steps=8, lr=1e-3),
                          replace(TrainConfig(batch_size=4), device="cuda", log_every=1, progress=False,
                                  cache_dir="elsewhere"), {"preset": "tiny"})
    assert config_differences(config, honoured) == []
    assert load_checkpoint(out, pipe.model, opt, sched, config=honoured)[0] == 4


def test_run_phase_refuses_a_changed_resume_before_training(run_dir):
    """run_phase checks before its first step, and train_config.json keeps the settings the
    checkpoints were written with."""
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.loop import run_phase
    from arrcoc_lab.training.phases import get_phase

    out, config, _ = run_dir
    (out / "train_config.json").write_text(json.dumps(config))
    pipe = _load("tiny", weights="random")
    with pytest.raises(CheckpointError, match="phase.lr"):
        run_phase(pipe.model, None, get_phase("phase1a", steps=8, lr=5e-4), TrainConfig(batch_size=4, progress=False),
                  out, pipeline_config={"preset": "tiny"})
    assert json.loads((out / "train_config.json").read_text()) == json.loads(json.dumps(config))


def test_a_resume_takes_segments_that_start_after_its_checkpoint(run_dir):
    """A phase's segments change how later batches are drawn: appended ones that start at or after
    the checkpoint's step change nothing already trained, so the run resumes under them (and such
    a segment not yet reached may be edited or dropped); one that starts earlier, or an edited one
    already in force, would have drawn other batches, so it is refused; a field new to
    PhaseConfig is taken at its default (the behaviour the checkpoint was trained under)."""
    from arrcoc_lab.training.checkpoints import check_resume, later_changes
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.loop import run_config
    from arrcoc_lab.training.phases import get_phase

    out, config, _ = run_dir  # newest checkpoint: step 4
    with_segments = lambda *segs: run_config(get_phase("phase1a", steps=8, lr=1e-3, segments=segs),
                                             TrainConfig(batch_size=4), {"preset": "tiny"})
    later = with_segments((4, {"detail_share": 0.9}), (6, {"rephrase": 0.0}))
    check_resume(out, later)  # accepted
    assert later_changes(config, later, 4) == ["phase.segments"]
    with pytest.raises(CheckpointError, match="phase.segments"):
        check_resume(out, with_segments((3, {"detail_share": 0.9})))
    old_without_field = json.loads(json.dumps(config))
    del old_without_field["phase"]["reading_top_share"]
    assert "phase.reading_top_share" in later_changes(old_without_field, config, 4)
    changed_default = json.loads(json.dumps(config))
    changed_default["phase"]["reading_top_share"] = 0.9
    assert "phase.reading_top_share" not in later_changes(old_without_field, changed_default, 4)
    # a checkpoint written under segments: they stay, more may follow
    (out / "checkpoints" / "step_000004" / "state.json").write_text(
        json.dumps({"step": 4, "history": [], "config": with_segments((2, {"detail_share": 0.9}))}))
    check_resume(out, with_segments((2, {"detail_share": 0.9}), (5, {"rephrase": 0.0})))
    with pytest.raises(CheckpointError, match="phase.segments"):
        check_resume(out, with_segments((2, {"detail_share": 0.8})))
    with pytest.raises(CheckpointError, match="phase.segments"):
        check_resume(out, with_segments((5, {"rephrase": 0.0})))  # the one in force since step 2 dropped
    # one not yet reached at the checkpoint: its plan may change, or go
    (out / "checkpoints" / "step_000004" / "state.json").write_text(json.dumps(
        {"step": 4, "history": [], "config": with_segments((2, {"detail_share": 0.9}), (6, {"rephrase": 0.0}))}))
    check_resume(out, with_segments((2, {"detail_share": 0.9}), (4, {"rephrase": 0.2})))
    check_resume(out, with_segments((2, {"detail_share": 0.9})))
