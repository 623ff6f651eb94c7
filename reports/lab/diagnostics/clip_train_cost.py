"""What training the lab CLIP as well would cost a phase-0 step (phase 0h trains the compressor,
adapter, projector and LLM; CLIP stays at its pass-through start, so only its input gradient is
computed). Phase 0h's two kinds of samples on both threads, fp32, each way twice: 6 full views
(every cell at the top level, 1,024 tokens) and 16 level-2 reading views (random lab weights;
reads the feature cache). The CLIP's transformer attends over the visual tokens both ways, which
the causal LLM does not: a cheap place for the aggregation a gist question needs at 1,024 tokens.
usage: python reports/lab/diagnostics/clip_train_cost.py > clip_train_cost.log"""
import time, torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import load_train_data, make_batch
from arrcoc_lab.training.step import TrainStep, set_trainable
print("threads", torch.get_num_threads(), flush=True)
m = load_pipeline("lab", weights="random").model
kinds = {"full x6": (6, dict(full_share=1.0)), "level2 x16": (16, dict(full_share=0.0, reading_top_share=0.0))}
base = get_phase("phase0h").trainable
for name, (n, changes) in kinds.items():
    cfg = TrainConfig(data="scenebench:train@300", batch_size=n, progress=False)
    data = load_train_data(m, cfg)
    for trainable in (base, base + ("clip",), base, base + ("clip",)):
        ph = get_phase("phase0h", reading_steps=1.0, micro_batches=1, trainable=trainable, **changes)
        set_trainable(m, ph); m.train(); st = TrainStep(m, ph)
        b = make_batch(data, m, ph, 10, cfg, 0, 1, "cpu")
        def run():
            out = st(b)
            out["answer"].backward()
            m.zero_grad(set_to_none=True)
        run()
        t = time.perf_counter(); run(); run()
        print(name, "clip trained" if "clip" in trainable else "clip frozen", "s/step",
              round((time.perf_counter() - t) / 2, 3), flush=True)
