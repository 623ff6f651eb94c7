"""The lmms-eval model adapter (docs/LMMS_EVAL.md): `lmms-eval --model arrcoc` resolves through the
`lmms_eval.models` entry point, answers lmms-eval's own request Instances through the pipeline, and
runs end to end from lmms-eval's command line on a local task (a YAML, a JSON-lines dataset and PNG
images written here), offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmms_eval.api.instance import GenerationResult, Instance
from loguru import logger

from arrcoc_lab import InputError, example_path, load_pipeline
from arrcoc_lab.evaluation import lmms_eval_model as adapter
from arrcoc_lab.evaluation.metrics import anls
from arrcoc_lab.inputs import MAX_NEW_TOKENS

TASK = "arrcoc_local_vqa"
EXAMPLES = ("scenebench-paris", "docsynth-chart", "astronaut")


@pytest.fixture(scope="module")
def lm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny runs on random weights
        return adapter.ArrcocLMMS(pretrained="tiny", policy="arrcoc", budget=64, device="cpu", batch_size="1")


def _request(context, doc_id, gen_kwargs=None, task="t", split="test", doc_to_visual=None):
    args = (context, gen_kwargs or {}, doc_to_visual or (lambda doc: [doc["image"]]), doc_id, task, split)
    return Instance(request_type="generate_until", arguments=args, idx=0,
                    metadata={"task": task, "doc_id": doc_id, "repeats": 1})


def _images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)) for _ in range(n)]


# --- registration -----------------------------------------------------------------------------------

def test_the_package_declares_the_entry_point_lmms_eval_reads():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group=adapter.ENTRY_POINT_GROUP)}
    assert eps.get("arrcoc") == "arrcoc_lab.evaluation.lmms_eval_model:manifest", eps
    m = adapter.manifest()
    assert (m.model_id, m.simple_class_path) == ("arrcoc", "arrcoc_lab.evaluation.lmms_eval_model.ArrcocLMMS")


def test_lmms_eval_resolves_arrcoc_to_the_adapter():
    from lmms_eval import models

    assert "arrcoc" in models.AVAILABLE_MODELS  # from the entry point, read when lmms_eval.models loaded
    assert models.get_model("arrcoc") is adapter.ArrcocLMMS
    adapter.register()  # what `python -m arrcoc_lab.evaluation.lmms_eval_model` does first; idempotent
    assert models.get_model("arrcoc") is adapter.ArrcocLMMS and "arrcoc" in models.AVAILABLE_SIMPLE_MODELS


# --- the adapter on lmms-eval's own Instances -------------------------------------------------------

def test_generate_until_answers_through_the_pipeline(lm):
    a, b = _images()
    lm.task_dict = {"t": {"test": [{"image": a}, {"image": b}]}}
    lm.records.clear()
    out = lm.generate_until([_request("What does the sign say?", 0, {"max_new_tokens": 6}),
                             _request("What colour is it?", 1, {"max_new_tokens": 6, "until": ["\n\n"]})])
    assert all(isinstance(r, GenerationResult) for r in out)
    for r, img, q in zip(out, (a, b), ("What does the sign say?", "What colour is it?")):
        direct = lm.pipe(img, q, budget=64, policy="arrcoc", max_new_tokens=6)
        assert r.text == direct.answer
        assert r.token_counts.input_tokens == direct.num_tokens  # the visual tokens the allocator spent
    assert [(x["task"], x["doc_id"], x["policy"]) for x in lm.records] == [("t", 0, "arrcoc"), ("t", 1, "arrcoc")]
    assert all(x["budget"] == 64 for x in lm.records)


def test_several_images_use_the_first_with_one_warning(lm):
    a, b = _images(seed=1)
    lm.task_dict = {"multi": {"test": [{"images": [a, b]}, {"images": [[a], [b]]}]}}
    two = lambda doc: doc["images"]  # noqa: E731
    messages = []
    sink = logger.add(messages.append, level="WARNING")  # lmms-eval's logger (loguru)
    try:
        out = lm.generate_until([_request("Q?", 0, task="multi", doc_to_visual=two),
                                 _request("Q?", 1, task="multi", doc_to_visual=two)])
    finally:
        logger.remove(sink)
    assert len([m for m in messages if "reads only the first" in m]) == 1
    direct = lm.pipe(a, "Q?", budget=64, policy="arrcoc")
    assert out[0].text == out[1].text == direct.answer


def test_a_document_without_an_image_is_refused(lm):
    lm.task_dict = {"text": {"test": [{"question": "2+2?"}]}}
    with pytest.raises(InputError, match="no image"):
        lm.generate_until([_request("2+2?", 0, task="text", doc_to_visual=lambda doc: [])])


def test_stop_strings_and_visual_lists():
    assert adapter.cut_at_stop("Paris\nQuestion: x", ["\n"]) == "Paris"
    assert adapter.cut_at_stop("a ASSISTANT: b", "ASSISTANT:") == "a "
    assert adapter.cut_at_stop("abc", None) == adapter.cut_at_stop("abc", [""]) == "abc"
    assert adapter.flatten(None) == [] and adapter.flatten("p.png") == ["p.png"]
    assert adapter.flatten([["a"], ("b", ["c"])]) == ["a", "b", "c"]


def test_answer_length_model_args_win_and_the_task_is_capped(lm):
    assert lm._max_new_tokens({}) is None  # the preset's default
    assert lm._max_new_tokens({"max_new_tokens": 32}) == 32
    assert lm._max_new_tokens({"max_new_tokens": 4096}) == MAX_NEW_TOKENS
    lm.max_new_tokens = 5
    try:
        assert lm._max_new_tokens({"max_new_tokens": 32}) == 5
    finally:
        lm.max_new_tokens = None


def test_likelihood_and_multi_round_say_what_is_supported(lm):
    with pytest.raises(NotImplementedError, match="generate_until tasks only"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="multi-round"):
        lm.generate_until_multi_round([])


@pytest.mark.parametrize("args,match", [
    ("pretrained=tiny,polciy=arrcoc", "unknown model_args"),
    ("pretrained=tiny,budget=100000", "budget"),
    ("pretrained=tiny,policy=nonesuch", "policy"),
    ("pretrained=tiny,max_new_tokens=100000", "max_new_tokens"),
    ("pretrained=hf-vlm", "needs vlm_path"),
])
def test_bad_model_args_fail_before_any_task_loads(args, match):
    with warnings.catch_warnings(), pytest.raises(InputError, match=match):
        warnings.simplefilter("ignore")
        adapter.ArrcocLMMS.create_from_arg_string(args, {"batch_size": 1})


# --- lmms-eval's scorers for DocVQA, TextVQA and ChartQA against OFFICIAL_METRIC's -----------------

def test_lmms_eval_scores_docvqa_textvqa_chartqa_as_our_official_metrics_do():
    """docs/LMMS_EVAL.md's comparison table: the same ANLS, the same VQA accuracy (normalisation
    included) and the same relaxed accuracy, except that ours also strips spaces around a ChartQA
    reference."""
    import random
    import string

    from lmms_eval.api.metrics import anls as lmms_anls
    from lmms_eval.tasks.chartqa.utils import relaxed_correctness
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results

    from arrcoc_lab.evaluation.metrics import relaxed_accuracy, vqa_accuracy

    rng = random.Random(0)
    words = ["nokia", "Nokia.", "the nokia", "2", "two", "10%", "0.1", "12.5", "13", "yes", "no", "", "LEFT",
             "left", "a+m=9", "0", "-3", "1e3", "1,000", "1000", "don't", "dont", "U.S.A.", "it's 10:30"]

    def text():
        return rng.choice(words + ["".join(rng.choice(string.ascii_letters + string.digits + " .,%-'?!/")
                                           for _ in range(rng.randint(0, 10)))])

    for _ in range(500):
        pred, refs, ten = text(), [text() for _ in range(rng.randint(1, 3))], [text() for _ in range(10)]
        assert lmms_anls(refs, [pred])["anls"] == pytest.approx(anls(pred, refs), abs=1e-12), (pred, refs)
        lmms_vqa = textvqa_process_results({"answers": list(ten), "question_id": 0}, [pred])["exact_match"]
        assert lmms_vqa == pytest.approx(vqa_accuracy(pred, ten), abs=1e-12), (pred, ten)
        ref = refs[0].strip()  # lmms-eval strips the prediction only
        assert float(relaxed_correctness(pred.strip(), ref)) == relaxed_accuracy(pred.strip(), ref), (pred, ref)


# --- end to end: lmms-eval's command line on a local task ------------------------------------------

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answers
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  do_sample: false
metric_list:
  - metric: anls
    aggregation: mean
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: "\\nAnswer the question using a single word or phrase."
  arrcoc:
    pre_prompt: ""
    post_prompt: ""
metadata:
  version: 0.0
"""
TASK_UTILS = """\
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"
"""


