"""Why bf16 autocast is slower than fp32 here: one level-2 reading step of 16 samples on one
thread, each way, with torch.profiler's top ops (random lab weights; reads the feature cache).
usage: OMP_NUM_THREADS=1 python reports/lab/diagnostics/profile_bf16.py > profile_bf16.log"""
import time, torch
from torch.profiler import profile, ProfilerActivity
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, set_trainable
torch.set_num_threads(1)
m = load_pipeline("lab", weights="random").model
cfg = TrainConfig(data="scenebench:train@300", batch_size=16, progress=False)
data = load_train_data(m, cfg)
ph = get_phase("phase0", reading_steps=1.0, reading_top_until=0.0, reading_top_share=0.0, detail_share=0.8, micro_batches=1)
params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
b = make_batch(data, m, ph, 2000, cfg, 0, 1, "cpu")
for dt in (None, torch.bfloat16):
    def run():
        with torch.autocast("cpu", dtype=dt or torch.float32, enabled=dt is not None):
            out = st(b)
        out["answer"].backward()
        m.zero_grad(set_to_none=True)
    run()
    t = time.perf_counter(); run(); print(dt, "s", round(time.perf_counter() - t, 2), flush=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14), flush=True)
