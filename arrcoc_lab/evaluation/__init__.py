"""Evaluation (DESIGN §4): metrics, `eval`, the benchmark and its report, the stage and reading
probes, FLOPs and latency."""
