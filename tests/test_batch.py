"""Batched inference (`Pipeline.batch`, issue 20): several (image, question) pairs in one forward give
what one-by-one calls give — answers, token counts, tokens per cell and levels exactly, relevance to
1e-5 — for every registered policy, with mixed budgets, on the tiny preset and the shipped lab weights."""
import numpy as np
import pytest
import torch

from arrcoc_lab import InputError, list_examples
from arrcoc_lab.policies import POLICIES


def _pairs(n_images: int = 3, per_image: int = 2):
    """Shipped example images with their own questions: several questions per image, so SAM's
    cache and the per-item padding are both exercised."""
    return [(e.path, q.question) for e in list_examples()[:n_images] for q in e.questions[:per_image]]


def _mixed_budgets(pipe, n: int) -> list:
    """Every budget form, cycling: the policy's default, a quality mode, a token count, another mode."""
    forms = [None, "fast", pipe.geometry.uniform_budget, "accurate"]
    return [forms[i % len(forms)] for i in range(n)]


def _same(batched, alone) -> None:
    assert len(batched) == len(alone)
    for k, (b, a) in enumerate(zip(batched, alone)):
        assert b.answer == a.answer, (k, b.answer, a.answer)
        assert (b.num_tokens, b.budget, b.tier, b.query, b.policy) == (a.num_tokens, a.budget, a.tier, a.query, a.policy)
        np.testing.assert_array_equal(b.tokens_per_cell, a.tokens_per_cell)
        np.testing.assert_array_equal(b.levels, a.levels)
        np.testing.assert_array_equal(b.cell_boxes, a.cell_boxes)
        np.testing.assert_allclose(b.relevance, a.relevance, atol=1e-5, rtol=0)
        np.testing.assert_allclose(b.cell_relevance, a.cell_relevance, atol=1e-5, rtol=0)
        # each output's trace is its own sample's, shaped as a forward of it alone
        assert b.trace.visual.shape == a.trace.visual.shape
        assert b.trace.tokens.tokens.shape == a.trace.tokens.tokens.shape and bool(b.trace.tokens.mask.all())
        assert b.trace.allocation.budgets == a.trace.allocation.budgets
        assert set(b.timings) == set(a.timings)


def _check_every_policy(pipe, pairs, policies) -> None:
    images, queries = [p for p, _ in pairs], [q for _, q in pairs]
    budgets = _mixed_budgets(pipe, len(pairs))
    for policy in policies:
        alone = [pipe(img, q, budget=b, policy=policy) for img, q, b in zip(images, queries, budgets)]
        _same(pipe.batch(images, queries, budget=budgets, policy=policy), alone)


def test_batch_equals_one_by_one_for_every_policy_tiny(tiny_pipe):
    _check_every_policy(tiny_pipe, _pairs(), sorted(POLICIES))


@pytest.mark.slow
def test_batch_equals_one_by_one_for_every_policy_lab(lab_pipe):
    """The shipped weights answer differently per question, so greedy generation under left padding
    is checked on real, varied answers."""
    pairs = _pairs()
    _check_every_policy(lab_pipe, pairs, sorted(POLICIES))
    answers = {o.answer for o in lab_pipe.batch([p for p, _ in pairs], [q for _, q in pairs], budget=64)}
    assert len(answers) > 1  # not one degenerate answer: the padding really is tested


def test_sam_runs_once_per_distinct_image(tiny_pipe, rgb, monkeypatch):
    calls = []
    encode = tiny_pipe.model.encode_image
    monkeypatch.setattr(tiny_pipe.model, "encode_image", lambda pixels: calls.append(1) or encode(pixels))
    other = rgb[::-1].copy() + 3
    outs = tiny_pipe.batch([rgb + 7, other, rgb + 7, other.copy()], ["What city is this?", "What city is this?",
                                                                       "Read the sign.", "What is the title?"])
    assert len(calls) == 2  # the same object twice, and a copy with the same content: one encode each
    sam = [o.timings["sam"] for o in outs]
    assert sam[0] > 0 and sam[1] > 0 and sam[2] == 0.0 and sam[3] == 0.0  # the first pair that asks pays for it
    assert tiny_pipe.batch([rgb + 7], ["What city is this?"])[0].timings["sam"] == 0.0  # cached across calls
    assert len(calls) == 2


