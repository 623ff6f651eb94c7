"""Writes notebooks/22_reading_scaling.ipynb: how well a learned reader spells sign text from a
stage's window as the distinct training signs and the reader's training steps grow
(arrcoc_lab/evaluation/reading_probe.py). Run `python notebooks/build_reading.py` after changing it; the
notebook is committed.

    arrcoc-lab run-phase reading        # reports/lab/reading/
"""
from pathlib import Path

from build_notebooks import write_notebook

PARAMS = """# parameters
preset = "lab"
weights = None            # None means the shipped lab weights (only SAM's features are read: the frozen encoder)
n_scenes = 6000           # SceneBench train scenes (about two fine-detail signs each)
counts = [2550, 5100, 10200]  # distinct training signs of each reader (the first n signs)
heldout = 1800            # the last signs: the same held-out set for every reader
steps = 6000              # reader training steps (batch 64, cosine schedule)
eval_every = 500          # held-out exact match every N steps (the learning curve)
stages = ["sam"]          # windows read: pipeline stages and/or "patch_grid" (the lossless pixel reference)
strides = [1]             # tokens per window: 1 gives one per SAM patch; s > 1 a learned s×s stride-s convolution, as the compressor head of that LOD (lab: 2 is level 2, 4 is level 1)
reader = "region"         # region (the phase-0 auxiliary's byte-slot reader) | llm (a fresh LLM of the preset's own config, asked each sign's question)
output_dir = "reports/lab/reading"
cache_dir = "cache"
"""

SETUP = """import json, warnings
from dataclasses import asdict
from pathlib import Path
import matplotlib.pyplot as plt
from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.reading_probe import reading_samples, reading_scaling
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.sampling import load_train_data
from arrcoc_lab.checkpoint import atomic_write_text
warnings.filterwarnings("ignore", category=UserWarning)
out = Path(output_dir); out.mkdir(parents=True, exist_ok=True)
pipe = load_pipeline(preset, weights=weights)
data = load_train_data(pipe.model, TrainConfig(n_scenes=n_scenes, cache_dir=cache_dir, progress=False))
print(f"preset {preset}, weights {pipe.config.weights}, {n_scenes} scenes, {len(reading_samples(data)[2])} fine-detail signs")"""

RUN = """results = []
for stage in stages:
    for stride in strides:
        for r in reading_scaling(pipe.model, data, counts, heldout=heldout, steps=steps, eval_every=eval_every,
                                 stage=stage, reader=reader, stride=stride):
            results.append(r)
            print(f"{reader} reader, {stage:>10}, stride {stride}, {r.n_train:6d} training signs: {100 * r.heldout_exact:5.1f} % of {r.n_heldout} held-out signs "
              f"read exactly (bytes {100 * r.heldout_byte_accuracy:.1f} %; training signs {100 * r.train_exact:5.1f} %)")"""

PLOT = """fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
for r in results:
    steps_, exact = zip(*r.curve) if r.curve else ([r.steps], [r.heldout_exact])
    a.plot(steps_, exact, "o-", ms=3, label=f"{reader}: {r.stage}/{r.stride}, {r.n_train} signs")
a.set_xlabel(f"{reader} reader training steps (batch 64)"); a.set_ylabel("held-out signs read exactly"); a.set_ylim(0, 1)
a.set_title("learning curve"); a.legend(fontsize=7)
for stage in stages:
    for stride in strides:
        rs = [r for r in results if r.stage == stage and r.stride == stride]
        b.plot([r.n_train for r in rs], [r.heldout_exact for r in rs], "o-", label=f"{stage}/{stride}: held-out")
        b.plot([r.n_train for r in rs], [r.train_exact for r in rs], "o--", color="gray", label=f"{stage}/{stride}: training signs")
b.set_xscale("log"); b.set_xlabel("distinct training signs"); b.set_ylabel("read exactly"); b.set_ylim(0, 1.02)
b.set_title(f"after {steps} steps"); b.legend(fontsize=7)
fig.tight_layout(); fig.savefig(out / "reading_scaling.png", dpi=100); plt.show()"""

SAVE = """atomic_write_text(out / "metrics.json", json.dumps({"weights": pipe.config.weights, "n_scenes": n_scenes,
    "counts": counts, "heldout": heldout, "steps": steps, "stages": stages, "strides": strides, "reader": reader,
    "results": [asdict(r) for r in results]}, indent=2))
atomic_write_text(out / "config.json", json.dumps(pipe.config.to_dict(), indent=2))
print("report written to", out)"""


def build() -> Path:
    return write_notebook("22_reading_scaling.ipynb",
                          "# Reading sign text — distinct signs against training steps\n\n"
                          "A fresh reader learns to spell the text of each fine-detail question's sign (formulas, codes, "
                          "numbers) from a 96-px window of a stage's output around it, at full resolution. The "
                          "`region` reader is the phase-0 auxiliary's design (byte slots cross-attending to the "
                          "tokens); the `llm` reader is a fresh causal LM of the preset's own LLM configuration, "
                          "asked each sign's question, as the pipeline's LLM is. Each reader trains on the first "
                          "*n* signs; all are scored on the same held-out signs, every `eval_every` steps. The "
                          "questions: is reading from the frozen lab encoder short of examples or of training, "
                          "and can the LLM itself learn to read?",
                          PARAMS, [SETUP, ("md", "## Train one reader per count"), RUN,
                                   ("md", "## Learning curves and the final scores"), PLOT, SAVE])


if __name__ == "__main__":
    print(build())
