"""The literature baselines (arrcoc_lab/policies/reducers.py): exact budgets reaching the LLM, every policy
through the pipeline, valid merged tokens, and FastV's pruning hook really running the LLM."""
import numpy as np
import pytest
import torch

from arrcoc_lab.policies import reducers as BL
from arrcoc_lab.modeling.allocator import AllocationContext
from arrcoc_lab.modeling.llm import LanguageModel
from arrcoc_lab.policies import POLICIES, get_policy
from arrcoc_lab.modeling.clip_tokens import ClipOutput
from arrcoc_lab.modeling.compressor import TokenSet
from arrcoc_lab.errors import InterfaceError

QUESTION = "What is the code on the red sign?"
BUDGETS = {"tiny": [4, 6, 16, 25, 100], "lab": [16, 25, 36, 64, 100]}  # sweep budgets + non-square ones


@pytest.fixture(params=["tiny", "lab"])
def pipe(request, tiny_pipe, lab_pipe):
    return {"tiny": tiny_pipe, "lab": lab_pipe}[request.param]


def _llm_visual_counts(pipe, monkeypatch):
    """Spy on what reaches the LLM's answer pass: visual tokens per sample."""
    seen = []
    real = pipe.model.llm.generate

    def spy(visual, visual_mask, *a, **k):
        seen.append(visual_mask.sum(1).tolist())
        return real(visual, visual_mask, *a, **k)

    monkeypatch.setattr(pipe.model.llm, "generate", spy)
    return seen


def test_registered_with_citations():
    for name in BL.BASELINES:
        p = POLICIES[name]
        assert p.token_level and p.reduce_after in ("compressor", "clip")
        assert "(" in p.cite and "20" in p.cite  # names the paper and its year
        assert "here" in type(p).__doc__.lower()  # says what differs ("Here …" / "here …")


@pytest.mark.parametrize("k", range(5))  # index into BUDGETS[preset]
@pytest.mark.parametrize("policy", BL.BASELINES)
@pytest.mark.parametrize("preset", ["tiny", "lab"])
def test_exact_budget_reaches_the_llm(preset, policy, k, tiny_pipe, lab_pipe, rgb, monkeypatch):
    pipe, budget = {"tiny": tiny_pipe, "lab": lab_pipe}[preset], BUDGETS[preset][k]
    seen = _llm_visual_counts(pipe, monkeypatch)
    out = pipe(rgb, QUESTION, budget=budget, policy=policy, max_new_tokens=1)
    assert out.num_tokens == budget == out.tokens_per_cell.sum()
    assert seen == [[budget]]  # exactly B visual tokens in the answer pass
    assert out.tokens_per_cell.min() >= 0 and out.budget == budget


@pytest.mark.parametrize("policy", BL.BASELINES)
def test_batch_of_questions_keeps_exact_budgets(tiny_pipe, rgb, policy):
    """Two samples in one forward (different questions and seeds): each keeps exactly B."""
    from arrcoc_lab.inputs import to_model_input

    m = tiny_pipe.model
    pixels = torch.cat([to_model_input(rgb, m.geometry.image_size)] * 2)
    out = m(pixels, [QUESTION, "What city is this?"], policy=get_policy(policy), budget=9, max_new_tokens=1)
    assert out.trace.allocation.num_tokens.tolist() == [9, 9]
    assert out.trace.tokens.mask.sum(1).tolist() == [9, 9] and len(out.answers) == 2


@pytest.mark.parametrize("policy", BL.BASELINES)
def test_runs_through_the_pipeline(pipe, rgb, policy):
    g = pipe.geometry
    out = pipe(rgb, QUESTION, policy=policy, max_new_tokens=2)  # default budget: the uniform one
    assert isinstance(out.answer, str) and out.num_tokens == g.uniform_budget
    assert out.tokens_per_cell.shape == (g.cells_per_side,) * 2
    assert ((out.levels >= g.min_level) & (out.levels <= g.max_level_index)).all()
    ts = out.trace.tokens
    assert ts.mask.all() and ((ts.cells >= 0) & (ts.cells < g.n_cells)).all()
    assert ((ts.positions >= 0) & (ts.positions <= 1)).all()
    assert out.timings["allocator"] > 0  # the reduction is booked as the allocation decision


