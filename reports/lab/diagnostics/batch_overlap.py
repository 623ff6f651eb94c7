"""Do phase-0 continuations draw new samples or replay their parent's? (session 33)
Every draw of a step is seeded by [seed, step] and every phase restarts at step 0, so a continuation
whose draw weights are its parent's draws the same (step, sample) pairs. From the feature cache's
stored questions (no features loaded): each phase's family counts over its first 200 steps, and the
share of (step, sample) pairs two phases have in common (every 7th step).
usage: python reports/lab/diagnostics/batch_overlap.py > batch_overlap.log   (from the repository root, cache/ built)"""
import collections, glob, json

import numpy as np
from safetensors import safe_open

from arrcoc_lab.data.features import SAMPLE_FIELDS
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.sampling import TrainData, sample_indices

qs, diff = [], []
for prefix, limit in (("scenebench-train", 12000), ("docsynth-train", 2000)):  # the training mix's chunks
    for f in sorted(glob.glob(f"cache/{prefix}-256-*.safetensors")):
        if int(f.rsplit("-", 1)[1].split(".")[0]) > limit:
            continue
        with safe_open(f, "pt") as fh:
            for scene in json.loads(fh.metadata()["scene_fields"]):
                for s in scene:
                    d = dict(zip(SAMPLE_FIELDS, s))
                    qs.append(d["question"]), diff.append(d["difficulty"])
data = TrainData(None, qs, [None] * len(qs), [None] * len(qs), diff, list(range(len(qs))), (256, 256))
cfg = TrainConfig(batch_size=64, seed=0)
print(f"{len(qs)} training questions")
for name in ("phase0n", "phase0o"):
    c = collections.Counter(str(f) for s in range(200) for f in data.family[sample_indices(data, get_phase(name), s, cfg)])
    print(name, "families drawn in 200 steps:", dict(sorted(c.items())))


def shared(a: str, b: str, steps: int) -> float:
    return float(np.mean([len(set(sample_indices(data, get_phase(a), s, cfg)) & set(sample_indices(data, get_phase(b), s, cfg)))
                          / cfg.batch_size for s in range(0, steps, 7)]))


for a, b, steps in (("phase0j", "phase0l", 600), ("phase0l", "phase0m", 1000), ("phase0m", "phase0n", 700),
                    ("phase0n", "phase0o", 700)):
    print(f"(step, sample) pairs shared, {a} vs {b}: {shared(a, b, steps):.4f}")
