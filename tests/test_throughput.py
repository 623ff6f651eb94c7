"""`arrcoc-lab throughput` (issue 20): one run writes throughput.json and throughput.md with the four
measurements and a verdict per goal. Only the report's structure is checked (tiny preset, one
repetition): wall-clock numbers are reported, never asserted."""
import json

import pytest

from arrcoc_lab.apps.cli import main
from arrcoc_lab.evaluation.throughput import GOALS

QUICK = ["throughput", "--preset", "tiny", "--weights", "random", "--paper-preset", "tiny", "--runs", "1",
         "--paper-runs", "1", "--paper-warmup", "0", "--items", "6", "--batch-sizes", "1,4", "--quiet"]


def test_throughput_report_structure(tmp_path, capsys):
    assert main(QUICK + ["--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    r = json.loads((tmp_path / "t" / "throughput.json").read_text())
    assert set(r["goals"]) == set(GOALS)
    for name, g in r["goals"].items():
        assert {"value", "goal", "comparison", "met", "what"} <= set(g) and isinstance(g["met"], bool)
        assert g["met"] == (g["value"] >= g["goal"] if g["comparison"] == ">=" else g["value"] <= g["goal"])
        assert f"{name}: " in printed and ("met" in printed or "missed" in printed)
    b = r["batching"]
    assert b["items"] == 6 and set(b["batch"]) == {"1", "4"} and b["speedup_batch16_at"] == 4
    assert all(x["same_answers"] and x["seconds"] > 0 for x in b["batch"].values())  # batches answer as single calls
    assert r["goals"]["speedup_batch16"]["value"] == b["speedup_batch16"] == b["batch"]["4"]["speedup"]
    p = r["paper"]
    assert p["preset"] == "tiny" and [x["paper_budget"] for x in p["points"]] == [64, 400]
    assert p["points"][0]["tokens"] < p["points"][1]["tokens"] and p["sam_seconds"] > 0
    assert p["allocation_share_of_sam"] == max(x["allocation_share_of_sam"] for x in p["points"])
    assert r["rerender"]["sam_on_rerender"] == 0.0 and r["rerender"]["runs"] == 1  # the image was encoded before
    md = (tmp_path / "t" / "throughput.md").read_text()
    assert md.startswith("# Throughput — preset `tiny`")
    for name in GOALS:
        assert f"`{name}`" in md
    assert "## (a) Batching after SAM" in md and "## (b, c) Paper geometry" in md and "## (d) Inspector re-render" in md


def test_throughput_writes_the_bench_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(QUICK + ["--items", "2", "--batch-sizes", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "bench" / "tiny").iterdir()) == ["throughput.json",
                                                                                         "throughput.md"]
    assert main(QUICK + ["--items", "2", "--batch-sizes", "2", "--update-reports"]) == 0
    assert (tmp_path / "reports" / "bench" / "tiny" / "throughput.md").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--paper-preset", "nope"], "nope"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--policy", "nope"], "nope"),
    (["--out", "x", "--update-reports"], "either --out or --update-reports"),
])
def test_throughput_refuses_bad_options(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(QUICK + extra) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "runs").exists()
