"""How early does the reading probe's LLM reader start to use the sign, and does it need the sign
at a fixed place in its window?

usage: reading_pace.py VARIANT STEPS [SCENES]
  centre  the reading probe (reports/lab/reading/llm, 98 % held-out after 4,000 steps): a 12 × 12
          window of SAM features centred on the sign, linear + learned position → a fresh lab LLM
          asked the sign's own question
  big     a 20 × 20 window, still centred on the sign (more tokens around it, the sign fixed)
  shift   a 20 × 20 window with the sign's centre placed at random within ±4 patches of its
          centre (the sign moves, as it does within a cell in phase 0's reading views)
Printed every 100 steps: held-out teacher-forced answer loss with each sign's own window / another
sign's window (the gap is how much the window is used) and held-out byte accuracy (own window).
Phase 0's equivalent is shuffled_images.py on a checkpoint (code family: 1.653 / 1.649 at step
2,000, ~55,000 top-level sign examples).
"""
import dataclasses
import math
import sys
import time

import torch
import torch.nn.functional as F

from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.reading_probe import _LLMReader, reading_questions, reading_samples
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.sampling import load_train_data

variant, steps = sys.argv[1], int(sys.argv[2])
n_scenes = int(sys.argv[3]) if len(sys.argv) > 3 else 11500
torch.manual_seed(0)
m = load_pipeline("lab", weights="random").model
data = load_train_data(m, TrainConfig(data=f"scenebench:train@{n_scenes}", progress=False))
scenes, boxes, texts = reading_samples(data)
questions = reading_questions(data)
feats = data.scenes.features  # (S, C, 32, 32), SAM's patch grid
G, S = feats.shape[-1], m.geometry.image_size
W = 12 if variant == "centre" else 20  # big, shift
rows = data.scenes.rows(scenes)
heldout = 1800
n_tr = len(texts) - heldout
print(variant, f"{len(texts)} signs, {n_tr} for training, window {W}", flush=True)
sub = feats[rows[:2000]].float()
mu, sd = sub.mean((0, 2, 3), keepdim=True), sub.std((0, 2, 3), keepdim=True) + 1e-6


def windows(idx: list[int], gen: torch.Generator | None) -> torch.Tensor:
    """(len(idx), C, W, W): the sign's centre at the window's centre, or (shift) anywhere inside it
    that keeps a 12 × 12 core around it inside the window; zero (the standardised mean) outside the image."""
    out = []
    pad = F.pad((feats[rows[idx]].float() - mu) / sd, (W, W, W, W))  # (n, C, G+2W, G+2W)
    for k, i in enumerate(idx):
        x0, y0, x1, y1 = boxes[i]
        cy, cx = (y0 + y1) / 2 * G / S, (x0 + x1) / 2 * G / S
        oy = ox = W / 2
        if gen is not None and variant == "shift":
            oy, ox = (6 + torch.rand(2, generator=gen) * (W - 12)).tolist()
        top, left = int(round(cy - oy)) + W, int(round(cx - ox)) + W
        out.append(pad[k, :, top:top + W, left:left + W])
    return torch.stack(out)


net = _LLMReader(feats.shape[1], W, dataclasses.replace(m.llm.cfg, question_embedding=False))  # as the probe was
opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / 4000)))
gen = torch.Generator().manual_seed(0)
held = list(range(n_tr, n_tr + 256))
eval_gen = torch.Generator().manual_seed(1)
hx = windows(held, eval_gen)
hq, ht = [questions[i] for i in held], [texts[i] for i in held]
other = torch.roll(torch.arange(len(held)), 1)


@torch.no_grad()
def report(step: int, t0: float) -> None:
    net.eval()
    own = float(net.loss(hx, hq, ht))
    oth = float(net.loss(hx[other], hq, ht))
    acc = net.byte_accuracy(hx, hq, ht)
    net.train()
    print(step, f"own/other {own:.3f} / {oth:.3f}", f"bytes {acc:.3f}", f"{time.time() - t0:.0f}s", flush=True)


t0 = time.time()
report(0, t0)
for step in range(1, steps + 1):
    j = torch.randint(0, n_tr, (64,), generator=gen).tolist()
    loss = net.loss(windows(j, gen), [questions[k] for k in j], [texts[k] for k in j])
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 100 == 0:
        report(step, t0)
