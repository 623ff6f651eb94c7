"""Per-stage latency vs tokens (arrcoc-lab latency): structure of the result, tokens per point,
the report files, GPU synchronisation in the trace, and clear errors on bad devices/dtypes.
No wall-clock values are asserted (timings are reported, not tested)."""
import json
import subprocess
import sys

import pytest
import torch

from arrcoc_lab.errors import InputError
from arrcoc_lab.evaluation.latency import STAGES, LatencyConfig, measure_latency, write_latency_report
from arrcoc_lab.modeling.trace import Trace


@pytest.fixture(scope="module")
def tiny_result():
    cfg = LatencyConfig(preset="tiny", device="cpu", dtype="fp32", policies=("arrcoc", "uniform", "full"),
                        paper_budgets=(64, 256), runs=2, warmup=1)
    return measure_latency(cfg, progress=False)


def test_every_point_times_every_stage_at_its_token_count(tiny_result):
    pts = tiny_result["points"]
    assert [(p["policy"], p["paper_budget"]) for p in pts] == [
        ("arrcoc", 64), ("arrcoc", 256), ("uniform", 64), ("uniform", 256), ("full", None)]
    for p in pts:
        assert set(STAGES) <= set(p["latency"])
        assert all(v["n"] == 2 and 0 <= v["p50"] <= v["p95"] for v in p["latency"].values())
        assert p["total_p50"] > tiny_result["sam"]["p50"] > 0
        if p["budget"] is not None:
            assert p["tokens"] <= p["budget"]
    full = [p for p in pts if p["policy"] == "full"][0]
    assert full["tokens"] == 256  # tiny geometry: 2x2 cells x 64 tokens
    assert tiny_result["config"]["extra"]["device_name"] == "cpu"


def test_report_files(tiny_result, tmp_path):
    out = write_latency_report(tiny_result, tmp_path / "lat")
    assert json.loads((out / "latency.json").read_text())["points"] == tiny_result["points"]
    md = (out / "latency.md").read_text()
    assert md.count("\n| arrcoc |") == 2 and "| full | full | 256 |" in md
    assert (out / "latency_vs_tokens.png").stat().st_size > 1000


def test_bad_device_and_dtype_are_clear_errors():
    with pytest.raises(InputError, match="unknown device"):
        measure_latency(LatencyConfig(preset="tiny", device="gpu0"), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no GPU"):
            measure_latency(LatencyConfig(preset="tiny", device="cuda"), progress=False)
    with pytest.raises(InputError, match="unknown dtype"):
        measure_latency(LatencyConfig(preset="tiny", device="cpu", dtype="int8", runs=1, warmup=0), progress=False)


def test_trace_synchronises_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append(1))
    with Trace(sync=False).stage("x"):
        pass
    assert calls == []
    tr = Trace(sync=True)
    with tr.stage("x"):
        pass
    assert len(calls) == 2 and tr.timings["x"] >= 0  # before and after the stage


def test_cli_writes_the_report(tmp_path):
    r = subprocess.run([sys.executable, "-m", "arrcoc_lab.apps.cli", "latency", "--preset", "tiny", "--device", "cpu",
                        "--dtype", "fp32", "--policies", "uniform", "--budgets", "64", "--runs", "1", "--warmup", "0",
                        "--quiet", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| uniform | 4 | 4 |" in r.stdout  # paper budget 64 -> 4 tokens in the tiny geometry (4 cells)
    assert (tmp_path / "r" / "latency.json").is_file()
