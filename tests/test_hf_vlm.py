"""The hf-vlm preset (ARR-COC on an existing VLM), offline, on tiny random VLM folders of the real
classes (tests/vlm_fixtures.py): LLaVA and Qwen2-VL under the same contract pipe(image, query,
budget, policy), the VLM's own tokens and prompt, fewer visual tokens into its LLM at smaller
budgets, phase 1-A on its model, and none of its weights in our files."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from arrcoc_lab import InputError, load_pipeline
from arrcoc_lab.checkpoint import save_weights, stored_tensors
from arrcoc_lab.errors import CheckpointError
from arrcoc_lab.modeling.presets import PipelineConfig, get_preset
from arrcoc_lab.modeling.trace import STAGES
from arrcoc_lab.modeling.vlm import pick_cell, vlm_geometry
from arrcoc_lab.modeling.vlm_stages import zero_shot_logits
from arrcoc_lab.pipeline import UntrainedWeightsWarning
from arrcoc_lab.policies import POLICIES, get_policy
from tests.vlm_fixtures import write_llava, write_qwen2_vl

FAMILIES = ("llava", "qwen2_vl")
QUESTION = "What does the sign say?"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    return {"llava": write_llava(root / "llava"), "qwen2_vl": write_qwen2_vl(root / "qwen2_vl")}


@pytest.fixture(scope="module")
def pipes(folders):
    with warnings.catch_warnings():  # a real VLM, zero-shot: no untrained-weights warning
        warnings.simplefilter("error", UntrainedWeightsWarning)
        return {"llava": load_pipeline("hf-vlm", vlm_path=str(folders["llava"]), max_new_tokens=4),
                "qwen2_vl": load_pipeline("hf-vlm", vlm_path=str(folders["qwen2_vl"]), image_size=448,
                                          max_new_tokens=4)}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def square(pipes, family):
    """A square image at the model's input size, so the VLM's processor leaves it as it is."""
    s = pipes[family].geometry.image_size
    return (np.random.default_rng(1).random((s, s, 3)) * 255).astype(np.uint8)


def _vlm_inputs(pipe, image: np.ndarray, question: str = QUESTION):
    """What the VLM's own processor makes of the image and the pipeline's prompt."""
    llm = pipe.model.llm
    return llm.processor(images=Image.fromarray(image), text=llm.render(question), return_tensors="pt")


def test_geometry_from_the_vision_config(pipes, folders):
    """One patch = one visual token of the VLM; 4×4-token cells; `full` = the VLM's own count."""
    llava, qwen = pipes["llava"].geometry, pipes["qwen2_vl"].geometry
    assert (llava.image_size, llava.patch_size, llava.patches_per_side) == (224, 14, 16)  # CLIP 224², patch 14
    assert (qwen.image_size, qwen.patch_size, qwen.patches_per_side) == (448, 28, 16)  # patch 14 × merge 2
    for g in (llava, qwen):
        assert g.cells_per_side == 4 and g.levels == (1, 4, 16) and (g.min_tokens, g.max_tokens) == (16, 256)
    default = get_preset("hf-vlm", vlm_path=str(folders["qwen2_vl"])).geometry  # Qwen2-VL: 672 px by default
    assert (default.image_size, default.patches_per_side, default.cells_per_side) == (672, 24, 6)
    real = vlm_geometry(336, 14)  # LLaVA-1.5: 24×24 tokens → 6×6 cells of 1/4/16: 36 … 576
    assert (real.cells_per_side, real.levels, real.min_tokens, real.max_tokens) == (6, (1, 4, 16), 36, 576)
    assert vlm_geometry(448, 14).levels == (1, 4, 16, 64) and pick_cell(27) == 3  # 32 → 8-token cells; SigLIP's 27
    with pytest.raises(InputError, match="pooling factor"):
        pick_cell(7)
    with pytest.raises(InputError, match="vlm_path"):
        load_pipeline("hf-vlm")
    with pytest.raises(InputError, match="image_size"):
        get_preset("hf-vlm", vlm_path=str(folders["llava"]), image_size=336)


def test_full_is_the_vlm_own_image_token_count(pipes, family, square):
    pipe = pipes[family]
    own = int((_vlm_inputs(pipe, square).input_ids == pipe.model.llm.image_token_id).sum())
    out = pipe(square, QUESTION, policy="full")
    assert out.num_tokens == own == pipe.geometry.max_tokens == out.trace.visual.shape[1]


