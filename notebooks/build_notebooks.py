"""Writes the phase notebooks from one template so they stay identical in structure.
Run `python notebooks/build_notebooks.py` after changing the template; the notebooks are committed
(tests/test_notebooks.py checks that every builder writes them byte for byte)."""
import hashlib
from pathlib import Path

import nbformat as nbf

from arrcoc_lab.training.phases import get_phase

OUT_DIR = Path(__file__).parent  # where write_notebook puts notebooks (a test points it elsewhere)


def write_notebook(filename: str, intro: str, params: str, cells: list) -> Path:
    """An intro markdown cell, the papermill `parameters` cell, then `cells` (markdown headings
    as ("md", text), code as plain strings), written next to this file."""
    tagged = nbf.v4.new_code_cell(params)
    tagged.metadata["tags"] = ["parameters"]
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(intro), tagged] + [
        nbf.v4.new_markdown_cell(c[1]) if isinstance(c, tuple) else nbf.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(nb.cells):  # ids from the position, not random: a rebuild changes only what changed
        cell.id = hashlib.sha1(f"{filename}/{i}".encode()).hexdigest()[:8]
    path = OUT_DIR / filename
    nbf.write(nb, path)
    return path

PHASES = {
    "10_phase0_downstream": ("phase0", "Phase 0 — downstream pre-training",
                             "No pretrained CLIP or LLM can be downloaded here, so the lab downstream (compressor heads, "
                             "CLIP on tokens, quality adapter, projector, LLM) is first trained to answer from "
                             "*randomised* allocations: oracle-targeted, random, uniform, at budgets from gist-only to "
                             "full. The result accepts any allocation, which is also what a fair comparison of "
                             "allocation policies needs (one downstream for all)."),
    "10b_phase0b_downstream": ("phase0b", "Phase 0b — downstream pre-training, continued",
                               "Phase 0 as it ends (the same modules, reading views and gist questions), with a "
                               "warm-up and a cosine learning rate of its own: level 2 and the landmark start late "
                               "in phase 0, when its learning rate is nearly spent (reports/lab/RUN.md)."),
    "10c_phase0c_downstream": ("phase0c", "Phase 0c — downstream pre-training: level 2 and full views",
                               "Phase 0b as it ends, with a few samples of each reading step at the `full` "
                               "policy's view (every cell at the top level) and more fine detail, under a "
                               "learning rate of its own: phase 0b read half of the signs at the top level in "
                               "reading views but almost none in full views (reports/lab/RUN.md, \"Session 18\")."),
    "10d_phase0d_downstream": ("phase0d", "Phase 0d — downstream pre-training: more fine detail",
                               "Phase 0c as it ends, with more of each batch fine-detail questions (the level-2 "
                               "signs that 64 tokens give) and less counting, under a learning rate of its own: "
                               "phase 0c still lowered the fine-detail loss at its end (reports/lab/RUN.md, "
                               "\"Session 20\")."),
    "10e_phase0e_downstream": ("phase0e", "Phase 0e — downstream pre-training, longer",
                               "Phase 0d's batches, longer, under a learning rate of their own: every reading "
                               "check was still rising at phase 0d's end (reports/lab/RUN.md, \"Session 20\")."),
    "10f_phase0f_downstream": ("phase0f", "Phase 0f — downstream pre-training: level 2 first",
                               "Phase 0e's batches with nearly every reading view at level 2 (what 64 tokens give "
                               "a sign) and fewer full views, which cost ~45 % of a step: about 40 level-2 signs a "
                               "step instead of 30, in less time (reports/lab/RUN.md, \"Session 21\")."),
    "10g_phase0g_downstream": ("phase0g", "Phase 0g — downstream pre-training: level 2, longer",
                               "Phase 0f's batches, longer, under a learning rate of their own: phase 0f raised "
                               "level-2 reading of val signs from 43 to 60 % and it was still rising "
                               "(reports/lab/RUN.md, \"Session 22\")."),
    "10h_phase0h_downstream": ("phase0h", "Phase 0h — downstream pre-training: full views and the top level",
                               "Phase 0g's batches with ~6 full views a step (`full_share` 0.1) and 30 % of reading "
                               "steps at the top level: after phase 0g the weights met every bar at 64 tokens but "
                               "`full`'s, whose 1,024-token views were 2 % of the samples (reports/lab/RUN.md, \"Session 23\")."),
    "10i_phase0i_downstream": ("phase0i", "Phase 0i — downstream pre-training: full views by question kind",
                               "Phase 0h's batches with the full views drawn by question kind (~2 detail and ~6 gist "
                               "a step) and the lab CLIP trained as well, at a quarter of the rate: phase 0h read "
                               "signs in 83 % of val full views but landmark and city in 63 % "
                               "(reports/lab/RUN.md, \"Session 25\")."),
    "10j_phase0j_downstream": ("phase0j", "Phase 0j — downstream pre-training: phase 0i's batches in one sitting",
                               "Phase 0i's batches from the shipped weights (phase 0h, then phase 1a, whose analyzer "
                               "it keeps), 600 steps under a gentler peak and with ~3.5 detail full views a step: "
                               "phase 0i reached val `full` gist 92.5 % and detail 83 % in 2,000 steps, but its "
                               "weights were lost with `runs/` before they shipped (reports/lab/RUN.md, \"Session 29\")."),
    "10k_phase0k_downstream": ("phase0k", "Phase 0k — downstream pre-training: phase 0j's batches, longer",
                               "Phase 0j's batches from its weights, 1,400 steps more (phase 0i's 2,000 in all): "
                               "phase 0j lifted SceneBench test's `full` gist from 80.9 to 85.4 % in 600 steps but "
                               "not its detail, and in phase 0i the full view's gist went on rising to its end "
                               "(reports/lab/RUN.md, \"Session 29\")."),
    "10l_phase0l_downstream": ("phase0l", "Phase 0l — downstream pre-training: phase 0j's batches in one sitting, longer",
                               "Phase 0j's batches from the shipped weights, 1,000 steps under a peak of 2 × 10⁻⁴: "
                               "`runs/` was lost between sittings a third time, phase 0k with it, so a phase that is "
                               "to ship trains, is evaluated and ships within one sitting "
                               "(reports/lab/RUN.md, \"Session 30\")."),
    "10m_phase0m_downstream": ("phase0m", "Phase 0m — downstream pre-training: phase 0l's batches, more of the top level",
                               "Phase 0l's batches from its shipped weights, 1,000 steps under a peak of 1.5 × 10⁻⁴, "
                               "with 40 % of reading steps at the top level (30 % before): the full view's detail "
                               "follows how well the top level is read (reports/lab/RUN.md, \"Session 31\")."),
    "10n_phase0n_downstream": ("phase0n", "Phase 0n — downstream pre-training: phase 0m's batches, twice the detail full views",
                               "Phase 0m's batches from its shipped weights, 700 steps under its peak of 1.5 × 10⁻⁴, "
                               "with twice the detail questions at the full view (~7 a step instead of ~3.5): the full "
                               "view's detail is the one bar missed, and it did not follow the top level's reading in "
                               "reading views (reports/lab/RUN.md, \"Session 31\")."),
    "10o_phase0o_downstream": ("phase0o", "Phase 0o — downstream pre-training: phase 0n's batches, code and number first",
                               "Phase 0n's batches from its shipped weights, 700 steps under its peak of 1.5 × 10⁻⁴, "
                               "with the fine-detail draw weighted to the weak families (code 2, number 1.5, formula 1; "
                               "their full views with them): the full view's detail is the one bar missed, and phase 0n "
                               "lifted formula most (reports/lab/RUN.md, \"Session 32\")."),
    "10p_phase0p_downstream": ("phase0p", "Phase 0p — downstream pre-training: phase 0o's draw, new samples",
                               "Phase 0o's draw from its shipped weights, 700 steps under its peak of 1.5 × 10⁻⁴, "
                               "run with seed 1: phases 0j to 0n, all seed 0, replayed one another's (step, sample) "
                               "pairs, and the full view's misreads are look-alike glyphs, which more distinct signs "
                               "should teach apart (reports/lab/RUN.md, \"Session 33\")."),
    "11_phase1a_allocator_pretrain": ("phase1a", "Phase 1-A — allocator pre-training on region labels",
                                      "The relevance analyzer learns which cells hold the question's target region "
                                      "(binary cross-entropy per cell) and the tier classifier learns gist → fast, "
                                      "detail → accurate. Cheap: only the analyzer runs."),
    "12_phase1_allocator_adapter": ("phase1", "Phase 1 — allocator + adapter (CLIP and LLM frozen)",
                                    "Answer cross-entropy + efficiency (penalty above the uniform budget) + level "
                                    "diversity, with levels drawn by straight-through Gumbel-softmax from the learned "
                                    "relevance. Watch the level usage: the seeds warn of collapse to max tokens."),
    "13_phase2_clip_adapter": ("phase2", "Phase 2 — adapt CLIP (and adapter), allocator frozen",
                               "Answer cross-entropy + distribution consistency: projected visual tokens should have "
                               "the statistics of the LLM's own input embeddings. Allocations come from the frozen "
                               "allocator at random budgets."),
    "14_phase3_end_to_end": ("phase3", "Phase 3 — end to end, efficiency kept",
                             "Every trainable stage together at a low learning rate."),
}

PARAMS = """# parameters
preset = "lab"
phase = "{phase}"
steps = {steps}
batch_size = 32
n_scenes = 3000          # training scenes (6 questions each)
data = "scenebench:train"  # training set: one spec, or several joined by + with counts, e.g. scenebench:train@12000+docsynth:train@2000
phase_overrides = {{}}     # PhaseConfig fields to change, e.g. reading_steps 0.5
seed = 0
device = "cpu"           # cpu | cuda
mixed_precision = "no"   # no | bf16
init_from = {init}  # weights of the previous phase (model.safetensors), or random for a fresh init, or None for the shipped/preset default
run_dir = "runs/lab/{phase}"          # checkpoints and scratch (git-ignored)
output_dir = "reports/lab/{phase}"    # report: executed notebook, metrics.json, figures, config
resume = True
eval_scenes = 50         # validation scenes for the end-of-phase check
lr = None                # None means the phase default
cache_dir = "cache"
log_with = "auto"        # experiment tracker: auto (TensorBoard when installed) | none | wandb | ...; events in run_dir/tensorboard/
"""

SETUP = """import json, logging, warnings
from pathlib import Path
from IPython.display import Image, display
from arrcoc_lab import load_pipeline
from arrcoc_lab.training.phases import get_phase
from arrcoc_lab.training.config import TrainConfig
from arrcoc_lab.training.loop import run_phase
from arrcoc_lab.training.sampling import load_train_data
from arrcoc_lab.evaluation.evaluate import load_eval_set, evaluate, summarize
from arrcoc_lab.evaluation.sign_reading import reading_table, sign_reading
from arrcoc_lab.evaluation.viz_report import training_curves_figure
from arrcoc_lab.checkpoint import atomic_write_text

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=UserWarning)
out = Path(output_dir); out.mkdir(parents=True, exist_ok=True)
pipe = load_pipeline(preset, weights=init_from)  # init_from "random": the preset's seeded initialisation
if device != "cpu":
    pipe.model.to(device)
overrides = {"steps": steps} | ({"lr": lr} if lr else {}) | dict(phase_overrides)
ph = get_phase(phase, **overrides)
cfg = TrainConfig(data=data, n_scenes=n_scenes, batch_size=batch_size, seed=seed, device=device,
                  mixed_precision=mixed_precision, cache_dir=cache_dir, log_every=max(1, min(25, steps // 4)),
                  ckpt_every=max(1, min(100, steps // 2)), sample_log_every=max(1, min(50, steps // 2)),
                  log_with=log_with)
print(ph)"""

DATA = """data = load_train_data(pipe.model, cfg)
print(f"{len(data)} training questions on {len(data.scenes.scene_ids)} scenes; SAM features cached in {cache_dir}/")"""

TRAIN = """result = run_phase(pipe.model, data, ph, cfg, run_dir, resume=resume, pipeline_config=pipe.config.to_dict())
print(f"{ph.name}: {result.steps} steps; last log row:")
print(json.dumps(result.history[-1], indent=1))"""

CURVES = """training_curves_figure(result.history, out / "training_curves.png", title=ph.name)
display(Image(str(out / "training_curves.png")))
samples = Path(result.samples)
if samples.is_file():
    lines = samples.read_text().splitlines()[-4:]
    print("last logged allocation decisions:")
    for l in lines:
        r = json.loads(l)
        print(f"  {r['question']!r} → {r['answer']!r} (teacher-forced {r['teacher_forced_prediction']!r}), tokens per cell {r['tokens_per_cell']}")"""

EVAL = """ev = load_eval_set(pipe.model, "scenebench:val", eval_scenes, cache_dir)
budget = pipe.geometry.uniform_budget
summary = {}
for policy in ["arrcoc", "uniform", "random", "full"]:
    rows = evaluate(pipe.model, ev, policy, None if policy == "full" else budget)
    s = summarize(rows, pipe.geometry)
    summary[policy] = {k: s[k] for k in ("accuracy", "accuracy_gist", "accuracy_detail", "avg_tokens",
                                         "target_lift_detail", "query_dependence", "accuracy_by_family")}
for p, s in summary.items():
    print(f"{p:8s} acc {s['accuracy']:.3f}  gist {s['accuracy_gist']:.3f}  detail {s['accuracy_detail']:.3f}  "
          f"tokens {s['avg_tokens']:.1f}  lift {s['target_lift_detail']:.2f}  qdep {s['query_dependence'].get('rate', float('nan')):.2f}")"""

READ = """signs = sign_reading(pipe.model, ev, progress=False)  # each sign's cells at a level, the rest at the minimum
print(reading_table(signs))"""

SAVE = """metrics = {"phase": ph.name, "steps": result.steps, "final_losses": result.history[-1],
           "val": summary, "budget": budget, "weights": result.weights,
           "sign_reading": [r.to_dict() for r in signs]}
atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
atomic_write_text(out / "config.json", json.dumps({"pipeline": pipe.config.to_dict(), "train": cfg.__dict__,
                                                   "phase": ph.__dict__}, indent=2, default=str))
atomic_write_text(out / "history.json", json.dumps(result.history, indent=1))
print("report written to", out)"""


def build(name, phase, title, text):
    steps = get_phase(phase).steps  # the step count lives in phases.py only
    init = '"random"' if phase == "phase0" else "None"  # phase 0 starts the chain from scratch
    write_notebook(f"{name}.ipynb", f"# {title}\n\n{text}\n\nRun it with papermill: "
                                    f"`arrcoc-lab run-phase {phase} -p steps {steps} -p init_from <previous weights>`.",
                   PARAMS.format(phase=phase, steps=steps, init=init), [
                       SETUP,
                       ("md", "## Data: the training scenes, SAM features computed once and cached"), DATA,
                       ("md", "## Train"), TRAIN,
                       ("md", "## Losses, level usage, average tokens; sampled allocation decisions"), CURVES,
                       ("md", "## Validation at the uniform-16× budget"), EVAL,
                       ("md", "## Can the downstream read? Each sign's cells at one level, every other cell at the "
                              "minimum, no allocator"), READ, SAVE])


EVAL_PARAMS = """# parameters
preset = "lab"
weights = None            # None means the shipped lab weights
data = "scenebench:test"
n_scenes = 300
docs = "docsynth:test"    # second benchmark, or None to skip
doc_scenes = 100
heldout = True            # also evaluate with phrasings never used in training
output_dir = "reports/lab/evaluation"
cache_dir = "cache"
train_reports = "reports/lab"   # phase reports, for the training-time collapse check
"""

EVAL_SETUP = """import json, warnings
from pathlib import Path
import numpy as np
from IPython.display import Image, display
from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.evaluate import load_eval_set, evaluate, summarize
from arrcoc_lab.evaluation.viz_report import accuracy_by_bucket_figure, allocation_examples_figure
from arrcoc_lab.checkpoint import atomic_write_text
warnings.filterwarnings("ignore", category=UserWarning)
out = Path(output_dir); out.mkdir(parents=True, exist_ok=True)
pipe = load_pipeline(preset, weights=weights)
g = pipe.geometry
budget, accurate = g.uniform_budget, g.budget_for_mode("accurate")
print(f"preset {preset}, weights {pipe.config.weights}, uniform-16x budget {budget} tokens, accurate {accurate}")
ev = load_eval_set(pipe.model, data, n_scenes, cache_dir)

def run(es, policies):
    rows, summary = {}, {}
    for name, (p, b) in policies.items():
        rows[name] = evaluate(pipe.model, es, p, b)
        summary[name] = s = summarize(rows[name], g)
        print(f"{name:>16}: acc {s['accuracy']:.3f} | gist {s['accuracy_gist']:.3f} | detail {s['accuracy_detail']:.3f} | "
              f"tokens {s['avg_tokens']:.1f} (gist {s['avg_tokens_gist']:.1f}, detail {s['avg_tokens_detail']:.1f}) | "
              f"lift {s['target_lift_detail']:.2f} | qdep {s['query_dependence'].get('rate', float('nan')):.2f}")
    return rows, summary"""

EVAL_RUN = """policies = {"arrcoc": ("arrcoc", budget), "uniform": ("uniform", budget), "random": ("random", budget),
            "full": ("full", None), "heuristic": ("heuristic", None), "learned-tier": ("learned-tier", None),
            "arrcoc@accurate": ("arrcoc", accurate)}
rows, summary = run(ev, policies)"""

EVAL_MORE = """held = doc = None
if heldout:
    print("held-out phrasings (vocabulary never used in training):")
    _, held = run(load_eval_set(pipe.model, data, n_scenes, cache_dir, phrasing="heldout"),
                  {k: policies[k] for k in ("arrcoc", "uniform")})
if docs:
    print(docs + ":")
    dev = load_eval_set(pipe.model, docs, doc_scenes, cache_dir)
    _, doc = run(dev, {"arrcoc": ("arrcoc", budget), "uniform": ("uniform", budget), "full": ("full", None)})"""

EVAL_BARS = """a, u, r, f, lt, acc = (summary[k] for k in ("arrcoc", "uniform", "random", "full", "learned-tier", "arrcoc@accurate"))
pts = lambda x: 100 * x
phase_avg = {}
for ph in ("phase1", "phase3"):
    h = Path(train_reports) / ph / "history.json"
    if h.is_file():
        hist = json.loads(h.read_text())
        phase_avg[ph] = float(np.mean([row["avg_tokens"] for row in hist[-max(1, len(hist) // 4):]]))
bars = {  # issue 15 (SceneBench test at the uniform-16x budget unless named)
    "full: detail >= 85%": (f["accuracy_detail"], f["accuracy_detail"] >= 0.85),
    "full: gist >= 90%": (f["accuracy_gist"], f["accuracy_gist"] >= 0.90),
    "arrcoc: detail >= 50%": (a["accuracy_detail"], a["accuracy_detail"] >= 0.50),
    "detail: arrcoc >= uniform + 30 pts": (pts(a["accuracy_detail"] - u["accuracy_detail"]), a["accuracy_detail"] >= u["accuracy_detail"] + 0.30),
    "detail: arrcoc >= random + 30 pts": (pts(a["accuracy_detail"] - r["accuracy_detail"]), a["accuracy_detail"] >= r["accuracy_detail"] + 0.30),
    "detail: arrcoc at accurate within 15 pts of full": (pts(acc["accuracy_detail"] - f["accuracy_detail"]), acc["accuracy_detail"] >= f["accuracy_detail"] - 0.15),
    "arrcoc: gist >= 85%": (a["accuracy_gist"], a["accuracy_gist"] >= 0.85),
    "target_lift_detail >= 3": (a["target_lift_detail"], a["target_lift_detail"] >= 3),
    "query_dependence_rate >= 0.90": (a["query_dependence"]["rate"], a["query_dependence"]["rate"] >= 0.90),
    "avg tokens within 10% of the budget (inference)": (a["avg_tokens"] / budget, abs(a["avg_tokens"] / budget - 1) <= 0.10),
    "learned-tier: gist gets fewer tokens than detail": ((lt["avg_tokens_gist"], lt["avg_tokens_detail"]), lt["avg_tokens_gist"] < lt["avg_tokens_detail"]),
}
if held:
    h = held["arrcoc"]
    bars["held-out phrasings: accuracy within 10 pts of seen"] = (pts(h["accuracy"] - a["accuracy"]), h["accuracy"] >= a["accuracy"] - 0.10)
    bars["held-out phrasings: detail target lift >= 3"] = (h["target_lift_detail"], h["target_lift_detail"] >= 3)
    bars["held-out phrasings: query dependence >= 80%"] = (h["query_dependence"].get("rate", 0.0), h["query_dependence"].get("rate", 0.0) >= 0.80)
if doc:
    bars["docsynth: arrcoc gist >= 70%"] = (doc["arrcoc"]["accuracy_gist"], doc["arrcoc"]["accuracy_gist"] >= 0.70)
    bars["docsynth detail: arrcoc >= uniform + 15 pts"] = (pts(doc["arrcoc"]["accuracy_detail"] - doc["uniform"]["accuracy_detail"]),
                                                            doc["arrcoc"]["accuracy_detail"] >= doc["uniform"]["accuracy_detail"] + 0.15)
for ph, v in phase_avg.items():
    bars[f"no collapse in {ph} (Gumbel training): avg tokens within 10% of {budget}"] = (v, abs(v / budget - 1) <= 0.10)
for k, (v, ok) in bars.items():
    print(f"{'MET ' if ok else 'MISS'}  {k}: {v}")"""

EVAL_FIGS = """report = {"data": data, "policies": summary}
accuracy_by_bucket_figure(report, out / "accuracy_by_tokens.png")
allocation_examples_figure(ev, {k: rows[k] for k in ("arrcoc", "uniform", "random", "full")}, g, out / "allocation_examples.png")
display(Image(str(out / "allocation_examples.png")))
display(Image(str(out / "accuracy_by_tokens.png")))"""

EVAL_SAVE = """atomic_write_text(out / "metrics.json", json.dumps({"data": data, "n_scenes": n_scenes, "budget": budget,
    "weights": pipe.config.weights, "policies": summary, "heldout": held, "docsynth": doc,
    "bars": {k: {"value": v, "met": bool(ok)} for k, (v, ok) in bars.items()}}, indent=2, default=float))
atomic_write_text(out / "config.json", json.dumps(pipe.config.to_dict(), indent=2))
print("report written to", out)"""


def build_evaluation():
    write_notebook("20_lab_evaluation.ipynb",
                   "# Lab weights — evaluation against the training issue's bars\n\n"
                   "SceneBench test split at the uniform-16× budget: every policy on the same weights, "
                   "then each bar checked and reported as met or missed with its value.",
                   EVAL_PARAMS, [
                       EVAL_SETUP,
                       ("md", "## Every policy at the same budget"), EVAL_RUN,
                       ("md", "## Held-out phrasings and DocSynth"), EVAL_MORE,
                       ("md", "## The bars"), EVAL_BARS,
                       ("md", "## Allocation examples (two detail questions per scene) and accuracy by token bucket"),
                       EVAL_FIGS, EVAL_SAVE])


if __name__ == "__main__":
    import sys

    wanted = sys.argv[1:]  # notebook names to write (default: all of them)
    for name, args in PHASES.items():
        if not wanted or name in wanted:
            build(name, *args)
    if not wanted or "20_lab_evaluation" in wanted:
        build_evaluation()
