"""Report figures (matplotlib, files only): accuracy by token bucket, per-question allocation
examples, training curves. Used by `arrcoc-lab eval`, the phase notebooks and the benchmark."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def accuracy_by_bucket_figure(report: dict, path: str | Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for policy, summary in report["policies"].items():
        buckets = [b for b in summary["accuracy_by_tokens"] if b["n"]]
        if buckets:
            ax.plot([f"{b['lo']}–{b['hi']}" for b in buckets], [b["accuracy"] for b in buckets], "o-", label=policy)
    ax.set_xlabel("visual tokens")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(f"accuracy by token bucket — {report['data']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def allocation_examples_figure(es, all_rows: dict, geometry, path: str | Path, n: int = 3) -> None:
    """Rows: scenes; columns: the scene's two detail questions under each policy (tokens per cell).
    `es`: the EvalSet, or {scene: H×W×3 uint8 image} of (at least) its first n scenes."""
    plt = _plt()
    policies = [p for p in all_rows if p != "full"][:3]
    scenes = sorted({r["scene"] for r in all_rows[policies[0]]})[:n]
    fig, axes = plt.subplots(len(scenes), 2 * len(policies), figsize=(2.2 * 2 * len(policies), 2.4 * len(scenes)),
                             squeeze=False)
    images = es if isinstance(es, dict) else None
    for i, scene in enumerate(scenes):
        img = (images[scene] if images is not None
               else es.scenes.pixels[es.scenes.rows([scene])[0]].permute(1, 2, 0).numpy())
        for j, policy in enumerate(policies):
            rows = [r for r in all_rows[policy] if r["scene"] == scene and r["difficulty"] == "detail"][:2]
            for k, r in enumerate(rows):
                ax = axes[i, 2 * j + k]
                ax.imshow(img)
                tokens = np.log(np.array(r["tokens_per_cell"], float)) / np.log(max(geometry.levels))
                ax.imshow(tokens, cmap="magma", alpha=0.55, extent=(0, img.shape[1], img.shape[0], 0), vmin=0, vmax=1,
                          interpolation="nearest")
                if r["target_box"]:
                    x0, y0, x1, y1 = r["target_box"]
                    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.5))
                ax.set_title(f"{policy}: {r['question'][:28]}\n{r['num_tokens']} tok → {r['pred'][:10]!r}", fontsize=6)
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_curves_figure(history: list[dict], path: str | Path, title: str = "") -> None:
    plt = _plt()
    keys = [k for k in ("answer", "answer_gist", "answer_detail", "relevance", "tier", "efficiency", "diversity",
                        "consistency", "read", "loss", "mse") if any(k in h for h in history)]
    levels = sorted(k for k in (history[0] if history else {}) if k.startswith("level") and k.endswith("_share"))
    fig, axes = plt.subplots(1, 3 if levels else 1, figsize=(12 if levels else 5, 3.2), squeeze=False)
    steps = [h["step"] for h in history]
    for k in keys:
        axes[0, 0].plot(steps, [h.get(k, np.nan) for h in history], label=k,
                        ls=":" if k.startswith("answer_") else "-")  # per-difficulty splits of the answer loss
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title(f"{title} losses")
    if levels:
        for k in levels:
            axes[0, 1].plot(steps, [h.get(k, np.nan) for h in history], label=k.replace("_share", ""))
        axes[0, 1].set_title("level usage (share of cells)")
        axes[0, 1].legend(fontsize=7)
        axes[0, 2].plot(steps, [h.get("avg_tokens", np.nan) for h in history])
        axes[0, 2].set_title("average tokens per image")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
