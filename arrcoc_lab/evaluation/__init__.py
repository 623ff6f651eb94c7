"""Evaluation (docs/DATA.md "Metrics", docs/BENCHMARK.md): metrics, `eval`, the benchmark and its report, the stage and reading
probes, FLOPs and latency."""
