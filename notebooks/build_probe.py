"""Writes notebooks/21_stage_probe.ipynb: where along the pipeline a visual property stops being
readable (arrcoc_lab/evaluation/probe.py). Run `python notebooks/build_probe.py` after changing it; the
notebook is committed.

    arrcoc-lab run-phase probe          # reports/lab/probe/
"""
from pathlib import Path

from build_notebooks import write_notebook

PARAMS = """# parameters
preset = "lab"
weights = None            # None means the shipped lab weights
n_scenes = 3000           # SceneBench train scenes (one landmark label each); 80 % fit the probe, 20 % test it
level = None              # LOD level of every cell (None: the uniform-16x level)
epochs = 20               # probe training epochs
text = True               # also probe sign text: first digit of number signs, at full resolution, around the sign
scaling_samples = [500, 1000, 2000]  # text probe fitted on this many number-sign questions (pixels, patch grid, SAM)
reading_steps = 1500      # reading probe: steps of the region reader trained on each window (0 skips it)
output_dir = "reports/lab/probe"
cache_dir = "cache"
"""

SETUP = """import json, warnings
from dataclasses import asdict, replace
from pathlib import Path
import matplotlib.pyplot as plt
from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.probe import probe_stages, probe_text
from arrcoc_lab.evaluation.reading_probe import probe_reading
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.sampling import load_train_data
from arrcoc_lab.checkpoint import atomic_write_text
warnings.filterwarnings("ignore", category=UserWarning)
out = Path(output_dir); out.mkdir(parents=True, exist_ok=True)
pipe = load_pipeline(preset, weights=weights)
data = load_train_data(pipe.model, TrainConfig(n_scenes=n_scenes, cache_dir=cache_dir, progress=False))
print(f"preset {preset}, weights {pipe.config.weights}, {len(data.scenes.scene_ids)} scenes")"""

RUN = """results = probe_stages(pipe.model, data, level=level, epochs=epochs)
for r in results:
    print(f"{r.stage:>10}: landmark kind {100 * r.test_accuracy:5.1f} %  (majority {100 * r.chance:.1f} %, grid {r.grid})")"""

PLOT = """fig, ax = plt.subplots(figsize=(5, 3))
ax.bar([r.stage for r in results], [r.test_accuracy for r in results], color="tab:blue")
ax.axhline(results[0].chance, color="k", ls="--", lw=0.8, label="majority class")
ax.set_ylim(0, 1); ax.set_ylabel("held-out accuracy"); ax.set_title("landmark kind, conv probe per stage"); ax.legend()
fig.tight_layout(); fig.savefig(out / "stage_probe.png", dpi=100); plt.show()"""

TEXT = """text_results = probe_text(pipe.model, data, epochs=epochs, heads=("max", "cnn"), pixels=True) if text else []
for r in text_results:
    print(f"{r.head:>4} {r.stage:>10}: first digit {100 * r.test_accuracy:5.1f} %  (majority {100 * r.chance:.1f} %, input {r.grid})")
if text_results:
    fig, ax = plt.subplots(figsize=(6, 3))
    stages = list(dict.fromkeys(r.stage for r in text_results))
    for k, (head, colour) in enumerate((("max", "tab:orange"), ("cnn", "tab:red"))):
        acc = {r.stage: r.test_accuracy for r in text_results if r.head == head}
        ax.bar([i + 0.4 * k - 0.2 for i in range(len(stages))], [acc[s] for s in stages], 0.4, color=colour,
               label=f"{head} probe")
    ax.set_xticks(range(len(stages)), stages)
    ax.axhline(text_results[0].chance, color="k", ls="--", lw=0.8, label="majority class")
    ax.set_ylim(0, 1); ax.set_ylabel("held-out accuracy"); ax.set_title("number sign, first digit (full resolution)")
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(out / "text_probe.png", dpi=100); plt.show()"""

SCALING = """scaling = {}
if text:
    for n in scaling_samples:
        for r in probe_text(pipe.model, data, epochs=epochs, heads=("cnn",), pixels=True, stages=("sam",), max_samples=n):
            scaling.setdefault(r.stage, {})[n] = r.test_accuracy
    fig, ax = plt.subplots(figsize=(5, 3))
    for stage, acc in scaling.items():
        ax.plot(list(acc), list(acc.values()), "o-", label=stage)
        print(f"{stage:>10}: " + "  ".join(f"{n} samples {100 * a:5.1f} %" for n, a in acc.items()))
    ax.axhline(text_results[0].chance, color="k", ls="--", lw=0.8, label="majority class")
    ax.set_xscale("log"); ax.set_xlabel("number-sign questions (80 % fit the probe)"); ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1); ax.set_title("first digit, CNN probe"); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(out / "text_scaling.png", dpi=100); plt.show()"""

