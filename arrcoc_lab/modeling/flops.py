"""FLOP counting helpers the trace uses per stage (evaluation.metrics re-exports them)."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def countable_kernels():
    """Route attention through kernels FlopCounterMode has formulas for. Without this, inference on
    CPU counts 0 for attention: nn.MultiheadAttention / TransformerEncoderLayer take the fused
    "fast path" under no_grad, and scaled_dot_product_attention runs the CPU flash kernel — neither
    has a FLOP formula. The math backend computes the same result with plain matmuls."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def total_flop_counter():
    """A FlopCounterMode that only totals (get_total_flops). It skips torch's module tracking, which
    fails under no_grad when a module's input is a view of a parameter (views made under no_grad
    keep requires_grad without a grad_fn: "Expected gradient function to be set"); the per-stage
    totals of Trace need no module tree."""
    from torch.utils.flop_counter import FlopCounterMode

    class _GlobalOnly:  # stands in for ModuleTracker: every count goes to "Global"
        parents = {"Global"}

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return None

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter
