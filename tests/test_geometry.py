import numpy as np
import pytest

from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling.geometry import Geometry
from arrcoc_lab.modeling.presets import get_preset


@pytest.mark.parametrize("preset", ["lab", "paper", "tiny"])
def test_preset_ratios(preset):
    """Every preset keeps the paper's ratios: 1 token/cell is 1/4 of uniform 16x, which is 1/16 of full."""
    g = get_preset(preset).geometry
    assert g.uniform_budget * 16 == g.full_tokens
    assert g.min_tokens * 4 == g.uniform_budget
    assert g.max_tokens == g.full_tokens


def test_paper_numbers():
    g = get_preset("paper").geometry
    assert (g.patches_per_side, g.n_cells, g.min_tokens, g.uniform_budget, g.max_tokens) == (64, 64, 64, 256, 4096)
    assert g.quality_budgets == {"fast": 64, "balanced": 180, "accurate": 400}


def test_lab_numbers():
    g = get_preset("lab").geometry
    assert (g.patches_per_side, g.cells_per_side, g.min_tokens, g.uniform_budget, g.max_tokens) == (32, 4, 16, 64, 1024)
    assert [g.level_stride(k) for k in range(4)] == [8, 4, 2, 1]


def test_cell_boxes_tile_the_image():
    g = get_preset("lab").geometry
    boxes = g.cell_boxes(300, 401)
    assert boxes.shape == (4, 4, 4)
    area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])).sum()
    assert area == 300 * 401
    assert boxes[0, 0, :2].tolist() == [0, 0] and boxes[-1, -1, 2:].tolist() == [401, 300]


@pytest.mark.parametrize("bad", [15, 1025, 64.0, True, "64", None])
def test_budget_out_of_range_names_the_range(bad):
    g = get_preset("lab").geometry
    with pytest.raises(InputError, match=r"\[16, 1024\]"):
        g.check_budget(bad)


def test_invalid_geometry():
    with pytest.raises(InputError, match="square"):
        Geometry(levels=(1, 2, 4))
    with pytest.raises(InputError, match="multiple"):
        Geometry(image_size=1000, patch_size=16)


def test_unknown_quality_mode():
    with pytest.raises(InputError, match="known"):
        Geometry().budget_for_mode("turbo")
