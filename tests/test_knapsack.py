"""The batched torch knapsack (modeling/knapsack.py) against the numpy reference: the same levels
on every image, ties included, at the tiny (2×2), lab (4×4) and paper (8×8) geometries; the
reference's guarantees (budget, one LOD step, smoothness, monotonicity, optimality) on its output;
its device and dtype; and no host round trip in the model's allocation."""
import contextlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling.allocator import Allocator
from arrcoc_lab.modeling.geometry import Geometry
from arrcoc_lab.modeling.knapsack import _numpy_order_sum, solve_knapsack, solve_knapsack_batch
from arrcoc_lab.policies import get_policy
from arrcoc_lab.policies.planners import OraclePolicy, UniformPolicy, _centre_weight

SMALL = Geometry(image_size=128, patch_size=8, cell_patches=8, quality_budgets={"fast": 4, "balanced": 12, "accurate": 25})
LAB = Geometry(image_size=256, patch_size=8, cell_patches=8, quality_budgets={"fast": 16, "balanced": 45, "accurate": 100})
PAPER = Geometry()  # 8×8 cells
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _spent(levels, g):
    return int(np.asarray(g.levels)[levels].sum())


def _smooth(levels, step):
    return (np.abs(np.diff(levels, axis=0)) <= step).all() and (np.abs(np.diff(levels, axis=1)) <= step).all()


def _cheapest_feasible(levels, g, step):
    """Cost of the cheapest single-level upgrade that keeps the smoothness constraint (inf if none)."""
    best = np.inf
    for (i, j), lv in np.ndenumerate(levels):
        if lv >= g.max_level_index:
            continue
        new = levels.copy()
        new[i, j] += 1
        if _smooth(new, step):
            best = min(best, g.levels[lv + 1] - g.levels[lv])
    return best


def _reference(u: torch.Tensor, g, budgets, exponent=0.5, max_step=None) -> np.ndarray:
    """The numpy solver on each image, fed the values the batched solver sees."""
    return np.stack([solve_knapsack(x, g, b, exponent, max_step) for x, b in zip(u.detach().double().numpy(), budgets)])


@st.composite
def problems(draw, geometries=(SMALL, LAB, PAPER), max_batch=4):
    """(geometry, utility (B, n, n) tensor, budgets, exponent, max_step): continuous maps, maps full
    of ties, sparse maps, and seeded heavy-tailed ones; budgets anywhere in range and at the modes."""
    g = draw(st.sampled_from(geometries))
    B, n = draw(st.integers(1, max_batch)), g.cells_per_side
    kind = draw(st.sampled_from(["floats", "ties", "sparse", "seeded"]))
    if kind == "floats":
        u = np.array(draw(st.lists(st.floats(0, 1), min_size=B * n * n, max_size=B * n * n)))
    elif kind == "ties":
        u = np.array(draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=B * n * n, max_size=B * n * n)))
    elif kind == "sparse":
        u = np.zeros(B * n * n)
        u[draw(st.lists(st.integers(0, B * n * n - 1), max_size=4))] = 1.0
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        u = rng.random(B * n * n) ** rng.choice([1, 4, 16])
    budget = st.one_of(st.integers(g.min_tokens, g.max_tokens),
                       st.sampled_from([g.min_tokens, g.uniform_budget, g.max_tokens, *g.quality_budgets.values()]))
    budgets = draw(st.lists(budget, min_size=B, max_size=B))
    dtype = draw(st.sampled_from(DTYPES))
    u = torch.from_numpy(u.reshape(B, n, n)).to(dtype)  # (B·n·n,) -> (B, n, n)
    return g, u, budgets, draw(st.sampled_from([0.5, 0.75, 1.0])), draw(st.sampled_from([None, None, 0, 2, 99]))


@settings(max_examples=120, deadline=None)
@given(p=problems())
def test_batch_equals_reference_and_keeps_its_guarantees(p):
    g, u, budgets, exponent, max_step = p
    levels = solve_knapsack_batch(u, g, budgets, exponent, max_step)
    assert levels.dtype == torch.long and levels.shape == u.shape and levels.device == u.device
    np.testing.assert_array_equal(levels.numpy(), _reference(u, g, budgets, exponent, max_step))
    step = g.max_level_step if max_step is None else max_step
    for lv, b in zip(levels.numpy(), budgets):
        spent = _spent(lv, g)
        assert spent <= b  # never over budget
        assert b - spent < _cheapest_feasible(lv, g, step)  # used to within one LOD step
        assert _smooth(lv, step)


