import pytest
import torch

from arrcoc_lab.modeling.clip_tokens import ClipConfig, ClipOnTokens, build_visual
from arrcoc_lab.modeling.compressor import TokenSet


def _clip():
    torch.manual_seed(0)
    visual = build_visual(ClipConfig(image_size=64, patch_size=8, width=32, layers=2, heads=2, output_dim=16))
    return ClipOnTokens(visual, in_dim=12).eval()


def _tokens(n, T=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = T or n
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, :n] = True
    return TokenSet(tokens=torch.randn(1, T, 12, generator=g) * mask[..., None], mask=mask,
                    positions=torch.rand(1, T, 2, generator=g), levels=torch.zeros(1, T, dtype=torch.long),
                    cells=torch.zeros(1, T, dtype=torch.long))


def test_uses_open_clip_vision_transformer():
    from open_clip.transformer import VisionTransformer

    assert isinstance(_clip().visual, VisionTransformer)


def test_padding_does_not_change_real_tokens():
    clip = _clip()
    short = _tokens(5)
    pad = lambda x, v=0: torch.cat([x, torch.full((1, 4, *x.shape[2:]), v, dtype=x.dtype)], 1)
    padded = TokenSet(tokens=pad(short.tokens), mask=pad(short.mask, False), positions=pad(short.positions, 0.3),
                      levels=pad(short.levels), cells=pad(short.cells))
    a, b = clip(short), clip(padded)
    assert torch.allclose(a.tokens[0, :5], b.tokens[0, :5], atol=1e-5)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    assert (b.tokens[0, 5:] == 0).all()


def test_positional_embedding_sampled_at_patch_centres_is_exact():
    clip = _clip()
    gh, gw = clip.visual.grid_size
    ys, xs = torch.meshgrid((torch.arange(gh) + 0.5) / gh, (torch.arange(gw) + 0.5) / gw, indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], -1)[None]
    sampled = clip.sample_positions(pos)[0]
    assert torch.allclose(sampled, clip.visual.positional_embedding[1:], atol=1e-5)


def test_batch_of_different_lengths_gets_gradients():
    clip = _clip().train()
    ts = _tokens(7)
    ts.tokens.requires_grad_(True)
    out = clip(ts).tokens
    # a random read-out: the plain sum of layer-normalised tokens has a zero gradient in exact arithmetic
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert ts.tokens.grad.abs().sum() > 1e-3


def test_sin_cos_positions_are_fixed_and_never_trained():
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    visual = build_visual(ClipConfig(image_size=64, patch_size=8, width=32, layers=2, heads=2, output_dim=16,
                                     pos_embed="sin_cos_2d"))
    clip = ClipOnTokens(visual, in_dim=12)
    assert clip.fixed_positions
    expected = torch.from_numpy(get_2d_sincos_pos_embed(32, 8, cls_token=True)).float()  # width 32, 8×8 grid
    assert torch.allclose(visual.positional_embedding, expected)
    clip.requires_grad_(True)  # what a phase that trains CLIP does first
    for p in clip.never_trained():
        p.requires_grad_(False)
    trained = {id(p) for p in clip.parameters() if p.requires_grad}
    assert id(visual.positional_embedding) not in trained and id(visual.conv1.weight) not in trained
    assert id(visual.class_embedding) in trained
    assert not _clip().fixed_positions  # open_clip's default stays learnable


def test_pos_scale_scales_the_fixed_sin_cos_embedding():
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    from arrcoc_lab.errors import InputError

    dims = dict(image_size=64, patch_size=8, width=32, layers=2, heads=2, output_dim=16)
    visual = build_visual(ClipConfig(**dims, pos_embed="sin_cos_2d", pos_scale=0.125))
    expected = torch.from_numpy(get_2d_sincos_pos_embed(32, 8, cls_token=True)).float() * 0.125
    assert torch.allclose(visual.positional_embedding, expected)
    with pytest.raises(InputError, match="sin_cos_2d"):  # a learnable embedding is the training's to size
        build_visual(ClipConfig(**dims, pos_scale=0.5))


def test_unknown_positional_embedding_is_refused():
    import pytest

    from arrcoc_lab.errors import InputError

    with pytest.raises(InputError, match="sin_cos_2d"):
        build_visual(ClipConfig(image_size=64, patch_size=8, width=32, layers=2, heads=2, pos_embed="rope"))
