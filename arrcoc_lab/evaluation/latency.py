"""Latency per stage vs tokens on any device — above all the paper geometry on a GPU, with random
weights (latency does not depend on weight values; the paper checkpoints are not needed).

`arrcoc-lab latency --preset paper --device cuda` builds the real paper-sized modules (SAM ViT-B at
1024², open_clip ViT-L/14 on the tokens, the paper analyzer, allocator, compressor, adapter and
projector) and, as in paper_flops.py, a Qwen3 LLM with Qwen3-0.6B's configuration as "the same
LLM" for every policy. One image and one question per forward, the way a demo user waits: SAM is
timed once per image, every other stage per (policy, budget) point, with the GPU synchronised at
stage boundaries (Trace.sync). The LLM stage is prefill plus one generated token.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import metrics as M
from .bench import PAPER_BUDGETS, scaled_budgets, time_sam
from ..errors import InputError
from ..modeling.trace import STAGES as MODEL_STAGES
from ..policies import get_policy

log = logging.getLogger(__name__)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LatencyConfig:
    preset: str = "paper"  # pipeline preset (paper: random weights at the DeepSeek-OCR geometry)
    device: str = "cuda"  # cpu | cuda | cuda:N
    dtype: str = "bf16"  # fp32 | bf16 | fp16 (autocast; weights stay fp32)
    policies: tuple[str, ...] = ("arrcoc", "uniform", "random", "full")
    paper_budgets: tuple[int, ...] = PAPER_BUDGETS  # scaled to the preset's geometry like the benchmark's
    runs: int = 10  # timed forwards per point
    warmup: int = 3  # untimed forwards per point first (kernel selection, allocator warm-up)
    qwen3_0_6b: bool = True  # paper preset: swap in a Qwen3-0.6B-shaped LLM (random weights)
    question: str = "What's the formula on the billboard?"
    seed: int = 0
    extra: dict = field(default_factory=dict)  # recorded device facts (filled in)


def build_for_latency(cfg: LatencyConfig):
    from .paper_flops import QWEN3_0_6B
    from ..pipeline import UntrainedWeightsWarning, load_pipeline
    from ..modeling.presets import get_preset

    pc = get_preset(cfg.preset)
    if cfg.preset == "paper" and cfg.qwen3_0_6b:  # the projector must emit Qwen3-0.6B's width
        pc.llm.hidden_size, pc.llm.heads, pc.llm.kv_heads, pc.llm.layers = QWEN3_0_6B["hidden_size"], 16, 8, 1
    with warnings.catch_warnings():  # random weights are the point here: latency does not depend on them
        warnings.simplefilter("ignore", UntrainedWeightsWarning)
        pipe = load_pipeline(cfg.preset, config=pc)
    if cfg.preset == "paper" and cfg.qwen3_0_6b:
        from transformers import Qwen3Config, Qwen3ForCausalLM

        tok = pipe.model.llm.tokenizer
        # Qwen3-0.6B's shape with the byte tokenizer's vocabulary (a random LM samples ids the byte
        # tokenizer cannot decode otherwise); generation computes the LM head for one position only
        lm_cfg = Qwen3Config(**{**QWEN3_0_6B, "vocab_size": len(tok)}, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=None)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            pipe.model.llm.model = Qwen3ForCausalLM(lm_cfg).eval()
    pipe.model.probes = False  # contract probes read tensors back to the host: not part of the latency
    return pipe


def _autocast(device: torch.device, dtype: str):
    if DTYPES[dtype] is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@torch.no_grad()
def measure_latency(cfg: LatencyConfig, progress: bool = True) -> dict:
    """{'config', 'sam': {p50, p95}, 'points': [{policy, budget, paper_budget, tokens, latency: {stage: {p50, p95}},
    total_p50}]} — seconds, one image and one question per forward."""
    if cfg.dtype not in DTYPES:
        raise InputError(f"unknown dtype {cfg.dtype!r}; known: {list(DTYPES)}")
    try:
        device = torch.device(cfg.device)
    except RuntimeError as e:
        raise InputError(f"unknown device {cfg.device!r}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for, but torch sees no GPU here; use --device cpu")
    pipe = build_for_latency(cfg)
    model = pipe.model.to(device)
    g = model.geometry
    gen = torch.Generator().manual_seed(cfg.seed)
    pixels = torch.randint(0, 256, (1, 3, g.image_size, g.image_size), generator=gen).float().to(device)
    with _autocast(device, cfg.dtype):
        features, sam = time_sam(model, pixels, cfg.runs, cfg.warmup)
        budgets = scaled_budgets(g, cfg.paper_budgets)
        points = [(p, None, None) if p == "full" else (p, b, pb) for p in cfg.policies for pb, b in budgets.items()]
        points = list(dict.fromkeys(points))  # `full` once
        rows = []
        for policy, budget, paper_budget in tqdm(points, desc="latency", disable=not progress):
            runs, tokens = [], None
            p = get_policy(policy)
            resolved = model.allocator.resolve_budget(p, budget)
            for i in range(cfg.warmup + cfg.runs):
                out = model(pixels, [cfg.question], policy=p, budget=resolved, features=features.float(),
                            generate=True, max_new_tokens=1)
                if i >= cfg.warmup:
                    runs.append(dict(out.trace.timings))
                tokens = int(out.trace.allocation.num_tokens[0])
            lat = M.latency_percentiles(runs)
            total = sorted(sum(r.values()) for r in runs)[len(runs) // 2]
            rows.append({"policy": policy, "budget": budget, "paper_budget": paper_budget, "tokens": tokens,
                         "latency": lat, "total_p50": total + sam["p50"]})
    facts = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "torch": torch.__version__, "threads": torch.get_num_threads()}
    return {"config": {**asdict(cfg), "extra": facts}, "sam": sam, "points": rows}


STAGES = MODEL_STAGES[1:]  # SAM is timed apart (its features are cached)


def write_latency_report(result: dict, out_dir: str | Path) -> Path:
    """latency.json, latency_vs_tokens.png and latency.md (a table per point, ms)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(result, indent=1))
    rows = sorted(result["points"], key=lambda r: (r["policy"], r["tokens"]))
    facts = result["config"]["extra"]
    lines = [f"# Latency per stage — preset `{result['config']['preset']}`, {facts['device_name']}, "
             f"{result['config']['dtype']}", "",
             f"torch {facts['torch']}; one image and one question per forward; p50 of {result['config']['runs']} runs "
             f"after {result['config']['warmup']} warm-ups, ms. SAM (once per image): p50 {1e3 * result['sam']['p50']:.1f}, "
             f"p95 {1e3 * result['sam']['p95']:.1f}. LLM = prefill + one token.", "",
             "| policy | budget | tokens | " + " | ".join(STAGES) + " | total incl. SAM |",
             "|---" * (len(STAGES) + 4) + "|"]
    for r in rows:
        cells = [f"{1e3 * r['latency'][s]['p50']:.2f}" if s in r["latency"] else "–" for s in STAGES]
        lines.append(f"| {r['policy']} | {r['budget'] if r['budget'] is not None else 'full'} | {r['tokens']} | "
                     + " | ".join(cells) + f" | {1e3 * r['total_p50']:.1f} |")
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    _plot(rows, result, out / "latency_vs_tokens.png")
    return out


def _plot(rows, result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in ("clip", "llm", "adapter", "relevance", "allocator", "compressor"):
        pts = sorted({(r["tokens"], r["latency"][s]["p50"]) for r in rows if r["policy"] in ("uniform", "full")
                      and s in r["latency"]})
        if pts:
            ax.plot([t for t, _ in pts], [1e3 * v for _, v in pts], marker="o", label=s)
    ax.axhline(1e3 * result["sam"]["p50"], color="k", ls="--", label="sam (per image)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("visual tokens")
    ax.set_ylabel("p50 latency, ms")
    ax.set_title(f"{result['config']['preset']} — {result['config']['extra']['device_name']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
