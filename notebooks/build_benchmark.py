"""Writes notebooks/40_benchmark.ipynb: the side-by-side benchmark (arrcoc_lab/evaluation/bench.py) as a
papermill-parameterised notebook. Run `python notebooks/build_benchmark.py` after changing it; the
notebook is committed.

    papermill notebooks/40_benchmark.ipynb reports/bench/lab/40_benchmark.ipynb -p weights <model.safetensors>
"""
from pathlib import Path

from build_notebooks import write_notebook

PARAMS = """# parameters
preset = "lab"
weights = None           # our safetensors weights (None: the preset's default, the shipped lab weights)
n_scenes = 5             # scenes per split (6 questions each): small for CPU
data = ["scenebench:test", "docsynth:test"]
budgets = [64, 100, 144, 256, 400]   # paper-geometry budgets, scaled to the preset by n_cells / 64; full is added
policies = None          # a list of policy names (None: every registered policy)
paper_flops = True       # count FLOPs per stage at the paper geometry (meta device, ~20 s on CPU)
max_new_tokens = None    # answer length cap (None: the preset's)
batch_size = 8
device = "cpu"           # cpu | cuda
output_dir = "reports/bench/lab"     # metrics.json, report.md, rows.jsonl, figures
cache_dir = "cache"      # SAM feature cache
own_weights = {"uniform": "runs/lab/uniform_ft/model.safetensors"}  # policy → a downstream trained for it (make train-lab writes this one); missing files are skipped
"""

SETUP = """import json, logging, warnings
from pathlib import Path
from IPython.display import Image, Markdown, display
from arrcoc_lab import load_pipeline
from arrcoc_lab.policies import POLICIES
from arrcoc_lab.evaluation.bench import BenchConfig, run_bench, scaled_budgets

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=UserWarning)
pipe = load_pipeline(preset, weights=weights, device=None if device == "cpu" else device)
own = {p: w for p, w in (own_weights or {}).items() if Path(w).is_file()}
for p in sorted(set(own_weights or {}) - set(own)):
    print(f"no own downstream for {p}: {own_weights[p]} is missing (make train-lab writes it); skipped")
cfg = BenchConfig(data=tuple(data), n_scenes=n_scenes, paper_budgets=tuple(budgets),
                  policies=tuple(policies or sorted(POLICIES)), batch_size=batch_size, paper_flops=paper_flops,
                  max_new_tokens=max_new_tokens, cache_dir=cache_dir, own_weights=own)
print("budgets (paper → preset):", scaled_budgets(pipe.geometry, cfg.paper_budgets), "+ full =", pipe.geometry.max_tokens)
for name in cfg.policies:
    print(f"  {name:12s} {POLICIES[name].cite}")"""

RUN = """report = run_bench(pipe, cfg, output_dir)
out = Path(output_dir)
print("written:", sorted(p.name for p in out.iterdir()))"""

TARGETS = """t = report["targets"]
for name in ("allocation_overhead", "pipeline_ratio"):
    if name in t:
        x = t[name]
        print(f"{x['what']}: {100 * x['value']:.1f} % (target ≤ {100 * x['target']:.0f} %) — "
              f"{'met' if x['met'] else 'missed'}, margin {100 * x['margin']:+.1f} points")
for split, rows in t["accuracy"].items():
    for r in rows:
        margins = {k: round(100 * v, 1) for k, v in r.items() if k.startswith(("detail", "gist"))}
        print(f"{split} @ {r['budget']}: {'met' if r['met'] else 'missed'} {margins}")"""

PLOTS = """for name in ("accuracy_vs_tokens", "accuracy_vs_flops", "latency_vs_tokens", "paper_flops"):
    path = Path(output_dir) / f"{name}.png"
    if path.is_file():
        display(Image(str(path)))"""

TABLE = """text = (Path(output_dir) / "report.md").read_text()
display(Markdown(text.split("## Figures")[0]))  # the figures are shown above"""


def build() -> Path:
    return write_notebook("40_benchmark.ipynb",
                          "# Benchmark — every policy side by side at equal budgets\n\n"
                          "Fixed compression (`uniform`, DeepSeek-OCR's 16×), native resolution (`full`), the seeds' policies "
                          "(`heuristic`, `learned-tier`, `arrcoc`), random pruning and the token-pruning literature (`fastv`, "
                          "`sparsevlm`, `visionzip`, `tome`, `m3`) on the same weights, on SceneBench and DocSynth test splits. "
                          "Accuracy by question family, tokens, FLOPs per stage (counted here and at the paper geometry) and "
                          "latency p50/p95 per stage. See docs/BENCHMARK.md for what each policy reproduces and how to read "
                          "the report.",
                          PARAMS, [
                              SETUP,
                              ("md", "## Run the sweep (cached SAM features; progress bar per point)"), RUN,
                              ("md", "## Targets of issue 5 (reported, not asserted)"), TARGETS,
                              ("md", "## Pareto plots, latency per stage, paper-geometry FLOPs"), PLOTS,
                              ("md", "## The report"), TABLE])


if __name__ == "__main__":
    build()
