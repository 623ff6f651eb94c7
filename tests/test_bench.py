"""The benchmark (arrcoc_lab/evaluation/bench.py, paper_flops.py, bench_report.py): a tiny sweep end to end,
FLOPs per stage at the paper geometry, exact FLOP counting of attention, the target arithmetic."""
import json
import math

import pytest
import torch

from arrcoc_lab.evaluation import metrics as M
from arrcoc_lab.evaluation import paper_flops as PF
from arrcoc_lab.evaluation.bench import BenchConfig, accuracy_targets, run_bench, scaled_budgets, sweep_points
from arrcoc_lab.evaluation.bench_report import pareto
from arrcoc_lab.errors import InputError
from arrcoc_lab.modeling.presets import get_preset

POLICIES = ("arrcoc", "uniform", "full", "fastv", "tome")  # the CLI test covers random and docsynth


@pytest.fixture(scope="module")
def paper_stages(lab_pipe):
    return PF.count_paper_stages([64, 100, 144, 256, 400], query_encoder=lab_pipe.model.query_encoder)


def test_budgets_scale_from_the_paper_geometry():
    assert scaled_budgets(get_preset("lab").geometry) == {64: 16, 100: 25, 144: 36, 256: 64, 400: 100}
    assert scaled_budgets(get_preset("paper").geometry) == {b: b for b in (64, 100, 144, 256, 400)}
    assert scaled_budgets(get_preset("tiny").geometry, (64, 256, 9999)) == {64: 4, 256: 16, 9999: 256}  # clamped
    points = sweep_points(["uniform", "full"], {64: 16, 256: 64})
    assert points == [("uniform", 16, 64), ("uniform", 64, 256), ("full", None, None)]
    with pytest.raises(InputError, match="known"):
        sweep_points(["best"], {64: 16})


