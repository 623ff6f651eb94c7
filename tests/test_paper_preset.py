"""The `paper` preset's code path: official-format SAM / open_clip / Hugging Face checkpoints loaded
from local paths. The checkpoints here are small and random but written exactly as the official
ones are (tests/paper_fixtures.py), and loaded through the same load_pipeline(config=...) call."""
from __future__ import annotations

import ast
import inspect
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests import paper_fixtures as pf
from arrcoc_lab.errors import CheckpointError
from arrcoc_lab.pipeline import UntrainedWeightsWarning, load_pipeline
from arrcoc_lab.modeling.presets import get_preset
from arrcoc_lab.modeling.query_encoder import QueryEncoderConfig, build_query_encoder
from arrcoc_lab.modeling.sam_encoder import SAM_VARIANTS, SamEncoder, SamEncoderConfig, check_state_dict

STAGES = {"sam", "query", "relevance", "allocator", "compressor", "clip", "adapter", "projector", "llm"}


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper_checkpoints")
    clip_name = pf.register_tiny_clip(d / "open_clip_configs")
    ns = SimpleNamespace(dir=d, clip_name=clip_name, sam=d / "sam_tiny.pth", clip=d / "open_clip_tiny.pt", llm=d / "llm")
    ns.sam_model = pf.write_sam_checkpoint(ns.sam)
    ns.clip_model = pf.write_clip_checkpoint(ns.clip, clip_name)
    ns.llm_model = pf.write_llm_dir(ns.llm)
    return ns


def paper_config(files, **overrides):
    """The paper preset pointed at the tiny checkpoints; the SAM dims set to the tiny file's
    (sam_variant="custom"), and the tiny random query encoder to keep the test fast."""
    kwargs = dict(sam_checkpoint=str(files.sam), sam_variant="custom", clip_model=files.clip_name,
                  clip_pretrained=str(files.clip), llm_path=str(files.llm), image_size=128, patch_size=8,
                  quality_budgets=dict(pf.TINY_QUALITY_BUDGETS), hard_query_min_tokens=10)
    kwargs.update(overrides)
    cfg = get_preset("paper", **kwargs)
    if cfg.sam.variant == "custom":
        for k, v in pf.TINY_SAM.items():
            setattr(cfg.sam, k, v)
    cfg.query.pretrained = False
    return cfg


def load(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        return load_pipeline(config=cfg)


@pytest.fixture(scope="module")
def pipe(files):
    with pytest.warns(UntrainedWeightsWarning):  # paper without our trained weights says so
        return load_pipeline(config=paper_config(files))


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((100, 140, 3)) * 255).astype(np.uint8)  # not square, not 128²


# --- the real paper geometry, no weights ---------------------------------------------------------

def test_paper_preset_geometry_is_deepseek_ocr():
    cfg = get_preset("paper")
    g = cfg.geometry
    assert (g.image_size, g.patch_size, g.cell_patches) == (1024, 16, 8)
    assert (g.patches_per_side, g.cells_per_side, g.n_cells) == (64, 8, 64)
    assert tuple(g.levels) == (1, 4, 16, 64)
    assert (g.min_tokens, g.uniform_budget, g.max_tokens, g.full_tokens) == (64, 256, 4096, 4096)
    assert g.quality_budgets == {"fast": 64, "balanced": 180, "accurate": 400}
    assert (cfg.sam.variant, cfg.sam.img_size, cfg.sam.patch_size, cfg.sam.checkpoint) == ("vit_b", 1024, 16, None)
    assert cfg.clip.model == "ViT-L-14" and cfg.clip.pretrained is None
    assert cfg.llm.path is None and cfg.weights is None


