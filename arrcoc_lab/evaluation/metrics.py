"""Evaluation metrics: answer quality, where the token budget went, and what it cost.

Answer metrics follow the official definitions so numbers compare with published ones:
exact match (normalised), ANLS (DocVQA), relaxed accuracy (ChartQA). Allocation metrics read the
pipeline trace (`tokens_per_cell`, `cell_boxes`) and the dataset's `target_box`:

* target token share: of the tokens spent *above the per-cell minimum*, the fraction on cells that
  overlap the target box; divided by the fraction of such cells (area share) it gives the lift,
  exactly 1 for any uniform allocation above the minimum;
* query dependence: on one image, does question A pull tokens to its region a and question B to
  its region b;
* accuracy by token bucket and the misclassification rate (hard questions starved of tokens).

Cost metrics: latency percentiles per stage and FLOPs per module from torch's FlopCounterMode,
which counts from shapes and so is exact and stable on a noisy machine.
Inputs are plain lists or numpy arrays; outputs are floats, NamedTuples and dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..modeling.flops import countable_kernels, total_flop_counter  # noqa: F401  (re-exported)

PAPER_THRESHOLD = 160  # misclassification threshold (tokens) in the paper geometry...
PAPER_CELLS = 64  # ...of 8x8 cells


# ---------------------------------------------------------------- answer metrics

def normalize_answer(text: Any) -> str:
    """Lower-case and collapse whitespace, as the DocVQA evaluation does."""
    return " ".join(str(text).lower().split())


def _answer_list(answers: str | Sequence[str]) -> list[str]:
    items = [answers] if isinstance(answers, str) else list(answers)
    if not items:
        raise ValueError("answers is empty; accepted: a string or a non-empty list of strings")
    return [str(a) for a in items]


def exact_match(pred: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(a) for a in _answer_list(answers)))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute each cost 1); answers are short, so plain DP."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(pred: str, answers: str | Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity for one question (Biten et al. 2019).

    Per reference: NL = lev(p, a) / max(|p|, |a|) on normalised strings; score 1 - NL when
    NL < threshold, else 0; the question's score is the max over references. Two empty
    strings score 1.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold}; accepted: 0 < threshold <= 1")
    p, best = normalize_answer(pred), 0.0
    for a in map(normalize_answer, _answer_list(answers)):
        longest = max(len(p), len(a))
        nl = levenshtein(p, a) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def _to_float(text: str) -> float | None:
    """ChartQA's number parsing: a trailing % divides by 100; anything else non-numeric is None."""
    text = text.strip()
    try:
        return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(pred: str, answer: str | Sequence[str], tol: float = 0.05) -> float:
    """ChartQA relaxed correctness (Methani et al. 2020, as in Pix2Struct's evaluation).

    When both parse as numbers and the reference is non-zero: correct iff
    |pred - ref| / |ref| <= tol. Otherwise: case-insensitive exact string match.
    """
    if tol < 0:
        raise ValueError(f"tol={tol}; accepted: tol >= 0")
    best = 0.0
    for ref in _answer_list(answer):
        p, r = _to_float(str(pred)), _to_float(ref)
        if p is not None and r:
            ok = abs(p - r) / abs(r) <= tol
        else:
            ok = str(pred).strip().lower() == ref.strip().lower()
        best = max(best, float(ok))
    return best


# ---------------------------------------------------------------- allocation metrics

class TargetShare(NamedTuple):
    share: float  # fraction of above-minimum tokens on cells overlapping the target
    area_share: float  # fraction of cells overlapping the target
    lift: float  # share / area_share; 1 = no better than uniform


