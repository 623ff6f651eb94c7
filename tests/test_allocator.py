"""The knapsack solver and the policy registry: budgets respected, used to within one LOD step,
smoothness kept, monotone in relevance, optimal where the module docstring says it is."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrcoc_lab.modeling.allocator import AllocatorConfig, gumbel_levels, solve_knapsack
from arrcoc_lab.policies import POLICIES, get_policy
from arrcoc_lab.policies.planners import rule_tier
from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling.geometry import Geometry

LAB = Geometry(image_size=256, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64))  # 4x4 cells
SMALL = Geometry(image_size=128, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64))  # 2x2 cells


def _tokens(levels, g):
    return np.asarray(g.levels)[levels]


def _cheapest_feasible(levels, g):
    """Cost of the cheapest single-level upgrade that keeps the smoothness constraint (inf if none)."""
    best = np.inf
    h, w = levels.shape
    for (i, j), l in np.ndenumerate(levels):
        if l >= g.max_level_index:
            continue
        new = levels.copy()
        new[i, j] += 1
        if _smooth(new, g.max_level_step):
            best = min(best, g.levels[l + 1] - g.levels[l])
    return best


def _smooth(levels, step):
    return (np.abs(np.diff(levels, axis=0)) <= step).all() and (np.abs(np.diff(levels, axis=1)) <= step).all()


utilities = st.lists(st.floats(0, 1, allow_nan=False), min_size=16, max_size=16).map(lambda v: np.array(v).reshape(4, 4))


@settings(max_examples=150, deadline=None)
@given(u=utilities, budget=st.integers(16, 1024), exponent=st.sampled_from([0.5, 0.75, 1.0]))
def test_budget_never_exceeded_and_used_to_one_step(u, budget, exponent):
    levels = solve_knapsack(u, LAB, budget, exponent)
    spent = _tokens(levels, LAB).sum()
    assert spent <= budget
    assert budget - spent < _cheapest_feasible(levels, LAB)  # nothing that fits was left undone
    assert _smooth(levels, LAB.max_level_step)


@settings(max_examples=100, deadline=None)
@given(u=utilities, budget=st.integers(16, 1024))
def test_monotone_in_relevance_without_smoothness(u, budget):
    """A more relevant cell never gets fewer tokens than a less relevant one."""
    levels = solve_knapsack(u, LAB, budget, 0.5, max_step=99)
    flat_u, flat_l = u.ravel(), levels.ravel()
    for a, b in itertools.combinations(range(16), 2):
        if flat_u[a] > flat_u[b] + 1e-9:
            assert flat_l[a] >= flat_l[b]


@settings(max_examples=60, deadline=None)
@given(u=st.lists(st.floats(0.01, 1, allow_nan=False), min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2)),
       budget=st.integers(4, 256))
def test_optimal_when_budget_spent_exactly(u, budget):
    """Without smoothness, when greedy spends the budget exactly it matches brute force."""
    g, exp = SMALL, 0.5
    levels = solve_knapsack(u, g, budget, exp, max_step=99)
    if _tokens(levels, g).sum() != budget:
        return
    value = lambda lv: (u.ravel() * np.asarray(g.levels, float)[list(lv)] ** exp).sum()
    best = max(value(lv) for lv in itertools.product(range(4), repeat=4)
               if sum(g.levels[k] for k in lv) <= budget)
    assert value(levels.ravel()) >= best - 1e-9


def test_concentrates_on_the_relevant_cell():
    u = np.full((4, 4), 0.05)
    u[1, 2] = 0.95
    levels = solve_knapsack(u, LAB, LAB.uniform_budget)
    assert levels[1, 2] == levels.max() and levels[1, 2] >= 2  # the billboard cell gets 16+ tokens
    assert (levels <= 2).all() and _smooth(levels, 1)


def test_budget_below_minimum_raises():
    with pytest.raises(InputError, match="below the minimum"):
        solve_knapsack(np.ones((4, 4)), LAB, 10)


def test_unknown_policy_lists_known():
    with pytest.raises(InputError, match="known: .*arrcoc.*uniform"):
        get_policy("magic")


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_respects_its_budget(tiny_pipe, rgb, policy):
    g = tiny_pipe.geometry
    for budget in (g.min_tokens, g.uniform_budget, 25, g.max_tokens):
        out = tiny_pipe(rgb, "What is the code on the red sign?", budget=budget, policy=policy)
        if policy == "full":
            assert out.num_tokens == g.max_tokens
        else:
            assert out.num_tokens <= budget
            assert out.num_tokens == out.tokens_per_cell.sum()


def test_uniform_at_uniform_budget_is_exactly_uniform(tiny_pipe, rgb):
    out = tiny_pipe(rgb, "What city is this?", policy="uniform")
    assert out.num_tokens == tiny_pipe.geometry.uniform_budget
    assert (out.tokens_per_cell == 4).all()


def test_random_policy_is_seeded_by_input(lab_pipe, rgb):
    a = lab_pipe(rgb, "What city is this?", policy="random", budget=100)
    b = lab_pipe(rgb, "What city is this?", policy="random", budget=100)
    c = lab_pipe(rgb, "What colour is the sky?", policy="random", budget=100)
    assert (a.tokens_per_cell == b.tokens_per_cell).all()
    assert not (a.tokens_per_cell == c.tokens_per_cell).all()


def test_rule_tiers():
    cfg = AllocatorConfig()
    assert rule_tier("What's the formula on the billboard?", cfg) == "accurate"
    assert rule_tier("What city is this?", cfg) == "fast"
    assert rule_tier("Describe the scene", cfg) == "balanced"


def test_tier_policies_cap_at_the_given_budget(lab_pipe, rgb):
    out = lab_pipe(rgb, "Read the code on the sign", policy="heuristic", budget=64)
    assert out.tier == "accurate" and out.budget == 64 and out.num_tokens <= 64
    out = lab_pipe(rgb, "What city is this?", policy="heuristic", budget=64)
    assert out.tier == "fast" and out.budget == 16 and out.num_tokens == 16


def test_gumbel_levels_straight_through():
    logits = torch.zeros(2, 4, 4, 4, requires_grad=True)
    w = gumbel_levels(logits, tau=0.5, seeds=[0, 1])
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 4))
    assert torch.allclose(w.detach(), w.detach().round(), atol=1e-6)  # one-hot forward
    (w * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
