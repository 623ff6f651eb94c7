"""The public contract (README, "Python API"), for every preset that builds without external files."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from arrcoc_lab import InputError, load_pipeline
from arrcoc_lab.policies import POLICIES, get_policy
from arrcoc_lab.errors import InterfaceError
from arrcoc_lab.pipeline import PipelineOutput, UntrainedWeightsWarning

STAGES = {"sam", "query", "relevance", "allocator", "compressor", "clip", "adapter", "projector", "llm"}


@pytest.fixture(params=["tiny", "lab"])
def pipe(request, tiny_pipe, lab_pipe):
    return {"tiny": tiny_pipe, "lab": lab_pipe}[request.param]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_contract(pipe, rgb, policy):
    g = pipe.geometry
    out = pipe(rgb, "What's the formula on the billboard?", policy=policy)
    assert isinstance(out, PipelineOutput) and isinstance(out.answer, str)
    assert isinstance(out.num_tokens, int) and g.min_tokens <= out.num_tokens <= g.max_tokens
    assert out.tokens_per_cell.shape == (g.cells_per_side,) * 2 and out.tokens_per_cell.dtype.kind == "i"
    assert out.tokens_per_cell.sum() == out.num_tokens
    if not get_policy(policy).token_level:  # token-level baselines keep any number of tokens per cell
        assert set(np.unique(out.tokens_per_cell)) <= set(g.levels)
    assert out.cell_boxes.shape == (g.cells_per_side, g.cells_per_side, 4)
    assert out.cell_boxes[-1, -1, 2:].tolist() == [rgb.shape[1], rgb.shape[0]]  # boxes in input-image pixels
    assert out.relevance.shape == (g.patches_per_side,) * 2
    assert out.relevance.min() >= 0 and out.relevance.max() <= 1
    assert set(out.timings) == STAGES and all(t >= 0 for t in out.timings.values())
    assert out.compression_ratio == pytest.approx(g.full_tokens / out.num_tokens)


def test_image_forms_agree(tiny_pipe, rgb, tmp_path):
    p = tmp_path / "img.png"
    Image.fromarray(rgb).save(p)
    outs = [tiny_pipe(x, "What city is this?", policy="arrcoc") for x in (rgb, Image.fromarray(rgb), str(p))]
    for o in outs[1:]:
        assert (o.tokens_per_cell == outs[0].tokens_per_cell).all()
        assert np.allclose(o.relevance, outs[0].relevance)


def test_features_cached_between_questions(lab_pipe, rgb):
    first = lab_pipe(rgb + 1, "What city is this?")
    second = lab_pipe(rgb + 1, "What is the code on the sign?")
    assert first.timings["sam"] > 0 and second.timings["sam"] == 0.0


def test_query_reaches_the_relevance(lab_pipe, rgb):
    a = lab_pipe(rgb, "What's the formula on the billboard?")
    b = lab_pipe(rgb, "What city is this?")
    assert not np.allclose(a.relevance, b.relevance)


def test_quality_modes(lab_pipe, rgb):
    for mode, tokens in lab_pipe.geometry.quality_budgets.items():
        out = lab_pipe(rgb, "What city is this?", budget=mode, policy="uniform")
        assert out.budget == tokens and out.num_tokens <= tokens


@pytest.mark.parametrize("budget", [15, 1025, -1, 3.5, "lots"])
def test_bad_budget(lab_pipe, rgb, budget):
    with pytest.raises(InputError, match=r"\[16, 1024\]|quality mode"):
        lab_pipe(rgb, "What city is this?", budget=budget)


def test_bad_policy_and_query(lab_pipe, rgb):
    with pytest.raises(InputError, match="known"):
        lab_pipe(rgb, "What city is this?", policy="best")
    with pytest.raises(InputError, match="empty"):
        lab_pipe(rgb, "  ")


def test_bad_input_leaves_no_partial_state(lab_pipe, rgb):
    """A failed call neither caches anything nor changes the next call's result."""
    before = lab_pipe(rgb, "What city is this?")
    cache = dict(lab_pipe._cache)
    for bad in (dict(image=b"garbage", query="q"), dict(image=rgb, query=""), dict(image=rgb, query="q", budget=1)):
        with pytest.raises(InputError):
            lab_pipe(bad.pop("image"), **bad)
    assert lab_pipe._cache.keys() == cache.keys()
    after = lab_pipe(rgb, "What city is this?")
    assert after.answer == before.answer and (after.tokens_per_cell == before.tokens_per_cell).all()


def test_unknown_preset():
    with pytest.raises(InputError, match="known: .*lab.*paper.*tiny"):
        load_pipeline("huge")


def test_untrained_preset_warns():
    with pytest.warns(UntrainedWeightsWarning):
        load_pipeline("tiny")


def test_trace_holds_every_stage(lab_pipe, rgb):
    tr = lab_pipe(rgb, "What city is this?").trace
    assert {"sam.features", "relevance.patch", "allocator.levels", "clip.tokens", "adapter.tokens",
            "projector.tokens"} <= set(tr.stats)
    assert all(s.finite for s in tr.stats.values())
    assert tr.allocation is not None and tr.tokens is not None and tr.adapter is not None


def test_probes_catch_a_broken_stage(tiny_pipe, rgb, monkeypatch):
    real = tiny_pipe.model.adapter.forward

    def broken(*a, **k):
        out = real(*a, **k)
        out.tokens = out.tokens * float("nan")
        return out

    monkeypatch.setattr(tiny_pipe.model.adapter, "forward", broken)
    with pytest.raises(InterfaceError, match="adapter.tokens.*non-finite"):
        tiny_pipe(rgb, "What city is this?")


def test_lab_loads_the_shipped_weights_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedWeightsWarning)
        pipe = load_pipeline("lab")
    assert pipe.config.weights.endswith("weights/lab/model.safetensors")
    assert pipe.config.allocator.utility_exponent == 0.75  # the resolved config shipped beside the weights


def test_random_weights_are_the_seeded_init_without_warning():
    """weights="random" is where training starts: the preset's seeded init, asked for, so no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedWeightsWarning)
        a = load_pipeline("tiny", weights="random")
        b = load_pipeline("lab", weights="random")
    assert a.config.weights is None and b.config.weights is None and b.config.preset == "lab"
    with pytest.warns(UntrainedWeightsWarning):
        c = load_pipeline("tiny")
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), c.model.state_dict().values()))
