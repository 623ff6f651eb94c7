"""Focused check: can the downstream learn a gist family (landmark) from vision at all?"""
import sys, time, torch, numpy as np
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, family_of
from arrcoc_lab.training.step import TrainStep, set_trainable
from arrcoc_lab.data.features import target_cells
weights, fam, steps, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
variant = sys.argv[5] if len(sys.argv) > 5 else ""
torch.manual_seed(0)
pipe = load_pipeline("lab", weights=weights); m = pipe.model; g = m.geometry
if "noclip" in variant:  # CLIP stage as identity on the compressor tokens
    from arrcoc_lab.modeling.clip_tokens import ClipOutput
    m.clip.forward = lambda ts, cls_attention=False: ClipOutput(tokens=ts.tokens, pooled=ts.tokens[:, 0], cls_attention=None)
if "noq" in variant:
    m.llm.question_proj = None
if "noadapt" in variant:
    from arrcoc_lab.modeling.adapter import AdapterOutput
    m.adapter.forward = lambda tokens, levels, mask: AdapterOutput(tokens=tokens, quality=mask.float(), gate=torch.tensor(0.0))
if "clipnoln" in variant:  # CLIP without its layer norms: at the zero-residual init it is x + positions
    m.clip.visual.ln_pre = torch.nn.Identity(); m.clip.visual.ln_post = torch.nn.Identity()
if "qzero" in variant:  # the question states start at zero (the projection's last layer zero-initialised)
    torch.nn.init.zeros_(m.llm.question_proj[1].weight); torch.nn.init.zeros_(m.llm.question_proj[1].bias)
if "gateclosed" in variant:  # the adapter starts as the identity (sigmoid(-4) = 0.018 of the normalised branch)
    m.adapter.gate_logit.data.fill_(-4.0)
cfg = TrainConfig(data="scenebench:train@2000", batch_size=32, progress=False)
data = load_train_data(m, cfg)
fams = fam.split(",")
idx_all = np.array([i for i, q in enumerate(data.questions) if family_of(q) in fams])
print(len(idx_all), "samples of", fams, flush=True)
ph = get_phase("uniform_ft", steps=steps, rephrase=0.0, lr=1e-3)
params = set_trainable(m, ph); m.train()
if "clipfrozen" in variant:  # CLIP kept at its init, not trained
    m.clip.requires_grad_(False); params = [p for p in params if p.requires_grad]
st = TrainStep(m, ph)
if "qfrozen" in variant and m.llm.question_proj is not None:  # question projection kept at its init
    m.llm.question_proj.requires_grad_(False); params = [p for p in params if p.requires_grad]
slow = set()
if "lrlow" in variant:  # CLIP, the adapter and the question projection at 1/10 of the learning rate
    for mod in (m.clip, m.adapter, m.llm.question_proj):
        if mod is not None:
            slow |= {id(p) for p in mod.parameters()}
if "adaptlow" in variant:  # the adapter alone at 1/10 of the learning rate
    slow |= {id(p) for p in m.adapter.parameters()}
groups = [{"params": [p for p in params if id(p) not in slow], "lr": 1e-3},
          {"params": [p for p in params if id(p) in slow], "lr": 1e-4}]
opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)
import math
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
from arrcoc_lab.policies import get_policy
from arrcoc_lab.evaluation.metrics import exact_match
def exact(ix):
    m.eval(); b = batch(ix)
    with torch.no_grad():
        out = m(b["pixels"], b["questions"], policy=get_policy("uniform"), budget=[64] * len(ix), features=b["features"],
                generate=True, seeds=list(range(len(ix))))
    m.train()
    return sum(exact_match(a, data.answers[i]) for a, i in zip(out.answers, ix)) / len(ix)
rng = np.random.default_rng(0)
held = idx_all[-256:]; train = idx_all[:-256]
def batch(ix, perm=None):
    rows = data.scenes.rows([data.scene_index[i] for i in ix])
    if perm is not None: rows = rows[perm]
    return {"features": data.scenes.features[rows].float(), "pixels": data.scenes.pixels[rows].float(),
            "questions": [data.questions[i] for i in ix], "answers": [data.answers[i] for i in ix],
            "detail": torch.tensor([data.difficulty[i] == "detail" for i in ix]), "families": [fam] * len(ix),
            "tiers": torch.zeros(len(ix), dtype=torch.long), "target_cells": target_cells([data.boxes[i] for i in ix], g, data.image_hw),
            "noise_seeds": list(range(len(ix)))}
import arrcoc_lab.training.step as S
g.uniform_budget  # noqa
def evalh():
    m.eval(); out = {}
    with torch.no_grad():
        for name, perm in (("true", None), ("shuf", torch.roll(torch.arange(64), 1))):
            out[name] = round(float(st(batch(held[:64], perm))["answer"]), 3)
    m.train(); return out
print("before", evalh(), flush=True)
t = time.time()
for s in range(steps):
    ix = rng.choice(train, 32, replace=False)
    out = st(batch(ix)); out["answer"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 75 == 0:
        print(s + 1, "train", round(float(out["answer"]), 3), "held", evalh(), f"{time.time() - t:.0f}s", flush=True)
    if (s + 1) % 150 == 0:
        print("  exact held", exact(held[:128]), "train", exact(train[:128]), flush=True)