def test_one_budget_for_all_and_a_single_pair(tiny_pipe, rgb):
    one = tiny_pipe(rgb, "What city is this?", budget="fast", policy="uniform")
    both = tiny_pipe.batch([rgb, rgb], ["What city is this?"] * 2, budget="fast", policy="uniform")
    _same(both, [one, one])
    alone = tiny_pipe.batch([rgb], ["What city is this?"], budget="fast", policy="uniform")
    _same(alone, [one])


def test_compare_is_a_batch(tiny_pipe, rgb, monkeypatch):
    seen = []
    batch = type(tiny_pipe).batch
    monkeypatch.setattr(type(tiny_pipe), "batch", lambda self, *a, **k: seen.append(a) or batch(self, *a, **k))
    qs = ["What city is this?", "Read the number on the blue sign."]
    a, b = tiny_pipe.compare(rgb, qs, budget=12)
    assert len(seen) == 1 and seen[0][1] == qs and (a.query, b.query) == tuple(qs)
    _same([a, b], [tiny_pipe(rgb, q, budget=12) for q in qs])


@pytest.mark.parametrize("call, message", [
    (lambda p, x: p.batch(x, ["a?"]), "images must be a non-empty list"),
    (lambda p, x: p.batch([x], "a?"), "queries must be a non-empty list"),
    (lambda p, x: p.batch([], []), "non-empty list"),
    (lambda p, x: p.batch([x, x], ["a?"]), "2 images, 1 queries"),
    (lambda p, x: p.batch([x, x], ["a?", "b?"], budget=[4]), "one per question (2)"),
    (lambda p, x: p.batch([x, x], ["a?", "  "]), "query"),
    (lambda p, x: p.batch([x, x], ["a?", "b?"], budget=[4, 10 ** 6]), "budget"),
    (lambda p, x: p.batch([x, x], ["a?", "b?"], policy="nope"), "nope"),
])
def test_bad_batches_fail_before_sam(tiny_pipe, rgb, monkeypatch, call, message):
    monkeypatch.setattr(tiny_pipe.model, "encode_image", lambda pixels: pytest.fail("SAM ran"))
    with pytest.raises(InputError) as e:
        call(tiny_pipe, rgb + 11)
    assert message in str(e.value)


def test_trace_item_keeps_shared_fields(tiny_pipe, rgb):
    """RelevanceOutput.mix (3,) is shared by the batch, even in a batch of three."""
    outs = tiny_pipe.batch([rgb] * 3, ["a?", "What city is this?", "Read the sign."], policy="arrcoc")
    for o in outs:
        assert o.trace.relevance.mix.shape == (3,) and o.trace.relevance.patch.shape[0] == 1
        assert torch.equal(o.trace.relevance.mix, outs[0].trace.relevance.mix)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_batch_equals_one_by_one_on_an_existing_vlm(tmp_path, rgb, family):
    """hf-vlm: the VLM's own language model generates under left padding (Qwen2-VL: M-RoPE positions
    from the token centres) and still answers each pair as it does alone."""
    import warnings

    from arrcoc_lab import load_pipeline
    from tests.vlm_fixtures import write_llava, write_qwen2_vl

    folder = (write_llava if family == "llava" else write_qwen2_vl)(tmp_path / family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("hf-vlm", vlm_path=str(folder), max_new_tokens=4,
                             **({"image_size": 448} if family == "qwen2_vl" else {}))
    other = rgb[::-1].copy()
    images, queries = [rgb, other, rgb], ["What does the sign say?", "Is there a dog in the corner?", "What colour is it?"]
    for policy in ("arrcoc", "fastv"):
        alone = [pipe(i, q, budget=b, policy=policy) for i, q, b in zip(images, queries, [24, 64, None])]
        _same(pipe.batch(images, queries, budget=[24, 64, None], policy=policy), alone)