def test_count_kept_levels_follow_the_counts(tiny_pipe, rgb):
    out = tiny_pipe(rgb, QUESTION, policy="fastv", budget=25)
    sizes = np.asarray(tiny_pipe.geometry.levels)
    for count, level in zip(out.tokens_per_cell.ravel(), out.levels.ravel()):
        assert sizes[level] <= max(count, 1) and (level == len(sizes) - 1 or sizes[level + 1] > count)


def test_merge_tokens_means_positions_levels_and_cells(tiny_pipe):
    g = tiny_pipe.geometry
    T = 6
    ts = TokenSet(tokens=torch.arange(T, dtype=torch.float).view(1, T, 1).repeat(1, 1, 3), mask=torch.ones(1, T, dtype=torch.bool),
                  positions=torch.rand(1, T, 2), levels=torch.full((1, T), 3), cells=torch.tensor([[0, 0, 1, 1, 2, 3]]))
    assign = torch.tensor([[0, 0, 0, 0, 1, -1]])  # four top-level tokens → one slot, one alone, one dropped
    out = BL.merge_tokens(ts, ts.tokens, assign, torch.tensor([[1, 2]]), g)
    assert out.mask.tolist() == [[True, True]] and out.cells.tolist() == [[1, 2]]
    assert torch.allclose(out.positions[0, 0], ts.positions[0, :4].mean(0))
    assert torch.allclose(out.tokens[0, 0], torch.full((3,), 1.5)) and torch.allclose(out.tokens[0, 1], torch.full((3,), 4.0))
    assert out.levels.tolist() == [[2, 3]]  # 4 merged 64-per-cell tokens = a 16-per-cell token


@pytest.mark.parametrize("policy", ["tome", "visionzip", "m3"])
def test_merged_positions_lie_among_their_members(tiny_pipe, rgb, policy):
    out = tiny_pipe(rgb, QUESTION, policy=policy, budget=6, max_new_tokens=1)
    ts = out.trace.tokens
    assert ((ts.positions > 0) & (ts.positions < 1)).all()  # means of centres: strictly inside the image
    assert (ts.levels < tiny_pipe.geometry.max_level_index).any()  # something was merged


def test_bipartite_merge_is_exact_and_merges_duplicates_first():
    torch.manual_seed(0)
    x = torch.randn(40, 8)
    x[1] = x[0]  # an A/B duplicate pair: the most similar, merged in the first round
    for budget in (1, 7, 20, 39, 40):
        group, rep = BL.bipartite_merge(x, budget)
        assert len(rep) == budget and sorted(set(group.tolist())) == list(range(budget))
        assert (rep.diff() > 0).all() if budget > 1 else True  # slots ordered by representative
    group, _ = BL.bipartite_merge(x, 39)
    assert group[0] == group[1]


@pytest.mark.parametrize("side", [16, 32])
def test_pooled_grid_is_exact_and_square_for_squares(side):
    for budget in range(1, side * side + 1):
        rows, cols = BL.pooled_grid(budget, side)
        assert sum(cols) == budget and rows <= side and max(cols) <= side and min(cols) >= 1
    for s in (4, 5, 6, 8, 10):
        assert BL.pooled_grid(s * s, side) == (s, [s] * s)


