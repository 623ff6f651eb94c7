"""Metrics against hand-computed values, plus property tests for their invariants."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arrcoc_lab.evaluation import metrics as M

# A 2x2 grid of 8-pixel cells: (row, col) -> box (x0, y0, x1, y1).
CELLS = np.array([[[0, 0, 8, 8], [8, 0, 16, 8]],
                  [[0, 8, 8, 16], [8, 8, 16, 16]]])
TOP_LEFT, BOTTOM_RIGHT = (1, 1, 5, 5), (9, 9, 12, 12)


def grid_boxes(h: int, w: int, side: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs * side, ys * side, (xs + 1) * side, (ys + 1) * side], axis=-1)


# ---------------------------------------------------------------- answers

def test_exact_match_normalises_case_and_whitespace():
    assert M.exact_match("  New   YORK ", ["new york"]) == 1.0
    assert M.exact_match("Pari", "paris") == 0.0
    assert M.exact_match("rome", ["paris", "Rome"]) == 1.0


def test_levenshtein_hand_values():
    assert M.levenshtein("kitten", "sitting") == 3
    assert M.levenshtein("", "abc") == 3
    assert M.levenshtein("E=mc2", "E=mc2") == 0


def test_anls_hand_values():
    assert M.anls("helo", "hello") == pytest.approx(0.8)  # 1 edit / 5 chars
    assert M.anls("abce", "abcd") == pytest.approx(0.75)  # 1 / 4
    assert M.anls("ab", "ac") == 0.5  # NL = 0.5 exactly: kept, as the official script keeps a score of 0.5
    assert M.anls("abc", "xyz") == 0.0
    assert M.anls("hello", ["world", "hallo"]) == pytest.approx(0.8)  # max over answers
    assert M.anls("HeLLo ", "hello") == 1.0
    assert M.anls("", "") == 1.0
    assert M.anls("ab", "ac", threshold=0.6) == pytest.approx(0.5)


def test_anls_official_examples():
    # "Smith" vs "smith.": case is normalised, the period is not: 1 edit over the longer (6 chars)
    assert M.anls("Smith", "smith.") == pytest.approx(5 / 6)
    assert M.anls("Smith", ["Jones", "smith."]) == pytest.approx(5 / 6)  # max over references
    # the τ = 0.5 cut: NL 0.4 keeps 0.6, NL 0.5 keeps 0.5, NL 0.6 scores 0
    assert M.anls("abcde", "abcxy") == pytest.approx(0.6)
    assert M.anls("abcd", "abxy") == 0.5
    assert M.anls("abcde", "abxyz") == 0.0
    # distances between normalised strings, over the raw strings' lengths (the official script)
    assert M.anls("  Smith ", "smith.") == pytest.approx(1 - 1 / 8)
    assert M.anls("New  York", "new york") == 1.0


def test_anls_rejects_bad_input():
    with pytest.raises(ValueError, match="answers is empty"):
        M.anls("a", [])
    with pytest.raises(ValueError, match="threshold"):
        M.anls("a", "a", threshold=0)


def test_relaxed_accuracy_hand_values():
    assert M.relaxed_accuracy("10.4", "10") == 1.0  # 4 % off
    assert M.relaxed_accuracy("10.5", "10") == 1.0  # exactly 5 %
    assert M.relaxed_accuracy("10.6", "10") == 0.0  # 6 %
    assert M.relaxed_accuracy("5%", "0.05") == 1.0  # % divides by 100
    assert M.relaxed_accuracy("Yes", "yes") == 1.0  # strings: case-insensitive
    assert M.relaxed_accuracy("0", "0") == 1.0  # zero reference: string match...
    assert M.relaxed_accuracy("0.0", "0") == 0.0  # ...as in the reference implementation
    assert M.relaxed_accuracy("12", ["7", "12.3"]) == 1.0


def test_relaxed_accuracy_five_percent_boundary_and_strings():
    assert M.relaxed_accuracy("52.5", "50") == 1.0 and M.relaxed_accuracy("47.5", "50") == 1.0  # exactly 5 %
    assert M.relaxed_accuracy("52.6", "50") == 0.0 and M.relaxed_accuracy("47.4", "50") == 0.0  # just over
    assert M.relaxed_accuracy("-52.5", "-50") == 1.0  # relative to |reference|
    assert M.relaxed_accuracy("50%", "0.5") == 1.0 and M.relaxed_accuracy("0.53", "50%") == 0.0  # 6 % off
    assert M.relaxed_accuracy("Democrats", "democrats") == 1.0  # non-numeric: case-insensitive exact
    assert M.relaxed_accuracy("Democrat", "Democrats") == 0.0  # no partial credit for strings
    assert M.relaxed_accuracy("about 50", "50") == 0.0  # a number inside words is a string


def test_vqa_normalize_official_rules():
    assert M.vqa_normalize("The Nokia!") == "nokia"  # article dropped, punctuation spaced out
    assert M.vqa_normalize("two") == "2" and M.vqa_normalize("None") == "0"  # number words
    assert M.vqa_normalize("dont") == "don't" and M.vqa_normalize("whats up") == "what's up"  # contractions
    assert M.vqa_normalize("coca-cola") == "coca cola"  # '-' inside a word becomes a space
    assert M.vqa_normalize("1,000") == "1000" and M.vqa_normalize("3.5") == "3.5"  # digit commas, decimals
    assert M.vqa_normalize("yes.") == "yes"  # a period not followed by a digit goes


def test_vqa_accuracy_ten_humans_leave_one_out():
    """min(#humans / 3, 1) averaged over the 10 subsets of 9 answers: with k humans agreeing, k subsets
    hold k - 1 of them and 10 - k hold all k."""
    def answers(k):
        return ["nokia"] * k + [f"other{i}" for i in range(10 - k)]

    assert M.vqa_accuracy("nokia", answers(1)) == pytest.approx((1 * 0 + 9 * 1 / 3) / 10)  # 0.3
    assert M.vqa_accuracy("nokia", answers(2)) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)  # 0.6
    assert M.vqa_accuracy("nokia", answers(2)) == pytest.approx(0.6)
    assert M.vqa_accuracy("nokia", answers(3)) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)  # 0.9
    assert M.vqa_accuracy("nokia", answers(3)) == pytest.approx(0.9)
    assert M.vqa_accuracy("nokia", answers(4)) == 1.0  # 4 * min(3/3, 1) + 6 * min(4/3, 1)
    assert M.vqa_accuracy("nokia", answers(10)) == 1.0
    assert M.vqa_accuracy("toshiba", answers(10)) == 0.0
    # normalised before counting: "The Nokia." and "nokia" are the same answer
    assert M.vqa_accuracy("The Nokia.", ["nokia", "Nokia"] + ["x"] * 8) == pytest.approx(0.6)
    assert M.vqa_accuracy("two", ["2"] * 3 + ["x"] * 7) == pytest.approx(0.9)
    assert M.vqa_accuracy("nokia", "nokia") == 1.0  # a single reference: nothing to leave out


def test_official_metric_per_dataset():
    assert M.OFFICIAL_METRIC == {"docvqa": "anls", "chartqa": "relaxed_accuracy", "textvqa": "vqa_accuracy",
                                 "scenebench": "exact_match", "docsynth": "exact_match"}
    assert M.official_metric("somethingelse") == "exact_match"
    assert M.answer_score("anls", "Smith", "smith.") == pytest.approx(5 / 6)
    assert M.answer_score("relaxed_accuracy", "52.5", "50") == 1.0
    with pytest.raises(ValueError, match="unknown answer metric 'bleu'; known"):
        M.answer_score("bleu", "a", "a")


# ---------------------------------------------------------------- allocation

def test_target_token_share_hand_values():
    share = M.target_token_share([[1, 1], [1, 9]], CELLS, BOTTOM_RIGHT, min_per_cell=1)
    assert share == (1.0, 0.25, 4.0)
    # box over the two top cells; excess [[4, 0], [0, 2]] -> 4 of 6 on target, 2 of 4 cells
    share, area, lift = M.target_token_share([[5, 1], [1, 3]], CELLS, (4, 0, 12, 4), 1)
    assert (share, area, lift) == (pytest.approx(2 / 3), 0.5, pytest.approx(4 / 3))


def test_target_token_share_degenerate_and_edges():
    assert M.target_token_share([[1, 1], [1, 1]], CELLS, BOTTOM_RIGHT, 1) == (0.0, 0.25, 0.0)
    # a box exactly on cell (1, 1) touches its neighbours' edges but shares no area with them
    assert M.target_token_share([[4, 4], [4, 4]], CELLS, (8, 8, 16, 16), 1).area_share == 0.25
    with pytest.raises(ValueError, match="overlaps no cell"):
        M.target_token_share([[4, 4], [4, 4]], CELLS, (20, 20, 30, 30), 1)
    with pytest.raises(ValueError, match="min_per_cell"):
        M.target_token_share([[0, 4], [4, 4]], CELLS, TOP_LEFT, 1)
    with pytest.raises(ValueError, match="cell_boxes shape"):
        M.target_token_share([[4, 4]], CELLS, TOP_LEFT, 1)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), level=st.sampled_from([4, 16, 64]),
       box=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 20), st.integers(1, 20)))
def test_uniform_allocation_has_lift_one(h, w, level, box):
    x, y, bw, bh = box
    boxes = grid_boxes(h, w, 8)
    target = (min(x, 8 * w - 1), min(y, 8 * h - 1), min(x, 8 * w - 1) + bw, min(y, 8 * h - 1) + bh)
    share, area, lift = M.target_token_share(np.full((h, w), level), boxes, target, min_per_cell=1)
    assert lift == 1.0 and share == area


@settings(max_examples=60, deadline=None)
@given(tokens=st.lists(st.integers(1, 64), min_size=16, max_size=16),
       x=st.integers(0, 31), y=st.integers(0, 31))
def test_share_is_a_fraction(tokens, x, y):
    grid = np.reshape(tokens, (4, 4))
    share, area, lift = M.target_token_share(grid, grid_boxes(4, 4, 8), (x, y, x + 1, y + 1), 1)
    assert 0.0 <= share <= 1.0 and area == 1 / 16 and lift == pytest.approx(share * 16)


def test_query_dependence_hand_values():
    follows = M.query_dependence([[9, 1], [1, 1]], [[1, 1], [1, 9]], CELLS, TOP_LEFT, BOTTOM_RIGHT)
    assert follows == (True, 1.0, 1.0, 0.0, 1.0, 0.0)
    ignores = M.query_dependence([[1, 1], [1, 9]], [[9, 1], [1, 1]], CELLS, TOP_LEFT, BOTTOM_RIGHT)
    assert not ignores.dependent and ignores.margin == -1.0
    # A splits its excess between a and b (0.5 each); B puts all on b: gains 0.5 and 0.5
    partial = M.query_dependence([[5, 1], [1, 5]], [[1, 1], [1, 9]], CELLS, TOP_LEFT, BOTTOM_RIGHT)
    assert partial.dependent and partial.margin == pytest.approx(0.5)
    same = M.query_dependence([[5, 1], [1, 5]], [[5, 1], [1, 5]], CELLS, TOP_LEFT, BOTTOM_RIGHT)
    assert not same.dependent and same.margin == 0.0
    assert M.query_dependence_rate([follows, ignores]) == {"rate": 0.5, "mean_margin": 0.0, "n": 2}
    with pytest.raises(ValueError):
        M.query_dependence_rate([])


# ---------------------------------------------------------------- buckets and misclassification

def test_accuracy_by_token_bucket_hand_values():
    buckets = M.accuracy_by_token_bucket([64, 100, 160, 256, 4096], [0, 1, 1, 0, 1], [64, 160, 4096])
    assert [(b.lo, b.hi, b.n) for b in buckets] == [(64, 160, 2), (160, 4096, 3)]
    assert buckets[0].accuracy == 0.5 and buckets[1].accuracy == pytest.approx(2 / 3)
    empty = M.accuracy_by_token_bucket([64], [1], [0, 32, 128])
    assert math.isnan(empty[0].accuracy) and empty[1].accuracy == 1.0
    with pytest.raises(ValueError, match="outside edges"):
        M.accuracy_by_token_bucket([5000], [1], [64, 4096])
    with pytest.raises(ValueError, match="increasing"):
        M.accuracy_by_token_bucket([64], [1], [64, 64])


def test_misclassification_rate_hand_values():
    rate = M.misclassification_rate([100, 200, 150, 64], ["detail", "detail", "gist", "detail"], 160)
    assert rate == pytest.approx(2 / 3)  # detail at 100 and 64 are starved, 200 is not
    assert math.isnan(M.misclassification_rate([10], ["gist"], 160))
    assert M.scaled_threshold(64) == 160 and M.scaled_threshold(16) == 40
    with pytest.raises(ValueError, match="accepted: 'gist', 'detail'"):
        M.misclassification_rate([10], ["hard"], 160)


# ---------------------------------------------------------------- cost

def test_latency_percentiles_hand_values():
    out = M.latency_percentiles([{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 2}])
    assert out["a"]["p50"] == 2.0 and out["a"]["p95"] == pytest.approx(2.9)  # 2 + 0.9 * (3 - 2)
    assert out["b"]["p50"] == 3.0 and out["b"]["p95"] == pytest.approx(3.9) and out["b"]["n"] == 2
    with pytest.raises(ValueError, match="finite seconds"):
        M.latency_percentiles([{"a": -1.0}])


def test_count_flops_per_module():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    flops = M.count_flops(model, torch.zeros(5, 4))
    # a linear layer costs 2 * batch * in * out: 2*5*4*3 = 120 and 2*5*3*2 = 60
    assert flops.total == 180
    assert flops.per_module == {"Sequential": 180, "Sequential.0": 120, "Sequential.2": 60}
    assert flops.output.shape == (5, 2)


# ---------------------------------------------------------------- properties of answer metrics

TEXT = st.text(alphabet="abcXYZ019 =+-", max_size=8)


@settings(max_examples=150, deadline=None)
@given(pred=TEXT, ref=TEXT)
def test_anls_bounded_symmetric_and_implied_by_em(pred, ref):
    score = M.anls(pred, ref)
    assert 0.0 <= score <= 1.0
    assert score == M.anls(ref, pred)
    if M.exact_match(pred, ref):
        assert score == 1.0


def test_data_md_examples_run():
    """The metric examples in docs/DATA.md are code, not prose: run them."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "DATA.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, "docs/DATA.md has no python examples"
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
