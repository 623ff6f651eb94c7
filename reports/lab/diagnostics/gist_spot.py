"""Focused check (session 15): does the downstream learn a gist family faster when the asked-about
region sits at one place, as reading did? From a phase-0 checkpoint, landmark and city questions
(the same six-way choice: each landmark kind stands for a city) at the uniform 64-token view.

usage: gist_spot.py CKPT STEPS LR JITTER [SCENES] [ALLOC] [FAMILIES]
FAMILIES: comma-separated gist families trained and held out (default landmark,city; session 17:
count, which asks about the whole image, so JITTER 1).
Each training scene is rolled (sampling.roll_to_reading_spot) so the landmark's centre lands
within ±JITTER · half the image of the reading spot (0: always there; 1: where the scene has it).
Batch 32, constant LR after 20 warm-up steps, CLIP frozen and the adapter at 1/10 as in phase 0.
ALLOC: "uniform" (default; the 64-token view) or "mixed" (training batches at phase 0's mixed
allocations: random budgets of 16-100 tokens and utilities, sampling.mixed_allocation).
Printed every 50 steps: the training answer loss and, on 64 held-out questions with their scenes
as they are (and then, with JITTER < 1, rolled to the spot), the answer loss with the own scene /
another scene's; at the end, held-out exact
match (scenes as they are) on 128 questions.
"""
import math, sys, time
import numpy as np, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.evaluation.metrics import exact_match
from arrcoc_lab.policies import get_policy
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import family_of, load_train_data, mixed_allocation, roll_to_reading_spot
from arrcoc_lab.training.step import TrainStep, param_groups, set_trainable

ck, steps, lr, jitter = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
scenes = int(sys.argv[5]) if len(sys.argv) > 5 else 3000
alloc = sys.argv[6] if len(sys.argv) > 6 else "uniform"
families = tuple(sys.argv[7].split(",")) if len(sys.argv) > 7 else ("landmark", "city")
if jitter < 1 and not set(families) <= {"landmark", "city"}:
    sys.exit("JITTER < 1 rolls the landmark to the spot: only for landmark and city questions")
torch.manual_seed(0)
m = load_pipeline("lab", weights=ck).model; g = m.geometry
cfg = TrainConfig(data=f"scenebench:train@{scenes}", batch_size=32, progress=False)
data = load_train_data(m, cfg)
idx = np.array([i for i, q in enumerate(data.questions) if family_of(q) in families])
held, train = idx[-256:], idx[:-256]
ph = get_phase("uniform_ft", steps=steps, lr=lr, rephrase=0.0, lr_scale={"adapter": 0.1}, allocation=alloc,
               trainable=tuple(s for s in get_phase("phase0").trainable))
params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
opt = torch.optim.AdamW(param_groups(m, params, ph), weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))


def batch(ix, step=None, perm=None):
    rows = data.scenes.rows([data.scene_index[i] for i in ix])
    if perm is not None:
        rows = rows[perm]
    f, p = data.scenes.features[rows].float(), data.scenes.pixels[rows].float()
    boxes = [data.boxes[i] for i in ix]
    if step is not None and jitter < 1:  # the landmark to the spot (after the permutation: the scene shown is rolled)
        shown = [data.boxes[i] for i in (ix if perm is None else ix[perm.numpy()])]
        boxes, _ = roll_to_reading_spot(f, p, shown, [], [True] * len(ix), jitter, g, data.image_hw, [0, max(step, 0)], 0, 1)
    b = {"features": f, "pixels": p, "questions": [data.questions[i] for i in ix], "answers": [data.answers[i] for i in ix],
         "detail": torch.zeros(len(ix), dtype=torch.bool), "families": [family_of(data.questions[i]) for i in ix],
         "tiers": torch.zeros(len(ix), dtype=torch.long), "target_cells": target_cells(boxes, g, data.image_hw),
         "noise_seeds": list(range(len(ix)))}
    if alloc == "mixed":  # held-out checks (step None or -1) draw theirs too: the loss is then at those views
        b["budgets"], b["utility"] = mixed_allocation(b["target_cells"], g, 0, 10**6 if step is None else step + 1, 0, 1,
                                                      len(ix), full_steps=0.0)
    return b


def own_other():
    """held-out loss own / another scene's, the scenes as they are and, with JITTER < 1, at the spot too"""
    m.eval(); res = []
    with torch.no_grad():
        for step in (None, -1) if jitter < 1 else (None,):
            for perm in (None, torch.roll(torch.arange(64), 1)):
                res.append(round(float(st(batch(held[:64], step=step, perm=perm))["answer"]), 3))
    m.train(); return tuple(res)


def exact(ix):
    m.eval(); b = batch(ix)
    with torch.no_grad():
        out = m(b["pixels"], b["questions"], policy=get_policy("uniform"), budget=[g.uniform_budget] * len(ix),
                features=b["features"], generate=True, seeds=list(range(len(ix))))
    m.train()
    return sum(exact_match(a, data.answers[i]) for a, i in zip(out.answers, ix)) / len(ix)


rng = np.random.default_rng(0)
print(f"jitter {jitter}: {len(train)} training questions; before", own_other(), "exact held", exact(held[:128]), flush=True)
t = time.time()
for s in range(steps):
    out = st(batch(rng.choice(train, 32, replace=False), step=s)); out["answer"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 50 == 0:
        print(s + 1, "train", round(float(out["answer"].detach()), 3), "own/other", own_other(), f"{time.time() - t:.0f}s", flush=True)
print("exact held", exact(held[:128]), flush=True)
