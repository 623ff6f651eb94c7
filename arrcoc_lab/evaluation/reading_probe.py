"""Reading probe: can sign text be *read* from a stage, by a reader that is told where the sign is?

The class probes of probe.py ask for one digit. This one asks for the whole text: a fresh reader
is trained on the window of a stage's grid around each fine-detail question's sign and spells the
sign's text; the score is the share of held-out signs read exactly. The same reader on the image's
own pixels laid on SAM's patch grid (lossless, `patch_grid`) is the reference: a stage that reads
as well has lost nothing a learned reader can use, and a gap between training and held-out signs
says the reader is short of examples rather than the features short of text. A diagnostic, not
part of the model.

Two kinds of reader (`reader=`):
  region  the phase-0 auxiliary's design (reader.py: byte-slot queries cross-attending to tokens);
  llm     a fresh causal LM of the pipeline's own LLM configuration (for lab, the small Qwen3 with
          ByT5 bytes). It sees the window's tokens, then the question, learns the answer's bytes
          with teacher forcing and is scored by greedy generation: what phase 0 asks of the real
          LLM. If the region reader reads and the LLM does not, the LLM is what a rerun must fix,
          not the features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..modeling.llm import IGNORE, LanguageModel, LLMConfig, build_llm
from .probe import STAGES, sign_windows
from ..training.reader import ReaderConfig, RegionReader

READERS = ("region", "llm")
PROMPT = "What is written on the sign?"  # the LLM reader's question where none is given


@dataclass
class ReadingResult:
    stage: str  # "patch_grid" (reference) or a pipeline stage
    heldout_exact: float  # share of held-out signs whose text is read exactly
    train_exact: float  # the same on (up to 1000) training signs: far above held-out = short of examples
    heldout_byte_accuracy: float  # share of held-out answer bytes (END / EOS included) right, teacher-forced
    n_train: int  # signs the reader was trained on
    n_heldout: int
    grid: tuple[int, int, int]  # (channels, height, width) of the window the reader saw
    steps: int = 0  # reader training steps
    curve: list = field(default_factory=list)  # [(step, held-out exact)] every eval_every steps, when asked
    reader: str = "region"  # region | llm (module docstring)
    stride: int = 1  # tokens from a learned stride-s convolution of the window (1: one token per cell)


def _detail_rows(data) -> list[int]:
    keep = [i for i, (d, b) in enumerate(zip(data.difficulty, data.boxes)) if d == "detail" and b is not None]
    if not keep:
        raise InputError("no fine-detail question with a target box in the data")
    return keep


def reading_samples(data) -> tuple[list[int], list, list[str]]:
    """(scene index, sign box, sign text) of every fine-detail question with a target box."""
    keep = _detail_rows(data)
    return [data.scene_index[i] for i in keep], [data.boxes[i] for i in keep], [data.answers[i] for i in keep]


def reading_questions(data) -> list[str]:
    """The questions of the signs that reading_samples returns, in the same order."""
    return [data.questions[i] for i in _detail_rows(data)]


class _Reader(nn.Module):
    """Standardised window (N, C, w, w) → tokens (linear, or with `stride` s > 1 a learned s×s
    stride-s convolution like the compressor's head for that LOD level; + learned position) →
    region reader."""

    def __init__(self, channels: int, side: int, dim: int = 128, stride: int = 1):
        super().__init__()
        self._embed(channels, side, dim, stride)
        self.reader = RegionReader(dim, ReaderConfig())

    def _embed(self, channels: int, side: int, dim: int, stride: int) -> None:
        # Linear at stride 1 (not a 1×1 conv): the reader of the committed region-reader reports
        self.stride = stride
        self.proj = nn.Linear(channels, dim) if stride == 1 else nn.Conv2d(channels, dim, stride, stride=stride)
        self.pos = nn.Parameter(torch.zeros(1, (side // stride) ** 2, dim))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return self.proj(x.flatten(2).transpose(1, 2)) + self.pos  # (N, C, w, w) -> (N, w·w, dim)
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos  # (N, C, w, w) -> (N, (w/s)², dim)

    @staticmethod
    def everywhere(tok: torch.Tensor) -> torch.Tensor:
        return torch.ones(tok.shape[:2], dtype=torch.bool, device=tok.device)  # (N, T): every token is the sign's

    def loss(self, x: torch.Tensor, questions: list[str], texts: list[str]) -> torch.Tensor:
        tok = self.tokens(x)
        return self.reader(tok, self.everywhere(tok), texts).loss.mean()

    def byte_accuracy(self, x: torch.Tensor, questions: list[str], texts: list[str]) -> float:
        tok = self.tokens(x)
        return float(self.reader(tok, self.everywhere(tok), texts).byte_accuracy)

    def read(self, x: torch.Tensor, questions: list[str]) -> list[str]:
        tok = self.tokens(x)
        return self.reader.decode(tok, self.everywhere(tok))


class _LLMReader(_Reader):
    """Standardised window → tokens → a fresh causal LM of config `llm` that reads them, then the
    question, and spells the answer: the pipeline's LLM after its projector."""

    def __init__(self, channels: int, side: int, llm: LLMConfig, stride: int = 1):
        nn.Module.__init__(self)
        llm = replace(llm, question_embedding=False)  # no query encoder here: the question comes from the byte prompt
        self.lm = LanguageModel(llm, *build_llm(llm))
        self._embed(channels, side, self.lm.hidden_size, stride)

    def _next_token(self, x, questions, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced next-token logits (N, S-1, V) and their labels (N, S-1), IGNORE outside the answer."""
        tok = self.tokens(x)
        b = self.lm.build(tok, self.everywhere(tok), questions, texts)
        logits = self.lm.model(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask).logits
        return logits[:, :-1].float(), b.labels[:, 1:]

    def loss(self, x, questions, texts):
        tok = self.tokens(x)
        return self.lm.loss(tok, self.everywhere(tok), questions, texts)  # the pipeline LLM's own answer loss

    def byte_accuracy(self, x, questions, texts):
        logits, labels = self._next_token(x, questions, texts)
        seen = labels != IGNORE  # the answer's bytes and EOS
        return float(((logits.argmax(-1) == labels) & seen).sum() / seen.sum().clamp(min=1))

    def read(self, x, questions):
        tok = self.tokens(x)
        return self.lm.generate(tok, self.everywhere(tok), questions, max_new_tokens=ReaderConfig().max_bytes)


def reading_accuracy(x: torch.Tensor, texts: list[str], train_frac: float = 0.85, steps: int = 1500,
                     batch: int = 64, lr: float = 1e-3, seed: int = 0, stage: str = "",
                     n_train: int | None = None, eval_every: int = 0, reader: str = "region",
                     questions: list[str] | None = None, llm: LLMConfig | None = None,
                     stride: int = 1) -> ReadingResult:
    """Train a reader on the first `n_train` (default: `train_frac` of them) windows x (N, C, w, w)
    → texts and score the rest; with `eval_every`, also score the held-out signs every that many
    steps (the learning curve). `reader` "llm" builds a fresh causal LM of config `llm` (default:
    LLMConfig()) that is asked `questions` (default: PROMPT for every sign). `stride` s > 1 hands
    the reader (w/s)² tokens from a learned s×s stride-s convolution, as the compressor's head gives
    a cell at the LOD level of that stride (lab: 2 → level 2, 16 tokens a cell; 4 → level 1)."""
    n_tr = int(train_frac * len(texts)) if n_train is None else n_train
    if n_tr < 1 or n_tr >= len(texts):
        raise InputError(f"need signs on both sides of the split, got {n_tr} of {len(texts)} for training")
    if steps < 1 or eval_every < 0:
        raise InputError(f"steps must be ≥ 1 and eval_every ≥ 0, got {steps} and {eval_every}")
    if reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; known: {list(READERS)}")
    if stride < 1 or x.shape[2] % stride or x.shape[3] % stride:
        raise InputError(f"stride must be ≥ 1 and divide the window's {tuple(x.shape[2:])} cells, got {stride}")
    questions = [PROMPT] * len(texts) if questions is None else questions
    if len(questions) != len(texts):
        raise InputError(f"{len(questions)} questions for {len(texts)} signs")
    mu, sd = x[:n_tr].mean((0, 2, 3), keepdim=True), x[:n_tr].std((0, 2, 3), keepdim=True) + 1e-6
    x = (x - mu) / sd  # per-channel standardisation, as the class probes do
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = (_Reader(x.shape[1], x.shape[2], stride=stride) if reader == "region"
               else _LLMReader(x.shape[1], x.shape[2], llm or LLMConfig(), stride=stride))
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    curve = []
    bar = tqdm(range(1, steps + 1), desc=f"{reader} reader, {n_tr} signs", leave=False, mininterval=30)
    for step in bar:
        j = torch.randint(0, n_tr, (batch,), generator=gen).tolist()
        loss = net.loss(x[j], [questions[k] for k in j], [texts[k] for k in j])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if eval_every and (step % eval_every == 0 or step == steps):
            curve.append((step, _read(net, x, questions, texts, n_tr, len(texts))[0]))
            bar.set_postfix(heldout_exact=f"{curve[-1][1]:.3f}")
    held, held_bytes = _read(net, x, questions, texts, n_tr, len(texts))
    train, _ = _read(net, x, questions, texts, 0, min(n_tr, 1000))
    return ReadingResult(stage, held, train, held_bytes, n_tr, len(texts) - n_tr, tuple(x.shape[1:]), steps, curve,
                         reader, stride)


@torch.no_grad()
def _read(net: _Reader, x: torch.Tensor, questions: list[str], texts: list[str], lo: int, hi: int) -> tuple[float, float]:
    """(share of signs lo..hi read exactly, share of their bytes right) by greedy decoding."""
    was = net.training
    net.eval()
    right, byte_acc = 0, []
    for a in range(lo, hi, 256):
        b = min(a + 256, hi)
        right += sum(p == t for p, t in zip(net.read(x[a:b], questions[a:b]), texts[a:b]))
        byte_acc.append(net.byte_accuracy(x[a:b], questions[a:b], texts[a:b]) * (b - a))
    net.train(was)
    return right / (hi - lo), sum(byte_acc) / (hi - lo)


def reading_scaling(model, data, counts: list[int], heldout: int = 1800, steps: int = 6000, eval_every: int = 0,
                    stage: str = "sam", level: int | None = None, reader: str = "region",
                    stride: int = 1) -> list[ReadingResult]:
    """Held-out reading against the number of distinct training signs: one fresh reader per count
    n in `counts`, trained on the first n signs, every one scored on the same last `heldout` signs.
    `stage` is a pipeline stage or the lossless "patch_grid" reference; `reader` "llm" reads with a
    fresh LLM of the model's own LLM configuration, asked each sign's question; `stride` as in
    reading_accuracy."""
    scenes, boxes, texts = reading_samples(data)
    if not counts or min(counts) < 1 or max(counts) + heldout > len(texts):
        raise InputError(f"counts {counts} + {heldout} held out need more signs than the data's {len(texts)}")
    if stage not in STAGES and stage != "patch_grid":
        raise InputError(f"unknown stage {stage!r}; known: {list(STAGES) + ['patch_grid']}")
    if reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; known: {list(READERS)}")
    x = sign_windows(model, data, scenes, boxes, level, (stage,) if stage in STAGES else (),
                     () if stage in STAGES else ("patch_grid",))[stage]
    questions = reading_questions(data)
    test = slice(len(texts) - heldout, None)
    return [reading_accuracy(torch.cat([x[:n], x[test]]), texts[:n] + texts[test], steps=steps, stage=stage,
                             n_train=n, eval_every=eval_every, reader=reader, questions=questions[:n] + questions[test],
                             llm=model.llm.cfg, stride=stride) for n in counts]


def probe_reading(model, data, stages: tuple[str, ...] = ("sam",), reference: bool = True, steps: int = 1500,
                  max_samples: int | None = None, level: int | None = None) -> list[ReadingResult]:
    """Read every fine-detail question's sign from a window of each stage in `stages` (at LOD
    `level`, default full resolution), after the lossless `patch_grid` reference when `reference`."""
    scenes, boxes, texts = reading_samples(data)
    scenes, boxes, texts = scenes[:max_samples], boxes[:max_samples], texts[:max_samples]
    grids = sign_windows(model, data, scenes, boxes, level, stages, ("patch_grid",) if reference else ())
    return [reading_accuracy(x, texts, steps=steps, stage=name) for name, x in grids.items()]
