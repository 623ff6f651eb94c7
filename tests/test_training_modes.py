"""One forward path (training calls ARRCOC.forward), phase 0's reading views and question dropout,
mixed training sets, the LLM's question states, and configs that builders never change."""
from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling import allocator as A
from arrcoc_lab.modeling.presets import get_preset
from arrcoc_lab.pipeline import load_pipeline
from arrcoc_lab.policies import OraclePolicy, get_policy
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import SEGMENT_FIELDS, get_phase
from arrcoc_lab.training.sampling import GIST_SPOT_FAMILIES, load_train_data, make_batch, parse_mix, sample_indices
from arrcoc_lab.training.step import TrainStep, set_trainable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The lab preset at its seeded init (the synthetic sets need 32 patches a side) on 4 scenes."""
    pipe = load_pipeline("lab", weights="random")
    cfg = TrainConfig(n_scenes=4, batch_size=8, cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False,
                      render_workers=0)
    return pipe, load_train_data(pipe.model, cfg), cfg


def test_gumbel_phases_train_through_the_allocators_one_gumbel(tiny, monkeypatch):
    """Phases 1 and 3 draw their levels with modeling.allocator.gumbel_levels, inside the model's forward."""
    pipe, data, cfg = tiny
    calls = []
    real = A.gumbel_levels
    monkeypatch.setattr(A, "gumbel_levels", lambda *a, **k: calls.append(1) or real(*a, **k))
    ph = get_phase("phase1", steps=1)
    out = TrainStep(pipe.model, ph)(make_batch(data, pipe.model, ph, 0, cfg, 0, 1, "cpu"))
    assert calls == [1] and {"answer", "efficiency", "diversity"} <= set(out)
    out["answer"].backward()  # the answer reaches the relevance analyzer through the straight-through levels
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.model.relevance.parameters())
    pipe.model.zero_grad(set_to_none=True)


def test_phase1a_teaches_unlabelled_gist_questions_a_flat_map(tiny, monkeypatch):
    """The step hands the relevance loss its gist questions (count: no region) as whole-image ones,
    and the loss then differs from leaving them out."""
    import arrcoc_lab.training.step as step_mod
    from arrcoc_lab.training.losses import relevance_loss
    from arrcoc_lab.training.sampling import TIER_OF

    pipe, data, cfg = tiny
    seen = []
    monkeypatch.setattr(step_mod, "relevance_loss", lambda *a, **k: seen.append((a, k)) or relevance_loss(*a, **k))
    ph = get_phase("phase1a", steps=1)
    batch = next(b for b in (make_batch(data, pipe.model, ph, s, cfg, 0, 1, "cpu") for s in range(20))
                 if (torch.isnan(b["target_cells"]).flatten(1).all(1) & (b["tiers"] == TIER_OF["gist"])).any())
    with torch.no_grad():
        out = TrainStep(pipe.model, ph)(batch)
    (logit, target, value), kw = seen[-1]
    assert value == 1.0 and torch.equal(kw["whole_image"], batch["tiers"] == TIER_OF["gist"])
    assert torch.allclose(out["relevance"], relevance_loss(logit, target, 1.0, kw["whole_image"]))
    assert not torch.allclose(out["relevance"], relevance_loss(logit, target))


def test_training_forward_is_the_inference_forward(tiny):
    """A phase-0 step's answer loss is the model forward's own, with the same levels."""
    pipe, data, cfg = tiny
    m, ph = pipe.model, get_phase("phase0", steps=1, losses={"answer": 1.0}, question_dropout=0.0)
    batch = make_batch(data, m, ph, 3, cfg, 0, 1, "cpu")
    with torch.no_grad():
        out = TrainStep(m, ph)(batch)
        ref = m(batch["pixels"], batch["questions"], policy=OraclePolicy(batch["utility"], batch.get("levels")),
                budget=batch["budgets"],
                answers=batch["answers"], features=batch["features"], generate=False,
                question_states=batch.get("question_states"))
    assert torch.equal(out["_levels"], ref.trace.allocation.levels)
    assert torch.allclose(out["answer"], ref.loss)
    families = {k[len("_answer_"):] for k in out if k.startswith("_answer_")} - {"detail", "gist"}
    assert families and families == set(batch["families"]) and "other" not in families  # per-family losses logged


def test_reading_views_show_the_sign_and_little_else(tiny):
    pipe, data, cfg = tiny
    g = pipe.geometry
    ph = get_phase("phase0", steps=10, reading_steps=1.0, reading_top_until=1.0)
    batch = make_batch(data, pipe.model, ph, 0, cfg, 0, 1, "cpu")
    levels = batch["levels"]
    for k in range(len(batch["questions"])):
        t = torch.nan_to_num(batch["target_cells"][k]) > 0
        if batch["detail"][k] and t.any():
            assert (levels[k][t] == g.max_level_index).all()  # the sign at the top level (reading-first)
            assert set(levels[k][~t].tolist()) <= {g.min_level, g.max_level_index}  # the rest at the minimum (or a second sign)
        else:
            tokens = int(torch.tensor(g.levels)[levels[k]].sum())
            assert tokens <= batch["budgets"][k]  # other samples: the knapsack under their budget
    after = get_phase("phase0", steps=10, reading_steps=1.0, reading_top_until=0.0, reading_level=1)
    seen = set()
    for s in range(12):  # after reading-first: the top level or reading_level, drawn per step
        b = make_batch(data, pipe.model, after, s, cfg, 0, 1, "cpu")
        for k in range(len(b["questions"])):
            t = torch.nan_to_num(b["target_cells"][k]) > 0
            if b["detail"][k] and t.any():
                seen |= set(b["levels"][k][t].tolist())
    assert seen == {1, g.max_level_index}
    for share, want in ((0.0, {1}), (1.0, {g.max_level_index})):  # reading_top_share: the top level's share of steps
        only = get_phase("phase0", steps=10, reading_steps=1.0, reading_top_until=0.0, reading_level=1,
                         reading_top_share=share)
        assert {int(only_level) for s in range(6) for only_level in _sign_levels(data, pipe.model, only, s, cfg)} == want
    out = TrainStep(pipe.model, ph)(batch)
    assert torch.equal(out["_levels"], levels)  # the forward used the given levels as they were


