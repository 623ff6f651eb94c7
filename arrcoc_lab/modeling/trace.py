"""Stage 9 — trace and interface probes.

One `Trace` per forward: per-stage wall time, per-boundary tensor statistics, and the named
outputs of every stage (relevance, allocation, token set, adapter output). Widgets, the demo,
benchmarks and logs read it; nothing recomputes what it holds. Probes check shape, dtype,
finiteness and range at every stage boundary and raise InterfaceError when a contract breaks.
They cost a few reductions per stage, so they stay on by default (ARRCOC_PROBES=0 turns them off).
With `count_flops=True` every stage also runs under torch's FlopCounterMode (exact, from shapes;
slower, so the benchmark counts FLOPs in a separate pass from its timings).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from ..errors import InterfaceError

# The nine stages of the pipeline, in order: the one list the trace, the timings, FLOP and latency
# reports, the phases and the probes name stages from.
STAGES = ("sam", "query", "relevance", "allocator", "compressor", "clip", "adapter", "projector", "llm")
FROZEN_STAGES = ("sam", "query")  # frozen encoders: cached (SAM) or pretrained (query); never trained by a phase


def probes_default() -> bool:
    return os.environ.get("ARRCOC_PROBES", "1") not in ("0", "false", "False")


@dataclass
class TensorStats:
    shape: tuple[int, ...]
    dtype: str
    mean: float
    std: float
    min: float
    max: float
    finite: bool


@dataclass
class Trace:
    probes: bool = True  # raise on contract violations
    count_flops: bool = False  # count FLOPs per stage (FlopCounterMode)
    sync: bool = False  # synchronise the GPU at stage boundaries, so each stage's time is its own (CUDA runs async)
    timings: dict[str, float] = field(default_factory=dict)  # stage → seconds
    flops: dict[str, int] = field(default_factory=dict)  # stage → FLOPs (when count_flops)
    stats: dict[str, TensorStats] = field(default_factory=dict)  # boundary name → statistics
    relevance: Any = None  # RelevanceOutput
    allocation: Any = None  # Allocation
    tokens: Any = None  # TokenSet
    clip: Any = None  # ClipOutput
    adapter: Any = None  # AdapterOutput
    visual: Any = None  # (B, T, H) projected tokens: the LLM's visual input
    query: Any = None  # QueryEncoding

    @contextmanager
    def stage(self, name: str):
        """Time a stage (entering the same name again adds to it); count its FLOPs if asked."""
        counter, kernels = None, nullcontext()
        if self.count_flops:
            from .flops import countable_kernels, total_flop_counter

            counter, kernels = total_flop_counter(), countable_kernels()
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            with kernels, (counter if counter is not None else nullcontext()):
                yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            if counter is not None:
                self.flops[name] = self.flops.get(name, 0) + int(counter.get_total_flops())

    def check(self, name: str, x: torch.Tensor, shape: tuple | None = None, dtype: torch.dtype | None = None,
              lo: float | None = None, hi: float | None = None, mask: torch.Tensor | None = None) -> None:
        """Record statistics of `x` (over `mask` if given) and, with probes on, enforce the contract.
        `shape` may hold None for free dimensions."""
        if not self.probes:
            return
        vals = x[mask] if mask is not None else x
        vals = vals.detach().float()
        if vals.numel():
            mean, std, mn, mx, fin = torch.stack([vals.mean(), vals.std(unbiased=False) if vals.numel() > 1 else vals.new_zeros(()),
                                                  vals.min(), vals.max(), torch.isfinite(vals).all().float()]).tolist()
        else:
            mean = std = mn = mx = 0.0
            fin = 1.0
        self.stats[name] = TensorStats(tuple(x.shape), str(x.dtype).replace("torch.", ""), mean, std, mn, mx, bool(fin))
        problems = []
        if shape is not None and (len(shape) != x.dim() or any(s is not None and s != d for s, d in zip(shape, x.shape))):
            problems.append(f"shape {tuple(x.shape)} != expected {shape}")
        if dtype is not None and x.dtype != dtype:
            problems.append(f"dtype {x.dtype} != expected {dtype}")
        if not fin:
            problems.append("non-finite values")
        if lo is not None and mn < lo - 1e-5:
            problems.append(f"min {mn:.4g} < {lo}")
        if hi is not None and mx > hi + 1e-5:
            problems.append(f"max {mx:.4g} > {hi}")
        if problems:
            raise InterfaceError(f"interface check failed at {name}: " + "; ".join(problems))

    @property
    def total_time(self) -> float:
        return sum(self.timings.values())

    def item(self, i: int, n: int) -> "Trace":
        """Sample i of a forward over n samples, shaped as a forward of that sample alone: every
        per-sample tensor cut to its row (1, ...), the token set, CLIP, adapter and visual tokens
        trimmed to the sample's own tokens and the query to its own length (where its padding
        trails, as the compressor and the query encoder lay it out). Timings, FLOPs and statistics
        are copies of the batch's (the caller divides the timings)."""
        t = _kept(self.tokens.mask[i]) if self.tokens is not None else None
        q = _kept(self.query.mask[i]) if self.query is not None else None

        def cut(obj, trim: dict[str, int | None]):
            if obj is None:
                return None
            return replace(obj, **{f.name: getattr(obj, f.name) if f.name in _SHARED else
                                   _row(getattr(obj, f.name), i, n, trim.get(f.name)) for f in fields(obj)})

        return replace(self, timings=dict(self.timings), flops=dict(self.flops), stats=dict(self.stats),
                       relevance=cut(self.relevance, {}), allocation=cut(self.allocation, {}),
                       tokens=cut(self.tokens, dict.fromkeys(("tokens", "mask", "positions", "levels", "cells"), t)),
                       clip=cut(self.clip, {"tokens": t, "cls_attention": t}),
                       adapter=cut(self.adapter, {"tokens": t, "quality": t}),
                       visual=_row(self.visual, i, n, t), query=cut(self.query, {"tokens": q, "mask": q}))


_SHARED = {"mix", "policy"}  # fields of the stage outputs that are not per sample (RelevanceOutput.mix is (3,))


def _kept(mask: torch.Tensor) -> int | None:
    """The number of real entries of a mask row whose padding trails, else None (keep the padding)."""
    k = int(mask.sum())
    return k if bool(mask[:k].all()) else None


def _row(x, i: int, n: int, length: int | None = None):
    """Row i of a per-sample value of a batch of n: a tensor's [i:i+1] (its second axis cut to
    `length`), a list's [x[i]]; anything else (scalars, shared tensors) as it is."""
    if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == n:
        x = x[i:i + 1]
        return x[:, :length] if length is not None and x.dim() >= 2 else x
    if isinstance(x, list) and len(x) == n:
        return [x[i]]
    return x
