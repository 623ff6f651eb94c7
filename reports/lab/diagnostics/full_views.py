"""Focused check (session 18): how fast does the downstream learn to read the `full` policy's view
(every cell at the top level, 1,024 tokens) when trained on it? Phase 0 shows it on 1 % of its
steps (`full_steps` 0.01, each ~30x a step's cost), and phase 0's report measured `full` at 0 %
fine detail where reading views with only the sign's cells at the top level read ~40 %.

usage: full_views.py CKPT STEPS LR [BATCH] [DETAIL] [SCENES]
From CKPT, the phase-0 trainables (CLIP frozen, the adapter at 1/10) on SceneBench train questions
at full views: BATCH (default 16) a step, DETAIL (default 0.75) of them fine detail, the rest gist;
constant LR after 20 warm-up steps. Printed every 25 steps: the training answer loss and seconds;
before and at the end, on 64 held-out SceneBench val fine-detail signs at the full view, the
teacher-forced answer loss own / another scene's and greedy exact match, and the same signs at
reading_gap.py's level-2 reading view (the sign's cells at level 2, the rest at the minimum), so a
gain at full is not bought with level 2.
"""
import sys, time

import numpy as np
import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.metrics import exact_match
from arrcoc_lab.policies import OraclePolicy
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import family_of, load_train_data
from arrcoc_lab.training.step import TrainStep, param_groups, set_trainable

ck, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
bs = int(sys.argv[4]) if len(sys.argv) > 4 else 16
detail_share = float(sys.argv[5]) if len(sys.argv) > 5 else 0.75
scenes = int(sys.argv[6]) if len(sys.argv) > 6 else 3000
torch.manual_seed(0)
m = load_pipeline("lab", weights=ck).model
g = m.geometry
data = load_train_data(m, TrainConfig(data=f"scenebench:train@{scenes}", batch_size=bs, progress=False))
detail_ix = np.flatnonzero(data.is_detail)
gist_ix = np.flatnonzero(~data.is_detail)
ph = get_phase("phase0b", steps=steps, lr=lr, segments=(), micro_batches=1)
params = set_trainable(m, ph)
st = TrainStep(m, ph)
opt = torch.optim.AdamW(param_groups(m, params, ph), weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
es = load_eval_set(m, "scenebench:val", 200, progress=False)
signs = [s for s in es.samples if s.difficulty == "detail" and s.target_box][:64]


def train_batch(ix):
    rows = data.scenes.rows([data.scene_index[i] for i in ix])
    tc = target_cells([data.boxes[i] for i in ix], g, data.image_hw)  # (B, Hc, Wc)
    return {"features": data.scenes.features[rows].float(), "pixels": data.scenes.pixels[rows].float(),
            "questions": [data.questions[i] for i in ix], "answers": [data.answers[i] for i in ix],
            "detail": torch.from_numpy(data.is_detail[ix]), "families": [family_of(data.questions[i]) for i in ix],
            "tiers": torch.zeros(len(ix), dtype=torch.long), "target_cells": tc, "noise_seeds": list(range(len(ix))),
            "budgets": [g.max_tokens] * len(ix), "utility": torch.ones_like(tc)}  # every cell at the top level


def held_out(sign_level: int, other_level: int) -> str:
    """loss own / other and exact on the held-out signs at one view"""
    m.eval()
    loss, em = {"own": [], "other": []}, []
    for a in range(0, len(signs), 16):
        chunk = signs[a:a + 16]
        idx = es.scenes.rows([s.scene_index for s in chunk])
        f, p = es.scenes.features[idx].float(), es.scenes.pixels[idx].float()
        on_sign = target_cells([s.target_box for s in chunk], g, es.image_hw) > 0  # (B, Hc, Wc)
        view = torch.where(on_sign, sign_level, other_level).long()
        for name, perm in (("own", torch.arange(len(chunk))), ("other", torch.roll(torch.arange(len(chunk)), 1))):
            with torch.no_grad():
                out = m(p[perm], [s.question for s in chunk], policy=OraclePolicy(on_sign.float(), view),
                        budget=[g.max_tokens] * len(chunk), features=f[perm], answers=[s.answer for s in chunk],
                        generate=name == "own", seeds=list(range(len(chunk))), probes=False)
            loss[name] += out.answer_loss.per_sample.tolist()
            if name == "own":
                em += [exact_match(x, s.answer) for x, s in zip(out.answers, chunk)]
    m.train()
    return (f"own / other {np.mean(loss['own']):.3f} / {np.mean(loss['other']):.3f}, exact {np.mean(em):.3f}")


top = g.max_level_index
print(f"{ck}: {len(detail_ix)} detail / {len(gist_ix)} gist training questions, batch {bs} ({detail_share:.0%} detail)")
print(f"before: full view {held_out(top, top)}; level-2 reading view {held_out(2, g.min_level)}", flush=True)
rng, t = np.random.default_rng(0), time.time()
m.train()
n_detail = round(bs * detail_share)
for s in range(steps):
    ix = np.concatenate([rng.choice(detail_ix, n_detail, replace=False), rng.choice(gist_ix, bs - n_detail, replace=False)])
    out = st(train_batch(ix))
    out["answer"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 25 == 0:
        print(s + 1, "train", round(float(out["answer"].detach()), 3), f"{time.time() - t:.0f}s", flush=True)
print(f"after {steps}: full view {held_out(top, top)}; level-2 reading view {held_out(2, g.min_level)}", flush=True)