def test_reading_jitter_moves_each_sign_to_the_reading_spot(tiny):
    """reading_jitter 0: every detail sample's scene (features, pixels, box) rolled so its sign sits
    at one spot, its cells those two of the second row (lab); 1 leaves the batch as it was."""
    pipe, data, cfg = tiny
    g = pipe.geometry
    ph = get_phase("phase0", steps=10, reading_steps=1.0, reading_top_until=1.0, detail_share=1.0, reading_jitter=1.0)
    for step in range(3):
        plain = make_batch(data, pipe.model, ph, step, cfg, 0, 1, "cpu")
        assert all(torch.equal(plain[k], make_batch(data, pipe.model, dataclasses.replace(ph, reading_jitter=1.0), step, cfg, 0, 1,
                                                    "cpu")[k]) for k in ("features", "pixels", "levels"))
        b = make_batch(data, pipe.model, dataclasses.replace(ph, reading_jitter=0.0), step, cfg, 0, 1, "cpu")
        for k in range(len(b["questions"])):
            t = torch.nan_to_num(b["target_cells"][k]) > 0
            if not (b["detail"][k] and t.any()):
                continue
            rows, cols = torch.nonzero(t, as_tuple=True)
            # the sign centred on the spot, patch (12, 16): the border of the second row's middle cells
            assert set(cols.tolist()) <= {1, 2} and set(rows.tolist()) <= {1, 2} and 1 in rows.tolist()
            assert (b["levels"][k][t] == g.max_level_index).all()
            moved = [(dy, dx) for dy in range(-16, 16) for dx in range(-16, 16)
                     if torch.equal(torch.roll(plain["features"][k], (dy, dx), (-2, -1)), b["features"][k])]
            assert moved  # the same scene, rolled by whole patches
            dy, dx = moved[0]
            assert torch.equal(torch.roll(plain["pixels"][k], (dy * g.patch_size, dx * g.patch_size), (-2, -1)),
                               b["pixels"][k])
    with pytest.raises(InputError, match="reading_jitter"):
        get_phase("phase0", reading_jitter=1.5)


def test_gist_jitter_moves_each_landmark_to_the_spot(tiny):
    """gist_jitter 0: the landmark questions' scenes rolled so the landmark sits at the spot, on every
    step; other samples, and every sample at 1, as they were."""
    pipe, data, cfg = tiny
    ph = get_phase("phase0", steps=10, reading_steps=0.0, detail_share=0.0, reading_jitter=1.0)
    assert ph.gist_jitter == 1.0  # the default: scenes as they are
    seen = 0
    for step in range(4):
        plain = make_batch(data, pipe.model, ph, step, cfg, 0, 1, "cpu")
        b = make_batch(data, pipe.model, dataclasses.replace(ph, gist_jitter=0.0), step, cfg, 0, 1, "cpu")
        for k, fam in enumerate(b["families"]):
            t = torch.nan_to_num(b["target_cells"][k]) > 0
            if fam not in GIST_SPOT_FAMILIES:
                assert torch.equal(plain["features"][k], b["features"][k])
                continue
            seen += 1
            rows, cols = torch.nonzero(t, as_tuple=True)
            spot = (rows.float().mean() + 0.5) * 64, (cols.float().mean() + 0.5) * 64  # (y, x) px of its cells' centre
            assert abs(spot[0] - 96) <= 64 and abs(spot[1] - 128) <= 64  # around the spot, patch (12, 16) = px (96, 128)
            assert any(torch.equal(torch.roll(plain["features"][k], (dy, dx), (-2, -1)), b["features"][k])
                       for dy in range(-16, 16) for dx in range(-16, 16))  # the same scene, rolled
    assert seen
    with pytest.raises(InputError, match="gist_jitter"):
        get_phase("phase0", gist_jitter=-0.1)


def test_question_states_withheld_from_a_share_of_samples(tiny):
    """PhaseConfig.question_states: the LLM of a withheld sample reads the byte prompt alone (its loss
    is the one without states), which is never blanked for it; the projection learns nothing from it."""
    pipe, data, cfg = tiny
    m = copy.deepcopy(pipe.model)
    torch.nn.init.normal_(m.llm.question_proj[1].weight, std=0.5)  # states that change the answer
    ph = get_phase("phase0", steps=10, question_states=0.5, question_dropout=0.5)
    batches = [make_batch(data, m, ph, s, cfg, 0, 1, "cpu") for s in range(8)]
    kept = [k for b in batches for k in b["question_states"]]
    assert 0.2 < np.mean(kept) < 0.8
    assert all(p for b in batches for p, k in zip(b["prompts"], b["question_states"]) if not k)  # byte prompt kept
    b = batches[0]
    args = (b["pixels"], b["questions"])
    kw = dict(policy=get_policy("uniform"), budget=m.geometry.uniform_budget, answers=b["answers"],
              features=b["features"], generate=False, probes=False)
    with torch.no_grad():
        states = m(*args, **kw).answer_loss.per_sample
        mixed = m(*args, question_states=b["question_states"], **kw).answer_loss.per_sample
        m.llm.question_proj, proj = None, m.llm.question_proj
        bare = m(*args, **kw).answer_loss.per_sample
        m.llm.question_proj = proj
    keep = torch.tensor(b["question_states"])
    assert torch.allclose(mixed[keep], states[keep]) and torch.allclose(mixed[~keep], bare[~keep], atol=1e-5)
    assert not torch.allclose(states, bare)
    assert "question_states" not in make_batch(data, m, get_phase("phase0", steps=10, question_states=1.0), 0, cfg, 0, 1,
                                               "cpu")
    none = get_phase("phase0", steps=10, question_states=0.0)
    m.zero_grad(set_to_none=True)
    TrainStep(m, none)(make_batch(data, m, none, 1, cfg, 0, 1, "cpu"))["answer"].backward()
    assert all(p.grad is None or not p.grad.any() for p in m.llm.question_proj.parameters())


