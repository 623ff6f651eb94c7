"""The allocation solver: a multiple-choice knapsack over LOD levels (docs/ARCHITECTURE.md, "The
allocation solver"). Each cell picks one level, the token costs add up to at most the budget, and

  utility(cell, level) = u_cell · tokens(level) ** exponent      (concave: diminishing returns)

is maximised greedily by marginal utility per token: start every cell at the minimum level and
repeatedly apply the upgrade with the best Δutility/Δtokens that still fits (ties: the lowest cell
index, row-major). With the smoothness constraint (4-neighbours differ by at most `max_level_step`
levels) an upgrade that would break it is taken as a compound move that also raises the other
cells as far as needed, so the constraint holds after every step.

Where greedy is optimal: without the smoothness constraint the per-cell utility is concave in
tokens, so each cell's incremental efficiencies decrease and greedy visits upgrades in the order
of the LP relaxation of the multiple-choice knapsack. Whenever greedy stops with the budget spent
exactly, its solution equals the LP optimum and is therefore optimal for the integer problem
(tests/test_allocator.py checks this against brute force); otherwise it is within one upgrade's
utility of optimal. It always stops with less budget left than the cheapest feasible upgrade
("used to within one LOD step") and never exceeds the budget.

Two implementations of the one greedy:

- `solve_knapsack_batch` — what the model runs: torch, on the utility's device, a whole batch at
  once, with no host round trip (a fixed number of masked greedy steps, bounded from the host-side
  budgets; an image with no feasible upgrade left keeps its levels).
- `solve_knapsack` — the reference: numpy, one image. The tests hold the batched solver to it
  level for level, ties included (tests/test_knapsack.py); training's reading views still call it.

Both compute in float64 and sum each move's gain in numpy's pairwise order (`_numpy_order_sum`),
so every efficiency, and therefore every argmax and tie, is the same bit for bit.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from .geometry import Geometry


# ---------------------------------------------------------------------------------- reference (numpy)
def solve_knapsack(utility: np.ndarray, geometry: Geometry, budget: int, exponent: float = 0.5,
                   max_step: int | None = None) -> np.ndarray:
    """Reference greedy, one image. utility (Hc, Wc) ≥ 0 → level index per cell (Hc, Wc)."""
    hc, wc = utility.shape
    tokens = np.asarray(geometry.levels, dtype=np.int64)
    value = tokens.astype(np.float64) ** exponent
    lo, hi = geometry.min_level, geometry.max_level_index
    step = geometry.max_level_step if max_step is None else max_step
    r = np.clip(np.nan_to_num(utility.astype(np.float64).ravel()), 0, None)  # (Hc, Wc) -> (n,)
    dist = _grid_distance(hc, wc)  # (n, n) Manhattan distance between cells
    cur = np.full(r.size, lo, dtype=np.int64)
    spent = int(tokens[cur].sum())
    if spent > budget:
        raise InputError(f"budget {budget} is below the minimum of {spent} tokens")
    while True:
        target = cur + 1  # (n,) each row: raise cell i by one level
        new = np.maximum(cur[None, :], target[:, None] - step * dist)  # (n, n) compound moves
        new = np.minimum(new, hi)
        cost = tokens[new].sum(1) - spent  # (n,)
        gain = (r[None, :] * (value[new] - value[cur][None, :])).sum(1)
        ok = (target <= hi) & (cost > 0) & (cost <= budget - spent)
        if not ok.any():
            return cur.reshape(hc, wc)
        eff = np.where(ok, gain / np.maximum(cost, 1), -np.inf)
        best = int(np.argmax(eff))
        cur, spent = new[best], spent + int(cost[best])


def _grid_distance(h: int, w: int) -> np.ndarray:
    ys, xs = np.divmod(np.arange(h * w), w)
    return np.abs(ys[:, None] - ys[None, :]) + np.abs(xs[:, None] - xs[None, :])


# ---------------------------------------------------------------------------------- batched (torch)
@torch.no_grad()
def solve_knapsack_batch(utility: torch.Tensor, geometry: Geometry, budgets: Sequence[int] | torch.Tensor,
                         exponent: float = 0.5, max_step: int | None = None) -> torch.Tensor:
    """The reference greedy for a batch, on the utility's device without a host round trip:
    utility (B, Hc, Wc) (any float dtype; NaN → 0, negatives → 0) and a budget per image (a list of
    ints, or a (B,) integer tensor) → levels (B, Hc, Wc) long on the utility's device, equal to
    `solve_knapsack` on every image.

    Budgets given as ints are checked on the host (below the minimum: InputError, as the reference)
    and bound the number of greedy steps; a tensor of budgets is not read back, so it runs the
    most steps any budget could need (n·(levels − 1)) and a budget below the minimum leaves every
    cell at the minimum level. Computes in float64 (so not on MPS)."""
    if utility.dim() != 3:
        raise InputError(f"utility must be (B, Hc, Wc), got shape {tuple(utility.shape)}")
    B, hc, wc = utility.shape
    n, device = hc * wc, utility.device
    lo, hi = geometry.min_level, geometry.max_level_index
    step = geometry.max_level_step if max_step is None else int(max_step)
    tokens, value, src, lift = _tables(tuple(geometry.levels), lo, hi, step, hc, wc, float(exponent), device)
    start, full = n * geometry.levels[lo], n * geometry.levels[hi]  # tokens at all-min / all-top
    if isinstance(budgets, torch.Tensor):
        budget = budgets.to(device=device, dtype=torch.long).reshape(B)
        steps = n * (hi - lo)
    else:
        budgets = [int(b) for b in budgets]
        if len(budgets) != B:
            raise InputError(f"{len(budgets)} budgets for a batch of {B} utility maps")
        for b in budgets:
            if b < start:
                raise InputError(f"budget {b} is below the minimum of {start} tokens")
        budget = _to_device(np.asarray(budgets, dtype=np.int64), device)
        steps = _max_steps(budgets, geometry.levels, lo, hi, n)
    r = torch.nan_to_num(utility.reshape(B, n).double()).clamp_(min=0)  # (B, Hc, Wc) -> (B, n)
    cur = torch.full((B, n), lo, dtype=torch.long, device=device)
    spent = torch.full((B,), start, dtype=torch.long, device=device)
    # Move rows: row 0 stays put and is never feasible (its allowance is -1 tokens), so argmax lands
    # on it exactly when nothing fits: that image is done and keeps its levels. Row 1 + i raises
    # cell i by one level and every other cell as far as smoothness needs — the reference's row i.
    # Past max_tokens every legal move fits, so the allowance stops there (below _OVER: see _tables).
    never = value.new_full((), -torch.inf)  # the efficiency of a move that does not fit
    fits = budget.clamp(max=full)[:, None]  # (B, 1)
    allowance = torch.cat([torch.full_like(fits, -1), fits.expand(B, n)], 1)  # (B, n + 1)
    for _ in range(steps):  # bounded, data-independent: each applied step raises ≥ 1 cell by ≥ 1 level
        base = cur.index_select(1, src)  # (B, n + 1) the level of the cell each row raises
        new = torch.maximum(cur[:, None, :], base[:, :, None] + lift)  # (B, n + 1, n) ≤ hi + 1: see _tables
        total = _lookup(tokens, new).sum(-1)  # (B, n + 1) tokens after each move: exact integers, any order
        terms = r[:, None, :] * (_lookup(value, new) - _lookup(value, cur)[:, None, :])  # (B, n + 1, n)
        gain = _numpy_order_sum(terms)  # (B, n + 1) the reference's float64 sums, bit for bit
        ok = total <= allowance  # the reference's (target ≤ hi) & (cost > 0) & (cost ≤ budget − spent)
        eff = torch.where(ok, gain / (total - spent[:, None]), never)  # (B, n + 1) float64
        best = eff.argmax(-1)  # (B,) the first maximum, as np.argmax
        cur = new.gather(1, best.view(B, 1, 1).expand(B, 1, n)).squeeze(1)  # (B, 1, n) -> (B, n)
        spent = total.gather(1, best[:, None]).squeeze(1)  # (B, 1) -> (B,)
    # a budget of max_tokens or more fits every upgrade: the greedy ends with every cell at the top
    cur = torch.where((budget >= full)[:, None], hi, cur)
    return cur.view(B, hc, wc)  # (B, n) -> (B, Hc, Wc)


def _max_steps(budgets: list[int], levels: Sequence[int], lo: int, hi: int, n: int) -> int:
    """Most greedy steps any of these budgets can take. Every step raises at least one cell by one
    level, and no (cell, level) raise happens twice, so a budget affords at most as many steps as
    it affords of the cheapest raises. Budgets of max_tokens or more are settled without steps."""
    tokens = np.asarray(levels, dtype=np.int64)
    start, full = n * int(tokens[lo]), n * int(tokens[hi])
    raises = np.cumsum(np.sort(np.repeat(np.diff(tokens[lo:hi + 1]), n)))  # (n·(hi − lo),) cheapest first
    return max([int(np.searchsorted(raises, b - start, side="right")) for b in budgets if b < full], default=0)


_OVER = 2**40  # tokens of the virtual level above the top: more than any allowance (≤ max_tokens), far from int64's limit


@functools.lru_cache(maxsize=32)
def _tables(levels: tuple[int, ...], lo: int, hi: int, step: int, hc: int, wc: int, exponent: float,
            device: torch.device):
    """The solver's constants on the device, made once per geometry: tokens and value per level
    (value with numpy's bits), and per move row its source cell and its lift (how many levels above
    the source's current level each cell must end: 1 − step·distance; row 0, the stay, lifts nothing).

    The reference clamps a move at the top level `hi` and rules out raising a cell already there;
    here such a move goes to level hi + 1, which costs more tokens than any allowance (`_OVER`), so it
    never fits: a move that fits never reaches hi + 1, and a move that cannot fit is never taken."""
    n = hc * wc
    tokens = np.asarray(levels[:hi + 1], dtype=np.int64)
    value = tokens.astype(np.float64) ** exponent  # the reference's arithmetic, on the host
    tokens, value = np.append(tokens, _OVER), np.append(value, 0.0)  # (hi + 2,) level hi + 1: never fits
    src = np.concatenate([[0], np.arange(n)])  # (n + 1,)
    lift = np.concatenate([np.full((1, n), -len(levels) - 1), 1 - step * _grid_distance(hc, wc)])  # (n + 1, n)
    return tuple(_to_device(a, device) for a in (tokens, value, src, lift.astype(np.int64)))


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host constant onto the device without waiting for the device's queue (pinned, non-blocking)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a small 1-D table (index_select: several times faster than indexing on CPU)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)  # (...) -> (N,) -> (...)


def _numpy_order_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim in exactly numpy's order (its pairwise summation of a contiguous
    row, numpy/_core/src/umath/loops_utils.h.src: below 8 elements one by one; up to 128 eight
    running partial sums, combined pairwise, then the remainder one by one; above 128 split in two
    at a multiple of 8), so a float64 sum is the reference's bit for bit. (..., m) -> (...)."""
    m = x.shape[-1]
    if m < 8:
        out = x[..., 0]
        for i in range(1, m):
            out = out + x[..., i]
        return out
    if m > 128:
        half = m // 2 - (m // 2) % 8
        return _numpy_order_sum(x[..., :half]) + _numpy_order_sum(x[..., half:])
    body = m - m % 8
    acc = x[..., 0:8]  # (..., 8) the eight running partial sums
    for i in range(8, body, 8):
        acc = acc + x[..., i:i + 8]
    acc = acc[..., 0::2] + acc[..., 1::2]  # (..., 4): r0+r1, r2+r3, r4+r5, r6+r7
    acc = acc[..., 0::2] + acc[..., 1::2]  # (..., 2)
    out = acc[..., 0] + acc[..., 1]
    for i in range(body, m):
        out = out + x[..., i]
    return out