def _local_task(folder: Path, answers: list[str]) -> list[dict]:
    """A DocVQA-shaped task in `folder`: PNGs, a JSON-lines dataset whose references are chosen
    against the expected answers (one exact, one near, one wrong), the YAML and its utils."""
    folder.mkdir()
    questions = ["What does the billboard say?", "Read the Q3 value from the chart.", "What colour is her suit?"]
    docs = []
    for i, (name, q, expected) in enumerate(zip(EXAMPLES, questions, answers)):
        Image.open(example_path(name)).convert("RGB").save(folder / f"img{i}.png")
        refs = [[expected], [expected + "xy"], ["zz-not-an-answer"]][i]
        docs.append({"question_id": i, "image": f"img{i}.png", "question": q, "answers": refs})
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "arrcoc_local.yaml").write_text(TASK_YAML.format(task=TASK, data=json.dumps(str(data))))
    (folder / "utils.py").write_text(TASK_UTILS)
    return docs


@pytest.mark.slow
def test_lmms_eval_command_line_runs_the_adapter_on_a_local_task(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline("tiny")
    saved = pipe.save_pretrained(tmp_path / "tiny-hf")  # pretrained=DIR: a save_pretrained folder
    pipe = load_pipeline(saved)
    questions = ["What does the billboard say?", "Read the Q3 value from the chart.", "What colour is her suit?"]
    expected = [pipe(example_path(n), q, budget=64, policy="arrcoc", max_new_tokens=8) for n, q in zip(EXAMPLES, questions)]
    docs = _local_task(tmp_path / "task", [e.answer.strip() for e in expected])

    cli = Path(sys.executable).with_name("lmms-eval")  # the console script `pip install ".[eval]"` puts beside python
    assert cli.is_file(), cli
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([str(cli), "--model", "arrcoc",
                          "--model_args", f"pretrained={saved},policy=arrcoc,budget=64,device=cpu",
                          "--tasks", TASK, "--include_path", str(tmp_path / "task"),
                          "--output_path", str(tmp_path / "out"), "--log_samples", "--verbosity", "WARNING"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    results_files = sorted((tmp_path / "out").rglob("*results*.json"))
    samples_files = sorted((tmp_path / "out").rglob(f"*samples_{TASK}*.jsonl"))
    assert len(results_files) == 1 and len(samples_files) == 1, sorted(p.name for p in (tmp_path / "out").rglob("*"))
    results = json.loads(results_files[0].read_text())
    score = results["results"][TASK]["anls,none"]
    ours = [anls(e.answer.strip(), d["answers"]) for e, d in zip(expected, docs)]
    assert isinstance(score, float) and score == pytest.approx(np.mean(ours))  # lmms-eval's ANLS = ours
    assert ours[0] == 1.0 and ours[2] == 0.0

    samples = sorted((json.loads(line) for line in samples_files[0].read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    for s, e, d in zip(samples, expected, docs):
        resp = s["filtered_resps"]  # lmms-eval 0.7 logs one request's response as the string itself
        assert (resp[0] if isinstance(resp, list) else resp) == e.answer.strip()  # the pipeline's own answers
        assert s["input"] == d["question"]  # the task's `arrcoc:` prompt kwargs (no post_prompt) were used
        assert s["anls"] == pytest.approx(anls(e.answer.strip(), d["answers"]))
    # the sample's token_counts: the visual tokens each answer used
    assert [s["token_counts"][0]["input_tokens"] for s in samples] == [e.num_tokens for e in expected]


def test_vlm_path_puts_the_adapter_in_front_of_a_local_vlm(tmp_path):
    from tests.vlm_fixtures import write_llava

    folder = write_llava(tmp_path / "llava")
    lm = adapter.ArrcocLMMS.create_from_arg_string(f"pretrained=hf-vlm,vlm_path={folder},budget=36", {"batch_size": 1})
    assert lm.pipe.config.preset == "hf-vlm" and lm.pipe.config.vlm.path == str(folder)