def _official_encoder_args(builder: str) -> dict:
    """The ImageEncoderViT keyword arguments segment_anything.build_sam.<builder> passes, read from
    its source (no 90M-parameter model is built)."""
    import importlib

    # the module, not the function: segment_anything/__init__ re-exports a function named build_sam
    bs = importlib.import_module("segment_anything.build_sam")
    tree = ast.parse(inspect.getsource(bs))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    outer = next(n for n in ast.walk(funcs[builder]) if isinstance(n, ast.Call))  # _build_sam(encoder_...=...)
    names = {k.arg: ast.literal_eval(k.value) for k in outer.keywords if k.arg != "checkpoint"}
    inner = funcs["_build_sam"]
    for stmt in inner.body:  # prompt_embed_dim = 256; image_size = 1024; vit_patch_size = 16
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            names[stmt.targets[0].id] = stmt.value.value
    names["image_embedding_size"] = names["image_size"] // names["vit_patch_size"]
    enc = next(n for n in ast.walk(inner) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "ImageEncoderViT")
    args = {}
    for k in enc.keywords:
        if isinstance(k.value, ast.Name):
            args[k.arg] = names[k.value.id]
        elif isinstance(k.value, (ast.Constant, ast.List, ast.Tuple)):
            args[k.arg] = ast.literal_eval(k.value)
    return args


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_sam_variant_dims_are_the_official_ones(variant):
    official = _official_encoder_args(f"build_sam_{variant}")
    r = SamEncoderConfig(variant=variant).resolved()
    ours = dict(img_size=r.img_size, patch_size=r.patch_size, embed_dim=r.embed_dim, depth=r.depth,
                num_heads=r.num_heads, global_attn_indexes=list(r.global_attn_indexes), window_size=r.window_size,
                out_chans=r.out_chans)
    assert ours == {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in official.items() if k in ours}
    assert set(ours) <= set(official)
    # the constant arguments SamEncoder hard-codes are the official ones too
    assert (official["mlp_ratio"], official["qkv_bias"], official["use_rel_pos"]) == (4, True, True)
    if variant == "vit_b":
        assert get_preset("paper").sam.resolved() == r


@pytest.mark.parametrize("variant", ["vit_b", "vit_h"])
def test_official_sam_state_dict_fits_our_encoder(variant):
    """Keys and shapes of a real sam_vit_* checkpoint match our encoder (built on the meta device:
    shapes only, no memory, no weights)."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        official = sam_model_registry[variant]()
        ours = SamEncoder(SamEncoderConfig(variant=variant))
    state = {k[len("image_encoder."):]: v for k, v in official.state_dict().items() if k.startswith("image_encoder.")}
    assert state
    check_state_dict(ours.encoder, state, f"official {variant}")  # raises CheckpointError on any mismatch


# --- loading the official-format files ---------------------------------------------------------------

def test_sam_weights_are_the_checkpoint_image_encoder(pipe, files):
    on_disk = torch.load(files.sam, map_location="cpu", weights_only=True)
    assert {k.split(".")[0] for k in on_disk} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    expected = {k[len("image_encoder."):]: v for k, v in on_disk.items() if k.startswith("image_encoder.")}
    loaded = pipe.model.sam.encoder.state_dict()
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k
    assert not any(p.requires_grad for p in pipe.model.sam.parameters())


def test_sam_features_equal_official_sam_image_encoder(pipe, files):
    """Our SamEncoder on [0, 255] pixels == the official Sam's preprocess + image_encoder."""
    pixels = torch.rand(1, 3, 128, 128) * 255
    ours = pipe.model.sam(pixels)
    with torch.no_grad():
        official = files.sam_model.image_encoder(files.sam_model.preprocess(pixels[0])[None])
    assert ours.shape == (1, 16, 16, 16)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-5)


def test_clip_visual_weights_are_the_checkpoint(pipe, files):
    on_disk = torch.load(files.clip, map_location="cpu", weights_only=True)
    expected = {k[len("visual."):]: v for k, v in on_disk.items() if k.startswith("visual.")}
    loaded = pipe.model.clip.visual.state_dict()
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k
    assert pipe.model.clip.width == pf.TINY_CLIP_CFG["vision_cfg"]["width"]


def test_llm_weights_are_the_saved_model(pipe, files):
    from transformers import ByT5Tokenizer

    expected = files.llm_model.state_dict()
    loaded = pipe.model.llm.model.state_dict()
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k
    assert isinstance(pipe.model.llm.tokenizer, ByT5Tokenizer)
    assert pipe.config.projector.out_dim == pipe.model.llm.hidden_size == 32  # wired from the loaded LLM


def test_paper_config_is_resolved_from_the_loaded_stages(pipe):
    c = pipe.config
    assert c.preset == "paper"
    assert c.relevance.in_dim == c.compressor.in_dim == c.allocator.feature_dim == pf.TINY_SAM["out_chans"]
    assert c.relevance.query_dim == c.allocator.query_dim == pipe.model.query_encoder.dim
    assert c.adapter.dim == c.projector.in_dim == pf.TINY_CLIP_CFG["vision_cfg"]["width"]


