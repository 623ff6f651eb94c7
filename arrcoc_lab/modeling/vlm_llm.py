"""Stage 8 for existing VLMs (the `hf-vlm` preset): the VLM's own language model answers from the
reduced visual-token set.

The prompt is the VLM's own: its processor's chat template for one user turn [image, question]
(else the family's prompt, vlm.FAMILIES), tokenized by its tokenizer. Where its one image token
stands, the kept visual tokens go in, as the VLM inserts its image features, only fewer:

  [prompt before the image][T kept visual tokens][prompt after the image]([answer][eos])

The kept tokens go in raster order of their centres (row by row, as the VLM reads its own grid; the
token set may be cell-major), so `full` is exactly the VLM's own input.

Positions: LLaVA numbers the sequence 1-D, the kept tokens contiguous (as FastV / VisionZip keep
them). Qwen2-VL's M-RoPE gives each visual token (t, h, w) = (p, p + y·G − ½, p + x·G − ½) from its
centre (y, x) on the G×G token grid (p: the tokens before the image) — the VLM's own indices for
the full grid; a pooled token sits at the centre of the block it averages — and the text after the
image continues at p + G, as Qwen2VLModel.get_rope_index places it. So ARRCOC passes this stage the
tokens' centres (`reads_positions`). Generation is greedy, with the KV cache, up to the VLM's EOS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError
from .compressor import raster_order
from .geometry import Geometry
from .llm import IGNORE, AnswerLoss, layer_attention_weights
from .vlm import FAMILIES, VLMConfig, drop_external


@dataclass
class VLMBatch:
    inputs_embeds: torch.Tensor  # (B, S, H) in the VLM's dtype
    attention_mask: torch.Tensor  # (B, S) long
    position_ids: torch.Tensor  # (B, S) long (LLaVA) or (3, B, S) float (Qwen2-VL M-RoPE)
    labels: torch.Tensor | None  # (B, S) long, IGNORE outside the answer
    visual_start: torch.Tensor  # (B,) column of each sample's first visual token
    orders: list[torch.Tensor]  # per sample (T_i,): the token-set index of each visual slot (raster order)


class VLMLanguageModel(nn.Module):
    reads_positions = True  # ARRCOC hands it the visual tokens' centres (TokenSet.positions)

    def __init__(self, cfg: VLMConfig, vlm: nn.Module, processor, tokenizer, geometry: Geometry):
        super().__init__()
        self.cfg, self.model, self.geometry = cfg, vlm, geometry
        self.processor, self.tokenizer = processor, tokenizer
        self.question_proj = None  # the question reaches the LLM as text only
        self.mrope = cfg.family == "qwen2_vl"
        self.image_token_id = vlm.config.image_token_id
        self.image_token = (getattr(processor, "image_token", None)
                            or tokenizer.convert_ids_to_tokens(self.image_token_id))
        eos = vlm.generation_config.eos_token_id if vlm.generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos = sorted(set(eos + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])))
        if not self.eos:
            raise CheckpointError(f"the VLM in {cfg.path} names no EOS token (generation_config or tokenizer)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        self.register_state_dict_post_hook(drop_external("model."))  # the VLM's weights stay in its own folder

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: the VLM stays in eval mode

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    # ---------------------------------------------------------------------------- the prompt
    def render(self, question: str) -> str:
        """The VLM's prompt text for one question about one image (the image as its one image token)."""
        if self.cfg.prompt:
            return self.cfg.prompt.format(image=self.image_token, question=question)
        if getattr(self.processor, "chat_template", None):
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        return FAMILIES[self.cfg.family]["prompt"].format(image=self.image_token, question=question)

    def prompt_ids(self, question: str) -> tuple[list[int], list[int]]:
        """The prompt's token ids before and after its image token."""
        text = self.render(question)
        bos = self.tokenizer.bos_token
        ids = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos))).input_ids
        where = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(where) != 1:
            raise InputError(f"the VLM prompt holds {len(where)} image tokens ({self.image_token!r}); it needs "
                             f"exactly one: {text[:200]!r}")
        return ids[:where[0]], ids[where[0] + 1:]

    def _answer_ids(self, answer: str, prompt_after: list[int]) -> list[int]:
        tail = self.tokenizer.decode(prompt_after[-1:]) if prompt_after else ""
        text = answer if not tail or tail[-1].isspace() else " " + answer
        return self.tokenizer(text, add_special_tokens=False).input_ids + [self.eos[0]]

    # ---------------------------------------------------------------------------- the sequence
    def _positions(self, n_pre: int, centres: torch.Tensor | None, n_vis: int, n_post: int, device) -> torch.Tensor:
        """One sample's positions: (L,) long for LLaVA, (3, L) float for Qwen2-VL's M-RoPE."""
        if not self.mrope:
            return torch.arange(n_pre + n_vis + n_post, device=device)
        if centres is None:
            raise InputError("Qwen2-VL places visual tokens by their centres: pass positions (TokenSet.positions)")
        G = self.geometry.patches_per_side
        pre = torch.arange(n_pre, device=device, dtype=torch.float).expand(3, -1)
        yx = centres.float() * G - 0.5 + n_pre  # (T, 2) token-grid coordinates, after the text before the image
        vis = torch.stack([torch.full_like(yx[:, 0], float(n_pre)), yx[:, 0], yx[:, 1]])  # (3, T): t, h, w
        post = (torch.arange(n_post, device=device, dtype=torch.float) + n_pre + G).expand(3, -1)
        return torch.cat([pre, vis, post], 1)  # (3, L)

    def build(self, visual: torch.Tensor, visual_mask: torch.Tensor, questions: list[str],
              answers: list[str] | None = None, left_pad: bool = False,
              positions: torch.Tensor | None = None) -> VLMBatch:
        """Each sample's prompt with its kept visual tokens where the image token was (and its answer)."""
        embed = self.model.get_input_embeddings()
        dtype, device = embed.weight.dtype, embed.weight.device
        seqs, poss, labels, starts, orders = [], [], [], [], []
        for i, q in enumerate(questions):
            pre, post = self.prompt_ids(q)
            answer = self._answer_ids(answers[i], post) if answers is not None else []
            v = visual[i][visual_mask[i]].to(device, dtype)  # (T_i, H)
            centres = positions[i][visual_mask[i]].to(device) if positions is not None else None
            order = raster_order(centres) if centres is not None else torch.arange(len(v), device=device)
            v, centres = v[order], centres[order] if centres is not None else None
            orders.append(order)
            text = lambda ids: embed(torch.tensor(ids, dtype=torch.long, device=device))  # (L, H)
            seqs.append(torch.cat([text(pre), v, text(post + answer)]))  # (P + T_i + Q + A, H)
            poss.append(self._positions(len(pre), centres, len(v), len(post) + len(answer), device))
            labels.append([IGNORE] * (len(seqs[-1]) - len(answer)) + answer)
            starts.append(len(pre))
        S, B, H = max(len(s) for s in seqs), len(seqs), seqs[0].shape[-1]
        x = seqs[0].new_zeros(B, S, H)
        att = torch.zeros(B, S, dtype=torch.long, device=device)
        lab = torch.full((B, S), IGNORE, dtype=torch.long, device=device)
        pos = torch.zeros(3, B, S, device=device) if self.mrope else torch.zeros(B, S, dtype=torch.long, device=device)
        for i, (s, p, l) in enumerate(zip(seqs, poss, labels)):
            sl = slice(S - len(s), S) if left_pad else slice(0, len(s))
            x[i, sl], att[i, sl] = s, 1
            lab[i, sl] = torch.tensor(l, device=device)
            pos[..., i, sl] = p
            starts[i] += sl.start
        return VLMBatch(inputs_embeds=x, attention_mask=att, position_ids=pos,
                        labels=lab if answers is not None else None, visual_start=torch.tensor(starts, device=device),
                        orders=orders)

    # ---------------------------------------------------------------------------- what ARRCOC calls
    @torch.no_grad()
    def generate(self, visual, visual_mask, questions, max_new_tokens: int | None = None, query=None,
                 positions: torch.Tensor | None = None) -> list[str]:
        """Greedy answers, one KV-cached step per token, each sample stopping at the VLM's EOS."""
        b = self.build(visual, visual_mask, questions, left_pad=True, positions=positions)
        att, n = b.attention_mask, max_new_tokens or self.cfg.max_new_tokens
        step_pos = b.position_ids[..., -1:] + 1  # left padding: the last column is every sample's last token
        out = self.model(inputs_embeds=b.inputs_embeds, attention_mask=att, position_ids=b.position_ids,
                         use_cache=True, logits_to_keep=1)  # the last position's logits only
        eos = torch.tensor(self.eos, device=att.device)
        done = torch.zeros(att.shape[0], dtype=torch.bool, device=att.device)
        new = []
        for k in range(n):
            tok = torch.where(done, self.pad_id, out.logits[:, -1].argmax(-1))  # (B,)
            new.append(torch.where(done, -1, tok))
            done |= torch.isin(tok, eos)
            if bool(done.all()) or k == n - 1:
                break
            att = torch.cat([att, att.new_ones(att.shape[0], 1)], 1)
            out = self.model(input_ids=tok[:, None], attention_mask=att, position_ids=step_pos,
                             past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
            step_pos = step_pos + 1
        rows = torch.stack(new, 1).tolist()  # (B, steps), -1 after a sample's EOS
        return [self.tokenizer.decode([t for t in r if t >= 0 and t not in self.eos], skip_special_tokens=True).strip()
                for r in rows]

    def answer_loss(self, visual, visual_mask, questions, answers, query=None,
                    positions: torch.Tensor | None = None) -> AnswerLoss:
        """Teacher-forced answer cross-entropy per sample, and each answer's teacher-forced prediction."""
        b = self.build(visual, visual_mask, questions, answers, positions=positions)
        logits = self.model(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask,
                            position_ids=b.position_ids).logits
        logits, labels = logits[:, :-1].float(), b.labels[:, 1:]  # position t predicts token t + 1
        ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")  # (B, S-1)
        valid = labels != IGNORE
        per = (ce * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
        preds = [self.tokenizer.decode([t for t, ok in zip(row, keep) if ok and t not in self.eos],
                                       skip_special_tokens=True).strip()
                 for row, keep in zip(logits.argmax(-1).tolist(), valid.tolist())]
        return AnswerLoss(per_sample=per, predictions=preds)

    def embed_text(self, text: str) -> torch.Tensor:
        """The VLM's input embeddings of a text's tokens (L, H) (EOS alone for an empty text)."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids or [self.eos[0]]
        embed = self.model.get_input_embeddings()
        return embed(torch.tensor(ids, device=embed.weight.device))

    def layer_attention(self, visual: torch.Tensor, visual_mask: torch.Tensor, questions: list[str], layer: int,
                        query=None, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder layer `layer`'s attention weights (B, heads, S, S) on [prompt with visual tokens]
        (left-padded), and each sample's first visual column (B,): FastV's score pass. The visual
        columns come back in token-set order (FastV maps them to the tokens in that order). The language
        model runs eager attention for this pass (SDPA returns no weights) and stops after that layer."""
        lm = self.model.model.language_model
        layers = lm.layers
        k = min(max(layer, 1), len(layers))
        b = self.build(visual, visual_mask, questions, left_pad=True, positions=positions)
        raw = layer_attention_weights(lm, layers[k - 1], lambda: self.model(
            inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False))
        w = raw.clone()  # (B, heads, S, S)
        for i, order in enumerate(b.orders):
            s, slots = int(b.visual_start[i]), torch.empty_like(order)
            slots[order] = torch.arange(len(order), device=order.device)  # token t sits in slot slots[t]
            w[i, :, :, s:s + len(order)] = raw[i, :, :, s + slots]
        return w, b.visual_start
