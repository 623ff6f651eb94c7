"""The benchmark's report (bench.py): markdown tables and figures from the metrics dict.

Figures (matplotlib, files only): accuracy vs visual tokens and accuracy vs FLOPs per split with
the Pareto frontier, latency p50 vs tokens per stage, and FLOPs per stage at the paper geometry.
Works on the dict run_bench returns and on metrics.json read back (string keys are accepted).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..modeling.trace import STAGES
from .paper_flops import SEED_ESTIMATES
from .viz_report import _plt

LATENCY_STAGES = STAGES[1:]  # SAM is timed apart (its features are cached)




def _ints(d: dict) -> dict:
    return {int(k): v for k, v in d.items()}


def _g(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x / 1e9:,.1f}"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ms(d: dict | None) -> str:
    return f"{1000 * d['p50']:.1f} / {1000 * d['p95']:.1f}" if d else "–"


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another (less or equal cost, higher or equal accuracy), by cost."""
    front, best = [], -math.inf
    for x, y in sorted(p for p in points if not math.isnan(p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _colours(policies):
    plt = _plt()
    cmap = plt.get_cmap("tab20")
    return {p: cmap(i % 20) for i, p in enumerate(policies)}


def _policy_lines(ax, pts, xkey, colours, log=False):
    for policy in colours:
        mine = sorted((p for p in pts if p["policy"] == policy), key=lambda p: p[xkey])
        if not mine:
            continue
        style = dict(marker="*", markersize=11) if policy == "full" else dict(marker="o", markersize=4)
        lw = 2.2 if policy == "arrcoc" else 1.0
        ax.plot([p[xkey] for p in mine], [p["accuracy"] for p in mine], color=colours[policy], lw=lw, label=policy, **style)
    front = pareto([(p[xkey], p["accuracy"]) for p in pts])
    if front:
        ax.plot(*zip(*front), "k--", lw=0.8, label="Pareto frontier")
    if log:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("exact match")


def write_figures(report: dict, out_dir: str | Path) -> list[Path]:
    plt = _plt()
    out_dir = Path(out_dir)
    colours = _colours(list(report["policies"]) + [f"{p}/own" for p in report.get("own_weights", {})])
    paths = []
    for name, xkey, xlabel, log in (("accuracy_vs_tokens", "tokens", "visual tokens to the LLM", True),
                                    ("accuracy_vs_flops", "gflops", f"GFLOPs per question ({report['preset']}, counted)", True)):
        splits = list(report["results"])
        fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), squeeze=False)
        for ax, split in zip(axes[0], splits):
            _policy_lines(ax, report["results"][split], xkey, colours, log)
            ax.set_title(split)
            ax.set_xlabel(xlabel)
        axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    split = next(iter(report["results"]))
    pts = report["results"][split]
    fig, axes = plt.subplots(3, 3, figsize=(12, 9), sharex=True)
    for ax, stage in zip(axes.flat, LATENCY_STAGES + ("total",)):
        for policy in colours:
            mine = sorted((p for p in pts if p["policy"] == policy), key=lambda p: p["tokens"])
            lat = [(p["latency_total"] if stage == "total" else p["latency"].get(stage)) for p in mine]
            xy = [(p["tokens"], 1000 * d["p50"]) for p, d in zip(mine, lat) if d]
            if xy:
                ax.plot(*zip(*xy), marker="o", markersize=3, color=colours[policy], label=policy)
        ax.set_title(f"{stage} (p50, ms per question)", fontsize=9)
        ax.set_xscale("log")
    axes[-1, 1].set_xlabel("visual tokens to the LLM")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle(f"latency vs tokens — {split} ({report['device']})", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "latency_vs_tokens.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if "paper_flops" in report:
        paths.append(_paper_flops_figure(report, out_dir / "paper_flops.png"))
    return paths


def _paper_flops_figure(report: dict, path: Path) -> Path:
    plt = _plt()
    split = next(iter(report["results"]))
    pts = [p for p in report["results"][split] if p.get("paper_budget") in (256, None)]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bottom = [0.0] * len(pts)
    cmap = plt.get_cmap("tab10")
    for i, stage in enumerate(STAGES):
        vals = [p["paper_flops"][stage] / 1e12 for p in pts]
        ax.bar(range(len(pts)), vals, bottom=bottom, color=cmap(i % 10), label=stage)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(pts)), [f"{p['policy']}\n{p['paper_budget'] or 'full'}" for p in pts], fontsize=7)
    ax.set_ylabel("TFLOPs per question")
    ax.set_title("paper geometry: FLOPs per stage at 256 tokens (full: 4096)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_markdown(report: dict) -> str:
    budgets = {int(k): v for k, v in report["budgets"].items()}
    cfg = report["config"]
    lines = [f"# ARR-COC benchmark — preset `{report['preset']}`", "",
             f"Weights: `{report['weights']}` · splits: {', '.join(report['results'])} · {cfg['n_scenes']} scenes "
             f"each · budgets (paper → {report['preset']}): "
             + ", ".join(f"{k} → {v}" for k, v in budgets.items()) + f", full = {report['full_tokens']} · "
             f"torch {report['torch']} on {report['device']} · {report['created']}. "
             "How to read this report: docs/BENCHMARK.md.", ""]
    lines += _targets_md(report)
    if "paper_flops" in report:
        lines += _paper_md(report)
    lines += _own_md(report)
    for split, pts in report["results"].items():
        lines += _split_md(split, pts, "paper_flops" in report)
    lines += ["## Figures", "", "![accuracy vs tokens](accuracy_vs_tokens.png)", "",
              "![accuracy vs FLOPs](accuracy_vs_flops.png)", "", "![latency vs tokens](latency_vs_tokens.png)", ""]
    if "paper_flops" in report:
        lines += ["![paper-geometry FLOPs](paper_flops.png)", ""]
    lines += ["## Policies", ""] + [f"- **{p}** — {c}" for p, c in report["cites"].items()] + [""]
    return "\n".join(lines)


def _targets_md(report: dict) -> list[str]:
    t = report["targets"]
    lines = ["## Targets", "", "| target | value | goal | met | margin |", "|---|---|---|---|---|"]
    for key in ("allocation_overhead", "pipeline_ratio"):
        if key in t:
            x = t[key]
            lines.append(f"| {x['what']} | {100 * x['value']:.1f} % | ≤ {100 * x['target']:.0f} % | "
                         f"{'yes' if x['met'] else 'no'} | {100 * x['margin']:+.1f} points |")
    lines += ["", "arrcoc against uniform and random at every budget below full (accuracy points; detail: "
              "met when > 0; gist: difference + 2 points, met when ≥ 0):", ""]
    for split, rows in t["accuracy"].items():
        if not rows:
            continue
        lines += [f"**{split}**", "", "| budget | detail − uniform | detail − random | gist − uniform + 2 | "
                  "gist − random + 2 | met |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['budget']} | " + " | ".join(_pct(r.get(k)) for k in (
                "detail_vs_uniform", "detail_vs_random", "gist_vs_uniform", "gist_vs_random"))
                + f" | {'yes' if r['met'] else 'no'} |")
        lines.append("")
    return lines


def _own_md(report: dict) -> list[str]:
    """Policies that also ran on a downstream trained for them, beside the shared one and arrcoc."""
    own = report.get("own_weights") or {}
    if not own:
        return []
    lines = ["## Own trained downstream", "",
             "Each policy below also ran on a downstream fine-tuned on its own allocations (`<policy>/own`); "
             "the shared downstream (every other row) is the shipped one. Accuracy (%):", ""]
    for split, pts in report["results"].items():
        by = {(p["policy"], p["label"]): p for p in pts}
        for policy, path in own.items():
            lines += [f"**{split}**, `{policy}/own` = `{path}`", "",
                      f"| budget | arrcoc detail | {policy} detail | {policy}/own detail | arrcoc gist | {policy} gist | "
                      f"{policy}/own gist |", "|---|---|---|---|---|---|---|"]
            for label in sorted({l for (p, l) in by if p == f"{policy}/own"}, key=lambda l: (l == "full", int(l) if l.isdigit() else 0)):
                cells = [by.get((q, label), {}).get(f"accuracy_{kind}") for kind in ("detail", "gist")
                         for q in ("arrcoc", policy, f"{policy}/own")]
                lines.append(f"| {label} | " + " | ".join(_pct(c) for c in cells) + " |")
            lines.append("")
    return lines


def _paper_md(report: dict) -> list[str]:
    pf = report["paper_flops"]
    counts = sorted(int(c) for c in pf["token_counts"])
    per = {k: _ints(v) for k, v in pf["per_tokens"].items()}
    lines = ["## FLOPs per stage at the paper geometry (GFLOPs, random weights, meta device)", "",
             "| stage | " + " | ".join(str(c) for c in counts) + " | seeds' estimate |",
             "|---|" + "---|" * (len(counts) + 1)]
    for stage in STAGES[:STAGES.index("compressor") + 1]:
        seed = _g(SEED_ESTIMATES["sam"]) if stage == "sam" else ""
        lines.append(f"| {stage} | " + " | ".join([_g(pf["stages"][stage])] * len(counts)) + f" | {seed} |")
    for stage in ("clip", "adapter", "projector", "llm"):
        seed = f"{_g(SEED_ESTIMATES['clip@256'])} at 256" if stage == "clip" else ""
        lines.append(f"| {stage} | " + " | ".join(_g(per[stage].get(c)) for c in counts) + f" | {seed} |")
    lines += ["", "The allocator is the greedy knapsack: an upper-bound estimate, not a count. Token-independent "
              "stages repeat across columns.", ""] + [f"- {n}" for n in report.get("paper_notes", [])] + [""]
    lines += ["Pipeline GFLOPs per question by policy at the paper budgets (stages composed at the token counts each "
              "policy sends through them; FastV/SparseVLM include their scoring pass on all 4096 tokens):", "",
              "| policy | " + " | ".join(str(b) for b in report["config"]["paper_budgets"]) + " |",
              "|---|" + "---|" * len(report["config"]["paper_budgets"])]
    first = next(iter(report["results"].values()))
    for policy in report["policies"]:
        mine = {p["paper_budget"]: p.get("paper_gflops") for p in first if p["policy"] == policy}
        if policy == "full":
            lines.append(f"| full ({pf['full_tokens']}) | " + " | ".join([f"{mine.get(None, float('nan')):,.0f}"]
                                                                        * len(report["config"]["paper_budgets"])) + " |")
        else:
            lines.append(f"| {policy} | " + " | ".join(f"{mine.get(b, float('nan')):,.0f}"
                                                       for b in report["config"]["paper_budgets"]) + " |")
    return lines + [""]


def _split_md(split: str, pts: list[dict], paper: bool) -> list[str]:
    lines = [f"## {split}", "", "| policy | budget | tokens | accuracy | gist | detail | GFLOPs (counted) | "
             + ("GFLOPs (paper) | " if paper else "") + "latency p50 / p95 (ms, excl. SAM) |",
             "|---|---|---|---|---|---|---|" + ("---|" if paper else "") + "---|"]
    for p in pts:
        lines.append(f"| {p['policy']} | {p['label']} | {p['tokens']:.1f} | {_pct(p['accuracy'])} | "
                     f"{_pct(p['accuracy_gist'])} | {_pct(p['accuracy_detail'])} | {p['gflops']:.2f} | "
                     + (f"{p.get('paper_gflops', float('nan')):,.0f} | " if paper else "") + f"{_ms(p['latency_total'])} |")
    sam = pts[0]["latency"].get("sam") if pts else None
    lines += ["", f"Latency per stage, p50 / p95 ms per question (SAM runs once per image, timed apart: {_ms(sam)}):", "",
              "| policy@budget | " + " | ".join(LATENCY_STAGES) + " |", "|---|" + "---|" * len(LATENCY_STAGES)]
    for p in pts:
        lines.append(f"| {p['policy']}@{p['label']} | " + " | ".join(_ms(p["latency"].get(s)) for s in LATENCY_STAGES) + " |")
    families = sorted({f for p in pts for f in p["accuracy_by_family"]})
    lines += ["", "Accuracy by question family (%):", "", "| policy@budget | " + " | ".join(families) + " |",
              "|---|" + "---|" * len(families)]
    for p in pts:
        lines.append(f"| {p['policy']}@{p['label']} | " + " | ".join(_pct(p["accuracy_by_family"].get(f)) for f in families) + " |")
    return lines + [""]