def _sign_levels(data, model, phase, step, cfg) -> list[int]:
    """The levels the step's batch gives the cells of its detail samples' signs."""
    b = make_batch(data, model, phase, step, cfg, 0, 1, "cpu")
    out = []
    for k in range(len(b["questions"])):
        t = torch.nan_to_num(b["target_cells"][k]) > 0
        if b["detail"][k] and t.any() and "levels" in b:
            out += b["levels"][k][t].tolist()
    return out


def test_spot_share_draws_that_share_of_landmark_questions(tiny):
    """spot_share: that share of each batch (in expectation) is landmark and city questions, the
    detail share kept; unset, the draw is the one runs were trained with."""
    pipe, data, cfg = tiny
    big = dataclasses.replace(cfg, batch_size=6)  # of the 24 samples, 8 about the landmark, 8 detail
    share = lambda ph, which: np.mean([which[i] for s in range(40) for i in sample_indices(data, ph, s, big)])
    detail = np.array([d == "detail" for d in data.difficulty])
    plain = get_phase("phase0", steps=10, detail_share=0.25, segments=())
    assert plain.spot_share is None
    ph = dataclasses.replace(plain, spot_share=0.7)
    assert share(plain, data.spot_family) < 0.55 < share(ph, data.spot_family)
    assert abs(share(ph, detail) - share(plain, detail)) < 0.1
    assert all(np.array_equal(sample_indices(data, plain, s, big),
                              sample_indices(data, dataclasses.replace(plain, spot_share=None), s, big)) for s in range(3))
    with pytest.raises(InputError, match="spot_share"):
        get_phase("phase0", detail_share=0.8, spot_share=0.3)
    with pytest.raises(InputError, match="spot_share"):  # checked as the segments leave it, not once it is reached
        get_phase("phase0", detail_share=0.5, segments=((5, {"spot_share": 0.4}), (9, {"detail_share": 0.7})))


def test_count_share_draws_that_share_of_counting_questions(tiny):
    """count_share: that share of each batch (in expectation) is counting questions, beside
    spot_share's landmark questions and the detail share; the three must fit in one batch."""
    pipe, data, cfg = tiny
    big = dataclasses.replace(cfg, batch_size=6)  # of the 24 samples, 4 count the signs, 8 detail
    share = lambda ph, which: np.mean([which[i] for s in range(40) for i in sample_indices(data, ph, s, big)])
    detail = np.array([d == "detail" for d in data.difficulty])
    assert data.count_family.sum() == 4 and not (data.count_family & (detail | data.spot_family)).any()
    plain = get_phase("phase0", steps=10, detail_share=0.25, spot_share=0.25, segments=())
    ph = dataclasses.replace(plain, count_share=0.45)
    assert share(plain, data.count_family) < 0.32 < share(ph, data.count_family)
    assert abs(share(ph, detail) - share(plain, detail)) < 0.1
    assert abs(share(ph, data.spot_family) - share(plain, data.spot_family)) < 0.1
    with pytest.raises(InputError, match="count_share"):
        get_phase("phase0", detail_share=0.5, spot_share=0.25, count_share=0.3)
    with pytest.raises(InputError, match="count_share"):
        get_phase("phase0", count_share=0.1, detail_share=None)


def test_detail_weights_weigh_the_detail_families_within_the_detail_share(tiny):
    """detail_weights: a weighted family is drawn that much more often among the detail questions,
    the detail share kept; unset, the draw is the one runs were trained with; unknown or gist families,
    weights ≤ 0 and weights without detail_share are refused, naming what exists."""
    pipe, data, cfg = tiny
    big = dataclasses.replace(cfg, batch_size=6)
    drawn = lambda ph: [i for s in range(60) for i in sample_indices(data, ph, s, big)]
    detail = np.array([d == "detail" for d in data.difficulty])
    families = sorted(set(data.family[detail]))
    assert len(families) >= 2  # the tiny mix has more than one detail family to weigh
    heavy = families[0]
    share_of = lambda ph: np.mean([data.family[i] == heavy for i in drawn(ph) if detail[i]])
    plain = get_phase("phase0", steps=10, detail_share=0.5, segments=())
    weighted = dataclasses.replace(plain, detail_weights={heavy: 4.0})
    assert share_of(weighted) > 1.8 * share_of(plain)  # (drawn without replacement, 6 of 24: short of 4x)
    assert abs(np.mean(detail[drawn(weighted)]) - np.mean(detail[drawn(plain)])) < 0.1
    assert all(np.array_equal(sample_indices(data, plain, s, big),
                              sample_indices(data, dataclasses.replace(plain, detail_weights={}), s, big)) for s in range(3))
    with pytest.raises(InputError, match="known: .*'code'"):
        get_phase("phase0", detail_share=0.5, detail_weights={"kode": 2.0})
    with pytest.raises(InputError, match="fine-detail families"):  # a gist family's weight would do nothing
        get_phase("phase0", detail_share=0.5, detail_weights={"landmark": 2.0})
    with pytest.raises(InputError, match="detail_weights"):
        get_phase("phase0", detail_share=0.5, detail_weights={"code": 0.0})
    with pytest.raises(InputError, match="detail_weights"):
        get_phase("phase1a", detail_share=None, detail_weights={"code": 2.0})