def _grid(tokens_per_cell: Any, cell_boxes: Any, min_per_cell: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (tokens above the minimum, cell boxes)."""
    tokens = np.asarray(tokens_per_cell, dtype=float)
    boxes = np.asarray(cell_boxes, dtype=float)
    if tokens.ndim != 2 or boxes.shape != (*tokens.shape, 4):
        raise ValueError(f"tokens_per_cell shape {tokens.shape} and cell_boxes shape {boxes.shape}; "
                         "accepted: (cells_h, cells_w) and (cells_h, cells_w, 4)")
    excess = tokens - np.asarray(min_per_cell, dtype=float)
    if not np.all(np.isfinite(excess)) or np.any(excess < 0):
        raise ValueError(f"tokens_per_cell must be finite and >= min_per_cell={min_per_cell}; "
                         f"got min {tokens.min()}")
    return excess, boxes


def overlapping_cells(cell_boxes: Any, box: Sequence[float]) -> np.ndarray:
    """Boolean (cells_h, cells_w): cells whose box shares positive area with `box`."""
    boxes = np.asarray(cell_boxes, dtype=float)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"target box {tuple(box)}; accepted: (x0, y0, x1, y1) with x0 < x1, y0 < y1")
    return ((boxes[..., 0] < x1) & (x0 < boxes[..., 2]) & (boxes[..., 1] < y1) & (y0 < boxes[..., 3]))


def target_token_share(tokens_per_cell: Any, cell_boxes: Any, target_box: Sequence[float],
                       min_per_cell: Any = 1) -> TargetShare:
    """How much of the discretionary budget went to the question's region.

    Degenerate case: no tokens above the minimum anywhere -> share 0 and lift 0 (the policy
    spent nothing by choice). A target box that overlaps no cell is an error.
    """
    excess, boxes = _grid(tokens_per_cell, cell_boxes, min_per_cell)
    on_target = overlapping_cells(boxes, target_box)
    if not on_target.any():
        raise ValueError(f"target box {tuple(target_box)} overlaps no cell; accepted: a box inside the image")
    area_share = on_target.sum() / on_target.size
    total = excess.sum()
    share = float(excess[on_target].sum() / total) if total > 0 else 0.0
    return TargetShare(share, float(area_share), share / float(area_share))


class QueryDependence(NamedTuple):
    dependent: bool  # a gains under A and b gains under B
    margin: float  # mean of the two gains (share differences)
    a_under_a: float  # share of region a when asked question A
    a_under_b: float
    b_under_b: float
    b_under_a: float


def query_dependence(tokens_a: Any, tokens_b: Any, cell_boxes: Any, box_a: Sequence[float],
                     box_b: Sequence[float], min_per_cell: Any = 1) -> QueryDependence:
    """One image, two questions A and B about regions a and b: did the allocation follow the query?

    Dependent iff share(a | A) > share(a | B) and share(b | B) > share(b | A); the margin is the
    mean of those two differences (in share units, so in [-1, 1]).
    """
    def share(tokens, box):
        return target_token_share(tokens, cell_boxes, box, min_per_cell).share

    aa, ab = share(tokens_a, box_a), share(tokens_b, box_a)
    bb, ba = share(tokens_b, box_b), share(tokens_a, box_b)
    return QueryDependence(aa > ab and bb > ba, ((aa - ab) + (bb - ba)) / 2, aa, ab, bb, ba)


def query_dependence_rate(results: Sequence[QueryDependence]) -> dict[str, float]:
    """Aggregate over images: fraction dependent, mean margin, and the number of images."""
    if not results:
        raise ValueError("query_dependence_rate needs at least one QueryDependence result")
    return {"rate": float(np.mean([r.dependent for r in results])),
            "mean_margin": float(np.mean([r.margin for r in results])), "n": len(results)}


@dataclass(frozen=True)
class TokenBucket:
    """Accuracy of the questions whose token count fell in [lo, hi) (last bucket: [lo, hi])."""

    lo: float  # lower edge, inclusive
    hi: float  # upper edge, exclusive except for the last bucket
    n: int  # questions in the bucket
    accuracy: float  # mean correctness; NaN when n == 0


def accuracy_by_token_bucket(num_tokens: Sequence[float], correct: Sequence[float],
                             edges: Sequence[float]) -> list[TokenBucket]:
    """Accuracy per token-count bucket; a token count outside [edges[0], edges[-1]] is an error."""
    tokens, ok, e = (np.asarray(v, dtype=float) for v in (num_tokens, correct, edges))
    if tokens.shape != ok.shape or tokens.ndim != 1:
        raise ValueError(f"num_tokens {tokens.shape} and correct {ok.shape}; accepted: equal-length 1-D")
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges {list(e)}; accepted: at least two strictly increasing values")
    if tokens.size and (tokens.min() < e[0] or tokens.max() > e[-1]):
        raise ValueError(f"token counts span [{tokens.min()}, {tokens.max()}] outside edges [{e[0]}, {e[-1]}]")
    index = np.minimum(np.searchsorted(e, tokens, side="right") - 1, e.size - 2)
    buckets = []
    for k in range(e.size - 1):
        inside = ok[index == k]
        buckets.append(TokenBucket(float(e[k]), float(e[k + 1]), int(inside.size),
                                   float(inside.mean()) if inside.size else math.nan))
    return buckets


def scaled_threshold(n_cells: int) -> float:
    """The paper's 160-token threshold (of 64 cells) scaled to another cell count."""
    if n_cells < 1:
        raise ValueError(f"n_cells={n_cells}; accepted: a positive int")
    return PAPER_THRESHOLD * n_cells / PAPER_CELLS


def misclassification_rate(num_tokens: Sequence[float], difficulty: Sequence[str],
                           threshold: float = PAPER_THRESHOLD) -> float:
    """Fraction of "detail" questions given fewer than `threshold` tokens; NaN if there are none."""
    tokens = np.asarray(num_tokens, dtype=float)
    kinds = list(difficulty)
    if tokens.shape != (len(kinds),):
        raise ValueError(f"num_tokens {tokens.shape} and difficulty ({len(kinds)},); accepted: equal lengths")
    unknown = sorted(set(kinds) - {"gist", "detail"})
    if unknown:
        raise ValueError(f"difficulty values {unknown}; accepted: 'gist', 'detail'")
    hard = np.array([k == "detail" for k in kinds], dtype=bool)
    return float((tokens[hard] < threshold).mean()) if hard.any() else math.nan


# ---------------------------------------------------------------- cost metrics

def latency_percentiles(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage p50 and p95 (linear interpolation) over runs; a stage may be absent in some runs."""
    if not timings:
        raise ValueError("latency_percentiles needs at least one timing dict")
    stages: dict[str, list[float]] = {}
    for run in timings:
        for stage, seconds in run.items():
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"stage {stage!r} took {seconds!r}; accepted: finite seconds >= 0")
            stages.setdefault(stage, []).append(float(seconds))
    return {s: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}
            for s, v in stages.items()}


@dataclass
class FlopCount:
    """FLOPs of one call, from torch.utils.flop_counter.FlopCounterMode."""

    total: int  # all counted FLOPs (FlopCounterMode.get_total_flops)
    per_module: dict[str, int]  # module path -> FLOPs; parents include their children
    output: Any  # what fn returned, so callers need not run it twice


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FlopCount:
    """Run fn(*args, **kwargs) under FlopCounterMode (with countable_kernels); ops without a
    formula count 0. Per-module counts use torch's module tracker: under no_grad it fails on
    modules fed views of parameters — use total_flop_counter() there."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with countable_kernels(), counter:
        output = fn(*args, **kwargs)
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()
                  if name != "Global"}
    return FlopCount(int(counter.get_total_flops()), per_module, output)
