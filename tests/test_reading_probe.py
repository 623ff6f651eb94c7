"""Reading probe (arrcoc_lab/evaluation/reading_probe.py) and the reader's greedy decoding: a reader learns to
spell text that its window shows, fails on windows that hold none, and bad input fails clearly."""
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from arrcoc_lab.errors import InputError
from arrcoc_lab.data.features import SceneTensors
from arrcoc_lab.training.reader import END, RegionReader
from arrcoc_lab.modeling.llm import LLMConfig
from arrcoc_lab.evaluation.reading_probe import (probe_reading, reading_accuracy, reading_questions, reading_samples,
                                      reading_scaling)

WORDS = ["ab", "cd", "ef", "gh"]


def _windows(n: int, informative: bool, seed: int = 0):
    """(n, 4, 3, 3) windows; when informative, channel k lights up at the centre for word k."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(WORDS), (n,), generator=gen)
    x = torch.randn(n, 4, 3, 3, generator=gen) * 0.1
    if informative:
        x[torch.arange(n), labels, 1, 1] += 3.0
    return x, [WORDS[i] for i in labels.tolist()]


def test_reader_reads_what_the_window_shows_and_not_what_it_hides():
    x, texts = _windows(400, informative=True)
    good = reading_accuracy(x, texts, steps=150, batch=32, lr=3e-3, stage="informative")
    assert good.heldout_exact > 0.9 and good.n_train == 340 and good.n_heldout == 60 and good.grid == (4, 3, 3)
    assert good.steps == 150 and good.curve == []
    x, texts = _windows(400, informative=False)
    blind = reading_accuracy(x, texts, steps=150, batch=32, lr=3e-3)
    assert blind.heldout_exact < 0.5  # 4 equally likely words: ~0.25 by guessing


TINY_LLM = LLMConfig(hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64, max_positions=256)


def test_llm_reader_reads_what_the_window_shows_and_not_what_it_hides():
    x, texts = _windows(400, informative=True)
    good = reading_accuracy(x, texts, steps=150, batch=32, lr=3e-3, reader="llm", llm=TINY_LLM)
    assert good.reader == "llm" and good.heldout_exact > 0.9 and good.heldout_byte_accuracy > 0.9
    x, texts = _windows(400, informative=False)
    blind = reading_accuracy(x, texts, steps=150, batch=32, lr=3e-3, reader="llm", llm=TINY_LLM)
    assert blind.heldout_exact < 0.5


def test_llm_reader_is_asked_each_signs_question():
    """The question names which of two signs in the window to read: only a reader that is asked it can be right."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 4, (400,), generator=gen), torch.randint(0, 4, (400,), generator=gen)
    x = torch.randn(400, 8, 2, 2, generator=gen) * 0.1
    x[torch.arange(400), a, 0, 0] += 3.0
    x[torch.arange(400), 4 + b, 1, 1] += 3.0
    left = torch.rand(400, generator=gen) < 0.5
    texts = [WORDS[i] if l else WORDS[j] for i, j, l in zip(a.tolist(), b.tolist(), left.tolist())]
    questions = ["left?" if l else "right?" for l in left.tolist()]
    asked = reading_accuracy(x, texts, steps=200, batch=32, lr=3e-3, reader="llm", llm=TINY_LLM, questions=questions)
    unasked = reading_accuracy(x, texts, steps=200, batch=32, lr=3e-3, reader="llm", llm=TINY_LLM)
    assert asked.heldout_exact > 0.8 > unasked.heldout_exact
    with pytest.raises(InputError, match="questions"):
        reading_accuracy(x, texts, steps=1, reader="llm", llm=TINY_LLM, questions=questions[:3])
    # a model trained with the question through its query encoder still gets a fresh byte-prompt reader
    querying = reading_accuracy(x, texts, steps=1, reader="llm", llm=replace(TINY_LLM, question_embedding=True),
                                questions=questions)
    assert 0 <= querying.heldout_exact <= 1
    with pytest.raises(InputError, match="unknown reader"):
        reading_accuracy(x, texts, steps=1, reader="ocr")


def test_decode_stops_at_end_and_skips_samples_without_region():
    r = RegionReader(8)
    with torch.no_grad():
        r.head.weight.zero_()
        r.head.bias.zero_()
        r.head.bias[ord("x")] = 5.0  # every slot says "x" ...
    visual = torch.randn(2, 3, 8)
    region = torch.tensor([[True, True, False], [False, False, False]])
    assert r.decode(visual, region) == ["x" * (r.cfg.max_bytes + 1), ""]
    with torch.no_grad():
        r.head.bias[END] = 10.0  # ... until END wins at once
    assert r.decode(visual, region) == ["", ""]


def test_reading_samples_take_detail_questions_with_a_box():
    data = SimpleNamespace(difficulty=["gist", "detail", "detail"], boxes=[(0, 0, 1, 1), (1, 1, 5, 5), None],
                           scene_index=[0, 0, 1], answers=["blue", "E=mc2", "K7"])
    assert reading_samples(data) == ([0], [(1, 1, 5, 5)], ["E=mc2"])
    data.questions = ["sky?", "What does the billboard say?", "Read the code."]
    assert reading_questions(data) == ["What does the billboard say?"]
    with pytest.raises(InputError, match="fine-detail"):
        reading_samples(SimpleNamespace(difficulty=["gist"], boxes=[None], scene_index=[0], answers=["x"]))


