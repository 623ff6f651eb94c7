"""Phase 1-A through the training loop (run_phase) on an hf-vlm pipeline whose VLM has fewer than 32
tokens a side (the tiny LLaVA: 224², patch 14 → 16×16; LLaVA-1.5: 24×24): SceneBench renders at 32
tokens a side and is resized to the VLM's input (sampling.render_size, as evaluation does), the
region labels stay in the rendered image's pixels, only the relevance analyzer and the allocator
(its tier classifier) train, the VLM stays as it was, and the trained weights load back."""
from __future__ import annotations

import math

import numpy as np
import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.checkpoint import save_weights, stored_tensors
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.loop import run_phase
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data
from tests.vlm_fixtures import write_llava

QUESTION = "What does the sign say?"


def _state(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, the VLM's included (its state_dict leaves the VLM out)."""
    return {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def test_phase1a_runs_on_a_vlm_with_fewer_than_32_tokens_a_side(tmp_path):
    vlm = write_llava(tmp_path / "llava")
    pipe = load_pipeline("hf-vlm", vlm_path=str(vlm), max_new_tokens=2)
    g = pipe.geometry
    assert g.patches_per_side == 16 < 32 and g.image_size == 224

    cfg = TrainConfig(n_scenes=2, batch_size=4, cache_dir=str(tmp_path / "cache"), progress=False,
                      render_workers=0, log_every=1, log_with="none", ckpt_every=1000, sample_log_every=1000)
    data = load_train_data(pipe.model, cfg)
    # rendered at 32 tokens a side (448 px), encoded at the VLM's 224 px: its 16×16 tokens as features
    assert data.image_hw == (448, 448)
    assert tuple(data.scenes.pixels.shape[1:]) == (3, 224, 224)
    assert tuple(data.scenes.features.shape[1:]) == (pipe.config.vlm.hidden_size, 16, 16)
    assert any(f"-{g.image_size}-" in p.name for p in (tmp_path / "cache").iterdir())
    # the region labels: boxes in the rendered image's pixels, mapped onto the model's cells
    boxed = [b for b in data.boxes if b is not None]
    assert boxed and all(0 <= b[0] < b[2] <= 448 and 0 <= b[1] < b[3] <= 448 for b in boxed)
    cells = target_cells(boxed, g, data.image_hw)
    assert cells.shape[1:] == (g.cells_per_side, g.cells_per_side) and bool((cells.flatten(1).sum(1) > 0).all())
    x0, y0, x1, y1 = boxed[0]  # the box's centre, in cells of the rendered image, is a target cell
    n = g.cells_per_side
    assert cells[0, int((y0 + y1) / 2 / 448 * n), int((x0 + x1) / 2 / 448 * n)] == 1

    image = (np.random.default_rng(0).random((g.image_size, g.image_size, 3)) * 255).astype(np.uint8)
    before_out = pipe(image, QUESTION, budget=48, policy="arrcoc")
    before = _state(pipe.model)
    phase = get_phase("phase1a", steps=3)
    result = run_phase(pipe.model, data, phase, cfg, tmp_path / "run", resume=False,
                       pipeline_config=pipe.config.to_dict())
    after = _state(pipe.model)

    assert len(result.history) == 3
    for row in result.history:
        assert math.isfinite(row["relevance"]) and math.isfinite(row["tier"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "phase 1-A changed nothing"
    assert all(k.split(".")[0] in phase.trainable for k in changed), sorted(changed)
    assert any(k.startswith("relevance.") for k in changed)
    frozen = {k: v for k, v in before.items() if k.startswith(("sam.vlm.", "llm.model."))}  # vision tower, projector, LLM
    assert len(frozen) >= len(list(pipe.model.llm.model.parameters()))
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert not any(k.startswith(("sam.vlm.", "llm.model.")) for k in stored_tensors(pipe.model))  # not in our files

    after_out = pipe(image, QUESTION, budget=48, policy="arrcoc")
    assert not np.allclose(before_out.relevance, after_out.relevance)

    weights = tmp_path / "trained.safetensors"
    save_weights(pipe.model, weights)
    for path in (weights, result.weights):  # ours, and the one run_phase wrote
        loaded = load_pipeline("hf-vlm", vlm_path=str(vlm), weights=str(path), max_new_tokens=2)
        out = loaded(image, QUESTION, budget=48, policy="arrcoc")
        np.testing.assert_allclose(out.relevance, after_out.relevance, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out.levels, after_out.levels)
        loaded_state = _state(loaded.model)
        assert all(torch.equal(loaded_state[k], after[k]) for k in after)