@settings(max_examples=40, deadline=None)
@given(p=problems(geometries=(SMALL, LAB)), budgets_from=st.sampled_from(["list", "tensor"]))
def test_budgets_as_a_tensor_give_the_same_levels(p, budgets_from):
    g, u, budgets, exponent, max_step = p
    given_budgets = torch.tensor(budgets) if budgets_from == "tensor" else budgets
    assert torch.equal(solve_knapsack_batch(u, g, given_budgets, exponent, max_step),
                       solve_knapsack_batch(u, g, budgets, exponent, max_step))


@pytest.mark.parametrize("g", [SMALL, LAB], ids=["tiny", "lab"])
def test_every_budget_on_maps_of_ties(g):
    """Equal utilities (every move ties), the uniform policy's map (near-ties) and a two-valued
    map, at every budget from the minimum to max_tokens, in one batch."""
    n, budgets = g.cells_per_side, list(range(g.min_tokens, g.max_tokens + 1))
    ones = torch.ones(len(budgets), n, n)
    checker = torch.zeros(n, n).index_put_((torch.arange(n) % 2 == 0,), torch.tensor(0.5))  # (n, n) rows of 0.5 and 0
    for u in (ones, ones + 1e-6 * _centre_weight(ones), ones * 0.25 + checker):
        np.testing.assert_array_equal(solve_knapsack_batch(u, g, budgets).numpy(), _reference(u, g, budgets))


@settings(max_examples=60, deadline=None)
@given(p=problems(geometries=(LAB,)))
def test_monotone_in_relevance_without_smoothness(p):
    """A more relevant cell never gets fewer tokens than a less relevant one."""
    g, u, budgets, exponent, _ = p
    levels = solve_knapsack_batch(u, g, budgets, exponent, max_step=99)
    for flat_u, flat_l in zip(u.double().flatten(1).numpy(), levels.flatten(1).numpy()):
        for a, b in itertools.combinations(range(flat_u.size), 2):
            if flat_u[a] > flat_u[b] + 1e-9:
                assert flat_l[a] >= flat_l[b]


@settings(max_examples=60, deadline=None)
@given(u=st.lists(st.floats(0.01, 1), min_size=12, max_size=12), budgets=st.lists(st.integers(4, 256), min_size=3, max_size=3))
def test_optimal_when_budget_spent_exactly(u, budgets):
    """Without smoothness, wherever greedy spends the budget exactly it matches brute force (2×2)."""
    g, exp = SMALL, 0.5
    u = torch.tensor(u, dtype=torch.float64).view(3, 2, 2)  # (12,) -> (B, 2, 2)
    levels = solve_knapsack_batch(u, g, budgets, exp, max_step=99).flatten(1).numpy()
    for x, lv, b in zip(u.flatten(1).numpy(), levels, budgets):
        if _spent(lv, g) != b:
            continue
        value = lambda ls: (x * np.asarray(g.levels, float)[list(ls)] ** exp).sum()  # noqa: E731
        best = max(value(ls) for ls in itertools.product(range(4), repeat=4) if sum(g.levels[k] for k in ls) <= b)
        assert value(lv) >= best - 1e-9


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the reference's inf · value
@settings(max_examples=40, deadline=None)
@given(u=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=32, max_size=32),
       budgets=st.lists(st.integers(16, 1024), min_size=2, max_size=2))
def test_nan_inf_and_negative_utilities_as_the_reference(u, budgets):
    """NaN counts as 0, negatives as 0, ±inf as the largest float, exactly as the reference."""
    u = torch.tensor(u, dtype=torch.float32).view(2, 4, 4)  # (32,) -> (B, 4, 4)
    np.testing.assert_array_equal(solve_knapsack_batch(u, LAB, budgets).numpy(), _reference(u, LAB, budgets))


def test_numpy_order_sum_is_numpys_sum_bit_for_bit():
    rng = np.random.default_rng(0)
    for m in (1, 2, 4, 7, 8, 9, 16, 17, 24, 64, 100, 128, 129, 256, 300):
        x = rng.random((20, m)) * 10.0 ** rng.integers(-12, 12, (20, m))
        x[rng.random((20, m)) < 0.5] = 0
        assert _numpy_order_sum(torch.from_numpy(x)).numpy().tobytes() == x.sum(1).tobytes(), m