def test_vision_tower_gives_the_vlm_own_tokens(pipes, family, square):
    """SAM's place: the VLM's vision tower + projector, on its own normalisation and patch layout."""
    pipe = pipes[family]
    inputs = _vlm_inputs(pipe, square)
    vlm = pipe.model.llm.model
    with torch.no_grad():
        extra = {"image_grid_thw": inputs["image_grid_thw"]} if family == "qwen2_vl" else {}
        own = vlm.model.get_image_features(inputs["pixel_values"], **extra).pooler_output[0]  # (N, H)
    _, _, F, _, _ = pipe.prepare(square)  # (1, H, G, G)
    ours = F[0].flatten(1).T  # (H, G, G) -> (G², H)
    torch.testing.assert_close(ours, own.float(), atol=1e-4, rtol=1e-4)


def test_full_answer_is_the_vlm_own(pipes, family, square):
    """At `full`, the LLM's input is the VLM's own (prompt, image tokens, LLaVA's 1-D and Qwen2-VL's
    M-RoPE positions): the same logits and the same greedy answer as the VLM run by itself."""
    pipe = pipes[family]
    inputs = _vlm_inputs(pipe, square)
    llm, vlm = pipe.model.llm, pipe.model.llm.model
    out = pipe(square, QUESTION, policy="full")
    tr = out.trace
    batch = llm.build(tr.visual, tr.tokens.mask, [QUESTION], positions=tr.tokens.positions)
    with torch.no_grad():
        ours = vlm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids).logits[0, -1]
        own = vlm(**inputs).logits[0, -1]
        generated = vlm.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    torch.testing.assert_close(ours, own, atol=1e-4, rtol=1e-4)
    ids = [t for t in generated.tolist() if t not in llm.eos]
    assert out.answer == llm.tokenizer.decode(ids, skip_special_tokens=True).strip()


def test_fastv_keeps_the_tokens_the_vlm_attends_to(pipes, family, rgb):
    """FastV through the VLM: the kept tokens are those the last prompt token attends to most in
    its LLM's layer 2, on the full sequence as the VLM reads it (raster order)."""
    pipe = pipes[family]
    llm, vlm = pipe.model.llm, pipe.model.llm.model
    kept = pipe(rgb, QUESTION, budget=24, policy="fastv").trace.tokens
    every = pipe(rgb, QUESTION, policy="full").trace
    full = every.tokens
    batch = llm.build(every.visual, full.mask, [QUESTION], left_pad=True, positions=full.positions)
    lm = vlm.model.language_model
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            w = vlm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, output_attentions=True).attentions[1]  # layer 2
    finally:
        lm.set_attn_implementation(previous)
    s, n = int(batch.visual_start[0]), int(full.mask[0].sum())
    top = w[0, :, -1, s:s + n].mean(0).topk(24).indices  # (24,) sequence slots
    want = {tuple(p) for p in full.positions[0][batch.orders[0][top]].tolist()}
    assert {tuple(p) for p in kept.positions[0][kept.mask[0]].tolist()} == want


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_at_two_budgets(pipes, family, policy, rgb):
    """The contract's fields, within budget, and fewer visual tokens reaching the VLM's LLM at the
    smaller budget (its prefill length, seen by a hook, and the trace's visual tokens)."""
    pipe = pipes[family]
    g = pipe.geometry
    lm = pipe.model.llm.model.model.language_model
    seen = []
    hook = lm.register_forward_pre_hook(lambda m, a, k: seen.append(k["inputs_embeds"].shape[1])
                                        if k.get("inputs_embeds") is not None else None, with_kwargs=True)
    outs, prefill = {}, {}
    try:
        for budget in (24, 64):
            seen.clear()
            outs[budget] = pipe(rgb, QUESTION, budget=budget, policy=policy)
            prefill[budget] = [n for n in seen if n > 1][-1]  # the answer's prefill (after FastV's score pass;
            #                                                   the decoding steps read one token each)
    finally:
        hook.remove()
    for budget, out in outs.items():
        assert isinstance(out.answer, str) and isinstance(out.num_tokens, int)
        assert out.num_tokens == g.max_tokens if policy == "full" else out.num_tokens <= budget
        assert out.tokens_per_cell.shape == (g.cells_per_side,) * 2 and out.tokens_per_cell.sum() == out.num_tokens
        if not get_policy(policy).token_level:
            assert set(np.unique(out.tokens_per_cell)) <= set(g.levels)
        assert out.cell_boxes.shape == (g.cells_per_side, g.cells_per_side, 4)
        assert out.cell_boxes[-1, -1, 2:].tolist() == [rgb.shape[1], rgb.shape[0]]
        assert out.relevance.shape == (g.patches_per_side,) * 2 and 0 <= out.relevance.min() <= out.relevance.max() <= 1
        assert out.cell_relevance.shape == out.levels.shape == (g.cells_per_side,) * 2
        assert set(out.timings) == set(STAGES) and all(t >= 0 for t in out.timings.values())
        assert out.trace.visual.shape[1] == out.num_tokens  # the visual tokens handed to the LLM
    small, large = outs[24], outs[64]
    assert prefill[64] - prefill[24] == large.num_tokens - small.num_tokens  # the prompt is the same
    if policy == "full":
        assert small.num_tokens == large.num_tokens == g.max_tokens
    elif policy != "learned-tier":  # the untrained tier classifier may pick fewer than 24 tokens for both
        assert small.num_tokens < large.num_tokens