def test_gist_weight_weighs_gist_answers_and_keeps_the_loss_scale(tiny):
    """gist_weight: a gist sample's answer loss counts that many detail samples'; the weights average 1
    over the global batch (so processes and chunks add up), and weight 1 is the plain mean."""
    pipe, data, cfg = tiny
    ph = get_phase("phase0", steps=10, detail_share=0.5, gist_weight=3.0, segments=())
    whole = make_batch(data, pipe.model, ph, 2, cfg, 0, 1, "cpu")
    w, detail = whole["answer_weight"], whole["detail"]
    assert detail.any() and (~detail).any()
    assert torch.allclose(w[~detail], 3 * w[detail][0]) and torch.allclose(w[detail], w[detail][0])
    assert torch.isclose(w.mean(), torch.tensor(1.0))
    halves = [make_batch(data, pipe.model, ph, 2, cfg, r, 2, "cpu")["answer_weight"] for r in (0, 1)]
    assert torch.allclose(torch.cat(halves).sort().values, w.sort().values)  # the global batch's normalisation
    assert "answer_weight" not in make_batch(data, pipe.model, dataclasses.replace(ph, gist_weight=1.0), 2, cfg, 0, 1, "cpu")
    m = pipe.model.eval()
    with torch.no_grad():
        plain = TrainStep(m, ph)({k: v for k, v in whole.items() if k != "answer_weight"})
        weighted = TrainStep(m, ph)(whole)
    per_detail, per_gist = plain["_answer_detail"], plain["_answer_gist"]
    n_d, n_g = int(detail.sum()), int((~detail).sum())
    expected = (n_d * per_detail + 3 * n_g * per_gist) / (n_d + 3 * n_g)
    assert torch.isclose(weighted["answer"], expected, rtol=1e-4)
    assert torch.isclose(plain["answer"], (n_d * per_detail + n_g * per_gist) / (n_d + n_g), rtol=1e-4)
    with pytest.raises(InputError, match="gist_weight"):
        get_phase("phase0", gist_weight=0.0)


