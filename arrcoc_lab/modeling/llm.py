"""Stage 8 — LLM: any transformers causal LM, fed visual tokens through `inputs_embeds`.

The sequence for one sample is  [visual tokens] [prompt tokens] ([answer tokens] [eos])
with the prompt "Q: {question}\nA:". Training labels only the answer; generation is greedy.
`lab` builds a small Qwen3 with ByT5's byte-level tokenizer (needs no vocabulary file);
`paper` loads any Hugging Face model directory from local disk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class LLMConfig:
    path: str | None = None  # local Hugging Face model directory (paper); None = build the small Qwen3 below
    hidden_size: int = 128  # small Qwen3 (lab): width
    layers: int = 4  # small Qwen3: decoder layers
    heads: int = 4  # small Qwen3: attention heads
    kv_heads: int = 2  # small Qwen3: key/value heads
    intermediate_size: int = 384  # small Qwen3: MLP width
    max_positions: int = 4096  # small Qwen3: context length
    max_new_tokens: int = 12  # greedy answer length cap
    prompt: str = "Q: {question}\nA:"  # text after the visual tokens
    gradient_checkpointing: bool = False
    # the question also reaches the LLM as the query encoder's token states, projected into its
    # embedding space and placed between the visual tokens and the prompt: a pretrained sentence
    # encoder's view of the question carries phrasings the byte prompt never saw in training
    question_embedding: bool = False
    query_dim: int = 384  # width of the query encoder's token states (wired by the builder)


@dataclass
class LMBatch:
    inputs_embeds: torch.Tensor  # (B, S, H)
    attention_mask: torch.Tensor  # (B, S) long
    labels: torch.Tensor | None  # (B, S) long, IGNORE outside the answer


def build_llm(cfg: LLMConfig):
    """Returns (model, tokenizer). No network: a path must be a local directory."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer, ByT5Tokenizer, Qwen3Config, Qwen3ForCausalLM

    if cfg.path:
        path = Path(cfg.path)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"LLM directory {path} has no config.json; expected a save_pretrained() directory")
        try:
            model, info = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, RuntimeError, ValueError, SafetensorError) as e:
            raise CheckpointError(f"cannot load the LLM from {path}: weights missing, truncated or not matching "
                                  f"its config.json ({e})") from e
        bad = {k: sorted(v)[:3] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if bad:
            raise CheckpointError(f"LLM weights in {path} do not match its config.json: {bad} (transformers would "
                                  "initialise these randomly)")
        if not tokenizer("Q: A", add_special_tokens=False).input_ids:
            raise CheckpointError(f"the tokenizer in {path} produces no tokens: save the tokenizer beside the model "
                                  "(tokenizer.save_pretrained(dir))")
    else:
        tokenizer = ByT5Tokenizer()
        model = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.hidden_size // cfg.heads,
            intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_positions,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None, tie_word_embeddings=True))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


@dataclass
class AnswerLoss:
    per_sample: torch.Tensor  # (B,) mean answer-token cross-entropy of each sample
    predictions: list[str]  # teacher-forced greedy prediction of each answer

    @property
    def mean(self) -> torch.Tensor:
        return self.per_sample.mean()


class _Stop(Exception):
    """Raised by a hook to end a scoring pass after layer K."""


def layer_attention_weights(lm, layer: nn.Module, run) -> torch.Tensor:
    """The attention weights (B, heads, S, S) of decoder `layer` when `run()` calls the language
    model `lm`: eager attention for this pass (SDPA returns no weights), stopped after that layer,
    hooks and the attention kernel restored afterwards. FastV's and SparseVLM's score pass."""
    captured = {}

    def grab(module, args, out):
        captured["w"] = out[1]

    def stop(module, args, out):
        raise _Stop

    hooks = [layer.self_attn.register_forward_hook(grab), layer.register_forward_hook(stop)]
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        run()
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
        lm.set_attn_implementation(previous)
    return captured["w"]