def test_a_batch_answers_as_its_samples_do(pipes, family, rgb):
    """Left-padded batches (evaluation, training): each sample gets its own answer and allocation."""
    pipe = pipes[family]
    questions, budgets = [QUESTION, "Is there a dog in the corner?"], [24, 64]
    alone = [pipe(rgb, q, budget=b, policy="arrcoc") for q, b in zip(questions, budgets)]
    _, pixels, features, _, _ = pipe.prepare(rgb)
    with torch.no_grad():
        out = pipe.model(pixels.expand(2, -1, -1, -1), questions, policy=get_policy("arrcoc"), budget=budgets,
                         features=features.expand(2, -1, -1, -1), max_new_tokens=4)
    assert out.trace.allocation.num_tokens.tolist() == [a.num_tokens for a in alone]
    assert out.answers == [a.answer for a in alone]


def test_zero_shot_relevance_follows_the_question():
    """The question's tokens score the visual tokens in the LLM's input space: a visual token that
    looks like a question word lights up, whatever the VLM's scale."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 3, 32, generator=g)  # (B, L, H): three question tokens
    features = torch.randn(1, 32, 4, 4, generator=g)  # (B, H, Hp, Wp): visual tokens
    features[0, :, 2, 3] = 50 * text[0, 1]  # one visual token looks like question token 1
    logits = zero_shot_logits(features, text, torch.ones(1, 3, dtype=torch.bool))
    assert logits.shape == (1, 4, 4) and int(logits.flatten().argmax()) == 2 * 4 + 3
    logits_scaled = zero_shot_logits(features * 7, text * 0.1, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(logits, logits_scaled, atol=1e-4, rtol=1e-4)  # scale-free


def test_a_fresh_pipeline_allocates_by_the_zero_shot_relevance(pipes, family, rgb):
    pipe = pipes[family]
    a = pipe(rgb, QUESTION, budget=40, policy="arrcoc")
    b = pipe(rgb, "Is there a dog in the corner?", budget=40, policy="arrcoc")
    r = a.trace.relevance
    assert float(r.learned_weight.detach()) == 0.0
    torch.testing.assert_close(r.patch, r.zero_shot)  # the learned analyzer adds nothing before phase 1-A
    assert not np.allclose(a.relevance, b.relevance)  # query-dependent


def test_our_files_hold_no_vlm_weights(pipes, folders, tmp_path, rgb):
    """Only the analyzer, the allocator and the VLM's digest are ours; weights load back onto the
    same VLM and are refused on another."""
    pipe = pipes["llava"]
    keys = set(stored_tensors(pipe.model))
    assert "sam.vlm_digest" in keys
    assert {k.split(".")[0] for k in keys} == {"sam", "relevance", "allocator"}
    assert not any(k.startswith(("sam.vlm.", "llm.", "query_encoder.")) for k in keys)
    with torch.no_grad():
        pipe.model.relevance.learned_weight.fill_(0.5)
    try:
        save_weights(pipe.model, tmp_path / "model.safetensors")
        before = pipe(rgb, QUESTION, budget=40, policy="arrcoc")
    finally:
        with torch.no_grad():
            pipe.model.relevance.learned_weight.fill_(0.0)
    again = load_pipeline("hf-vlm", vlm_path=str(folders["llava"]), max_new_tokens=4,
                          weights=str(tmp_path / "model.safetensors"))
    after = again(rgb, QUESTION, budget=40, policy="arrcoc")
    assert np.allclose(before.relevance, after.relevance) and before.answer == after.answer
    load_pipeline("hf-vlm", vlm_path=str(folders["llava"]), dtype="bfloat16",  # the same VLM in another dtype
                  weights=str(tmp_path / "model.safetensors"))
    other = write_llava(tmp_path / "other", seed=5)
    with pytest.raises(CheckpointError, match="another VLM"):
        load_pipeline("hf-vlm", vlm_path=str(other), weights=str(tmp_path / "model.safetensors"))


def test_config_round_trip_and_other_presets_unchanged(pipes):
    cfg = pipes["qwen2_vl"].config
    assert cfg.preset == "hf-vlm" and cfg.vlm.family == "qwen2_vl" and cfg.vlm.hidden_size == 32
    assert PipelineConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert "vlm" not in get_preset("lab").to_dict()  # the other presets' configs carry no vlm section


def test_phase1a_trains_the_analyzer_on_region_labels(tmp_path):
    """Phase 1-A's step on an hf-vlm model: SceneBench at the VLM's geometry (it renders at ≥ 32
    tokens a side: a LLaVA at 448², 32×32 patches), its tokens cached as features, the relevance and
    tier losses, gradients into the analyzer only. (The training loop's set_trainable also freezes
    `model.clip.visual.conv1`, which the pass-through CLIP stage lacks: docs/HF_VLM.md; here the
    phase's modules are unfrozen by hand.)"""
    from arrcoc_lab.training.config import TrainConfig
    from arrcoc_lab.training.phases import get_phase
    from arrcoc_lab.training.sampling import load_train_data, make_batch
    from arrcoc_lab.training.step import TrainStep

    model = load_pipeline("hf-vlm", vlm_path=str(write_llava(tmp_path / "llava448", image_size=448))).model
    assert model.geometry.patches_per_side == 32 and model.geometry.levels == (1, 4, 16, 64)
    cfg = TrainConfig(n_scenes=2, batch_size=4, cache_dir=str(tmp_path), progress=False, render_workers=0)
    data = load_train_data(model, cfg)
    assert data.scenes.features.shape[1:] == (32, 32, 32)  # the VLM's visual tokens, as the feature cache
    phase = get_phase("phase1a", steps=1)
    model.requires_grad_(False)
    for name in phase.trainable:
        getattr(model, name).requires_grad_(True)
    try:
        out = TrainStep(model, phase)(make_batch(data, model, phase, 0, cfg, 0, 1, "cpu"))
        assert {"relevance", "tier"} <= set(out)
        (out["relevance"] + out["tier"]).backward()
        assert model.relevance.learned_weight.grad is not None and model.relevance.learned_weight.grad.abs() > 0
        assert all(p.grad is None for p in model.llm.model.parameters())
    finally:
        model.zero_grad(set_to_none=True)


def test_cli_runs_the_hf_vlm_preset_and_refuses_its_options_elsewhere(folders, capsys):
    from arrcoc_lab.apps.cli import main

    args = ["inspect", "example:scenebench-paris", QUESTION, "--preset", "hf-vlm", "--vlm-path", str(folders["llava"])]
    assert main(args + ["--budget", "36", "--policy", "uniform"]) == 0
    assert "visual tokens" in capsys.readouterr().out
    assert main(["inspect", "example:scenebench-paris", QUESTION, "--vlm-path", str(folders["llava"])]) == 2
    assert "--vlm-path apply to the hf-vlm preset" in capsys.readouterr().err
    assert main(["inspect", "example:scenebench-paris", QUESTION, "--preset", "hf-vlm"]) == 2
    assert "needs vlm_path" in capsys.readouterr().err