def test_segments_change_the_batches_from_their_step_on(tiny):
    """Phase 0's schedule: a segment changes how batches are drawn from its step on, and only that."""
    pipe, data, cfg = tiny
    seg = {"reading_steps": 1.0, "reading_top_until": 0.0, "reading_top_share": 0.0, "reading_level": 1}
    ph = get_phase("phase0", steps=10, reading_steps=0.0, segments=((4, seg),))
    assert ph.at(3).reading_steps == 0.0 and ph.at(4).reading_steps == 1.0 and ph.at(9).reading_level == 1
    assert ph.at(9).lr == ph.lr and ph.at(9).steps == ph.steps
    assert all("levels" not in make_batch(data, pipe.model, ph, s, cfg, 0, 1, "cpu") for s in range(4))
    levels = [lv for s in range(4, 8) for lv in _sign_levels(data, pipe.model, ph, s, cfg)]
    assert levels and set(levels) == {1}
    shipped = get_phase("phase0")  # the lab curriculum's own start (session 13): signs at the reading spot, no states
    assert shipped.at(0).reading_jitter == 0.0 and shipped.at(0).question_states == 0.0
    starts = [start for start, _ in shipped.segments]  # appended as the run went: a resume takes only later ones
    assert starts == sorted(starts) and all(0 < s < shipped.steps for s in starts)
    assert shipped.at(1999).reading_top_until == 0.35 and shipped.at(2000).reading_top_until == 0.5
    assert [shipped.at(s).reading_jitter for s in (2399, 2400, 2600)] == [0.0, 0.25, 1.0]
    assert [shipped.at(s).detail_share for s in (1999, 2000, 2999, 3000)] == [0.8, 0.9, 0.9, 0.55]
    assert [shipped.at(s).reading_jitter for s in (2999, 3000)] == [1.0, 0.0] and shipped.at(3000).reading_top_share == 0.2
    assert [(shipped.at(s).spot_share, shipped.at(s).gist_jitter) for s in (2999, 3000)] == [(None, 1.0), (0.25, 0.0)]
    assert [shipped.at(s).question_states for s in (3199, 3200)] == [0.0, 1.0]
    assert [(shipped.at(s).detail_share, shipped.at(s).count_share) for s in (3699, 3700)] == [(0.55, None), (0.5, 0.15)]
    assert [shipped.at(s).gist_weight for s in (3799, 3800)] == [1.0, 2.0]
    assert [shipped.at(s).reading_jitter for s in (4199, 4200, 4400)] == [0.0, 0.25, 1.0]
    assert [(shipped.at(s).gist_jitter, shipped.at(s).count_share) for s in (4599, 4600, 5999)] == [(0.0, 0.15), (0.25, 0.2), (0.25, 0.2)]
    cont, end = get_phase("phase0b"), shipped.at(shipped.steps)  # phase 0's last batches, a learning rate of its own
    assert all(getattr(cont, f) == getattr(end, f) for f in SEGMENT_FIELDS if f != "reading_top_until")
    assert (cont.trainable, cont.lr_scale, cont.losses) == (shipped.trainable, shipped.lr_scale, shipped.losses)
    assert [cont.at(s).gist_jitter for s in (1299, 1300)] == [end.gist_jitter, 1.0]  # its own, from session 17
    assert cont.reading_top_until == 0.0 and cont.lr < shipped.lr and cont.warmup > shipped.warmup
    third, end_b = get_phase("phase0c"), cont.at(cont.steps)  # session 18: full views, more fine detail
    assert (third.full_share, third.full_steps, third.detail_share, third.count_share) == (0.05, 0.0, 0.55, 0.1)
    assert third.gist_jitter == end_b.gist_jitter == 1.0 and third.spot_share == end_b.spot_share and not third.segments
    assert third.lr < cont.lr and (third.trainable, third.lr_scale) == (cont.trainable, cont.lr_scale)
    fourth, end_c = get_phase("phase0d"), third.at(third.steps)  # session 20: more fine detail, less counting
    assert (fourth.detail_share, fourth.count_share) == (0.65, 0.05) and fourth.detail_share > end_c.detail_share
    assert all(getattr(fourth, f) == getattr(end_c, f) for f in SEGMENT_FIELDS if f not in ("detail_share", "count_share"))
    assert (fourth.trainable, fourth.lr_scale, fourth.losses) == (third.trainable, third.lr_scale, third.losses)
    fifth = get_phase("phase0e")  # session 20: phase 0d's batches, longer
    assert all(getattr(fifth, f) == getattr(fourth, f) for f in SEGMENT_FIELDS) and fifth.steps > fourth.steps
    sixth = get_phase("phase0f")  # session 21: level 2 first, fewer full views
    assert (sixth.reading_top_share, sixth.full_share, sixth.detail_share) == (0.05, 0.02, 0.7)
    assert sixth.reading_top_share < fifth.reading_top_share and sixth.full_share < fifth.full_share
    assert all(getattr(sixth, f) == getattr(fifth, f) for f in SEGMENT_FIELDS
               if f not in ("reading_top_share", "full_share", "detail_share"))
    seventh = get_phase("phase0g")  # session 22: phase 0f's batches, longer
    assert all(getattr(seventh, f) == getattr(sixth, f) for f in SEGMENT_FIELDS) and seventh.steps == sixth.steps
    assert (seventh.trainable, seventh.lr_scale, seventh.losses) == (sixth.trainable, sixth.lr_scale, sixth.losses)
    eighth = get_phase("phase0h")  # session 23: more full views and top-level reading views
    assert eighth.full_share > seventh.full_share and eighth.reading_top_share > seventh.reading_top_share
    assert all(getattr(eighth, f) == getattr(seventh, f) for f in SEGMENT_FIELDS
               if f not in ("reading_top_share", "full_share"))
    ninth = get_phase("phase0i")  # session 26: full views by question kind, the lab CLIP trained too
    assert ninth.full_gist_share > ninth.full_share and "clip" in ninth.trainable and ninth.lr_scale["clip"] < 1
    assert all(getattr(ninth, f) == getattr(eighth, f) for f in SEGMENT_FIELDS
               if f not in ("full_share", "full_gist_share"))
    tenth = get_phase("phase0j")  # session 29: phase 0i's batches in one sitting, more detail full views
    assert tenth.steps < ninth.steps and tenth.lr < ninth.lr and tenth.full_share > ninth.full_share
    assert (tenth.trainable, tenth.lr_scale, tenth.full_gist_share) == (ninth.trainable, ninth.lr_scale, ninth.full_gist_share)
    assert all(getattr(tenth, f) == getattr(ninth, f) for f in SEGMENT_FIELDS if f != "full_share")
    eleventh = get_phase("phase0k")  # session 29: phase 0j's batches, longer
    assert eleventh.steps > tenth.steps and all(getattr(eleventh, f) == getattr(tenth, f) for f in SEGMENT_FIELDS)
    assert (eleventh.trainable, eleventh.lr_scale, eleventh.lr) == (tenth.trainable, tenth.lr_scale, tenth.lr)
    twelfth = get_phase("phase0l")  # session 30: phase 0j's batches in one sitting, longer, a lower peak
    assert tenth.steps < twelfth.steps < tenth.steps + eleventh.steps and twelfth.lr < tenth.lr
    assert all(getattr(twelfth, f) == getattr(tenth, f) for f in SEGMENT_FIELDS)
    assert (twelfth.trainable, twelfth.lr_scale, twelfth.warmup) == (tenth.trainable, tenth.lr_scale, tenth.warmup)
    thirteenth = get_phase("phase0m")  # session 31: phase 0l's batches, more of the top level, a lower peak
    assert thirteenth.steps == twelfth.steps and thirteenth.lr < twelfth.lr
    assert thirteenth.reading_top_share > twelfth.reading_top_share
    assert all(getattr(thirteenth, f) == getattr(twelfth, f) for f in SEGMENT_FIELDS if f != "reading_top_share")
    fourteenth = get_phase("phase0n")  # session 32: phase 0m's batches, twice the detail full views, one sitting
    assert fourteenth.steps < thirteenth.steps and fourteenth.lr == thirteenth.lr
    assert fourteenth.full_share == 2 * thirteenth.full_share and fourteenth.full_gist_share == thirteenth.full_gist_share
    assert all(getattr(fourteenth, f) == getattr(thirteenth, f) for f in SEGMENT_FIELDS if f != "full_share")
    fifteenth = get_phase("phase0o")  # session 33: phase 0n's batches, code and number first
    assert (fifteenth.steps, fifteenth.lr) == (fourteenth.steps, fourteenth.lr) and not fourteenth.detail_weights
    assert fifteenth.detail_weights["code"] > fifteenth.detail_weights["number"] > 1
    assert all(getattr(fifteenth, f) == getattr(fourteenth, f) for f in SEGMENT_FIELDS if f != "detail_weights")
    sixteenth = get_phase("phase0p")  # session 34: phase 0o's draw, new samples (its run passes seed 1)
    assert dataclasses.replace(sixteenth, name="phase0o", description="") == dataclasses.replace(fifteenth, description="")
    two = get_phase("phase0", segments=((100, {"reading_jitter": 0.5}), (200, {"question_states": 1.0})))
    assert [two.at(s).reading_jitter for s in (99, 100, 300)] == [0.0, 0.5, 0.5]  # a later segment keeps what an
    assert [two.at(s).question_states for s in (199, 200)] == [0.0, 1.0]           # earlier one set
    short = get_phase("phase0", steps=100)  # a short run (a smoke test, a report run) never reaches it
    assert dataclasses.replace(short.at(99), segments=()) == get_phase("phase0", steps=100, segments=())
    with pytest.raises(InputError, match="lr"):
        get_phase("phase0", segments=((5, {"lr": 1.0}),))  # the optimisation is not a segment's to change
    with pytest.raises(InputError, match="reading_steps"):
        get_phase("phase0", segments=((5, {"reading_steps": 2.0}),))
    with pytest.raises(InputError, match="≥ 0"):
        get_phase("phase0", segments=((-1, {"rephrase": 0.0}),))


