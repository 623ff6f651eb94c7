"""`eval` scores each dataset by its official metric (DocVQA ANLS, ChartQA relaxed accuracy, TextVQA
VQA accuracy, exact match for the synthetic sets), with exact match beside it: rows, summaries,
metrics.json and table.md name the metric. Real-format files are tiny fixtures in the official formats."""
import json
import warnings

import pytest
from PIL import Image

from arrcoc_lab.errors import InputError
from arrcoc_lab.evaluation import metrics as M
from arrcoc_lab.evaluation.evaluate import eval_table, evaluate, load_eval_set, run_eval, summarize


@pytest.fixture(scope="module")
def tiny():
    from arrcoc_lab.pipeline import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("tiny", weights="random")


def _image(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), colour).save(path)


def write_docvqa(root):
    _image(root / "documents" / "a.png", (10, 200, 30))
    _image(root / "documents" / "b.png", (0, 0, 255))
    data = {"data": [{"questionId": 1, "question": "What is the date?", "image": "documents/a.png",
                      "answers": ["July 1, 1976", "1 July 1976"]},
                     {"questionId": 2, "question": "Who signed?", "image": "documents/a.png", "answers": ["Smith."]},
                     {"questionId": 3, "question": "What is the title?", "image": "documents/b.png", "answers": ["REPORT"]}]}
    (root / "val.json").write_text(json.dumps(data))
    return root / "val.json"


def write_chartqa(root):
    _image(root / "png" / "c.png", (200, 0, 0))
    (root / "test.json").write_text(json.dumps([{"imgname": "c.png", "query": "Highest bar?", "label": "53.2"},
                                                {"imgname": "c.png", "query": "Is red above?", "label": "Yes"}]))
    return root / "test.json"


def write_textvqa(root):
    _image(root / "train_images" / "t.jpg", (90, 90, 90))
    answers = ["nokia"] * 3 + ["nokia phone"] * 2 + ["toshiba"] * 5
    (root / "val.json").write_text(json.dumps({"data": [{"question": "what brand?", "image_id": "t",
                                                         "answers": answers, "question_id": 7}]}))
    return root / "val.json"


@pytest.mark.parametrize("name, writer", [("docvqa", write_docvqa), ("chartqa", write_chartqa),
                                          ("textvqa", write_textvqa)])
def test_real_files_are_scored_by_their_official_metric(tiny, tmp_path, name, writer):
    spec = f"{name}:{writer(tmp_path / name)}"
    es = load_eval_set(tiny.model, spec, n_scenes=10, cache_dir=tmp_path / "cache", progress=False)
    g = tiny.model.geometry
    assert es.scenes.features.shape[0] == len({s.scene_index for s in es.samples})  # one SAM row per image
    assert es.image_hw == (g.image_size, g.image_size) and es.scenes.pixels.shape[-1] == g.image_size
    rows = evaluate(tiny.model, es, "uniform", None, progress=False, max_new_tokens=4)
    metric = M.OFFICIAL_METRIC[name]
    for r, s in zip(rows, es.samples):
        assert (r["dataset"], r["metric"]) == (name, metric)
        assert r["score"] == M.answer_score(metric, r["pred"], s.answers)
        assert r["correct"] == M.exact_match(r["pred"], s.answers)
    summary = summarize(rows, g, es.image_hw)
    assert summary["metric"] == metric and summary["by_dataset"][name]["metric"] == metric
    assert summary["exact_match"] == summary["accuracy"]


def test_run_eval_names_the_metric_in_metrics_json_and_table(tiny, tmp_path):
    spec = f"docvqa:{write_docvqa(tmp_path / 'docvqa')}"
    report = run_eval(tiny, spec, ["uniform", "full"], None, 3, tmp_path / "out", cache_dir=tmp_path / "cache",
                      progress=False)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["metric"] == saved["metric"] == "anls"
    for policy in ("uniform", "full"):
        s = saved["policies"][policy]
        assert s["metric"] == "anls" and 0.0 <= s["score"] <= 1.0 and "exact_match" in s
        assert s["by_dataset"]["docvqa"]["metric"] == "anls"
    table = (tmp_path / "out" / "table.md").read_text()
    assert table == eval_table(report) and "| uniform | anls |" in table and "exact match" in table


def test_summary_averages_the_official_score_beside_exact_match(tiny):
    """Hand rows: ANLS 5/6 and 1.0 average to 11/12 while exact match is 1/2."""
    g = tiny.model.geometry
    base = {"dataset": "docvqa", "metric": "anls", "scene": 0, "family": "docvqa", "difficulty": "detail",
            "num_tokens": g.min_tokens, "tier": None, "tokens_per_cell": [], "target_box": None}
    rows = [{**base, "correct": 0.0, "score": M.anls("Smith", "smith.")}, {**base, "correct": 1.0, "score": 1.0}]
    s = summarize(rows, g)
    assert s["metric"] == "anls" and s["score"] == pytest.approx(11 / 12) and s["exact_match"] == 0.5
    mixed = summarize(rows + [{**base, "dataset": "scenebench", "metric": "exact_match", "correct": 1.0,
                               "score": 1.0}], g)
    assert mixed["metric"] == "mixed: anls, exact_match" and mixed["score"] != mixed["score"]  # NaN
    assert mixed["by_dataset"]["scenebench"] == {"metric": "exact_match", "score": 1.0, "exact_match": 1.0}


def test_synthetic_sets_are_scored_by_exact_match(tiny, tmp_path):
    es = load_eval_set(tiny.model, "scenebench:test", n_scenes=1, cache_dir=tmp_path, progress=False)
    rows = evaluate(tiny.model, es, "uniform", None, progress=False, max_new_tokens=4)
    assert {r["metric"] for r in rows} == {"exact_match"} and all(r["score"] == r["correct"] for r in rows)


def test_real_files_refuse_heldout_phrasing_and_missing_answers(tiny, tmp_path):
    path = write_textvqa(tmp_path)
    with pytest.raises(InputError, match="textvqa takes 'seen'"):
        load_eval_set(tiny.model, f"textvqa:{path}", n_scenes=1, progress=False, phrasing="heldout")
    data = json.loads(path.read_text())
    del data["data"][0]["answers"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="no reference answers"):
        load_eval_set(tiny.model, f"textvqa:{path}", n_scenes=1, progress=False)


def test_cli_eval_reads_a_real_file_and_prints_the_official_metric(tmp_path, capsys):
    from arrcoc_lab.apps.cli import main

    spec = f"docvqa:{write_docvqa(tmp_path / 'docvqa')}"
    out = tmp_path / "report"
    assert main(["eval", "--preset", "tiny", "--weights", "random", "--data", spec, "--policy", "uniform",
                 "--n-scenes", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| uniform | anls |" in printed and "exact match" in printed
    assert json.loads((out / "metrics.json").read_text())["policies"]["uniform"]["metric"] == "anls"
