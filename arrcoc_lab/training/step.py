"""One training step's loss terms, computed through the model's own forward (one forward path:
what trains is what is tested and served). The phase's `allocation` picks the training mode of
that forward:

  none     the analyzer alone (stop_after="relevance")
  mixed    OraclePolicy: phase 0's randomised utilities and budgets (sampling.mixed_allocation)
  model    the arrcoc policy on the learned relevance, at randomised budgets
  gumbel   straight-through Gumbel-softmax levels from the relevance (gumbel_tau)
  uniform  the uniform policy at the uniform budget
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..policies import OraclePolicy, get_policy
from .losses import allocation_losses, consistency_loss, relevance_loss
from .phases import PhaseConfig
from .reader import ReaderConfig, RegionReader, region_tokens
from .sampling import TIER_OF


class TrainStep(nn.Module):
    """Computes the phase's loss terms for one batch; wrapping it (not the model's parts) in DDP
    keeps gradient synchronisation correct."""

    def __init__(self, model, phase: PhaseConfig):
        super().__init__()
        self.model, self.phase = model, phase
        # training-only auxiliary (reader.py): lives here, not in the model, and is saved with the checkpoint
        self.reader = RegionReader(model.llm.hidden_size, ReaderConfig()) if "read" in phase.losses else None

    def allocation_mode(self, batch: dict):
        """(policy, per-sample budgets, Gumbel temperature or None) for this phase's allocation."""
        ph, g = self.phase, self.model.geometry
        n = len(batch["questions"])
        if ph.allocation == "mixed":
            return OraclePolicy(batch["utility"], batch.get("levels")), batch["budgets"], None
        if ph.allocation == "model":
            return get_policy("arrcoc"), batch["budgets"], None
        if ph.allocation == "gumbel":
            return get_policy("arrcoc"), [g.uniform_budget] * n, ph.tau
        return get_policy("uniform"), [g.uniform_budget] * n, None  # uniform, and none (unused)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        m, ph = self.model, self.phase
        policy, budgets, tau = self.allocation_mode(batch)
        # the analyzer and query encoder only run when the phase reads them (a third of a phase-0 step)
        analyze = bool({"relevance", "tier"} & set(ph.losses)) or ph.allocation in ("gumbel", "model")
        res = m(batch["pixels"], batch["questions"], policy=policy, budget=budgets, features=batch["features"],
                answers=batch["answers"] if "answer" in ph.losses else None, generate=False,
                seeds=batch["noise_seeds"], gumbel_tau=tau, analyze=analyze, probes=False, prompts=batch.get("prompts"),
                question_states=batch.get("question_states"),
                stop_after="relevance" if ph.allocation == "none" else None)
        tr, out = res.trace, {}
        if "relevance" in ph.losses:
            out["relevance"] = relevance_loss(tr.relevance.cell_logit, batch["target_cells"], ph.global_relevance,
                                             whole_image=batch["tiers"] == TIER_OF["gist"])
        if "tier" in ph.losses:
            out["tier"] = F.cross_entropy(m.allocator.tier_classifier(tr.query.pooled, batch["features"]), batch["tiers"])
        if ph.allocation == "none":
            return out
        a = tr.allocation
        if a.level_logits is not None:
            out.update(allocation_losses(a.level_logits, a.level_weights, m.geometry, ph))
        if "answer" in ph.losses:
            per = res.answer_loss.per_sample
            weight = batch.get("answer_weight")  # PhaseConfig.gist_weight: mean 1 over the global batch
            out["answer"] = per.mean() if weight is None else (per * weight.to(per.dtype)).mean()
            out["_pred"] = res.answer_loss.predictions
            if "detail" in batch:  # logged apart: gist questions dominate the mean and hide whether text is read
                for name, sel in (("detail", batch["detail"]), ("gist", ~batch["detail"])):
                    if sel.any():
                        out[f"_answer_{name}"], out[f"_count_{name}"] = per.detach()[sel].mean(), sel.sum()
            for fam in sorted(set(batch.get("families", []))):  # per question family (landmark, code, date, …)
                sel = torch.tensor([f == fam for f in batch["families"]], device=per.device)
                out[f"_answer_{fam}"], out[f"_count_{fam}"] = per.detach()[sel].mean(), sel.sum()
        if self.reader is not None:
            r = self.reader(tr.visual, region_tokens(tr.tokens.cells, batch["target_cells"]), batch["answers"])
            out["read"] = r.loss.mean()  # mean over all samples (0 without a region), as DDP averages local means
            out["_read_acc"] = r.byte_accuracy
        if "consistency" in ph.losses:
            out["consistency"] = consistency_loss(tr.visual, tr.tokens.mask, m.llm.model.get_input_embeddings().weight)
        out["_levels"] = a.levels.detach()
        return out


def set_trainable(model, phase: PhaseConfig) -> list[nn.Parameter]:
    model.requires_grad_(False)
    for name in phase.trainable:
        getattr(model, name).requires_grad_(True)
    if hasattr(model.clip, "never_trained"):  # open_clip's tower (hf-vlm's pass-through CLIP stage has none)
        for p in model.clip.never_trained():  # the bypassed patch embedding, a fixed positional embedding
            p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model, params: list[nn.Parameter], phase: PhaseConfig) -> list[dict]:
    """The optimizer's parameter groups: `params` at the phase's learning rate, except those under a
    module of `phase.lr_scale`, at that multiple of it (the most specific path wins)."""
    scale_of = {}
    for path in sorted(phase.lr_scale, key=lambda p: p.count(".")):  # deeper paths override their parents
        try:
            module = model.get_submodule(path)
        except AttributeError as e:
            raise InputError(f"phase {phase.name}: lr_scale names {path!r}, which this model does not have "
                             f"({e})") from e
        scale_of.update({id(p): phase.lr_scale[path] for p in module.parameters()})
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        groups.setdefault(scale_of.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": phase.lr * s} for s, ps in sorted(groups.items(), reverse=True)]
