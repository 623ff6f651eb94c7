"""Stage probes (arrcoc_lab/evaluation/probe.py): the probe learns a spatial property, stage grids keep each
token at its place, bad input fails clearly."""
from types import SimpleNamespace

import pytest
import torch

from arrcoc_lab.errors import InputError
from arrcoc_lab.evaluation.probe import (STAGES, TEXT_WINDOW_PX, answer_labels, crop_windows, probe_accuracy, probe_text,
                              stage_grids, text_labels)


def test_probe_reads_a_shape_that_pooling_would_erase():
    """Class 0: a horizontal bar, class 1: a vertical bar, same pixel count, anywhere in the map —
    the channel means are equal, so only a spatial probe can tell them apart."""
    g = torch.Generator().manual_seed(0)
    n, x = 240, torch.zeros(240, 2, 8, 8)
    y = torch.arange(n) % 2
    for i in range(n):
        r, c = torch.randint(0, 6, (2,), generator=g).tolist()
        if y[i] == 0:
            x[i, 0, r, c:c + 3] = 1
        else:
            x[i, 0, r:r + 3, c] = 1
    x[:, 1] = torch.rand(n, 8, 8, generator=g)  # a noise channel
    acc, chance = probe_accuracy(x, y, epochs=15)
    assert acc > 0.9 and chance <= 0.6
    acc_cnn, _ = probe_accuracy(x, y, epochs=15, head="cnn")  # the position-aware probe reads it too
    assert acc_cnn > 0.9
    with pytest.raises(InputError, match="unknown probe head"):
        probe_accuracy(x, y, head="mlp")
    with pytest.raises(InputError, match="both sides"):
        probe_accuracy(x[:1], y[:1])


def test_stage_grids_put_tokens_back_in_place(lab_pipe):
    g = lab_pipe.geometry
    feats = torch.randn(3, lab_pipe.model.compressor.cfg.in_dim, g.patches_per_side, g.patches_per_side)
    grids = stage_grids(lab_pipe.model, feats, g.uniform_level)
    side = g.cells_per_side * g.level_side(g.uniform_level)
    assert set(grids) == set(STAGES) and grids["sam"].shape == feats.shape
    for name in STAGES[1:]:
        assert grids[name].shape[0] == 3 and grids[name].shape[2:] == (side, side)
        assert (grids[name].abs().sum(1) > 0).all(), f"{name}: an empty grid place"  # every place filled once
    # the compressor's top-left token at the uniform level is the top-left 4x4-patch block
    levels = torch.full((3, g.cells_per_side, g.cells_per_side), g.uniform_level, dtype=torch.long)
    ts = lab_pipe.model.compressor(feats, levels)
    first = ts.tokens[:, (ts.positions[0, :, 0] < 1 / side) & (ts.positions[0, :, 1] < 1 / side)][:, 0]
    assert torch.allclose(grids["compressor"][:, :, 0, 0], first)
    with pytest.raises(InputError, match="level"):
        stage_grids(lab_pipe.model, feats, 9)


def test_answer_labels():
    data = SimpleNamespace(answers=["dome", "blue", "arch", "dome"], scene_index=[4, 4, 1, 7])
    scenes, y = answer_labels(data)
    assert scenes == [1, 4, 7] and y.tolist() == [1, 2, 2]
    with pytest.raises(InputError, match="no question"):
        answer_labels(SimpleNamespace(answers=["blue"], scene_index=[0]))


def test_text_labels_take_number_signs_with_a_box():
    data = SimpleNamespace(answers=["4721", "blue", "90", "E=mc2", "33"], scene_index=[0, 0, 1, 1, 2],
                           boxes=[(0, 0, 10, 10), None, (5, 5, 9, 9), (1, 1, 2, 2), None])
    scenes, boxes, y = text_labels(data)
    assert scenes == [0, 1] and boxes == [(0, 0, 10, 10), (5, 5, 9, 9)] and y.tolist() == [4, 9]
    with pytest.raises(InputError, match="number sign"):
        text_labels(SimpleNamespace(answers=["blue"], scene_index=[0], boxes=[None]))


def test_crop_windows_centre_on_the_box_and_stay_inside():
    grid = torch.arange(16 * 16, dtype=torch.float).view(1, 1, 16, 16).repeat(3, 1, 1, 1)
    boxes = [(64, 64, 96, 96), (0, 0, 8, 8), (250, 250, 256, 256)]  # 256-px image, 16-px grid cells
    crops = crop_windows(grid, boxes, 256, 4)
    assert crops.shape == (3, 1, 4, 4)
    assert crops[0, 0, 0, 0] == grid[0, 0, 3, 3]  # centre (5, 5) in grid units -> rows/cols 3..6
    assert crops[1, 0, 0, 0] == 0 and crops[2, 0, -1, -1] == grid[0, 0, -1, -1]  # clamped at the borders


def test_stage_grids_crop_every_stage_to_the_same_window(lab_pipe):
    g = lab_pipe.geometry
    feats = torch.randn(2, lab_pipe.model.compressor.cfg.in_dim, g.patches_per_side, g.patches_per_side)
    top = len(g.levels) - 1
    grids = stage_grids(lab_pipe.model, feats, top, boxes=[(10, 10, 40, 30), (200, 100, 250, 140)], window=6)
    full = stage_grids(lab_pipe.model, feats, top)
    for name in STAGES:
        assert grids[name].shape[2:] == (6, 6), name
    assert torch.equal(grids["sam"][0], full["sam"][0, :, 0:6, 0:6])  # box centre (3.1, 2.5) in grid units


def test_text_probe_references_come_first_on_the_image_and_patch_grids(lab_pipe):
    from arrcoc_lab.data.features import SceneTensors

    g = lab_pipe.geometry
    n, S, P = 10, g.image_size, g.patches_per_side
    scenes = SceneTensors(torch.randn(n, lab_pipe.model.compressor.cfg.in_dim, P, P).half(),
                          torch.randint(0, 256, (n, 3, S, S), dtype=torch.uint8), list(range(n)))
    data = SimpleNamespace(answers=[str(10 + 9 * i) for i in range(n)], scene_index=list(range(n)),
                           boxes=[(20 * i, 30, 20 * i + 40, 50) for i in range(n)], scenes=scenes)
    results = probe_text(lab_pipe.model, data, epochs=1, heads=("max",), pixels=True, stages=("sam",))
    window = round(TEXT_WINDOW_PX / g.patch_size)
    assert [(r.stage, r.grid) for r in results] == [
        ("pixels", (3, TEXT_WINDOW_PX, TEXT_WINDOW_PX)),
        ("patch_grid", (3 * g.patch_size ** 2, window, window)),  # every pixel of the patch-aligned window, as channels
        ("sam", (lab_pipe.model.compressor.cfg.in_dim, window, window))]
    with pytest.raises(InputError, match="unknown stage"):
        probe_text(lab_pipe.model, data, stages=("vit",))


def test_probe_score_does_not_depend_on_the_global_random_state():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 3, 8, 8, generator=gen), torch.randint(0, 3, (60,), generator=gen)
    torch.manual_seed(123)
    a = probe_accuracy(x, y, epochs=2, head="cnn")  # the cnn head has dropout
    torch.manual_seed(456)
    assert probe_accuracy(x, y, epochs=2, head="cnn") == a