def test_question_dropout_blanks_a_share_of_byte_prompts(tiny):
    pipe, data, cfg = tiny
    ph = get_phase("phase0", steps=10, question_dropout=0.5, question_states=1.0)
    dropped = [p == "" for s in range(20) for p in make_batch(data, pipe.model, ph, s, cfg, 0, 1, "cpu")["prompts"]]
    assert 0.3 < np.mean(dropped) < 0.7
    assert make_batch(data, pipe.model, ph, 4, cfg, 0, 1, "cpu")["prompts"] == \
        make_batch(data, pipe.model, ph, 4, cfg, 0, 1, "cpu")["prompts"]  # seeded by step


def test_training_sets_mix_and_count():
    assert parse_mix("scenebench:train", 7) == [("scenebench:train", 7)]
    assert parse_mix("scenebench:train@12+docsynth:train@3", 7) == [("scenebench:train", 12), ("docsynth:train", 3)]
    for bad in ("scenebench:train@x", "scenebench:train@0"):
        with pytest.raises(InputError):
            parse_mix(bad, 7)


def test_docsynth_joins_the_training_set(tiny, tmp_path):
    pipe, data, cfg = tiny
    mixed = load_train_data(pipe.model, TrainConfig(**{**cfg.__dict__, "data": "scenebench:train@2+docsynth:train@2"}))
    assert len(mixed) == 24 and len(mixed.scenes.scene_ids) == 4
    assert sorted(set(mixed.scene_index)) == [0, 1, 2, 3]  # DocSynth's scenes numbered after SceneBench's
    assert any("page" in q.lower() or "chart" in q.lower() or "table" in q.lower() for q in mixed.questions[12:])
    assert torch.equal(mixed.scenes.features[:2], data.scenes.features[:2])
    batch = make_batch(mixed, pipe.model, get_phase("phase0", steps=1), 0, TrainConfig(**{**cfg.__dict__, "batch_size": 24}),
                       0, 1, "cpu")
    assert len(batch["questions"]) == 24


def test_llm_reads_the_question_through_the_query_encoder():
    cfg = get_preset("tiny")
    cfg.llm.question_embedding = True
    pipe = load_pipeline(config=cfg, weights="random")
    m = pipe.model
    assert m.llm.question_proj is not None
    states = m.llm.question_states(m.query_encoder(["What city is this?"]), 1)[0]
    assert states.shape[0] > 0 and not states.any()  # they start at zero (the LLM learns the image first)
    torch.nn.init.normal_(m.llm.question_proj[1].weight, std=0.1)  # as after training
    policy, budget = pipe.resolve("uniform")
    pixels = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        a = m(pixels, ["What city is this?", "What colour is the sky?"], policy=policy, budget=budget,
              answers=["paris", "blue"], generate=False, prompts=["", ""])
        b = m(pixels, ["What is the code on the red sign?", "How many signs are there?"], policy=policy, budget=budget,
              answers=["paris", "blue"], generate=False, prompts=["", ""])
    # identical pixels and byte prompts: only the query encoder's view of the question differs
    assert not torch.allclose(a.answer_loss.per_sample, b.answer_loss.per_sample)
    with pytest.raises(InputError, match="query encoder"):
        m.llm.build(a.trace.visual, a.trace.tokens.mask, ["q", "q"], query=None)