def test_budget_checks():
    with pytest.raises(InputError, match="below the minimum of 16"):
        solve_knapsack_batch(torch.ones(2, 4, 4), LAB, [64, 10])
    with pytest.raises(InputError, match="2 budgets for a batch of 3"):
        solve_knapsack_batch(torch.ones(3, 4, 4), LAB, [64, 64])
    with pytest.raises(InputError, match=r"\(B, Hc, Wc\)"):
        solve_knapsack_batch(torch.ones(4, 4), LAB, [64])
    # a tensor of budgets is not read back: below the minimum leaves every cell at the minimum level
    assert (solve_knapsack_batch(torch.ones(1, 4, 4), LAB, torch.tensor([10])) == LAB.min_level).all()


def test_min_and_max_level_bounds():
    g = Geometry(image_size=256, patch_size=8, cell_patches=8, min_level=1, max_level=2)
    u = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    budgets = [g.min_tokens, 150, g.max_tokens]
    levels = solve_knapsack_batch(u, g, budgets)
    np.testing.assert_array_equal(levels.numpy(), _reference(u, g, budgets))
    assert levels.min() >= 1 and levels.max() <= 2 and (levels[2] == 2).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@settings(max_examples=40, deadline=None)
@given(p=problems())
def test_on_cuda_same_levels_without_a_sync(p):
    g, u, budgets, exponent, max_step = p
    solve_knapsack_batch(u.cuda(), g, budgets, exponent, max_step)  # the constant tables, made once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        levels = solve_knapsack_batch(u.cuda(), g, budgets, exponent, max_step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert levels.device.type == "cuda" and levels.dtype == torch.long
    np.testing.assert_array_equal(levels.cpu().numpy(), _reference(u, g, budgets, exponent, max_step))


# ---------------------------------------------------------------------------------- the model's allocation
def _refuse(name):
    def refused(*args, **kwargs):
        raise AssertionError(f"host round trip in the allocator: Tensor.{name}")
    return refused


@contextlib.contextmanager
def _no_host_reads():
    names = ("cpu", "numpy", "item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    saved = {k: getattr(torch.Tensor, k) for k in names}
    try:
        for k in names:
            setattr(torch.Tensor, k, _refuse(k))
        yield
    finally:
        for k, f in saved.items():
            setattr(torch.Tensor, k, f)


@pytest.fixture
def guarded_allocator(monkeypatch):
    """Allocator.forward with every Tensor → host read refused while it runs."""
    forward = Allocator.forward

    def guarded(self, *args, **kwargs):
        with _no_host_reads():
            return forward(self, *args, **kwargs)

    monkeypatch.setattr(Allocator, "forward", guarded)


@pytest.mark.parametrize("policy", ["arrcoc", "uniform", "oracle"])
def test_model_allocation_is_the_reference_without_host_reads(tiny_pipe, guarded_allocator, policy):
    model, g = tiny_pipe.model, tiny_pipe.geometry
    pixels = torch.from_numpy(np.random.default_rng(0).random((3, 3, g.image_size, g.image_size)) * 255).float()
    budgets = [g.min_tokens, g.uniform_budget, 25]
    p = (OraclePolicy(torch.tensor([[[0.1, 0.9], [0.2, 0.2]]]).expand(3, 2, 2)) if policy == "oracle" else
         UniformPolicy() if policy == "uniform" else get_policy(policy))
    out = model(pixels, ["What is the code on the red sign?"] * 3, p, budgets, generate=False)
    a = out.trace.allocation
    np.testing.assert_array_equal(a.levels.numpy(), _reference(a.utility, g, budgets, model.allocator.cfg.utility_exponent))
    assert (a.num_tokens <= torch.tensor(budgets)).all()


def test_budgets_beyond_max_tokens_in_a_batch():
    """A budget past max_tokens (even past the solver's virtual over-the-top cost) puts every cell at
    the top, as the reference does, while the batch's other images take their steps."""
    u = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    budgets = [LAB.max_tokens - 1, 10**13, LAB.max_tokens + 5]
    levels = solve_knapsack_batch(u, LAB, budgets)
    np.testing.assert_array_equal(levels.numpy(), _reference(u, LAB, budgets))
    assert (levels[1:] == LAB.max_level_index).all()
