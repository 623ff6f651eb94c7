"""bf16 autocast against fp32 on this CPU: one phase-0 reading step of 16 samples (top level, then
level 2) on one thread, each way twice (random lab weights; reads the feature cache).
usage: python reports/lab/diagnostics/bf16_ratio.py > bf16_ratio.log"""
import time, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, set_trainable
torch.set_num_threads(1)
m = load_pipeline("lab", weights="random").model
cfg = TrainConfig(data="scenebench:train@300", batch_size=16, progress=False)
data = load_train_data(m, cfg)
for top in (1.0, 0.0):
    ph = get_phase("phase0", reading_steps=1.0, reading_top_until=0.0, reading_top_share=top, detail_share=0.8, micro_batches=1, segments=())
    params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
    b = make_batch(data, m, ph, 2000, cfg, 0, 1, "cpu")
    for dt in (None, torch.bfloat16, None, torch.bfloat16):
        def run():
            with torch.autocast("cpu", dtype=dt or torch.float32, enabled=dt is not None):
                out = st(b)
            out["answer"].backward()
            m.zero_grad(set_to_none=True)
        run()
        t = time.perf_counter(); run(); run(); print("top" if top else "level2", dt, "s/step", round((time.perf_counter() - t) / 2, 2), flush=True)