def test_builders_and_load_pipeline_leave_the_callers_config_alone():
    cfg = get_preset("tiny")
    cfg.relevance.query_dim = 999  # wrong on purpose: the builder wires the real width
    before = copy.deepcopy(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(config=cfg, weights="random")
        load_pipeline(config=cfg, weights=None)
    assert cfg == before
    assert pipe.config.relevance.query_dim == pipe.model.query_encoder.dim != 999


def test_policy_objects_and_budgets_resolve_once_at_the_boundary(tiny):
    pipe = tiny[0]
    p, b = pipe.resolve("uniform", "fast")
    assert p is get_policy("uniform") and b == pipe.geometry.budget_for_mode("fast")
    with pytest.raises(InputError, match="unknown policy"):
        pipe.resolve("nope")
    with pytest.raises(InputError, match="outside the accepted range"):
        pipe.resolve("uniform", 10**6)


def test_rephrase_trains_on_many_phrasings_of_the_same_question(tiny):
    from arrcoc_lab.data.phrasing import parse

    pipe, data, cfg = tiny
    ph = get_phase("phase0", steps=10, rephrase=1.0)
    b = make_batch(data, pipe.model, ph, 0, cfg, 0, 1, "cpu")
    idx = [data.questions.index(q) if q in data.questions else None for q in b["questions"]]
    assert idx.count(None) >= len(idx) // 2  # most are no longer the template's words
    plain = make_batch(data, pipe.model, get_phase("phase0", steps=10), 0, cfg, 0, 1, "cpu")["questions"]
    for new, old in zip(b["questions"], plain):  # same family and fields: the answer stays right
        a, o = parse(new), parse(old)
        assert (a.family, a.fields) == (o.family, o.fields)


def test_micro_batches_give_the_whole_batchs_gradient(tiny):
    """A reading step cut into token-sorted chunks accumulates exactly the whole batch's gradient,
    and its logged answer means per difficulty and family are the whole batch's."""
    import contextlib
    from types import SimpleNamespace

    from arrcoc_lab.training.loop import _backward, _merge
    from arrcoc_lab.training.sampling import split_by_tokens
    from arrcoc_lab.training.step import set_trainable

    pipe, data, cfg = tiny
    m = pipe.model
    ph = get_phase("phase0", steps=10, losses={"answer": 1.0}, reading_steps=1.0, micro_batches=3)
    acc = SimpleNamespace(autocast=contextlib.nullcontext, backward=lambda loss: loss.backward())
    params = set_trainable(m, ph)
    batch = make_batch(data, m, ph, 0, cfg, 0, 1, "cpu")
    step = TrainStep(m, ph)
    grads = []
    for n in (1, 3):
        chunks = split_by_tokens(batch, n, m.geometry)
        assert len(chunks) == n and sum(len(c["questions"]) for c in chunks) == len(batch["questions"])
        shares = [len(c["questions"]) / len(batch["questions"]) for c in chunks]
        out, terms = _merge([(w, _backward(acc, step, c, ph, 0, w)) for c, w in zip(chunks, shares)])
        grads.append([p.grad.clone() for p in params if p.grad is not None])
        m.zero_grad(set_to_none=True)
        if n == 1:
            whole = float(terms["answer"].detach())
            groups = {k: float(v) for k, v in out.items() if k.startswith("_answer_")}
    assert abs(float(terms["answer"]) - whole) < 1e-4
    # the logged per-difficulty and per-family means are the whole batch's too, whatever each chunk holds
    assert len(groups) > 3 and all(abs(float(out[k]) - v) < 1e-4 for k, v in groups.items())
    # atol relative to each tensor's largest gradient (the zero-initialised question projection's are ~10³)
    assert all(torch.allclose(a, b, atol=1e-5 * max(1.0, float(a.abs().max())), rtol=1e-4) for a, b in zip(*grads))
    m.requires_grad_(False)


def test_full_share_puts_that_share_at_the_full_view_in_a_chunk_of_their_own(tiny):
    """full_share: on reading steps that share of the samples (drawn over the global batch, so the
    same for any number of processes) has every cell at the top level; split_by_tokens gives them
    the last chunk alone and still makes `n` chunks, whether a process has any or not."""
    from arrcoc_lab.training.sampling import split_by_tokens

    pipe, data, cfg = tiny
    g = pipe.model.geometry
    ph = get_phase("phase0", steps=10, reading_steps=1.0, full_steps=0.0, full_share=0.5, micro_batches=3, segments=())
    is_full = lambda b: (b["levels"] == g.max_level_index).flatten(1).all(1)  # (B,)
    flags = []
    for step in range(8):
        whole = make_batch(data, pipe.model, ph, step, cfg, 0, 1, "cpu")
        full = is_full(whole)
        flags += full.tolist()
        halves = [make_batch(data, pipe.model, ph, step, cfg, r, 2, "cpu") for r in (0, 1)]
        assert torch.equal(is_full(halves[0]), full[0::2]) and torch.equal(is_full(halves[1]), full[1::2])
        assert [len(split_by_tokens(h, 3, g)) for h in halves] == [3, 3]  # each backward syncs: equal counts
        chunks = split_by_tokens(whole, 3, g)
        assert len(chunks) == 3 and sum(len(c["questions"]) for c in chunks) == len(whole["questions"])
        if full.any() and (~full).sum() >= 2:
            assert is_full(chunks[-1]).all() and len(chunks[-1]["questions"]) == int(full.sum())
            assert not any(is_full(c).any() for c in chunks[:-1])
    assert 0.25 < np.mean(flags) < 0.75
    plain = make_batch(data, pipe.model, dataclasses.replace(ph, full_share=0.0), 0, cfg, 0, 1, "cpu")
    assert not is_full(plain).any()
    with pytest.raises(InputError, match="full_share"):
        get_phase("phase0", full_share=1.5)


def test_full_gist_share_draws_the_full_views_by_question_kind(tiny):
    """full_gist_share: the gist samples go to the full view at their own share, the detail samples
    at full_share; left at None both use full_share, the draw phase 0h's checkpoints were made with."""
    pipe, data, cfg = tiny
    g = pipe.model.geometry
    ph = get_phase("phase0", steps=10, reading_steps=1.0, full_steps=0.0, full_share=0.0, full_gist_share=1.0, segments=())
    is_full = lambda b: (b["levels"] == g.max_level_index).flatten(1).all(1)  # (B,)
    seen_gist = seen_detail = 0
    for step in range(4):
        b = make_batch(data, pipe.model, ph, step, cfg, 0, 1, "cpu")
        full, detail = is_full(b), b["detail"]
        assert torch.equal(full, ~detail)  # every gist sample at the full view, no detail sample
        seen_gist, seen_detail = seen_gist + int((~detail).sum()), seen_detail + int(detail.sum())
    assert seen_gist and seen_detail
    same = dataclasses.replace(ph, full_share=0.5, full_gist_share=None)
    both = dataclasses.replace(ph, full_share=0.5, full_gist_share=0.5)
    for step in range(3):
        a, b = (make_batch(data, pipe.model, p, step, cfg, 0, 1, "cpu") for p in (same, both))
        assert torch.equal(a["levels"], b["levels"])
    with pytest.raises(InputError, match="full_gist_share"):
        get_phase("phase0", full_gist_share=-0.1)


def test_merged_chunks_keep_every_logged_term():
    from arrcoc_lab.training.loop import _merge

    a = {"answer": torch.tensor(1.0), "_answer_gist": torch.tensor(1.0), "_levels": torch.zeros(2, 4, 4, dtype=torch.long)}
    b = {"answer": torch.tensor(3.0), "_answer_detail": torch.tensor(3.0), "_levels": torch.ones(1, 4, 4, dtype=torch.long)}
    out, terms = _merge([(2 / 3, a), (1 / 3, b)])
    assert set(out) == {"answer", "_answer_gist", "_answer_detail", "_levels"} and set(terms) == {"answer"}
    assert abs(float(out["answer"]) - 5 / 3) < 1e-6 and float(out["_answer_detail"]) == 3.0
    assert out["_levels"].shape == (3, 4, 4)


def test_lr_scale_gives_a_module_its_own_learning_rate():
    """A phase's lr_scale puts a module's parameters (the most specific path winning) in their own
    optimizer group at that multiple of the phase's rate; every trainable parameter is in one group."""
    from arrcoc_lab.training.step import param_groups, set_trainable

    model = load_pipeline("tiny", weights="random").model
    model.llm.question_proj = torch.nn.Linear(4, 4)
    ph = get_phase("uniform_ft", lr=1e-3, lr_scale={"clip": 0.1, "llm": 0.5, "llm.question_proj": 0.2})
    params = set_trainable(model, ph)
    groups = param_groups(model, params, ph)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 5e-4, 2e-4, 1e-4])
    lr_of = {id(p): round(g["lr"], 12) for g in groups for p in g["params"]}
    assert sorted(lr_of) == sorted(id(p) for p in params)
    assert {lr_of[id(p)] for p in model.clip.parameters() if p.requires_grad} == {1e-4}
    assert {lr_of[id(p)] for p in model.llm.question_proj.parameters()} == {2e-4}
    assert {lr_of[id(p)] for p in model.llm.model.parameters()} == {5e-4}
    assert {lr_of[id(p)] for p in model.projector.parameters()} == {1e-3}