@pytest.mark.parametrize("policy,budget", [("arrcoc", None), ("arrcoc", 16), ("uniform", None)])
def test_paper_pipeline_answers_the_public_contract(pipe, image, policy, budget):
    g = pipe.geometry
    out = pipe(image, "What is the number written on the sign?", budget=budget, policy=policy)
    assert isinstance(out.answer, str)
    assert isinstance(out.num_tokens, int)
    assert g.min_tokens <= out.num_tokens <= out.budget <= g.max_tokens
    if budget is not None:
        assert out.budget == budget
    assert out.tokens_per_cell.shape == (2, 2)
    assert np.issubdtype(out.tokens_per_cell.dtype, np.integer)
    assert set(out.tokens_per_cell.ravel()) <= set(g.levels)
    assert int(out.tokens_per_cell.sum()) == out.num_tokens
    assert out.cell_boxes.shape == (2, 2, 4)
    assert out.cell_boxes[0, 0, :2].tolist() == [0, 0] and out.cell_boxes[-1, -1, 2:].tolist() == [140, 100]
    assert out.relevance.shape == (16, 16)
    assert np.isfinite(out.relevance).all() and out.relevance.min() >= 0 and out.relevance.max() <= 1
    assert STAGES <= set(out.timings) and all(t >= 0 for t in out.timings.values())
    assert out.image_size == (100, 140) and out.full_tokens == 256