@pytest.mark.slow
def test_tiny_bench_end_to_end(lab_pipe, paper_stages, tmp_path):
    cfg = BenchConfig(data=("scenebench:test",), n_scenes=1, paper_budgets=(64, 256), policies=POLICIES, batch_size=6,
                      flop_samples=1, max_new_tokens=1, sam_runs=1, cache_dir=str(tmp_path / "cache"), progress=False)
    out = tmp_path / "bench"
    report = run_bench(lab_pipe, cfg, out, paper_stages=paper_stages)
    for name in ("metrics.json", "rows.jsonl", "report.md", "accuracy_vs_tokens.png", "accuracy_vs_flops.png",
                 "latency_vs_tokens.png", "paper_flops.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["results"]) == {"scenebench:test"}
    for split, pts in saved["results"].items():
        assert [(p["policy"], p["label"]) for p in pts] == [(p, b) for p in POLICIES
                                                           for b in (["full"] if p == "full" else ["16", "64"])]
        for p in pts:
            exact = p["policy"] in ("fastv", "tome")
            assert p["tokens"] == 1024 if p["policy"] == "full" else (p["tokens"] == p["budget"] if exact
                                                                      else p["tokens"] <= p["budget"])
            assert p["n"] == 6 and set(p["accuracy_by_family"]) and 0 <= p["accuracy"] <= 1
            assert {"allocator", "clip", "adapter", "llm"} <= set(p["latency"]) and p["latency"]["sam"]["p50"] > 0
            assert p["flops"]["sam"] > 0 and p["flops"]["clip"] > 0 and p["flops"]["llm"] > 0
            assert p["paper_gflops"] > 900  # SAM alone is ~970
        by = {(p["policy"], p["label"]): p for p in pts}
        assert by[("fastv", "16")]["flops"]["allocator"] > by[("fastv", "16")]["flops"]["llm"]  # its LLM pass on all tokens
        assert by[("full", "full")]["flops"]["clip"] > by[("arrcoc", "64")]["flops"]["clip"]
        assert by[("arrcoc", "64")]["paper_gflops"] < 0.25 * by[("full", "full")]["paper_gflops"]
    assert {"allocation_overhead", "pipeline_ratio", "accuracy"} <= set(saved["targets"])
    assert [r["budget"] for r in saved["targets"]["accuracy"]["scenebench:test"]] == [16, 64]
    text = (out / "report.md").read_text()
    assert "## Targets" in text and "| fastv | 16 |" in text and "seeds' estimate" in text
    assert len((out / "rows.jsonl").read_text().splitlines()) == 6 * 9  # questions × points


def test_paper_flops_per_stage(paper_stages):
    s, per = paper_stages["stages"], paper_stages["per_tokens"]
    # SAM ViT-B at 1024²: ~486 G multiply-adds = ~972 GFLOPs (FlopCounterMode counts 2 per MAC), not the seeds'
    # 65; paper_flops.explain() says why. CLIP ViT-L/14 on 256 tokens ~162 GFLOPs (seeds: ~180).
    assert 900e9 < s["sam"] < 1050e9
    assert 140e9 < per["clip"][256] < 200e9
    assert 0.55e9 < paper_stages["llm_params"] < 0.65e9  # "the same LLM": a Qwen3 of ~0.6B parameters
    assert all(s[k] > 0 for k in ("query", "relevance", "allocator", "compressor"))
    for stage in ("clip", "adapter", "projector", "llm"):
        assert per[stage][64] < per[stage][256] < per[stage][4096]
    assert per["llm_prefix"][4096] < per["llm"][4096] / 5  # K=2 of 28 layers
    t = PF.targets(paper_stages)
    arrcoc, full = PF.policy_flops(paper_stages, "arrcoc", 256), PF.policy_flops(paper_stages, "full", None)
    assert t["allocation_overhead"]["value"] == pytest.approx(
        (arrcoc["relevance"] + arrcoc["allocator"] + arrcoc["compressor"]) / arrcoc["sam"])
    assert t["pipeline_ratio"]["value"] == pytest.approx(sum(arrcoc.values()) / sum(full.values()))
    assert t["allocation_overhead"]["met"] == (t["allocation_overhead"]["value"] <= 0.05)
    assert 0 < t["pipeline_ratio"]["value"] < 1
    fastv = PF.policy_flops(paper_stages, "fastv", 256)
    assert fastv["clip"] == full["clip"] and fastv["llm"] == arrcoc["llm"] and fastv["allocator"] > per["llm_prefix"][4096]
    assert PF.policy_flops(paper_stages, "tome", 256)["clip"] == arrcoc["clip"]  # ToMe merges before CLIP
    assert any("65" in line for line in PF.explain(paper_stages))


def test_meta_device_counts_equal_real_counts():
    """FlopCounterMode on meta tensors (what count_paper_stages uses) counts what real tensors count."""
    from arrcoc_lab.modeling.sam_encoder import SamEncoder

    cfg = get_preset("tiny").sam
    real = SamEncoder(cfg)
    with torch.device("meta"):
        meta = SamEncoder(cfg)
    counts = []
    for model, device in ((real, "cpu"), (meta, "meta")):
        counter = M.total_flop_counter()
        with M.countable_kernels(), counter, torch.no_grad():
            model(torch.zeros(1, 3, cfg.img_size, cfg.img_size, device=device))
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_attention_is_counted_in_inference(tiny_pipe, rgb):
    """Under no_grad on CPU, torch's fused attention paths have no FLOP formula; the trace counts them."""
    mha = torch.nn.MultiheadAttention(32, 2, batch_first=True).eval()
    x = torch.randn(1, 10, 32)
    counter = M.total_flop_counter()
    with torch.no_grad(), M.countable_kernels(), counter:
        mha(x, x, x, need_weights=False)
    projections = 2 * 10 * 32 * 32 * 4  # q, k, v, out
    assert counter.get_total_flops() == projections + 2 * 2 * 10 * 10 * 32  # + scores and weighted sum
    from arrcoc_lab.inputs import to_model_input

    policy, budget = tiny_pipe.resolve("uniform")
    out = tiny_pipe.model(to_model_input(rgb, 128), ["What city is this?"], policy=policy, budget=budget, max_new_tokens=1,
                          count_flops=True)
    fl = out.trace.flops
    assert set(fl) == set(out.trace.timings) and fl["adapter"] > 0 and fl["relevance"] > 0 and fl["clip"] > 0


def test_accuracy_targets_margins():
    def pt(policy, budget, detail, gist):
        return {"policy": policy, "label": str(budget), "budget": budget, "paper_budget": budget * 4,
                "accuracy_detail": detail, "accuracy_gist": gist}

    results = {"s": [pt("arrcoc", 16, 0.5, 0.80), pt("uniform", 16, 0.3, 0.81), pt("random", 16, 0.2, 0.9),
                     pt("arrcoc", 64, 0.6, 0.9), pt("uniform", 64, 0.6, 0.9), pt("random", 64, 0.1, 0.9),
                     {**pt("arrcoc", 0, 1, 1), "label": "full", "budget": None}]}
    rows = accuracy_targets(results)["s"]
    assert [r["budget"] for r in rows] == [16, 64]
    assert rows[0]["detail_vs_uniform"] == pytest.approx(0.2) and rows[0]["gist_vs_uniform"] == pytest.approx(0.01)
    assert rows[0]["gist_vs_random"] == pytest.approx(-0.08) and not rows[0]["met"]  # 10 points behind random
    assert rows[1]["detail_vs_uniform"] == 0 and not rows[1]["met"]  # a tie is not "above"


def test_pareto_front():
    assert pareto([(1, 0.2), (2, 0.1), (3, 0.5), (4, 0.5), (5, 0.9), (0.5, math.nan)]) == [(1, 0.2), (3, 0.5), (5, 0.9)]


@pytest.mark.slow
def test_cli_bench(tmp_path, capsys):
    from arrcoc_lab.apps.cli import main

    out = tmp_path / "bench"
    code = main(["bench", "--n-scenes", "1", "--data", "docsynth:test", "--budgets", "64", "--policies",
                 "random,m3,full", "--no-paper-flops", "--max-new-tokens", "1", "--flop-samples", "1",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0 and (out / "report.md").is_file() and (out / "accuracy_vs_flops.png").is_file()
    assert "report:" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert [(p["policy"], p["tokens"]) for p in saved["results"]["docsynth:test"]] == [
        ("random", 16.0), ("m3", 16.0), ("full", 1024.0)]
    assert "paper_flops" not in saved and "pipeline_ratio" not in saved["targets"]
    assert main(["bench", "--policies", "best", "--out", str(out)]) == 2
    assert "unknown policy 'best'" in capsys.readouterr().err


def test_cli_bench_with_an_own_downstream(tmp_path, capsys):
    """`--own uniform=W` adds uniform/own points, evaluated on W's weights, and a report section."""
    import warnings

    from arrcoc_lab import load_pipeline
    from arrcoc_lab.checkpoint import save_weights
    from arrcoc_lab.apps.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = load_pipeline("lab")
    with torch.no_grad():
        for p in other.model.llm.parameters():
            p.mul_(0.0)  # a visibly different downstream: the zeroed LLM answers the same thing to every question
    weights = tmp_path / "own.safetensors"
    save_weights(other.model, weights)
    out = tmp_path / "bench"
    args = ["bench", "--n-scenes", "1", "--data", "scenebench:test", "--budgets", "64", "--policies", "uniform",
            "--no-paper-flops", "--max-new-tokens", "2", "--flop-samples", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out)]
    assert main(args + ["--own", f"uniform={weights}"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    pts = saved["results"]["scenebench:test"]
    assert [(p["policy"], p["label"]) for p in pts] == [("uniform", "16"), ("uniform/own", "16")]
    assert saved["own_weights"] == {"uniform": str(weights)}
    rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
    own_preds = {r["pred"] for r in rows if r["policy"] == "uniform/own"}
    shared_preds = [r["pred"] for r in rows if r["policy"] == "uniform"]
    assert len(own_preds) == 1 and len(set(shared_preds)) > 1  # the own points really ran on the other weights
    text = (out / "report.md").read_text()
    assert "## Own trained downstream" in text and "uniform/own detail" in text
    assert main(args + ["--own", "uniform"]) == 2 and "POLICY=WEIGHTS" in capsys.readouterr().err
    assert main(args + ["--own", f"uniform={tmp_path / 'missing.safetensors'}"]) == 2
    assert "not found" in capsys.readouterr().err
