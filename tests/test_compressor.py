import pytest
import torch

from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling.compressor import Compressor, CompressorConfig
from arrcoc_lab.modeling.geometry import Geometry

G = Geometry(image_size=256, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64))


def _comp(learned=True):
    torch.manual_seed(0)
    return Compressor(CompressorConfig(in_dim=6, dim=5, learned_heads=learned), G)


def test_token_counts_follow_the_allocation():
    c = _comp()
    feats = torch.randn(2, 6, 32, 32)
    levels = torch.randint(0, 4, (2, 4, 4))
    ts = c(feats, levels)
    expected = torch.tensor(G.levels)[levels].flatten(1).sum(1)
    assert torch.equal(ts.lengths, expected)
    assert ts.tokens.shape == (2, int(expected.max()), 5)
    assert (ts.tokens[~ts.mask] == 0).all()
    for b in range(2):  # every real token carries its cell's level, in cell-major order
        cells = ts.cells[b][ts.mask[b]]
        assert torch.equal(ts.levels[b][ts.mask[b]], levels[b].flatten()[cells])
        assert (cells.diff() >= 0).all()


def test_positions_are_token_centres():
    c = _comp()
    levels = torch.zeros(1, 4, 4, dtype=torch.long)
    levels[0, 0, 0] = 3  # top-left cell at full resolution: 8x8 tokens at patch centres
    ts = c(torch.randn(1, 6, 32, 32), levels)
    pos = ts.positions[0][ts.cells[0] == 0]
    assert pos.shape == (64, 2)
    assert torch.allclose(pos[0], torch.tensor([0.5 / 32, 0.5 / 32]))
    assert torch.allclose(pos[-1], torch.tensor([7.5 / 32, 7.5 / 32]))
    gist = ts.positions[0][ts.cells[0] == 15]  # bottom-right cell at one token: its centre
    assert torch.allclose(gist, torch.tensor([[7 / 8, 7 / 8]]))


def test_pooling_levels_without_heads_are_block_means():
    c = _comp(learned=False)
    feats = torch.randn(1, 6, 32, 32)
    ts = c(feats, torch.zeros(1, 4, 4, dtype=torch.long))  # one token per cell
    proj = c.pool_proj[0]
    expected = proj(feats[:, :, :8, :8].mean((-1, -2), keepdim=True)).flatten()
    assert torch.allclose(ts.tokens[0, 0], expected, atol=1e-5)


def test_full_level_keeps_every_patch():
    c = _comp()
    ts = c(torch.randn(1, 6, 32, 32), torch.full((1, 4, 4), 3))
    assert ts.tokens.shape[1] == 1024


def test_straight_through_weights_carry_gradient():
    c = _comp()
    feats = torch.randn(1, 6, 32, 32)
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    soft = torch.softmax(logits, -1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), 4).float() + soft - soft.detach()
    ts = c(feats, hard.argmax(-1), level_weights=hard)
    ts.tokens.pow(2).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_raster_order_keeps_the_same_tokens_row_by_row():
    torch.manual_seed(1)
    feats, levels = torch.randn(3, 6, 32, 32), torch.randint(0, 4, (3, 4, 4))
    cell = _comp()(feats, levels)
    torch.manual_seed(0)
    raster = Compressor(CompressorConfig(in_dim=6, dim=5, order="raster"), G)(feats, levels)
    assert torch.equal(raster.mask, cell.mask)
    for b in range(3):
        m = cell.mask[b]
        y, x = raster.positions[b][m].unbind(-1)
        assert ((y.diff() > 0) | ((y.diff() == 0) & (x.diff() > 0))).all()  # row by row, left to right
        # the same tokens, each with its own position, level and cell
        key = lambda ts: sorted(zip(ts.positions[b][m].tolist(), ts.levels[b][m].tolist(), ts.cells[b][m].tolist(),
                                    ts.tokens[b][m].sum(-1).tolist()))
        assert key(raster) == key(cell)


def test_raster_order_puts_a_text_line_across_two_cells_in_one_run():
    c = Compressor(CompressorConfig(in_dim=6, dim=5, order="raster"), G)
    levels = torch.zeros(1, 4, 4, dtype=torch.long)
    levels[0, 0, :2] = 3  # two horizontally adjacent cells at full resolution
    ts = c(torch.randn(1, 6, 32, 32), levels)
    first_row = ts.positions[0, :16]
    assert torch.allclose(first_row[:, 0], torch.full((16,), 0.5 / 32))
    assert torch.allclose(first_row[:, 1], (torch.arange(16) + 0.5) / 32)


def test_unknown_token_order_is_refused():
    with pytest.raises(InputError, match="cell, raster"):
        Compressor(CompressorConfig(in_dim=6, dim=5, order="zigzag"), G)
