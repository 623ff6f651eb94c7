"""The relevance loss (training/losses.py): region-labelled samples against their cells, questions
that name no region ("global") left out or, with `global_value`, the gist ones taught a flat map;
the flat map's consequence the phases rely on (the solver then spends the budget evenly, as uniform
does). That the training step marks its gist questions as the whole-image ones is in
test_training_modes.py."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arrcoc_lab.modeling.geometry import Geometry
from arrcoc_lab.modeling.knapsack import solve_knapsack
from arrcoc_lab.training.losses import relevance_loss
from arrcoc_lab.training.phases import get_phase

LAB = Geometry(image_size=256, patch_size=8, cell_patches=8, quality_budgets={"fast": 16, "balanced": 45, "accurate": 100})


def _targets() -> torch.Tensor:
    t = torch.zeros(2, 4, 4)
    t[0, 1, 2] = 1.0  # a region-labelled sample: one target cell
    t[1] = float("nan")  # a "global" question: no region
    return t


def test_global_questions_add_nothing_by_default():
    logit = torch.randn(2, 4, 4)
    t = _targets()
    labelled_only = F.binary_cross_entropy_with_logits(logit[0], t[0])
    assert torch.allclose(relevance_loss(logit, t), labelled_only / 2)  # the global sample adds 0 to the mean


def test_global_value_teaches_every_cell_that_value():
    logit = torch.randn(2, 4, 4)
    t = _targets()
    got = relevance_loss(logit, t, global_value=1.0)
    want = (F.binary_cross_entropy_with_logits(logit[0], t[0])
            + F.binary_cross_entropy_with_logits(logit[1], torch.ones(4, 4))) / 2
    assert torch.allclose(got, want)
    assert torch.isnan(t[1]).all()  # the caller's targets are left as they were


def test_only_whole_image_questions_take_the_flat_map():
    """An unlabelled fine-detail question (real VQA: the answer lies somewhere unknown) is left out."""
    logit = torch.randn(2, 4, 4)
    t = torch.full((2, 4, 4), float("nan"))
    got = relevance_loss(logit, t, 1.0, whole_image=torch.tensor([True, False]))
    assert torch.allclose(got, F.binary_cross_entropy_with_logits(logit[0], torch.ones(4, 4)) / 2)
    assert relevance_loss(logit, t, 1.0, whole_image=torch.tensor([False, False])).item() == 0.0


def test_global_value_leaves_partially_labelled_maps_alone():
    logit = torch.randn(1, 4, 4)
    t = torch.full((1, 4, 4), float("nan"))
    t[0, 0, 0] = 0.0  # one labelled cell: not a global question
    assert torch.allclose(relevance_loss(logit, t, 1.0), F.binary_cross_entropy_with_logits(logit[0, 0, 0], t[0, 0, 0]))


def test_the_gradient_raises_every_cell_of_a_global_question():
    logit = torch.zeros(1, 4, 4, requires_grad=True)
    relevance_loss(logit, torch.full((1, 4, 4), float("nan")), 1.0).backward()
    assert (logit.grad < 0).all()  # descent raises each cell's logit
    logit.grad = None
    assert relevance_loss(logit, torch.full((1, 4, 4), float("nan"))).item() == 0.0


@pytest.mark.parametrize("budget", [LAB.uniform_budget, LAB.budget_for_mode("accurate")])
@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_a_near_flat_map_is_solved_as_uniform(budget, spread):
    """Why 1.0 everywhere: cells whose utilities differ by less than 2× all reach the uniform level
    before any goes higher (concave utility, exponent 0.5), so at the uniform budget the learned
    policy spends it exactly as `uniform` does."""
    rng = np.random.default_rng(0)
    u = 1.0 - spread * rng.random((4, 4))  # sigmoid outputs near 1
    levels = solve_knapsack(u, LAB, budget)
    assert (levels >= LAB.uniform_level).all()
    if budget == LAB.uniform_budget:
        assert (levels == LAB.uniform_level).all()


def test_the_allocator_phases_teach_global_questions_a_flat_map():
    for name in ("phase1a", "phase1", "phase3"):
        assert get_phase(name).global_relevance == 1.0
    assert get_phase("phase0").global_relevance is None  # no relevance loss there
    assert math.isclose(get_phase("phase1a", global_relevance=0.5).global_relevance, 0.5)
