"""Hugging Face-native folders: Pipeline.save_pretrained → config.json, model.safetensors, README.md;
load_pipeline(folder) and transformers' AutoModel.from_pretrained(folder) give the pipeline's outputs."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import arrcoc_lab
from arrcoc_lab.checkpoint import EXTERNAL_PREFIXES, save_weights
from arrcoc_lab.errors import CheckpointError, InputError
from arrcoc_lab.pipeline import LAB_WEIGHTS, Pipeline, preset_folder, load_pipeline

QUERY, BUDGET = "What is the code on the sign?", 12
FILES = {"config.json", "model.safetensors", "README.md"}
EVALUATION = {"data": "scenebench:test", "n_scenes": 3, "budget": 12, "weights": "runs/x/model.safetensors",
              "policies": {"arrcoc": {"accuracy": 0.42, "accuracy_gist": 0.5, "accuracy_detail": 0.25, "avg_tokens": 12.0,
                                      "query_dependence": {"rate": 0.75}},
                           "uniform": {"accuracy": 0.4, "accuracy_gist": 0.5, "accuracy_detail": math.nan,
                                       "avg_tokens": 16.0}}}


def _load(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline(*args, **kwargs)


def _same(a, b):
    """Two PipelineOutputs agree exactly on everything a researcher reads."""
    assert a.answer == b.answer and a.num_tokens == b.num_tokens and a.budget == b.budget
    assert np.array_equal(a.tokens_per_cell, b.tokens_per_cell) and np.array_equal(a.levels, b.levels)
    assert np.array_equal(a.relevance, b.relevance) and np.array_equal(a.cell_relevance, b.cell_relevance)


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(3).random((96, 120, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained():
    """A tiny pipeline whose stored weights moved off the seeded initialisation, as training would:
    a folder that did not load its weights could not reproduce its outputs."""
    pipe = _load("tiny")
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in pipe.model.named_parameters():
            if not name.startswith(EXTERNAL_PREFIXES):
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return pipe


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-hf"
    assert trained.save_pretrained(folder, evaluation=EVALUATION, training="test weights: seeded noise") == folder
    return folder


@pytest.fixture(scope="module")
def reloaded(saved):
    return load_pipeline(saved)


def test_folder_is_the_hub_layout(saved, trained):
    assert {p.name for p in saved.iterdir()} == FILES  # nothing else (no temp files): what upload_folder sends
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["model_type"] == "arrcoc" and cfg["architectures"] == ["ArrcocModel"]
    assert cfg["preset"] == "tiny" and cfg["weights"] is None
    assert _load(config=saved / "config.json", weights="random").config.to_dict() == \
        replace(trained.config, weights=None).to_dict()  # the config.json also reads as a plain config


def test_round_trip_gives_identical_outputs(trained, reloaded, tiny_pipe, image):
    assert reloaded.config.weights == str(Path(reloaded.config.weights).parent / "model.safetensors")
    for policy in ("arrcoc", "heuristic", "uniform"):
        _same(trained(image, QUERY, budget=BUDGET, policy=policy), reloaded(image, QUERY, budget=BUDGET, policy=policy))
    fresh = tiny_pipe(image, QUERY, budget=BUDGET, policy="arrcoc")
    assert not np.array_equal(fresh.relevance, reloaded(image, QUERY, budget=BUDGET, policy="arrcoc").relevance)


def test_auto_model_gives_the_pipelines_outputs(saved, trained, image, tmp_path):
    import arrcoc_lab.hf as hf
    from transformers import AutoConfig, AutoModel

    assert arrcoc_lab.ArrcocModel is hf.ArrcocModel and arrcoc_lab.ArrcocConfig is hf.ArrcocConfig
    config = AutoConfig.from_pretrained(saved, local_files_only=True)
    assert isinstance(config, hf.ArrcocConfig) and config.preset == "tiny"
    assert config.to_pipeline_config().to_dict() == replace(trained.config, weights=None).to_dict()
    model = AutoModel.from_pretrained(saved, local_files_only=True)
    assert isinstance(model, hf.ArrcocModel) and isinstance(model.pipeline, Pipeline)
    assert model.arrcoc is model.pipeline.model and not model.training
    for policy in ("arrcoc", "random"):
        _same(model(image, QUERY, budget=BUDGET, policy=policy), trained(image, QUERY, budget=BUDGET, policy=policy))
    model.save_pretrained(tmp_path / "again")  # the same folder format, through the pipeline
    assert {p.name for p in (tmp_path / "again").iterdir()} == FILES
    _same(load_pipeline(tmp_path / "again")(image, QUERY, budget=BUDGET), trained(image, QUERY, budget=BUDGET))


def test_auto_model_from_config_is_the_seeded_initialisation(tiny_pipe, image):
    from arrcoc_lab.hf import ArrcocConfig
    from transformers import AutoModel

    model = AutoModel.from_config(ArrcocConfig(preset="tiny"))
    assert model.pipeline.config.preset == "tiny"
    _same(model(image, QUERY, budget=BUDGET), tiny_pipe(image, QUERY, budget=BUDGET))


def test_model_card(saved):
    text = (saved / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "arrcoc-lab" and meta["license"] == "apache-2.0"
    assert {"arrcoc", "visual-token-compression", "preset-tiny"} <= set(meta["tags"])
    assert "`tiny` preset" in body and "128² pixels" in body and "4 (minimum) … 16 (uniform) … 256 (full)" in body
    assert "test weights: seeded noise" in body and "random initialisation (seed 0)" in body
    assert "| `arrcoc` | 0.420 | 0.500 | 0.250 | 12.0 | 0.750 |" in body
    assert "| `uniform` | 0.400 | 0.500 | – | 16.0 | – |" in body  # NaN and missing scores shown as –
    assert "data `scenebench:test`, 3 scenes, budget 12 tokens" in body
    for section in ("## Training", "## Evaluation", "## How to use", "## Intended use", "## Limits"):
        assert section in body


def test_card_reads_the_run_folder_and_the_evaluation_beside_the_weights(trained, tmp_path):
    run = tmp_path / "run"
    save_weights(trained.model, run / "model.safetensors", config=trained.config.to_dict())
    (run / "train_config.json").write_text(json.dumps({"phase": {"name": "phase3", "steps": 300,
                                                                 "trainable": ["relevance", "allocator"],
                                                                 "losses": {"answer": 1.0, "efficiency": 0.5}}}))
    (run / "history.json").write_text(json.dumps([{"step": 300, "lr": 0.0, "answer": 0.7519, "avg_tokens": 56.2}]))
    (run / "metrics.json").write_text(json.dumps({**EVALUATION, "weights": str(run / "model.safetensors")}))
    pipe = Pipeline(trained.model, replace(trained.config, weights=str(run / "model.safetensors")))
    pipe.save_pretrained(tmp_path / "hf")
    body = (tmp_path / "hf" / "README.md").read_text()
    assert "`phase3`, 300 steps" in body and "`relevance`, `allocator`" in body and "efficiency (0.5)" in body
    assert "answer 0.7519" in body and "| `arrcoc` | 0.420 |" in body
    # saved again from the loaded folder, the card keeps what it knew (carried in the weights' metadata)
    _load(tmp_path / "hf").save_pretrained(tmp_path / "hf2")
    assert (tmp_path / "hf2" / "README.md").read_text() == body
    # an evaluation of other weights beside these is not theirs
    (run / "metrics.json").write_text(json.dumps(EVALUATION))
    pipe.save_pretrained(tmp_path / "hf3")
    assert "No evaluation was saved" in (tmp_path / "hf3" / "README.md").read_text()


def test_card_does_not_claim_weights_changed_in_memory(trained, tiny_pipe, tmp_path):
    save_weights(tiny_pipe.model, tmp_path / "seeded.safetensors")
    pipe = Pipeline(trained.model, replace(trained.config, weights=str(tmp_path / "seeded.safetensors")))
    pipe.save_pretrained(tmp_path / "hf", dtype=torch.float16)
    body = (tmp_path / "hf" / "README.md").read_text()
    assert "changed in memory after loading" in body and "float16" in body


def test_bad_arguments(trained, saved, tmp_path):
    with pytest.raises(InputError, match="load_pipeline\\(folder\\)"):
        _load("tiny", weights=saved)
    with pytest.raises(InputError, match="eval` report"):
        trained.save_pretrained(tmp_path / "x", evaluation={"policies": ["arrcoc", "uniform"]})  # a benchmark's list
    with pytest.raises(InputError, match="training must be JSON"):
        trained.save_pretrained(tmp_path / "x", training={"optimizer": torch.optim.SGD})
    with pytest.raises(InputError, match="dtype"):
        trained.save_pretrained(tmp_path / "x", dtype="half")
    with pytest.raises(InputError, match="is a file, not a pipeline folder"):
        _load(saved / "model.safetensors")
    with pytest.raises(InputError, match="preset options"):
        _load(saved, llm_path="/models/x")
    assert preset_folder("tiny") is None and preset_folder("./tiny") == Path("tiny") and preset_folder(Path("tiny")) == Path("tiny")


def test_import_arrcoc_lab_stays_light():
    """Registering the Auto classes needs transformers (seconds to import): arrcoc_lab.hf does it, when
    imported or when arrcoc_lab.ArrcocModel is first used; a bare `import arrcoc_lab` does not."""
    code = "import sys, arrcoc_lab; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _damage(folder: Path, how: str) -> None:
    cfg, weights = folder / "config.json", folder / "model.safetensors"
    if how == "no config":
        cfg.unlink()
    elif how == "no weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "flipped byte":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0x01
        weights.write_bytes(bytes(data))
    elif how == "config not json":
        cfg.write_text(cfg.read_text()[:40])
    elif how == "another model type":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model_type": "llama"}))
    elif how == "unknown section":
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "decoder": {}}))


@pytest.mark.parametrize("how, message", [
    ("no config", "has no config.json"),
    ("no weights", "has no model.safetensors"),
    ("truncated weights", "truncated or not a safetensors file"),
    ("flipped byte", "corrupt: their checksum"),
    ("config not json", "damaged or not JSON"),
    ("another model type", "describes a 'llama' model, not an ARR-COC pipeline"),
    ("unknown section", "does not describe a pipeline of this version.*decoder"),
])
def test_damaged_folder_is_a_checkpoint_error(saved, tmp_path, how, message):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    _damage(folder, how)
    with pytest.raises(CheckpointError, match=message):
        load_pipeline(folder)


def test_missing_folder_and_damaged_weights_through_auto_model(saved, tmp_path):
    from arrcoc_lab.hf import ArrcocModel  # importing it registers the Auto classes
    from transformers import AutoModel

    with pytest.raises(CheckpointError, match="pipeline folder not found"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="neither a local pipeline folder nor a Hub repository"):
        ArrcocModel.from_pretrained(tmp_path / "nowhere", local_files_only=True)
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    _damage(folder, "flipped byte")
    with pytest.raises(CheckpointError, match="checksum"):
        AutoModel.from_pretrained(folder, local_files_only=True)


def test_push_to_hub_uploads_the_folder_with_its_card(trained, monkeypatch):
    import huggingface_hub

    from arrcoc_lab.hf import ArrcocModel

    sent = {}

    class FakeApi:  # no network: records what would be uploaded
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            sent.update(repo=repo_id, files={p.name: p.read_bytes() for p in Path(folder_path).iterdir()}, **kwargs)
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert ArrcocModel.from_pipeline(trained).push_to_hub("lab/arrcoc-tiny", evaluation=EVALUATION) == "commit"
    assert sent["repo"] == "lab/arrcoc-tiny" and set(sent["files"]) == FILES
    assert b"library_name: arrcoc-lab" in sent["files"]["README.md"] and b"| `arrcoc` | 0.420" in sent["files"]["README.md"]


def test_shipped_lab_folder_loads_as_a_folder(lab_pipe, image):
    folder = _load(LAB_WEIGHTS.parent)
    assert folder.config.to_dict() == lab_pipe.config.to_dict()
    _same(folder(image, QUERY, budget=64), lab_pipe(image, QUERY, budget=64))
    assert os.path.samefile(folder.config.weights, LAB_WEIGHTS)


def test_paper_folder_needs_no_sam_or_clip_file(tmp_path, image):
    """The paper preset's SAM and CLIP come from official-format files; their weights are in
    model.safetensors, so the saved folder loads without them (the LLM directory stays needed)."""
    from tests import paper_fixtures as pf
    from tests.test_paper_preset import paper_config

    files = type("Files", (), {"sam": tmp_path / "sam.pth", "clip": tmp_path / "clip.pt", "llm": tmp_path / "llm"})()
    files.clip_name = pf.register_tiny_clip(tmp_path / "open_clip_configs")
    pf.write_sam_checkpoint(files.sam)
    pf.write_clip_checkpoint(files.clip, files.clip_name)
    pf.write_llm_dir(files.llm)
    paper = _load(config=paper_config(files))
    paper.save_pretrained(tmp_path / "hf")
    files.sam.unlink()
    files.clip.unlink()
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["preset"] == "paper" and cfg["sam"]["checkpoint"] is None and cfg["clip"]["pretrained"] is None
    assert cfg["llm"]["path"] == str(files.llm)
    _same(load_pipeline(tmp_path / "hf")(image, QUERY, budget=BUDGET), paper(image, QUERY, budget=BUDGET))
    assert "(official checkpoint)" in (tmp_path / "hf" / "README.md").read_text()


def test_export_writes_a_model_folder_that_loads_both_ways(trained, image, tmp_path, capsys):
    """`arrcoc-lab export` (what make train-lab ships with) writes a save_pretrained folder: fp16
    weights, config.json with model_type, and a card with the evaluation table it is given."""
    from transformers import AutoModel

    from arrcoc_lab.apps.cli import main
    import arrcoc_lab.hf  # noqa: F401 - registers the Auto classes

    src = tmp_path / "run" / "model.safetensors"
    src.parent.mkdir()
    save_weights(trained.model, src, config=trained.config.to_dict())
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps(EVALUATION))
    dest = tmp_path / "shipped"
    assert main(["export", str(src), "--preset", "tiny", "--dest", str(dest), "--evaluation", str(report)]) == 0
    assert "model card" in capsys.readouterr().out
    assert {p.name for p in dest.iterdir()} >= FILES
    assert json.loads((dest / "config.json").read_text())["model_type"] == "arrcoc"
    assert "0.42" in (dest / "README.md").read_text()
    expected = _load(str(dest))(image, QUERY, budget=BUDGET, policy="arrcoc")
    before = trained(image, QUERY, budget=BUDGET, policy="arrcoc")  # fp32; the folder holds fp16
    assert np.allclose(expected.relevance, before.relevance, atol=5e-3)
    model = AutoModel.from_pretrained(str(dest), local_files_only=True)
    _same(model(image, QUERY, budget=BUDGET, policy="arrcoc"), expected)
    assert main(["export", str(tmp_path / "missing.safetensors"), "--dest", str(dest)]) == 2
    capsys.readouterr()
    assert main(["inspect", "example:scenebench-paris", QUERY, "--preset", str(dest), "--budget", str(BUDGET)]) == 0
    assert f"{expected.num_tokens} visual tokens" in capsys.readouterr().out  # the CLI takes the folder as a preset
    assert main(["inspect", "example:scenebench-paris", QUERY, "--preset", str(tmp_path / "nowhere")]) == 2