def test_visionzip_keeps_the_dominant_tokens(tiny_pipe):
    g, m = tiny_pipe.geometry, tiny_pipe.model
    T, W = g.max_tokens, 8
    ts = TokenSet(tokens=torch.randn(1, T, W), mask=torch.ones(1, T, dtype=torch.bool), positions=torch.rand(1, T, 2),
                  levels=torch.full((1, T), g.max_level_index), cells=torch.arange(T).view(1, T) // 64)
    attn = torch.rand(1, T) * 0.1
    top = torch.tensor([3, 70, 150, 200, 255])
    attn[0, top] = 1.0
    clip_out = ClipOutput(tokens=ts.tokens, pooled=torch.zeros(1, W), cls_attention=attn)
    ctx = AllocationContext(None, None, [QUESTION], None, None, [0], geometry=g)
    out = POLICIES["visionzip"].reduce(ctx, ts, clip_out, [6])  # 5 dominant + 1 contextual
    assert out.mask.sum() == 6
    assert torch.allclose(out.tokens[0, :5], ts.tokens[0, top])  # dominant tokens pass unchanged, in order
    assert out.levels[0, 5] == 0  # the contextual token merged (almost) everything else


def test_fastv_prunes_with_the_llm(tiny_pipe, rgb, monkeypatch):
    """Pass 1 runs the LLM on the full token set and stops after layer K; pass 2 answers from B."""
    g, lm = tiny_pipe.geometry, tiny_pipe.model.llm.model
    layers = lm.model.layers
    monkeypatch.setitem(POLICIES, "fastv", BL.FastVPolicy(layer=1))  # tiny has 2 layers: stop after the first
    k = 1
    lengths = {i: [] for i in range(len(layers))}
    hooks = [layer.register_forward_hook(lambda mod, a, out, i=i: lengths[i].append(a[0].shape[1]))
             for i, layer in enumerate(layers)]
    before = lm.config._attn_implementation
    try:
        out = tiny_pipe(rgb, QUESTION, policy="fastv", budget=9, max_new_tokens=1)
    finally:
        for h in hooks:
            h.remove()
    prompt = len(tiny_pipe.model.llm._ids(tiny_pipe.model.llm.cfg.prompt.format(question=QUESTION)))
    assert lengths[k - 1][0] == g.max_tokens + prompt  # scoring pass: every visual token
    assert lengths[k - 1][1] == 9 + prompt  # answer pass: B tokens
    assert [len(lengths[i]) for i in range(k, len(layers))] == [len(lengths[0]) - 1] * (len(layers) - k)  # stopped at K
    assert lm.config._attn_implementation == before and out.num_tokens == 9


def test_clip_class_attention_matches_multihead_attention(tiny_pipe):
    """VisionZip's score: CLIP's class-token attention in the last block, padding excluded."""
    clip = tiny_pipe.model.clip
    T, W = 10, clip.visual.class_embedding.shape[-1]
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 7:] = False
    ts = TokenSet(torch.randn(2, T, tiny_pipe.model.compressor.cfg.dim), mask, torch.rand(2, T, 2),
                  torch.zeros(2, T, dtype=torch.long), torch.zeros(2, T, dtype=torch.long))
    blk, seen = clip.visual.transformer.resblocks[-1], {}
    hook = blk.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with torch.no_grad():
        out = clip(ts, cls_attention=True)
    hook.remove()
    h = blk.ln_1(seen["x"])
    _, ref = blk.attn(h[:, :1], h, h, need_weights=True, attn_mask=clip.attention_mask(mask, h.dtype)[:, :1])
    assert out.cls_attention.shape == (2, T) and torch.allclose(out.cls_attention, ref[:, 0, 1:], atol=1e-6)
    assert (out.cls_attention[1, 7:] == 0).all() and W == clip.width


def test_fastv_follows_the_llm_attention(tiny_pipe, rgb, monkeypatch):
    """Keep exactly the tokens the layer-K attention of the last prompt token favours."""
    favoured = [5, 17, 60, 130, 201, 250]

    def fake(llm, visual, mask, questions, layer, query=None):
        S = visual.shape[1] + 40
        w = torch.zeros(visual.shape[0], 1, S, S)
        w[:, :, -1, torch.tensor(favoured)] = 1.0
        return w, torch.zeros(visual.shape[0], dtype=torch.long)

    monkeypatch.setattr(LanguageModel, "layer_attention", fake)
    out = tiny_pipe(rgb, QUESTION, policy="fastv", budget=6, max_new_tokens=1)
    full = tiny_pipe.model.compressor._positions  # every top-level token's centre, pyramid order
    top = tiny_pipe.model.compressor._layout[:, 1] == tiny_pipe.geometry.max_level_index
    assert torch.allclose(out.trace.tokens.positions[0], full[top][favoured])


def test_sparsevlm_depends_on_the_question(tiny_pipe, rgb):
    a = tiny_pipe(rgb, QUESTION, policy="sparsevlm", budget=6, max_new_tokens=1).trace.tokens.positions
    b = tiny_pipe(rgb, "How many windows does the tower have?", policy="sparsevlm", budget=6,
                  max_new_tokens=1).trace.tokens.positions
    assert not torch.equal(a, b)


def test_a_policy_that_misses_its_budget_is_caught(tiny_pipe, rgb, monkeypatch):
    p = get_policy("m3")
    real = p.reduce

    def short(ctx, tokens, clip_out, budgets):
        return real(ctx, tokens, clip_out, [b - 1 for b in budgets])

    monkeypatch.setattr(p, "reduce", short)
    with pytest.raises(InterfaceError, match="kept \\[8\\] tokens for budgets \\[9\\]"):
        tiny_pipe(rgb, QUESTION, policy="m3", budget=9)
