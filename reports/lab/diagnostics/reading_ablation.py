"""Focused check: how fast does the downstream learn to read signs from phase 0's top-level reading
views (the sign's cells at full resolution, every other cell at the minimum), from the seeded init?

usage: reading_ablation.py STEPS VARIANT [SCENES]
Variants (comma-separated):
  base     phase 0 as configured (CLIP frozen at its pass-through start, adapter at 1/10)
  posbig   CLIP's (frozen) positional embedding scaled to the compressor tokens' size (×20):
           at its init it is ~1/20 of a token's norm, so after the layer norms a token's position
           is almost invisible to the LLM
  postrain CLIP's positional embedding trained at the full rate (the rest of CLIP frozen)
  jitterX  the reading views' scenes rolled so each sign lands within ±X · half the image of one
           reading spot (PhaseConfig.reading_jitter; jitter0: always there, as the reading probe saw
           its signs; base is jitter1)
  noq      no question states (the LLM reads the question from its byte prompt only)
  noadapt  the adapter as the identity
  noclip   CLIP as the identity (no positional embedding either: the LLM has the raster order)
  clipnoln CLIP without its two layer norms (ln_pre, ln_post): at its zero-residual start, tokens + positions
  clipnopos CLIP's positional embedding zeroed
  posscaleX CLIP's (fixed sin-cos) positional embedding scaled by X
  cellorder the tokens handed over cell by cell (the lab's order before session 12) instead of in
           raster order of their centres
Printed: training answer loss with the question's own image / another scene's image on a fixed
batch of 32 training signs (the gap is how much the image is used), and held-out signs read exactly at the end.
"""
import math
import sys
import time

import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.sign_reading import sign_reading
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, param_groups, set_trainable

steps, variant = int(sys.argv[1]), sys.argv[2]
scenes = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
torch.manual_seed(0)
m = load_pipeline("lab", weights="random").model
pe = m.clip.visual.positional_embedding
if "clipnoln" in variant:
    m.clip.visual.ln_pre = torch.nn.Identity(); m.clip.visual.ln_post = torch.nn.Identity()
if "posscale" in variant:
    pe.data.mul_(float(variant.split("posscale")[1].split(",")[0]))
if "clipnopos" in variant:
    pe.data.zero_()
if "noq" in variant:
    m.llm.question_proj = None
if "noadapt" in variant:
    from arrcoc_lab.modeling.adapter import AdapterOutput
    m.adapter.forward = lambda tokens, levels, mask: AdapterOutput(tokens=tokens, quality=mask.float(), gate=torch.tensor(0.0))
if "noclip" in variant:
    from arrcoc_lab.modeling.clip_tokens import ClipOutput
    m.clip.forward = lambda ts, cls_attention=False: ClipOutput(tokens=ts.tokens, pooled=ts.tokens[:, 0], cls_attention=None)
if "cellorder" in variant:
    m.compressor._rank = m.compressor._ranks("cell")
if "posbig" in variant:
    pe.data.mul_(20.0)
cfg = TrainConfig(data=f"scenebench:train@{scenes}", batch_size=32, progress=False)
data = load_train_data(m, cfg)
jitter = float(variant.split("jitter")[1].split(",")[0]) if "jitter" in variant else 1.0
ph = get_phase("phase0", steps=steps, detail_share=1.0, reading_steps=1.0, reading_top_until=1.0, full_steps=0.0,
               rephrase=0.0, question_dropout=0.0, micro_batches=1, segments=(), reading_jitter=jitter)
params = set_trainable(m, ph)
if "postrain" in variant:
    pe.requires_grad_(True)
    params = params + [pe]
m.train()
st = TrainStep(m, ph)
opt = torch.optim.AdamW(param_groups(m, params, ph), weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
probe = make_batch(data, m, ph, 10**6, cfg, 0, 1, "cpu")  # a fixed batch of training signs, never a training step


def own_other() -> tuple[float, float]:
    m.eval()
    res = []
    with torch.no_grad():
        for perm in (None, torch.roll(torch.arange(32), 1)):
            b = dict(probe)
            if perm is not None:
                b = {**b, "features": b["features"][perm], "pixels": b["pixels"][perm]}
            res.append(round(float(st(b)["answer"]), 3))
    m.train()
    return tuple(res)


print(variant, "before", own_other(), flush=True)
t = time.time()
for s in range(steps):
    out = st(make_batch(data, m, ph, s, cfg, 0, 1, "cpu"))
    out["answer"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 50 == 0:
        print(s + 1, "train", round(float(out["answer"]), 3), "own/other", own_other(), f"{time.time() - t:.0f}s", flush=True)
m.eval()
es = load_eval_set(m, "scenebench:val", 40, progress=False)
with torch.no_grad():
    for r in sign_reading(m, es, progress=False):
        print("held-out", r.level, r.exact, r.n, r.examples[:4], flush=True)
