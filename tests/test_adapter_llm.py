import torch

from arrcoc_lab.modeling.adapter import AdapterConfig, QualityAdapter
from arrcoc_lab.modeling.llm import LanguageModel, LLMConfig, build_llm
from arrcoc_lab.modeling.projector import Projector, ProjectorConfig


def test_adapter_masks_and_learns():
    torch.manual_seed(0)
    ad = QualityAdapter(AdapterConfig(dim=16, n_levels=4, heads=2))
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out = ad(x, torch.randint(0, 4, (2, 6)), mask)
    assert out.tokens.shape == (2, 6, 16) and (out.tokens[1, 3:] == 0).all()
    assert ((out.quality >= 0) & (out.quality <= 1)).all()
    out.tokens.sum().backward()
    assert ad.gate_logit.grad is not None and ad.level_embed.weight.grad.abs().sum() > 0


def test_adapter_vet_option_is_a_mixture_of_table_rows():
    ad = QualityAdapter(AdapterConfig(dim=16, n_levels=4, heads=2, vet_size=8))
    out = ad(torch.randn(1, 3, 16), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    # every output lies in the convex hull of the table: coefficients from least squares sum to ~1
    coef = torch.linalg.lstsq(ad.vet.detach().T, out.tokens[0].detach().T).solution
    assert torch.allclose(coef.sum(0), torch.ones(3), atol=1e-3)


def _llm():
    torch.manual_seed(0)
    cfg = LLMConfig(hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64, max_positions=512)
    model, tok = build_llm(cfg)
    return LanguageModel(cfg, model, tok)


def test_small_qwen3_with_byte_tokenizer():
    from transformers import ByT5Tokenizer, Qwen3ForCausalLM

    lm = _llm()
    assert isinstance(lm.model, Qwen3ForCausalLM) and isinstance(lm.tokenizer, ByT5Tokenizer)


def test_loss_labels_only_the_answer_and_backprops():
    lm = _llm()
    vis = torch.randn(2, 5, 32, requires_grad=True)
    mask = torch.tensor([[1] * 5, [1, 1, 0, 0, 0]], dtype=torch.bool)
    batch = lm.build(vis, mask, ["q one?", "q2?"], ["E=mc2", "7"])
    n_answer = (batch.labels != -100).sum().item()
    assert n_answer == len(" E=mc2") + 1 + len(" 7") + 1  # bytes + eos each
    loss = lm.loss(vis, mask, ["q one?", "q2?"], ["E=mc2", "7"])
    loss.backward()
    assert torch.isfinite(loss) and vis.grad[0].abs().sum() > 0 and vis.grad[1, 2:].abs().sum() == 0


def test_greedy_generation_is_padding_invariant():
    lm = _llm()
    vis = torch.randn(2, 5, 32)
    full = torch.ones(2, 5, dtype=torch.bool)
    alone = lm.generate(vis[:1], full[:1], ["what?"], max_new_tokens=4)
    short = torch.tensor([[1] * 5, [1, 1, 0, 0, 0]], dtype=torch.bool)
    both = lm.generate(vis, short, ["what?", "a much longer question here?"], max_new_tokens=4)
    assert isinstance(both[0], str) and both[0] == alone[0]


def test_projector_shapes():
    p = Projector(ProjectorConfig(in_dim=16, out_dim=32))
    assert p(torch.randn(2, 3, 16)).shape == (2, 3, 32)