class LanguageModel(nn.Module):
    def __init__(self, cfg: LLMConfig, model: nn.Module, tokenizer):
        super().__init__()
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        hidden = model.get_input_embeddings().embedding_dim
        self.question_proj = None
        if cfg.question_embedding:
            self.question_proj = nn.Sequential(nn.LayerNorm(cfg.query_dim), nn.Linear(cfg.query_dim, hidden))
            # the states start at zero: at a random init they are the sequence's largest tokens and hold
            # back the LLM's use of the image (reports/lab/RUN.md, "Why phase 0 did not read")
            nn.init.zeros_(self.question_proj[1].weight)
            nn.init.zeros_(self.question_proj[1].bias)

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def _ids(self, text: str, eos: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids + [self.tokenizer.eos_token_id] if eos else ids

    def question_states(self, query, n: int) -> list[torch.Tensor]:
        """Each sample's projected query-encoder tokens (Q_i, H), or empty when this LLM reads only
        the byte prompt. `query` is the forward's QueryEncoding."""
        if self.question_proj is None:
            return [None] * n
        if query is None:
            raise InputError("this LLM reads the question through the query encoder (llm.question_embedding); "
                             "pass the forward's query encoding")
        states = self.question_proj(query.tokens.float())  # (B, L, Dq) -> (B, L, H)
        return [states[i][query.mask[i]] for i in range(n)]

    def build(self, visual: torch.Tensor, visual_mask: torch.Tensor, questions: list[str],
              answers: list[str] | None = None, left_pad: bool = False, query=None) -> LMBatch:
        """Concatenate each sample's real visual tokens, its projected question states (when this
        LLM has them), its prompt and its answer embeddings: [visual][question][Q: …\nA:][answer]."""
        embed = self.model.get_input_embeddings()
        seqs, labels = [], []
        for i, (q, qs) in enumerate(zip(questions, self.question_states(query, len(questions)))):
            v = visual[i][visual_mask[i]]  # (T_i, H)
            prompt = self._ids(self.cfg.prompt.format(question=q))
            answer = self._ids(" " + answers[i], eos=True) if answers is not None else []
            ids = torch.tensor(prompt + answer, device=visual.device)
            parts = [v] + ([qs.to(v.dtype)] if qs is not None else []) + [embed(ids).to(v.dtype)]
            seqs.append(torch.cat(parts))  # (T_i + Q_i + P_i + A_i, H)
            labels.append([IGNORE] * (len(seqs[-1]) - len(answer)) + answer)
        S = max(len(s) for s in seqs)
        B, H = len(seqs), visual.shape[-1]
        x = visual.new_zeros(B, S, H)
        att = torch.zeros(B, S, dtype=torch.long, device=visual.device)
        lab = torch.full((B, S), IGNORE, dtype=torch.long, device=visual.device)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            sl = slice(S - len(s), S) if left_pad else slice(0, len(s))
            x[i, sl], att[i, sl] = s, 1
            lab[i, sl] = torch.tensor(l, device=visual.device)
        return LMBatch(inputs_embeds=x, attention_mask=att, labels=lab if answers is not None else None)

    def answer_loss(self, visual, visual_mask, questions, answers, query=None) -> AnswerLoss:
        """Teacher-forced answer cross-entropy, one value per sample (the mean over its answer
        tokens; the training loss is the mean of these, so DDP's mean of local means is the global
        mean), and each answer's teacher-forced greedy prediction (for the sample log)."""
        batch = self.build(visual, visual_mask, questions, answers, query=query)
        logits = self.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        logits, labels = logits[:, :-1].float(), batch.labels[:, 1:]  # position t predicts token t + 1
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")  # (B, S-1)
        valid = labels != IGNORE
        per = (ce * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
        pred_ids = torch.where(valid, logits.argmax(-1), self.tokenizer.pad_token_id)
        preds = [self.tokenizer.decode([t for t in row.tolist() if t > 2], skip_special_tokens=True).strip()
                 for row in pred_ids]
        return AnswerLoss(per_sample=per, predictions=preds)

    def loss(self, visual, visual_mask, questions, answers) -> torch.Tensor:
        """Token-mean cross-entropy over the batch (transformers' own `labels` loss)."""
        batch = self.build(visual, visual_mask, questions, answers)
        return self.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                          labels=batch.labels).loss

    @torch.no_grad()
    def generate(self, visual, visual_mask, questions, max_new_tokens: int | None = None, query=None) -> list[str]:
        batch = self.build(visual, visual_mask, questions, left_pad=True, query=query)
        out = self.model.generate(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens or self.cfg.max_new_tokens, do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        return [a.strip() for a in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def embed_text(self, text: str) -> torch.Tensor:
        """The LLM's input embeddings of a text's tokens (L, H) (EOS alone for an empty text)."""
        ids = self._ids(text) or [self.tokenizer.eos_token_id]
        embed = self.model.get_input_embeddings()
        return embed(torch.tensor(ids, device=embed.weight.device))

    def layer_attention(self, visual: torch.Tensor, visual_mask: torch.Tensor, questions: list[str],
                        layer: int, query=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the LLM on [visual][prompt] (left-padded) through decoder layer `layer` (1-based) only and
        return that layer's attention weights (B, heads, S, S) and each sample's first visual column (B,).
        Needs a Llama/Qwen-style decoder (`model.model.layers`); attention is switched to the eager
        kernel for this pass (SDPA returns no weights) and switched back afterwards."""
        lm = self.model
        layers = getattr(getattr(lm, "model", None), "layers", None)
        if layers is None:
            raise InputError(f"layer attention needs a decoder-only LM with model.layers (Llama/Qwen style); "
                             f"got {type(lm).__name__}")
        k = min(max(layer, 1), len(layers))
        batch = self.build(visual, visual_mask, questions, left_pad=True, query=query)
        weights = layer_attention_weights(lm, layers[k - 1], lambda: lm(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, use_cache=False))
        start = batch.attention_mask.argmax(1)  # left padding: first real position = first visual token
        return weights, start