def test_lr_scale_refuses_what_does_not_train_or_exist():
    from arrcoc_lab.training.step import param_groups, set_trainable

    with pytest.raises(InputError, match="lr_scale"):
        get_phase("phase0", lr_scale={"clip": 0.1})  # CLIP does not train in phase 0
    with pytest.raises(InputError, match="lr_scale"):
        get_phase("phase0", lr_scale={"adapter": 0.0})
    model = load_pipeline("tiny", weights="random").model
    ph = get_phase("uniform_ft", lr_scale={"clip.no_such_part": 0.1})
    with pytest.raises(InputError, match="no_such_part"):
        param_groups(model, set_trainable(model, ph), ph)


def test_lab_downstream_starts_as_pass_throughs():
    """At the lab's seeded init CLIP has zero residual branches, the adapter's gate is almost closed
    and the question states are zero, so the LLM first sees the compressor's tokens nearly as they are
    (reports/lab/RUN.md: each stage at a random start held back the LLM's use of the image)."""
    m = load_pipeline("lab", weights="random").model
    B, T, D = 2, 6, m.adapter.cfg.dim
    tokens, mask = torch.randn(B, T, D), torch.ones(B, T, dtype=torch.bool)
    with torch.no_grad():
        out = m.adapter(tokens, torch.zeros(B, T, dtype=torch.long), mask)
    assert float(out.gate) < 0.02
    assert (out.tokens - tokens).norm() < 0.05 * tokens.norm()
    for block in m.clip.visual.transformer.resblocks:
        assert not block.attn.out_proj.weight.any() and not block.mlp.c_proj.weight.any()
    assert not m.llm.question_proj[1].weight.any()


def test_lab_tokens_carry_their_position_to_the_llm():
    """The same compressor token at two places of the image reaches the LLM as different vectors,
    but its content outweighs its place: CLIP's fixed sin-cos positions are scaled to norm 1
    (pos_scale). At norm 8 they outweighed the content and a fresh LLM did not start to read; a
    random learnable embedding, ~1/20 of a token's norm, all but vanished (reports/lab/RUN.md).
    No phase trains them."""
    m = load_pipeline("lab", weights="random").model.eval()
    g, n = m.geometry, m.geometry.patches_per_side
    torch.manual_seed(0)
    features = torch.randn(1, m.compressor.cfg.in_dim, n, n)
    features[..., 0, n - 1] = features[..., 0, 0]  # one patch feature at two corners
    levels = torch.full((1, g.cells_per_side, g.cells_per_side), g.max_level_index)
    with torch.no_grad():
        ts = m.compressor(features, levels)
        visual = m.projector(m.adapter(m.clip(ts).tokens, ts.levels, ts.mask).tokens)  # (1, T, H)
    at = lambda y, x: int(((ts.positions[0] - torch.tensor([y, x])).norm(dim=-1)).argmin())
    a, b, c = at(0.5 / n, 0.5 / n), at(0.5 / n, (n - 0.5) / n), at(0.5 / n, 1.5 / n)
    assert torch.equal(ts.tokens[0, a], ts.tokens[0, b])
    moved, other = (float((visual[0, a] - visual[0, k]).norm()) for k in (b, c))
    assert 0.05 * other < moved < 0.5 * other  # the place shows; another patch's content shows more
    for name in ("phase0", "phase2", "phase3"):
        set_trainable(m, get_phase(name))
        assert not m.clip.visual.positional_embedding.requires_grad


def test_lab_llm_reads_a_sign_line_across_a_cell_border_as_one_run():
    """A reading view of a sign over two cells side by side (SceneBench's signs are wider than a
    cell): each row of patches reaches the LLM as one run of adjacent positions, left to right."""
    m = load_pipeline("lab", weights="random").model.eval()
    g, n = m.geometry, m.geometry.patches_per_side
    levels = torch.zeros(1, g.cells_per_side, g.cells_per_side, dtype=torch.long)
    levels[0, 1, 1:3] = g.max_level_index  # the sign's two cells at full resolution, the rest at the minimum
    ts = m.compressor(torch.randn(1, m.compressor.cfg.in_dim, n, n), levels)
    side = g.cell_patches
    for row in range(side):
        y = (side + row + 0.5) / n
        at = torch.nonzero((ts.positions[0, :, 0] - y).abs() < 1e-6).flatten()
        assert len(at) == 2 * side and torch.equal(at.diff(), torch.ones(2 * side - 1, dtype=torch.long))
        assert (ts.positions[0, at, 1].diff() > 0).all()
