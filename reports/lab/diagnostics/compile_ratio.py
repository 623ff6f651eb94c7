"""torch.compile against eager on this CPU: phase-0e steps (batch 64, its micro-batches, each timed
forward + backward), 2 threads, phase 0d weights, the chain paused (kill -STOP).
usage: python reports/lab/diagnostics/compile_ratio.py eager|llm|both 100,101,102 >> compile_ratio.log"""
import sys, time, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch, split_by_tokens
from arrcoc_lab.training.step import TrainStep, set_trainable
torch.set_num_threads(2)
what = sys.argv[1]  # eager | llm | both
steps = [int(s) for s in sys.argv[2].split(",")]
m = load_pipeline("lab", weights="runs/lab/phase0d/model.safetensors").model
cfg = TrainConfig(data="scenebench:train@600", batch_size=64, progress=False)
data = load_train_data(m, cfg)
if what in ("llm", "both"):
    m.llm.model = torch.compile(m.llm.model, dynamic=True)
if what == "both":
    m.clip.visual.transformer = torch.compile(m.clip.visual.transformer, dynamic=True)
ph = get_phase("phase0e")
params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
for s in steps:
    drawn = ph.at(s)
    b = make_batch(data, m, drawn, s, cfg, 0, 1, "cpu")
    times = []
    for c in split_by_tokens(b, drawn.micro_batches, m.geometry):
        t = time.perf_counter()
        out = st(c); out["answer"].backward()
        times.append((len(c["questions"]), round(time.perf_counter() - t, 2)))
    m.zero_grad(set_to_none=True)
    print(what, s, round(sum(t for _, t in times), 2), times, flush=True)
