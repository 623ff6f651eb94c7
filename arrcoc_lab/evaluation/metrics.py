"""Evaluation metrics: answer quality, where the token budget went, and what it cost.

Answer metrics follow the official definitions so numbers compare with published ones:
exact match (normalised), ANLS (DocVQA), relaxed accuracy (ChartQA), VQA accuracy (TextVQA);
OFFICIAL_METRIC names each dataset's own. Allocation metrics read the
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
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..modeling.flops import countable_kernels, total_flop_counter  # noqa: F401  (re-exported)

PAPER_THRESHOLD = 160  # misclassification threshold (tokens) in the paper geometry...
PAPER_CELLS = 64  # ...of 8x8 cells


# ---------------------------------------------------------------- answer metrics

def normalize_answer(text: Any) -> str:
    """Lower-case, strip and collapse whitespace, as the DocVQA evaluation does."""
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
    """Average Normalised Levenshtein Similarity of one question (Biten et al. 2019), computed as the
    official DocVQA evaluation script does.

    Per reference a: NL = lev(p', a') / max(|p|, |a|), the distance between the normalised strings
    (`normalize_answer`) over the longer *raw* string's length (the script's `len(s.upper())`).
    The question's score is 1 - min NL over the references, set to 0 when NL > threshold: NL = τ
    exactly keeps its 0.5 (the script zeroes a score only below 1 - τ). Two empty strings score 1.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold}; accepted: 0 < threshold <= 1")
    pred = str(pred)
    p, best = normalize_answer(pred), math.inf
    for a in _answer_list(answers):
        longest = max(len(pred.upper()), len(a.upper()))
        best = min(best, levenshtein(p, normalize_answer(a)) / longest if longest else 0.0)
    return 1.0 - best if best <= threshold else 0.0


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


# The VQA evaluation's answer normalisation, as TextVQA's evaluator (M4C / EvalAI) applies it to the
# prediction and to every human answer; its tables are kept as they are, quirks included.
_CONTRACTIONS = dict(pair.split(">") for pair in """aint>ain't arent>aren't cant>can't couldve>could've couldnt>couldn't
couldn'tve>couldn't've couldnt've>couldn't've didnt>didn't doesnt>doesn't dont>don't hadnt>hadn't hadnt've>hadn't've
hadn'tve>hadn't've hasnt>hasn't havent>haven't hed>he'd hed've>he'd've he'dve>he'd've hes>he's howd>how'd howll>how'll
hows>how's Id've>I'd've I'dve>I'd've Im>I'm Ive>I've isnt>isn't itd>it'd itd've>it'd've it'dve>it'd've itll>it'll
let's>let's maam>ma'am mightnt>mightn't mightnt've>mightn't've mightn'tve>mightn't've mightve>might've mustnt>mustn't
mustve>must've neednt>needn't notve>not've oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at 'ows'at>'ow's'at
'ow'sat>'ow's'at shant>shan't shed've>she'd've she'dve>she'd've she's>she's shouldve>should've shouldnt>shouldn't
shouldnt've>shouldn't've shouldn'tve>shouldn't've somebody'd>somebodyd somebodyd've>somebody'd've
somebody'dve>somebody'd've somebodyll>somebody'll somebodys>somebody's someoned>someone'd someoned've>someone'd've
someone'dve>someone'd've someonell>someone'll someones>someone's somethingd>something'd somethingd've>something'd've
something'dve>something'd've somethingll>something'll thats>that's thered>there'd thered've>there'd've
there'dve>there'd've therere>there're theres>there's theyd>they'd theyd've>they'd've they'dve>they'd've
theyll>they'll theyre>they're theyve>they've twas>'twas wasnt>wasn't wed've>we'd've we'dve>we'd've weve>we've
werent>weren't whatll>what'll whatre>what're whats>what's whatve>what've whens>when's whered>where'd wheres>where's
whereve>where've whod>who'd whod've>who'd've who'dve>who'd've wholl>who'll whos>who's whove>who've whyll>why'll
whyre>why're whys>why's wont>won't wouldve>would've wouldnt>wouldn't wouldnt've>wouldn't've wouldn'tve>wouldn't've
yall>y'all yall'll>y'all'll y'allll>y'all'll yall'd've>y'all'd've y'alld've>y'all'd've y'all'dve>y'all'd've
youd>you'd youd've>you'd've you'dve>you'd've youll>you'll youre>you're youve>you've""".split())
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
_ARTICLES = ("a", "an", "the")
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: a period not followed by a digit
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def vqa_normalize(text: Any) -> str:
    """The VQA/TextVQA answer normalisation: lower-case, drop , and ? and split off 's; remove or
    space out punctuation and strip periods not followed by a digit; number words to digits
    ("two" → "2", "none" → "0"); drop articles; restore contractions ("dont" → "don't")."""
    text = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _PUNCTUATION:
        if p + " " in text or " " + p in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(pred: str, answers: str | Sequence[str]) -> float:
    """VQA accuracy (TextVQA, VQA v2): min(#humans who gave the answer / 3, 1), averaged over the
    subsets of all references but one (10 choose 9 for the usual ten), after `vqa_normalize`.
    With ten answers, 1, 2, 3 and ≥ 4 agreeing humans give 0.3, 0.6, 0.9 and 1.0."""
    refs = [vqa_normalize(a) for a in _answer_list(answers)]
    p = vqa_normalize(pred)
    if len(refs) == 1:  # no subset to leave one out of: the answer itself
        return float(refs[0] == p)
    return float(np.mean([min(1.0, sum(r == p for j, r in enumerate(refs) if j != i) / 3)
                          for i in range(len(refs))]))


ANSWER_METRICS: dict[str, Callable[[str, Any], float]] = {
    "exact_match": exact_match, "anls": anls, "relaxed_accuracy": relaxed_accuracy, "vqa_accuracy": vqa_accuracy}
OFFICIAL_METRIC = {"docvqa": "anls", "chartqa": "relaxed_accuracy", "textvqa": "vqa_accuracy",
                   "scenebench": "exact_match", "docsynth": "exact_match"}  # dataset → its benchmark's metric


def official_metric(dataset: str) -> str:
    """The metric a dataset's own benchmark reports (OFFICIAL_METRIC); exact match for any other."""
    return OFFICIAL_METRIC.get(dataset, "exact_match")


def answer_score(metric: str, pred: str, answers: str | Sequence[str]) -> float:
    """Score one answer with the named metric of ANSWER_METRICS."""
    if metric not in ANSWER_METRICS:
        raise ValueError(f"unknown answer metric {metric!r}; known: {sorted(ANSWER_METRICS)}")
    return ANSWER_METRICS[metric](pred, answers)


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