def test_every_torch_load_is_weights_only(files, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load(paper_config(files))
    assert len(calls) >= 2  # the SAM file and the open_clip file
    assert all(c is True for c in calls), calls


# --- errors ------------------------------------------------------------------------------------

def _truncate(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_sam_missing_file(files):
    with pytest.raises(CheckpointError, match="SAM checkpoint not found.*no_such_sam.pth"):
        load(paper_config(files, sam_checkpoint=str(files.dir / "no_such_sam.pth")))


def test_sam_truncated_file(files, tmp_path):
    bad = _truncate(files.sam, tmp_path / "sam_half.pth")
    with pytest.raises(CheckpointError, match="cannot read SAM checkpoint.*truncated"):
        load(paper_config(files, sam_checkpoint=str(bad)))


def test_sam_file_of_another_size_lists_shape_mismatches(files, tmp_path):
    other = tmp_path / "sam_embed48.pth"
    pf.write_sam_checkpoint(other, embed_dim=48)
    with pytest.raises(CheckpointError) as e:
        load(paper_config(files, sam_checkpoint=str(other)))
    msg = str(e.value)
    assert "does not match" in msg and "shape mismatches" in msg
    assert "pos_embed: file (1, 16, 16, 48) vs model (1, 16, 16, 32)" in msg
    assert "patch_embed.proj.weight: file (48, 3, 8, 8) vs model (32, 3, 8, 8)" in msg


def test_sam_file_without_image_encoder_keys(files, tmp_path):
    bare = tmp_path / "encoder_only.pth"  # an encoder state dict without the Sam prefix: not the official format
    torch.save(files.sam_model.image_encoder.state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"no 'image_encoder\.\*' keys"):
        load(paper_config(files, sam_checkpoint=str(bare)))


def test_sam_unknown_variant_lists_known_ones(files):
    with pytest.raises(CheckpointError, match="unknown SAM variant 'vit_x'.*vit_b.*vit_h.*vit_l"):
        load(paper_config(files, sam_variant="vit_x"))
    assert set(SAM_VARIANTS) == {"vit_b", "vit_l", "vit_h"}


def test_malicious_pickle_is_refused_not_executed(files, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": pf.Malicious(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot read SAM checkpoint"):
        load(paper_config(files, sam_checkpoint=str(evil)))
    with pytest.raises(CheckpointError, match="open_clip"):
        load(paper_config(files, clip_pretrained=str(evil)))
    assert not marker.exists()
    # control: the payload is live — an unsafe load would have run it
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pickle payload executed"


def test_open_clip_checkpoint_of_another_model(files, tmp_path):
    cfg = {**pf.TINY_CLIP_CFG, "vision_cfg": {**pf.TINY_CLIP_CFG["vision_cfg"], "width": 96}}
    other_name = pf.register_tiny_clip(tmp_path / "configs", name="arrcoc-test-tiny-clip-w96", cfg=cfg)
    other = tmp_path / "open_clip_w96.pt"
    pf.write_clip_checkpoint(other, other_name)
    with pytest.raises(CheckpointError) as e:
        load(paper_config(files, clip_pretrained=str(other)))
    msg = str(e.value)
    assert files.clip_name in msg and str(other) in msg and "size mismatch" in msg


def test_open_clip_truncated_or_missing_checkpoint(files, tmp_path):
    bad = _truncate(files.clip, tmp_path / "open_clip_half.pt")
    with pytest.raises(CheckpointError, match="truncated"):
        load(paper_config(files, clip_pretrained=str(bad)))
    with pytest.raises(CheckpointError, match="open_clip checkpoint not found"):
        load(paper_config(files, clip_pretrained=str(tmp_path / "nope.pt")))


def test_open_clip_pretrained_tag_is_refused_without_downloading(files, monkeypatch):
    import open_clip.factory as factory

    attempts = []

    def no_download(*args, **kwargs):
        attempts.append(args)
        raise OSError("offline")

    for fn in ("download_pretrained", "download_pretrained_from_hf"):
        monkeypatch.setattr(factory, fn, no_download)
    with pytest.raises(CheckpointError, match="local file is required"):
        load(paper_config(files, clip_model="ViT-B-32", clip_pretrained="openai"))
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):
        load(paper_config(files, clip_model="hf-hub:timm/ViT-B-16-SigLIP", clip_pretrained=None))
    assert attempts == []


def test_llm_dir_without_config_json(files, tmp_path):
    (tmp_path / "empty_llm").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load(paper_config(files, llm_path=str(tmp_path / "empty_llm")))
    with pytest.raises(CheckpointError, match="has no config.json"):
        load(paper_config(files, llm_path=str(tmp_path / "no_such_dir")))


def _broken_llm_dirs(files, root):
    from safetensors.torch import load_file, save_file

    dirs = {}
    for case in ("no_weights", "truncated", "missing_tensor", "other_size_config", "no_tokenizer"):
        dirs[case] = d = root / case
        shutil.copytree(files.llm, d)
    (dirs["no_weights"] / "model.safetensors").unlink()
    _truncate(files.llm / "model.safetensors", dirs["truncated"] / "model.safetensors")
    state = load_file(files.llm / "model.safetensors")
    del state[next(k for k in state if "layers.1.mlp" in k)]
    save_file(state, dirs["missing_tensor"] / "model.safetensors", metadata={"format": "pt"})
    pf.make_tiny_llm(hidden=48)[0].config.to_json_file(dirs["other_size_config"] / "config.json")
    for f in dirs["no_tokenizer"].iterdir():
        if f.name.startswith(("tokenizer", "added_tokens", "special_tokens")):
            f.unlink()
    return dirs


def test_broken_llm_dirs_are_checkpoint_errors(files, tmp_path):
    """transformers would raise OSError/RuntimeError/SafetensorError, or silently re-initialise missing
    tensors, or build an empty tokenizer: each must be a CheckpointError naming the directory."""
    for case, d in _broken_llm_dirs(files, tmp_path).items():
        with pytest.raises(CheckpointError, match=str(d)) as e:
            load(paper_config(files, llm_path=str(d)))
        if case == "missing_tensor":
            assert "missing_keys" in str(e.value) and "layers.1.mlp" in str(e.value)
        if case == "no_tokenizer":
            assert "tokenizer" in str(e.value)


# --- the openclip-text query encoder -------------------------------------------------------------------

def test_openclip_text_query_encoder(files):
    enc = build_query_encoder(QueryEncoderConfig(kind="openclip-text", openclip_model=files.clip_name,
                                                 openclip_pretrained=str(files.clip)))
    questions = ["What is the total?", "Which colour is the sky above the tallest building in the picture?"]
    q = enc(questions)
    B, L, D = q.tokens.shape
    width = pf.TINY_CLIP_CFG["text_cfg"]["width"]
    assert (B, L, D) == (2, pf.TINY_CLIP_CFG["text_cfg"]["context_length"], width) and enc.dim == width
    assert q.mask.shape == (B, L) and q.mask.dtype == torch.bool
    assert q.mask[:, 0].all() and q.mask.sum(1)[1] > q.mask.sum(1)[0] and not q.mask.all()
    assert q.pooled.shape == (B, D)
    torch.testing.assert_close(q.pooled.norm(dim=-1), torch.ones(B))
    # the token states are open_clip's own (the saved model's ln_final output inside encode_text)
    import open_clip

    seen = []
    handle = files.clip_model.ln_final.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            files.clip_model.encode_text(open_clip.get_tokenizer(files.clip_name)(questions))
    finally:
        handle.remove()
    torch.testing.assert_close(q.tokens, seen[0], rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters())


def test_openclip_text_query_encoder_in_the_paper_pipeline(files, image):
    cfg = paper_config(files)
    cfg.query = QueryEncoderConfig(kind="openclip-text", openclip_model=files.clip_name,
                                   openclip_pretrained=str(files.clip))
    p = load(cfg)
    assert p.config.relevance.query_dim == pf.TINY_CLIP_CFG["text_cfg"]["width"]
    out = p(image, "What is the title?")
    assert isinstance(out.answer, str) and out.relevance.shape == (16, 16)


def test_openclip_text_query_encoder_bad_checkpoint(files, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build_query_encoder(QueryEncoderConfig(kind="openclip-text", openclip_model=files.clip_name,
                                               openclip_pretrained=str(tmp_path / "nope.pt")))
