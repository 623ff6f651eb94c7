"""Encoder pre-training (the lab SAM before phase 0): trains SAM alone and lowers the rebuild
error, leaves SAM frozen, changes the feature-cache key, resumes exactly after a SIGKILL, runs the
same on 2 processes, and refuses bad settings or a NaN with a clear message."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from arrcoc_lab.modeling.build import build_model
from arrcoc_lab.checkpoint import load_weights
from arrcoc_lab.training.encoder_pretrain import (EncoderPretrainConfig, PixelDecoder, batch_indices, pretrain_encoder,
                                         scene_pixels)
from arrcoc_lab.errors import InputError, NonFiniteLossError
from arrcoc_lab.data.features import sam_fingerprint
from arrcoc_lab.modeling.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "arrcoc_lab.apps.cli", "train", "--phase", "encoder", "--preset", "tiny", "--n-scenes", "4",
       "--batch-size", "4", "--log-every", "1", "--ckpt-every", "2", "--quiet"]


def tiny_model():
    return build_model(get_preset("tiny"), load=False)


@pytest.fixture(scope="module")
def pixels():
    return scene_pixels(tiny_model(), EncoderPretrainConfig(n_scenes=4, progress=False))


def test_scene_pixels_are_model_size_images(pixels):
    assert pixels.shape == (4, 3, 128, 128) and pixels.dtype == torch.uint8
    assert pixels.float().std() > 10  # rendered scenes, not blank


def test_scene_pixels_rendered_by_workers_match_rendering_here(pixels):
    from arrcoc_lab.data import load_dataset
    from arrcoc_lab.inputs import to_model_input

    ds = load_dataset("scenebench:train", n=4 * 6, image_size=256, patch_size=8)  # tiny: rendered at 32 patches, resized
    here = torch.stack([to_model_input(ds.scene(i).image, 128)[0].round().clamp(0, 255).to(torch.uint8)
                        for i in range(ds.num_scenes)])
    assert torch.equal(pixels, here)


def test_pretraining_trains_only_sam_lowers_the_error_and_refreezes(pixels, tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp = sam_fingerprint(model.sam)
    cfg = EncoderPretrainConfig(n_scenes=4, steps=30, batch_size=4, lr=3e-3, warmup=2, log_every=5, progress=False)
    result = pretrain_encoder(model, pixels, cfg, tmp_path, resume=False, pipeline_config={"preset": "tiny"})
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"sam"}
    assert result.history[-1]["mse"] < 0.7 * result.history[0]["mse"], result.history
    assert [h["step"] for h in result.history] == [5, 10, 15, 20, 25, 30]
    assert not any(p.requires_grad for p in model.sam.parameters()) and not model.sam.training
    assert sam_fingerprint(model.sam) != fp  # a pre-trained encoder never reuses the random one's feature cache
    fresh = tiny_model()
    load_weights(fresh, result.weights)  # the written file is a whole model of the preset
    assert torch.equal(fresh.sam.encoder.patch_embed.proj.weight, model.sam.encoder.patch_embed.proj.weight)
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "tiny"
    assert len(json.loads((tmp_path / "history.json").read_text())) == 6


def test_decoder_rebuilds_one_patch_from_one_feature():
    dec = PixelDecoder(16, patch=8, hidden=8)
    f = torch.zeros(1, 16, 4, 4)
    f[0, :, 1, 2] = 1.0
    out = dec(f)
    base = dec(torch.zeros_like(f))
    assert out.shape == (1, 3, 32, 32)
    diff = (out - base).abs().sum(1)[0].detach()  # only the patch at row 1, column 2 changes
    assert diff[8:16, 16:24].min() > 0
    diff[8:16, 16:24] = 0
    assert diff.max() == 0


def test_batches_do_not_depend_on_the_process_count():
    cfg = EncoderPretrainConfig(batch_size=6)
    full = batch_indices(100, cfg, 7)
    assert (full == batch_indices(100, cfg, 7)).all()
    assert sorted(list(full[0::2]) + list(full[1::2])) == sorted(full)


@pytest.mark.parametrize("field,value", [("steps", 0), ("batch_size", 0), ("lr", 0.0), ("edge_weight", -1.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(InputError, match=field):
        EncoderPretrainConfig(**{field: value})


def test_pixels_of_the_wrong_kind_are_refused(tmp_path):
    model = tiny_model()
    cfg = EncoderPretrainConfig(steps=1, progress=False)
    with pytest.raises(InputError, match="uint8"):
        pretrain_encoder(model, torch.zeros(2, 3, 128, 128), cfg, tmp_path)
    with pytest.raises(InputError, match="128"):
        pretrain_encoder(model, torch.zeros(2, 3, 64, 64, dtype=torch.uint8), cfg, tmp_path)


def test_non_finite_loss_names_the_step_and_leaves_sam_frozen(pixels, tmp_path, monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(PixelDecoder, "forward", lambda self, f: torch.full((len(f), 3, 128, 128), float("nan")))
    cfg = EncoderPretrainConfig(n_scenes=4, steps=3, batch_size=2, progress=False)
    with pytest.raises(NonFiniteLossError, match="step 0 .*SAM encoder"):
        pretrain_encoder(model, pixels, cfg, tmp_path, resume=False)
    assert not any(p.requires_grad for p in model.sam.parameters()) and not model.sam.training


def _run(args, **kw):
    return subprocess.run(CMD + args, cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_encoder(tmp_path):
    args = ["--steps", "8", "--out"]
    ref = _run(args + [str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(CMD + args + [str(run)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() >= "step_000004"):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.is_file() and not (run / "model.safetensors").exists(), "not killed mid-way"
    resumed = _run(args + [str(run)])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0.0, f"resumed from {latest.read_text()}: max weight difference {worst}"
    assert json.loads((run / "history.json").read_text())[-1]["step"] == 8


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    args = ["--steps", "3", "--no-resume", "--out"]
    one = _run(args + [str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    two = subprocess.run(launch + CMD[2:] + args + [str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a if k.startswith("sam."))
    assert worst < 1e-4, f"1-process vs 2-process max SAM parameter difference {worst}"
