"""`arrcoc-lab throughput` (issue 20): four speed measurements in one run, each reported against its
goal as measured, met or missed (never asserted by a test), into throughput.json and throughput.md.

(a) Batching after SAM: questions per second of `pipe.batch` at batch 1, 4 and 16 against
    one-by-one `pipe(...)` calls, SAM features cached (shipped example images and their questions,
    on the loaded pipeline); `speedup_batch16`, goal ≥ 3×.
(b) Allocation (relevance + allocator + compressor) as a share of SAM's time at the paper geometry
    with random weights, as `arrcoc-lab latency` builds it; `allocation_share_of_sam`, goal ≤ 5 %.
(c) The token-dependent stages (CLIP, adapter, projector, LLM prefill + one token) at 64 against 400
    tokens, same build; `speedup_64_vs_400`, goal ≥ 4×.
(d) Inspector re-render: a second `pipe(...)` on an image already encoded, with another question
    (the loaded pipeline: lab); `rerender_seconds`, goal ≤ 0.3 s.

(b) and (c) run SAM ViT-B at 1024² and a Qwen3-0.6B-shaped LLM: on a CPU, each SAM run takes tens of
seconds, so `paper_runs` is small (docs/BENCHMARK.md has the runtime); `paper_preset="tiny"`
checks the code in seconds.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from .latency import LatencyConfig, measure_latency

ALLOCATION = ("relevance", "allocator", "compressor")  # the stages the allocation adds to a VLM
TOKEN_STAGES = ("clip", "adapter", "projector", "llm")  # the stages whose work grows with the tokens
GOALS = {  # name → (comparison, goal, what)
    "speedup_batch16": (">=", 3.0, "batch 16 after SAM vs one-by-one calls"),
    "allocation_share_of_sam": ("<=", 0.05, "allocation time / SAM time, paper geometry"),
    "speedup_64_vs_400": (">=", 4.0, "token-dependent stages, 400 vs 64 tokens, paper geometry"),
    "rerender_seconds": ("<=", 0.3, "second question on an encoded image"),
}


@dataclass
class ThroughputConfig:
    batch_sizes: tuple[int, ...] = (1, 4, 16)  # pipe.batch sizes timed against one-by-one calls
    items: int = 16  # (image, question) pairs per timed pass: shipped examples and their questions, cycled
    runs: int = 3  # timed passes per setting (and re-renders); the median is reported
    policy: str = "arrcoc"
    budget: int | str | None = None  # (a) and (d): None = the policy's default
    max_new_tokens: int | None = None  # (a) and (d): answer length cap (None = the preset's)
    paper_preset: str = "paper"  # (b) and (c): random weights at this preset's geometry ("tiny": a quick check)
    paper_runs: int = 2  # (b) and (c): timed forwards per point (SAM ViT-B at 1024² takes ~18 s on 2 CPU cores)
    paper_warmup: int = 1  # (b) and (c): untimed forwards first
    paper_budgets: tuple[int, int] = (64, 400)  # (b) and (c): paper-geometry budgets (scaled for other presets)
    device: str = "cpu"  # (b) and (c); (a) and (d) run where the loaded pipeline is


def _pairs(n: int) -> list[tuple]:
    """n (image array, question) pairs from the shipped examples, at most 4 images (all of them stay in
    the pipeline's SAM cache), their questions taken in turn."""
    from ..examples import list_examples
    from ..inputs import load_image

    shipped = list_examples()[:4]
    images = [load_image(e.path) for e in shipped]
    pool = [(img, e.questions[k].question) for k in range(max(len(e.questions) for e in shipped))
            for img, e in zip(images, shipped) if k < len(e.questions)]
    return [pool[i % len(pool)] for i in range(n)]


def _timed(fn, runs: int) -> float:
    """Median seconds of `runs` calls of fn, after one untimed call."""
    fn()
    times = []
    for _ in range(max(runs, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def measure_batching(pipe, cfg: ThroughputConfig) -> dict:
    """(a): seconds and questions per second for `items` pairs, one by one and per batch size."""
    pairs = _pairs(cfg.items)
    kw = {"budget": cfg.budget, "policy": cfg.policy, "max_new_tokens": cfg.max_new_tokens}
    for img in {id(img): img for img, _ in pairs}.values():
        pipe.prepare(img)  # SAM features cached: only the stages after SAM are timed
    alone = [pipe(img, q, **kw) for img, q in pairs]
    one = _timed(lambda: [pipe(img, q, **kw) for img, q in pairs], cfg.runs)
    out = {"items": len(pairs), "images": len({id(img) for img, _ in pairs}), "policy": cfg.policy,
           "budget": alone[0].budget, "one_by_one": {"seconds": one, "items_per_s": len(pairs) / one}, "batch": {}}
    for b in cfg.batch_sizes:
        chunks = [pairs[i:i + b] for i in range(0, len(pairs), b)]
        run = lambda: [o for c in chunks for o in pipe.batch([x for x, _ in c], [q for _, q in c], **kw)]  # noqa: E731
        same = [o.answer for o in run()] == [o.answer for o in alone]
        seconds = _timed(run, cfg.runs)
        out["batch"][str(b)] = {"seconds": seconds, "items_per_s": len(pairs) / seconds, "speedup": one / seconds,
                                "same_answers": same}
    top = str(16 if 16 in cfg.batch_sizes else max(cfg.batch_sizes))
    out["speedup_batch16"] = out["batch"][top]["speedup"]
    out["speedup_batch16_at"] = int(top)
    return out


@torch.no_grad()
def measure_rerender(pipe, cfg: ThroughputConfig) -> dict:
    """(d): a first question encodes the image; each later call asks another question about it."""
    from ..examples import list_examples
    from ..inputs import load_image

    ex = list_examples()[0]
    image, questions = load_image(ex.path), [q.question for q in ex.questions]
    kw = {"budget": cfg.budget, "policy": cfg.policy, "max_new_tokens": cfg.max_new_tokens}
    first = pipe(image, questions[0], **kw)  # encodes the image, unless (a) already did
    times = []
    for r in range(max(cfg.runs, 1)):
        t0 = time.perf_counter()
        out = pipe(image, questions[(1 + r) % len(questions)], **kw)
        times.append(time.perf_counter() - t0)
    return {"example": ex.name, "first_seconds_sam": first.timings["sam"], "sam_on_rerender": out.timings["sam"],
            "runs": len(times), "rerender_seconds": statistics.median(times), "rerender_max": max(times)}


def measure_paper(cfg: ThroughputConfig, progress: bool = True) -> dict:
    """(b) and (c) from one `latency` measurement of the arrcoc policy at the two budgets."""
    lat = measure_latency(LatencyConfig(preset=cfg.paper_preset, device=cfg.device, dtype="fp32", policies=(cfg.policy,),
                                        paper_budgets=tuple(cfg.paper_budgets), runs=cfg.paper_runs,
                                        warmup=cfg.paper_warmup), progress=progress)
    sam = lat["sam"]["p50"]
    points = sorted(lat["points"], key=lambda p: p["paper_budget"])
    per = []
    for p in points:
        alloc = sum(p["latency"][s]["p50"] for s in ALLOCATION if s in p["latency"])
        per.append({"paper_budget": p["paper_budget"], "budget": p["budget"], "tokens": p["tokens"],
                    "allocation_seconds": alloc, "allocation_share_of_sam": alloc / sam,
                    "token_stages_seconds": sum(p["latency"][s]["p50"] for s in TOKEN_STAGES if s in p["latency"]),
                    "total_seconds": p["total_p50"]})
    low, high = per[0], per[-1]
    return {"preset": cfg.paper_preset, "sam_seconds": sam, "points": per, "runs": cfg.paper_runs,
            "warmup": cfg.paper_warmup, "device": lat["config"]["extra"],
            "allocation_share_of_sam": max(p["allocation_share_of_sam"] for p in per),
            "speedup_64_vs_400": high["token_stages_seconds"] / low["token_stages_seconds"],
            "speedup_64_vs_400_with_sam": high["total_seconds"] / low["total_seconds"],
            "budgets_compared": [low["paper_budget"], high["paper_budget"]]}


def measure_throughput(pipe, cfg: ThroughputConfig, progress: bool = True) -> dict:
    """All four parts in one run, with each goal's verdict."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    batching, rerender = measure_batching(pipe, cfg), measure_rerender(pipe, cfg)
    paper = measure_paper(cfg, progress)
    values = {"speedup_batch16": batching["speedup_batch16"], "rerender_seconds": rerender["rerender_seconds"],
              "allocation_share_of_sam": paper["allocation_share_of_sam"], "speedup_64_vs_400": paper["speedup_64_vs_400"]}
    goals = {name: {"value": values[name], "goal": goal, "comparison": cmp, "what": what,
                    "met": bool(values[name] >= goal if cmp == ">=" else values[name] <= goal)}
             for name, (cmp, goal, what) in GOALS.items()}
    return {"preset": pipe.config.preset, "weights": pipe.config.weights, "config": asdict(cfg), "goals": goals,
            "batching": batching, "rerender": rerender, "paper": paper, "seconds": time.perf_counter() - t0,
            "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "processor": platform.processor() or platform.machine(), "device": str(pipe.device),
                        "load_average_before": load,
                        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_throughput_report(result: dict, out_dir: str | Path) -> Path:
    """throughput.json and throughput.md in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "throughput.json", json.dumps(result, indent=1))
    atomic_write_text(out / "throughput.md", render_markdown(result))
    return out


def render_markdown(r: dict) -> str:
    b, d, p, m = r["batching"], r["rerender"], r["paper"], r["machine"]
    load = lambda x: "/".join(f"{v:.1f}" for v in x) if x else "n/a"  # noqa: E731
    fmt = {"speedup_batch16": "{:.2f}×", "allocation_share_of_sam": "{:.1%}", "speedup_64_vs_400": "{:.2f}×",
           "rerender_seconds": "{:.3f} s"}
    lines = [f"# Throughput — preset `{r['preset']}`, paper geometry `{p['preset']}`", "",
             f"torch {m['torch']}, {m['threads']} threads on {m['cpus']} CPUs ({m['processor']}), device {m['device']}; "
             f"load average (1/5/15 min) before {load(m['load_average_before'])}, after {load(m['load_average_after'])}; "
             f"{r['seconds']:.0f} s in all, {r['created']}. Medians; timings on a shared machine are noisy.", "",
             "| goal | measured | target | verdict |", "|---|---|---|---|"]
    for name, g in r["goals"].items():
        f = fmt[name]
        lines.append(f"| `{name}`: {g['what']} | {f.format(g['value'])} | {g['comparison']} {f.format(g['goal'])} | "
                     f"{'met' if g['met'] else 'missed'} |")
    lines += ["", f"## (a) Batching after SAM — {b['items']} questions on {b['images']} cached images, policy "
              f"`{b['policy']}`, budget {b['budget']}", "",
              "| | seconds | questions / s | speed-up | same answers |", "|---|---|---|---|---|",
              f"| one by one | {b['one_by_one']['seconds']:.3f} | {b['one_by_one']['items_per_s']:.1f} | 1.00× | |"]
    for size, x in b["batch"].items():
        lines.append(f"| batch {size} | {x['seconds']:.3f} | {x['items_per_s']:.1f} | {x['speedup']:.2f}× | "
                     f"{'yes' if x['same_answers'] else 'no'} |")
    lines += ["", f"## (b, c) Paper geometry, random weights (`{p['preset']}`, median of {p['runs']} after {p['warmup']} "
              f"warm-up each; LLM = prefill + one token)", "", f"SAM: {p['sam_seconds']:.3f} s per image.", "",
              "| paper budget | tokens | allocation s | share of SAM | token stages s | total incl. SAM s |",
              "|---|---|---|---|---|---|"]
    for x in p["points"]:
        lines.append(f"| {x['paper_budget']} | {x['tokens']} | {x['allocation_seconds']:.4f} | "
                     f"{x['allocation_share_of_sam']:.1%} | {x['token_stages_seconds']:.3f} | {x['total_seconds']:.3f} |")
    lines += ["", f"Speed-up of {p['budgets_compared'][0]} against {p['budgets_compared'][1]} tokens: "
              f"{p['speedup_64_vs_400']:.2f}× in the token-dependent stages, {p['speedup_64_vs_400_with_sam']:.2f}× "
              "with SAM and the fixed stages.", "",
              f"## (d) Inspector re-render — `{d['example']}`", "",
              f"Another question on an encoded image (SAM {d['sam_on_rerender']:.1f} s: cached): median "
              f"{d['rerender_seconds']:.3f} s, max {d['rerender_max']:.3f} s over {d['runs']} questions. (SAM took "
              f"{d['first_seconds_sam']:.3f} s on the first question; 0 when (a) had encoded the image.)"]
    return "\n".join(lines) + "\n"
