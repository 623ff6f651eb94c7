"""bf16 autocast against fp32 on a CPU with AMX (session 24's: Intel Xeon, amx_bf16 and avx512_bf16
in /proc/cpuinfo; bf16_ratio.py measured 10-15 % on an AMD EPYC with AVX-512 BF16 and no AMX).
Phase 0h's two kinds of samples on both threads, each way twice: 6 full views (every cell at the
top level, 1,024 tokens) and 16 level-2 reading views (random lab weights; reads the feature cache).
usage: python reports/lab/diagnostics/bf16_amx.py > bf16_amx.log"""
import time, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, set_trainable
print("threads", torch.get_num_threads(), "capability", torch.backends.cpu.get_cpu_capability(), flush=True)
m = load_pipeline("lab", weights="random").model
kinds = {"full x6": (6, dict(full_share=1.0)), "level2 x16": (16, dict(full_share=0.0, reading_top_share=0.0))}
for name, (n, changes) in kinds.items():
    cfg = TrainConfig(data="scenebench:train@300", batch_size=n, progress=False)
    data = load_train_data(m, cfg)
    ph = get_phase("phase0h", reading_steps=1.0, micro_batches=1, **changes)
    params = set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
    b = make_batch(data, m, ph, 10, cfg, 0, 1, "cpu")
    for dt in (None, torch.bfloat16, None, torch.bfloat16):
        def run():
            with torch.autocast("cpu", dtype=dt or torch.float32, enabled=dt is not None):
                out = st(b)
            out["answer"].backward()
            m.zero_grad(set_to_none=True)
        run()
        t = time.perf_counter(); run(); run()
        print(name, dt, "s/step", round((time.perf_counter() - t) / 2, 3), flush=True)
