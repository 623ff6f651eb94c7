"""Region reader (training-only auxiliary): byte targets, region masks, learning to spell, and the
pass-through CLIP initialisation it is paired with in the lab preset."""
import torch

from arrcoc_lab.modeling.clip_tokens import ClipConfig, ClipOnTokens, build_visual
from arrcoc_lab.modeling.compressor import TokenSet
from arrcoc_lab.training.reader import END, IGNORE, ReaderConfig, RegionReader, region_tokens


def test_targets_spell_bytes_then_end_then_ignore():
    r = RegionReader(16, ReaderConfig(max_bytes=4, heads=2))
    t = r.targets(["ab", "héllo"], "cpu")
    assert t[0].tolist() == [97, 98, END, IGNORE, IGNORE]
    assert t[1].tolist() == list("héllo".encode()[:4]) + [END]  # cut at max_bytes, END still follows


def test_region_tokens_follow_cells_and_skip_padding_and_unlabelled():
    cells = torch.tensor([[0, 1, 3, -1], [2, 2, 0, 1]])  # (B, T) raster cell index, -1 = padding
    target = torch.zeros(2, 2, 2)
    target[0, 1, 1] = 1  # sample 0: cell 3
    target[1] = float("nan")  # sample 1: no region label
    assert region_tokens(cells, target).tolist() == [[False, False, True, False], [False] * 4]


def test_samples_without_region_add_zero_and_keep_the_graph():
    r = RegionReader(16, ReaderConfig(max_bytes=4, heads=2))
    visual = torch.randn(2, 5, 16, requires_grad=True)
    out = r(visual, torch.zeros(2, 5, dtype=torch.bool), ["12", "34"])
    assert out.loss.tolist() == [0.0, 0.0] and not out.valid.any()
    out.loss.sum().backward()  # no error: the graph reaches the inputs
    assert visual.grad is not None


def test_reader_learns_to_spell_from_the_region_only():
    """Each sample's answer is written in its region's tokens (one-hot digit codes); tokens outside
    the region carry a decoy answer. The reader must reach high byte accuracy, so it reads the region."""
    torch.manual_seed(0)
    dim, B, T = 32, 16, 6
    codes = torch.randn(10, dim)
    r = RegionReader(dim, ReaderConfig(max_bytes=3, heads=4, layers=2))
    opt = torch.optim.Adam(r.parameters(), lr=3e-3)
    for step in range(300):
        digits = torch.randint(0, 10, (B, 3))
        decoy = torch.randint(0, 10, (B, 3))
        visual = torch.zeros(B, T, dim)
        visual[:, :3] = codes[digits] + 0.1 * torch.arange(3).view(1, 3, 1)  # region: tokens 0-2, slot order
        visual[:, 3:] = codes[decoy] + 0.1 * torch.arange(3).view(1, 3, 1)
        region = torch.zeros(B, T, dtype=torch.bool)
        region[:, :3] = True
        answers = ["".join(map(str, d.tolist())) for d in digits]
        out = r(visual, region, answers)
        opt.zero_grad()
        out.loss.mean().backward()
        opt.step()
    assert out.byte_accuracy > 0.9


def test_zero_init_residual_makes_clip_a_pass_through():
    cfg = ClipConfig(image_size=64, patch_size=8, width=32, layers=2, heads=2, output_dim=16, zero_init_residual=True)
    clip = ClipOnTokens(build_visual(cfg), 32)
    B, T = 2, 5
    ts = TokenSet(tokens=torch.randn(B, T, 32), mask=torch.ones(B, T, dtype=torch.bool), positions=torch.rand(B, T, 2),
                  levels=torch.zeros(B, T, dtype=torch.long), cells=torch.zeros(B, T, dtype=torch.long))
    v = clip.visual
    x = v.ln_pre(ts.tokens + clip.sample_positions(ts.positions))
    expected = v.ln_post(x)  # both residual branches are zero: the transformer is the identity
    assert torch.allclose(clip(ts).tokens, expected, atol=1e-5)
    default = ClipOnTokens(build_visual(ClipConfig(image_size=64, patch_size=8, width=32, layers=2, heads=2,
                                                   output_dim=16)), 32)
    assert not torch.allclose(default(ts).tokens, default.visual.ln_post(default.visual.ln_pre(
        ts.tokens + default.sample_positions(ts.positions))), atol=1e-3)
