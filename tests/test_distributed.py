"""Distributed evaluation (issue 20): `eval` and `bench` under a launcher shard the scenes over 2 CPU
processes and merge the rows on the main process into the metrics of a one-process run (timing
fields aside); only the main process writes files. Tiny preset, random weights, a few scenes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arrcoc_lab.evaluation.distributed import Shard

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"timings", "latency", "latency_total", "created"}  # wall-clock fields: never equal between runs
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "arrcoc_lab"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "arrcoc_lab"]


def _run(launcher: list[str], args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}
    r = subprocess.run(launcher + args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _report(folder: Path) -> tuple[str, list]:
    metrics = json.dumps(_untimed(json.loads((folder / "metrics.json").read_text())), sort_keys=True)
    rows = [_untimed(json.loads(line)) for line in (folder / "rows.jsonl").read_text().splitlines()]
    return metrics, rows


@pytest.mark.slow
def test_eval_on_two_processes_equals_one(tmp_path):
    args = ["eval", "--preset", "tiny", "--weights", "random", "--data", "scenebench:test", "--n-scenes", "3",
            "--policy", "arrcoc,uniform,fastv", "--batch-size", "4", "--cache-dir", str(tmp_path / "cache")]
    one = _run([sys.executable, "-m", "arrcoc_lab"], args + ["--out", str(tmp_path / "one")])
    two = _run(TORCHRUN, args + ["--out", str(tmp_path / "two")])
    assert "(2 processes)" in two.stdout and two.stdout.count("report:") == 1  # the main process prints, once
    metrics, rows = _report(tmp_path / "two")
    assert (metrics, rows) == _report(tmp_path / "one") and len(rows) == 3 * 3 * 6
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    # each process encoded its own block of scenes (2 + 1), into cache files of its own
    shards = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir() if "@" in p.name)
    assert shards == ["test@0", "test@2"]


@pytest.mark.slow
def test_bench_on_two_processes_equals_one(tmp_path):
    args = ["bench", "--preset", "tiny", "--weights", "random", "--data", "scenebench:test,docsynth:test",
            "--n-scenes", "3", "--policies", "arrcoc,uniform,tome", "--budgets", "64,256", "--no-paper-flops",
            "--batch-size", "4", "--cache-dir", str(tmp_path / "cache")]
    _run([sys.executable, "-m", "arrcoc_lab"], args + ["--out", str(tmp_path / "one")])
    two = _run(ACCELERATE, args + ["--out", str(tmp_path / "two")])
    assert two.stdout.count("report:") == 1
    metrics, rows = _report(tmp_path / "two")
    assert (metrics, rows) == _report(tmp_path / "one") and len(rows) == 2 * 3 * 2 * 3 * 6


def test_blocks_cover_the_scenes_and_the_main_process_holds_the_first():
    for n in range(1, 12):
        for world in (1, 2, 3, 5):
            blocks = [Shard(r, world).block(n) for r in range(world)]
            assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n))
            assert blocks[0][0] == 0 and blocks[0][1] >= 1
            sizes = [hi - lo for lo, hi in blocks]
            assert max(sizes) - min(sizes) <= 1


def test_one_process_merges_in_the_split_order():
    s = Shard()
    assert s.main and s.merge([2, 0, 1], ["c", "a", "b"]) == ["a", "b", "c"] and s.gather({"x": 1}) == [{"x": 1}]
    with pytest.raises(ValueError):
        s.merge([0, 1], ["a"])


@pytest.mark.parametrize("data", ["scenebench:test", "docvqa"])
def test_shards_hold_their_own_scenes_and_together_the_whole_split(tmp_path, data):
    """What each of 2 processes would load and answer (no launcher: the shards side by side), put back in
    the split's order by position, equals the one-process rows."""
    import warnings

    from arrcoc_lab.evaluation.evaluate import evaluate, load_eval_set
    from arrcoc_lab.pipeline import load_pipeline
    from tests.test_eval_official import write_docvqa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_pipeline("tiny", weights="random").model
    spec = f"docvqa:{write_docvqa(tmp_path / 'docvqa')}" if data == "docvqa" else data
    run = lambda shard: load_eval_set(model, spec, 3, tmp_path / "cache", progress=False, shard=shard)  # noqa: E731
    whole, parts = run(Shard()), [run(Shard(r, 2)) for r in range(2)]
    assert sorted(p for part in parts for p in part.positions) == whole.positions == list(range(len(whole.samples)))
    scenes = [{s.scene_index for s in part.samples} for part in parts]
    assert scenes[0] and not scenes[0] & scenes[1]  # whole images per process, the first one on the main process
    for part in parts:  # each process encoded only its own images
        assert sorted(part.scenes.scene_ids) == sorted(scenes[parts.index(part)])
    answer = lambda es: evaluate(model, es, "arrcoc", None, batch_size=2, progress=False, max_new_tokens=3)  # noqa: E731
    merged = sorted((p, r) for part in parts for p, r in zip(part.positions, answer(part)))
    assert _untimed([r for _, r in merged]) == _untimed(answer(whole))
