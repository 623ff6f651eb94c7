"""Focused check (session 15): from a phase-0 checkpoint, how fast does the downstream learn to read
level-2 reading views (the sign's cells at level 2, 16 tokens a cell; every other cell at the minimum)?

usage: level2_reading.py CKPT STEPS LR [JITTER]
Batch 32 of fine-detail samples from 3,000 training scenes, every step a level-2 reading view,
constant LR after 20 warm-up steps, question states withheld (as phase 0 trained until step 3,400).
JITTER as `PhaseConfig.reading_jitter` (0: every sign rolled to the reading spot; 1: where its
scene has it). Printed every 50 steps: the training answer loss and, on a fixed batch of 32
training signs, the answer loss with each sign's own scene / another scene's (the gap is the use).
"""
import math, sys, time, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, param_groups, set_trainable
ck, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
jitter = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
torch.manual_seed(0)
m = load_pipeline("lab", weights=ck).model
cfg = TrainConfig(data="scenebench:train@3000", batch_size=32, progress=False)
data = load_train_data(m, cfg)
ph = get_phase("phase0", steps=steps, lr=lr, detail_share=1.0, reading_steps=1.0, reading_top_until=0.0, reading_top_share=0.0,
               reading_level=2, full_steps=0.0, rephrase=0.0, question_dropout=0.0, micro_batches=1, segments=(), reading_jitter=jitter)
params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
opt = torch.optim.AdamW(param_groups(m, params, ph), weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
probe = make_batch(data, m, ph, 10**6, cfg, 0, 1, "cpu")
def own_other():
    m.eval(); res = []
    with torch.no_grad():
        for perm in (None, torch.roll(torch.arange(32), 1)):
            b = dict(probe)
            if perm is not None: b = {**b, "features": b["features"][perm], "pixels": b["pixels"][perm]}
            res.append(round(float(st(b)["answer"]), 3))
    m.train(); return tuple(res)
print("before", own_other(), flush=True); t = time.time()
for s in range(steps):
    out = st(make_batch(data, m, ph, s, cfg, 0, 1, "cpu")); out["answer"].backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); sched.step(); opt.zero_grad()
    if (s + 1) % 50 == 0:
        print(s + 1, "train", round(float(out["answer"].detach()), 3), "own/other", own_other(), f"{time.time() - t:.0f}s", flush=True)