READING = """reading = []
if reading_steps:
    reading = probe_reading(pipe.model, data, stages=("sam",), steps=reading_steps)
    half = (reading[-1].n_train + reading[-1].n_heldout) // 2
    reading += [replace(r, stage="sam_half") for r in
                probe_reading(pipe.model, data, stages=("sam",), reference=False, steps=reading_steps, max_samples=half)]
    names = ["patch grid (lossless)", "SAM features", "SAM features, half the signs"]
    for name, r in zip(names, reading):
        print(f"{name:>30}: {100 * r.heldout_exact:5.1f} % of {r.n_heldout} held-out signs read exactly "
              f"(training signs {100 * r.train_exact:5.1f} %, {r.n_train} of them; held-out bytes {100 * r.heldout_byte_accuracy:.1f} %)")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([i - 0.2 for i in range(len(reading))], [r.train_exact for r in reading], 0.4, color="tab:gray", label="training signs")
    ax.bar([i + 0.2 for i in range(len(reading))], [r.heldout_exact for r in reading], 0.4, color="tab:red", label="held-out signs")
    ax.set_xticks(range(len(reading)), [f"{n}\\n({r.n_train} signs)" for n, r in zip(names, reading)], fontsize=7)
    ax.set_ylim(0, 1); ax.set_ylabel("signs read exactly"); ax.set_title("region reader, whole sign text, full resolution")
    ax.legend(fontsize=7); fig.tight_layout(); fig.savefig(out / "reading_probe.png", dpi=100); plt.show()"""

SAVE = """atomic_write_text(out / "metrics.json", json.dumps({"weights": pipe.config.weights, "n_scenes": n_scenes,
    "level": level if level is not None else pipe.geometry.uniform_level, "epochs": epochs,
    "results": [asdict(r) for r in results],
    "text_level": len(pipe.geometry.levels) - 1, "text_results": [asdict(r) for r in text_results],
    "text_scaling": {k: {str(n): a for n, a in v.items()} for k, v in scaling.items()},
    "reading_steps": reading_steps, "reading_results": [asdict(r) for r in reading]}, indent=2))
atomic_write_text(out / "config.json", json.dumps(pipe.config.to_dict(), indent=2))
print("report written to", out)"""


def build() -> Path:
    return write_notebook("21_stage_probe.ipynb",
                          "# Stage probe — where does the picture get lost?\n\n"
                          "The same small conv probe (3×3 conv, ReLU, global max, linear) learns SceneBench's landmark kind "
                          "from each stage's output: SAM features, then the compressor's, CLIP's, the adapter's and the "
                          "projector's tokens at one LOD level, laid back on their grid. A stage whose probe drops to the "
                          "majority line has lost the shape, whatever comes after it.",
                          PARAMS, [
                              SETUP,
                              ("md", "## Probe every stage"), RUN,
                              ("md", "## Accuracy per stage"), PLOT,
                              ("md", "## Sign text\n\nThe first digit of number signs, from a 96-px window around "
                                     "the sign (its location given, as a reading head attending to the right tokens "
                                     "would have it), every cell at the top level — the most any policy can give a "
                                     "sign. Two probes: the where-invariant max probe above and a position-aware "
                                     "CNN (which digit comes *first* is a question of position). Two references come "
                                     "first: the image window itself (pixels, cut to the pixel) and the same pixels "
                                     "laid on SAM's patch grid (patch_grid: each 8×8 patch's 192 values as channels, "
                                     "cut to the patch as SAM's window is). The patch grid loses nothing, so it is "
                                     "what a perfect encoder could hand on; a stage scoring like it has lost nothing "
                                     "this probe can use."), TEXT,
                              ("md", "## Sign text against training samples\n\nThe same CNN probe on the pixel window, "
                                     "the patch grid and SAM's features, fitted on more and more of the number-sign "
                                     "questions (80 % train, 20 % held out): how much data reading from a patch "
                                     "grid takes."), SCALING,
                              ("md", "## Reading whole signs\n\nA region reader (the phase-0 auxiliary's design: byte "
                                     "slots cross-attending to tokens) is trained from scratch on the window around each "
                                     "fine-detail question's sign — formulas, codes and numbers — and must spell its "
                                     "text; the score is the share of held-out signs read exactly. On the lossless "
                                     "patch grid it shows what a learned reader can do with this much data; on SAM's "
                                     "features, what the frozen encoder leaves; with half the signs, how reading "
                                     "grows with examples. Training signs read far better than held-out ones mean "
                                     "the reader is short of examples."), READING, SAVE])


if __name__ == "__main__":
    print(build())