def test_probe_reading_puts_the_lossless_reference_first(lab_pipe):
    g = lab_pipe.geometry
    n, P = 12, g.patches_per_side
    scenes = SceneTensors(torch.randn(n, lab_pipe.model.compressor.cfg.in_dim, P, P).half(),
                          torch.randint(0, 256, (n, 3, g.image_size, g.image_size), dtype=torch.uint8), list(range(n)))
    data = SimpleNamespace(difficulty=["detail"] * n, boxes=[(16 * i, 40, 16 * i + 40, 60) for i in range(n)],
                           scene_index=list(range(n)), answers=[str(i) for i in range(n)], scenes=scenes)
    results = probe_reading(lab_pipe.model, data, steps=2)
    w = round(96 / g.patch_size)
    assert [(r.stage, r.grid) for r in results] == [("patch_grid", (3 * g.patch_size ** 2, w, w)),
                                                    ("sam", (lab_pipe.model.compressor.cfg.in_dim, w, w))]
    assert all(0 <= r.heldout_exact <= 1 and r.n_train + r.n_heldout == n for r in results)
    with pytest.raises(InputError, match="steps"):
        reading_accuracy(torch.zeros(4, 2, 2, 2), ["a"] * 4, steps=0)


def test_learning_curve_ends_at_the_final_score():
    x, texts = _windows(200, informative=True)
    r = reading_accuracy(x, texts, steps=60, batch=32, lr=3e-3, n_train=150, eval_every=25)
    assert [s for s, _ in r.curve] == [25, 50, 60] and r.curve[-1][1] == r.heldout_exact
    assert r.n_train == 150 and r.n_heldout == 50
    with pytest.raises(InputError, match="eval_every"):
        reading_accuracy(x, texts, steps=5, eval_every=-1)
    with pytest.raises(InputError, match="both sides"):
        reading_accuracy(x, texts, steps=5, n_train=200)


def _sign_data(pipe, n: int):
    g = pipe.geometry
    P = g.patches_per_side
    scenes = SceneTensors(torch.randn(n, pipe.model.compressor.cfg.in_dim, P, P).half(),
                          torch.randint(0, 256, (n, 3, g.image_size, g.image_size), dtype=torch.uint8), list(range(n)))
    return SimpleNamespace(difficulty=["detail"] * n, boxes=[(8 * i, 40, 8 * i + 40, 60) for i in range(n)],
                           scene_index=list(range(n)), answers=[str(i % 7) for i in range(n)], scenes=scenes,
                           questions=[f"What does sign {i} say?" for i in range(n)])


def test_reading_scaling_scores_every_count_on_the_same_heldout_signs(lab_pipe):
    data = _sign_data(lab_pipe, 20)
    results = reading_scaling(lab_pipe.model, data, counts=[4, 12], heldout=6, steps=2, eval_every=1)
    assert [(r.n_train, r.n_heldout, r.stage, r.steps) for r in results] == [(4, 6, "sam", 2), (12, 6, "sam", 2)]
    assert all(len(r.curve) == 2 for r in results)
    grid = reading_scaling(lab_pipe.model, data, counts=[4], heldout=6, steps=1, stage="patch_grid")
    assert grid[0].grid[0] == 3 * lab_pipe.geometry.patch_size ** 2
    with pytest.raises(InputError, match="more signs"):
        reading_scaling(lab_pipe.model, data, counts=[15], heldout=6, steps=1)
    with pytest.raises(InputError, match="unknown stage"):
        reading_scaling(lab_pipe.model, data, counts=[4], heldout=6, steps=1, stage="pixels")
    llm = reading_scaling(lab_pipe.model, data, counts=[4], heldout=6, steps=1, reader="llm")
    assert llm[0].reader == "llm" and llm[0].n_train == 4 and 0 <= llm[0].heldout_exact <= 1
    with pytest.raises(InputError, match="unknown reader"):
        reading_scaling(lab_pipe.model, data, counts=[4], heldout=6, steps=1, reader="ocr")


@pytest.mark.parametrize("reader", ["region", "llm"])
def test_strided_tokens_are_learned_pooling_that_still_reads(reader):
    """stride s hands the reader (w/s)² tokens from a learned s×s convolution (a compressor head's LOD)."""
    x, texts = _windows(400, informative=True)  # 3×3 windows, the word's channel lit at the centre
    r = reading_accuracy(x, texts, steps=150, batch=32, lr=3e-3, reader=reader, llm=TINY_LLM, stride=3)
    assert r.stride == 3 and r.heldout_exact > 0.9
    with pytest.raises(InputError, match="stride"):
        reading_accuracy(x, texts, steps=1, reader=reader, llm=TINY_LLM, stride=2)
