import torch

from arrcoc_lab.modeling.geometry import Geometry
from arrcoc_lab.modeling.query_encoder import QueryEncoding
from arrcoc_lab.modeling.relevance import RelevanceAnalyzer, RelevanceConfig, cell_entropy

G = Geometry(image_size=128, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64))


def _query(B=2, L=5, D=12):
    mask = torch.ones(B, L, dtype=torch.bool)
    if B > 1:
        mask[1, 3:] = False  # the second query is shorter
    return QueryEncoding(tokens=torch.randn(B, L, D), mask=mask, pooled=torch.nn.functional.normalize(torch.randn(B, D), dim=-1))


def _analyzer():
    torch.manual_seed(0)
    return RelevanceAnalyzer(RelevanceConfig(in_dim=10, query_dim=12, dim=16, heads=2, n_global=2), G)


def test_shapes_and_ranges():
    out = _analyzer()(torch.randn(2, 10, 16, 16), _query(), torch.rand(2, 3, 128, 128) * 255)
    assert out.patch.shape == (2, 16, 16) and out.cell.shape == (2, 2, 2)
    for t in (out.patch, out.cell, out.query, out.hotspot, out.symbol, out.entropy, out.gate):
        assert t.min() >= 0 and t.max() <= 1


def test_seed_weights_at_init():
    assert torch.allclose(torch.softmax(_analyzer().mix_logits, 0), torch.tensor([0.3, 0.2, 0.5]))


def test_query_changes_relevance():
    a = _analyzer()
    feats, pix = torch.randn(1, 10, 16, 16), torch.rand(1, 3, 128, 128) * 255
    q1, q2 = _query(B=1), _query(B=1)
    assert not torch.allclose(a(feats, q1, pix).patch, a(feats, q2, pix).patch)


def test_all_parts_learn():
    a = _analyzer()
    out = a(torch.randn(2, 10, 16, 16), _query(), torch.rand(2, 3, 128, 128) * 255)
    out.cell_logit.sum().backward()
    for name in ("mix_logits", "role_prior", "query_head.1.weight", "hotspot_head.0.weight", "symbol_head.0.weight",
                 "global_tokens", "gate_head.bias"):
        p = dict(a.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_entropy_blank_vs_busy():
    pix = torch.full((1, 3, 128, 128), 200.0)
    pix[..., 64:, 64:] = torch.rand(1, 3, 64, 64) * 255  # one busy cell
    ent = cell_entropy(pix, 2, bins=16)[0]
    assert ent[0, 0] == 0 and ent[1, 1] > 0.8
