"""The loss terms of the phases (answer cross-entropy is the LLM's own: LanguageModel.answer_loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .phases import PhaseConfig


def relevance_loss(cell_logit: torch.Tensor, target: torch.Tensor, global_value: float | None = None,
                   whole_image: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample BCE on cells, averaged over samples. A sample without a region label (its target
    all NaN) adds 0, or, with `global_value`, takes that value as every cell's target where
    `whole_image` (B,) bool marks it as a question about the whole image (None: every such sample).
    Unlabelled fine-detail questions (real VQA: the answer lies somewhere unknown) are not about the
    whole image, so callers mark only gist ones."""
    if global_value is not None:
        flat = torch.isnan(target).flatten(1).all(1)  # (B,)
        if whole_image is not None:
            flat = flat & whole_image.to(flat.device)
        target = torch.where(flat[:, None, None], torch.full_like(target, global_value), target)
    valid = ~torch.isnan(target)
    bce = F.binary_cross_entropy_with_logits(cell_logit, torch.nan_to_num(target), reduction="none")
    per = (bce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return per.mean()


def consistency_loss(visual, mask, embeddings) -> torch.Tensor:
    """Projected visual tokens should look like the LLM's own input embeddings (per-dim mean/std)."""
    v = visual[mask].float()  # (N, H)
    e = embeddings.detach().float()
    return F.mse_loss(v.mean(0), e.mean(0)) + F.mse_loss(v.std(0), e.std(0))


def allocation_losses(level_logits: torch.Tensor, level_weights: torch.Tensor, g, phase: PhaseConfig) -> dict:
    """Efficiency and tier diversity of a straight-through Gumbel allocation (B, Hc, Wc, L), plus
    the sampled tokens and level usage for the log."""
    probs = torch.softmax(level_logits, -1)
    tokens = torch.tensor(g.levels, dtype=probs.dtype, device=probs.device)
    expected = (probs * tokens).flatten(1).sum(1)  # (B,)
    target = g.uniform_budget if phase.target_budget == "uniform" else g.budget_for_mode(phase.target_budget)
    usage = probs.flatten(0, 2).mean(0)  # (L,)
    return {
        # per sample above the target (the seeds' penalty); on the batch average below it, so gist
        # questions may spend little while the allocator does not drift far under budget
        "efficiency": ((F.relu(expected / target - 1) ** 2).mean()
                       + phase.budget_floor * F.relu(1 - expected.mean() / target) ** 2),
        "diversity": (usage * (usage * len(usage)).clamp(min=1e-9).log()).sum(),
        "_tokens": (level_weights.detach() * tokens).flatten(1).sum(1).mean(),
        "_usage": level_weights.detach().flatten(0, 2).mean(0),
    }
