"""Phrasings: parse every template, rephrase keeping family and fields, held-out vocabulary."""
from __future__ import annotations

import itertools
import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrcoc_lab.data import docsynth, phrasing, scenebench
from arrcoc_lab.data.phrasing import HELDOUT, Phrase, parse, rephrase, rephrase_samples
from arrcoc_lab.errors import InputError

DATASETS = {"scenebench": scenebench.TEMPLATES, "docsynth": docsynth.TEMPLATES}
FIELD_VALUES = {"colour": list(scenebench.SIGNS), "q": ["1", "2", "3", "4"]}


def _instances():
    """(dataset, family, question, fields) for every template of both datasets and every field value."""
    for name, templates in DATASETS.items():
        for family, options in templates.items():
            for t in options:
                keys = sorted(set(re.findall(r"\{(\w+)\}", t)))
                for values in itertools.product(*(FIELD_VALUES[k] for k in keys)):
                    fields = dict(zip(keys, values))
                    yield name, family, t.format(**fields), fields


INSTANCES = list(_instances())
FAMILY_QUESTIONS = {fam: q for _, fam, q, _ in INSTANCES}  # one question per family


def test_every_family_of_both_datasets_is_covered():
    assert set(phrasing.FAMILIES) == set(scenebench.TEMPLATES) | set(docsynth.TEMPLATES)
    assert set(HELDOUT) == set(phrasing.FAMILIES)


@pytest.mark.parametrize("dataset, family, question, fields", INSTANCES)
def test_parse_round_trips_every_template(dataset, family, question, fields):
    assert parse(question) == Phrase(dataset, family, fields, "template")


def test_parse_reads_the_questions_the_datasets_ask():
    for ds in (scenebench.SceneBench("test", n=18), docsynth.DocSynth("test", n=18)):
        for s in ds:
            p = parse(s.question)
            assert (p.dataset, p.family) == (s.dataset, s.family)
            if s.family == "number":
                assert p.fields == {"colour": s.target.split("_")[0]}
            if s.family == "revenue":
                assert p.fields == {"q": s.target[-1]}


@pytest.mark.parametrize("question", ["What is the meaning of life?", "", "Read the formula on the moon."])
def test_unknown_question_is_a_value_error_naming_it(question):
    with pytest.raises(ValueError, match=re.escape(repr(question))):
        parse(question)


def _check_kept(out: str, family: str, fields: dict, source: str) -> None:
    p = parse(out)
    assert (p.family, p.fields) == (family, fields), out
    # the train generator also says some template questions as they are
    assert p.source == source or (source, p.source) == ("train", "template"), out
    for value in fields.values():
        assert value in out, out
    if "colour" in fields:
        assert re.search(rf"\b{fields['colour']}\b", out), out
    if "q" in fields:
        assert f"Q{fields['q']}" in out, out
    if family == "code":
        assert re.search(r"\bred\b", out), out


@pytest.mark.parametrize("dataset, family, question, fields", INSTANCES)
def test_rephrase_keeps_family_and_fields(dataset, family, question, fields):
    rng = np.random.default_rng(len(question))
    for _ in range(40):
        _check_kept(rephrase(question, rng, "train"), family, fields, "train")
        _check_kept(rephrase(question, rng, "train", noise=False), family, fields, "train")
    for _ in range(10):
        _check_kept(rephrase(question, rng, "heldout"), family, fields, "heldout")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(INSTANCES))
def test_rephrase_property_any_seed(seed, instance):
    _, family, question, fields = instance
    out = rephrase(question, np.random.default_rng(seed), "train")
    _check_kept(out, family, fields, "train")
    # a rephrasing rephrases again, to the same family and fields
    _check_kept(rephrase(out, np.random.default_rng(seed + 1), "heldout"), family, fields, "heldout")


@pytest.mark.parametrize("family", sorted(FAMILY_QUESTIONS))
def test_train_phrasings_are_diverse(family):
    rng = np.random.default_rng(7)
    draws = [rephrase(FAMILY_QUESTIONS[family], rng, "train") for _ in range(500)]
    assert len(set(draws)) >= 50
    clean = {rephrase(FAMILY_QUESTIONS[family], rng, "train", noise=False) for _ in range(500)}
    assert len(clean) >= 50
    assert phrasing.train_size(family) >= 200


def test_train_noise_has_typos_casing_and_punctuation_but_keeps_fields():
    rng = np.random.default_rng(3)
    known = phrasing._known()
    outs = [rephrase("What number is on the yellow sign?", rng) for _ in range(600)]
    typos = [o for o in outs if any(w not in known for w in phrasing._normal(o).split())]
    assert 0.03 * len(outs) < len(typos) < 0.25 * len(outs)  # occasional
    assert any(o[0].islower() for o in outs) and any(o[0].isupper() for o in outs)
    assert {o[-1] for o in outs} >= {"?", ".", "!"}  # other end punctuation, or none
    assert all(re.search(r"\byellow\b", o) for o in outs)
    assert parse(typos[0]).fields == {"colour": "yellow"}


def test_heldout_has_at_least_six_fixed_phrasings_per_family_with_the_family_fields():
    for family in phrasing.FAMILIES:
        options = HELDOUT[family]
        assert len(set(options)) >= 6, family
        template_fields = {tuple(sorted(set(re.findall(r"\{(\w+)\}", t)))) for t in phrasing.TEMPLATES[family]}
        for t in options:
            assert {tuple(sorted(set(re.findall(r"\{(\w+)\}", t))))} == template_fields, t
    q = FAMILY_QUESTIONS["landmark"]
    seen = {rephrase(q, np.random.default_rng(i), "heldout") for i in range(200)}
    assert seen == set(HELDOUT["landmark"])  # a fixed list, nothing generated


def test_heldout_vocabulary_is_disjoint_from_train_and_templates():
    heldout, train, templates = (phrasing.heldout_vocabulary(), phrasing.train_vocabulary(),
                                 phrasing.template_vocabulary())
    assert len(heldout) > 80 and len(train) > 120
    assert not heldout & train, sorted(heldout & train)
    assert not heldout & templates, sorted(heldout & templates)
    assert templates <= train | {"one", "word"}  # the generator speaks the templates' words
    for family, options in HELDOUT.items():  # each held-out phrasing has its own content words
        assert all(phrasing.content_words(t) for t in options), family
    assert {"expression", "displayed", "large", "advertising", "panel"} <= heldout


def test_rephrase_is_deterministic():
    q = "What revenue does the chart show for Q2?"
    for split in phrasing.SPLITS:
        a = [rephrase(q, np.random.default_rng(11), split) for _ in range(3)]
        assert len(set(a)) == 1
    with pytest.raises(ValueError, match="heldout"):
        rephrase(q, np.random.default_rng(0), "test")


def test_rephrase_samples_is_seeded_by_sample_id_not_order():
    samples = list(scenebench.SceneBench("test", n=12))
    a = rephrase_samples(samples, "heldout", seed=0)
    b = rephrase_samples(samples[::-1], "heldout", seed=0)[::-1]
    assert [s.question for s in a] == [s.question for s in b]
    assert [s.question for s in a] == [s.question for s in rephrase_samples(samples, "heldout", seed=0)]
    assert [s.question for s in a] != [s.question for s in rephrase_samples(samples, "heldout", seed=1)]
    assert phrasing.stable_hash(samples[0].id) == phrasing.stable_hash(str(samples[0].id))
    for s, r in zip(samples, a):
        assert (r.id, r.answer, r.target_box, r.family) == (s.id, s.answer, s.target_box, s.family)
        assert parse(r.question).source == "heldout" and s.question != r.question


@pytest.fixture(scope="module")
def tiny_random():
    from arrcoc_lab.pipeline import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline("tiny", weights="random")


def test_load_eval_set_heldout_changes_questions_not_answers(tmp_path, tiny_random):
    from arrcoc_lab.evaluation.evaluate import load_eval_set

    model = tiny_random.model
    seen = load_eval_set(model, "scenebench:test", n_scenes=2, cache_dir=tmp_path, progress=False)
    held = load_eval_set(model, "scenebench:test", n_scenes=2, cache_dir=tmp_path, progress=False,
                         phrasing="heldout")
    assert (seen.phrasing, held.phrasing) == ("seen", "heldout")
    assert len(seen.samples) == len(held.samples) == 12
    for s, h in zip(seen.samples, held.samples):
        assert (h.id, h.answer, h.answers, h.target_box, h.family) == (s.id, s.answer, s.answers, s.target_box, s.family)
        assert h.question != s.question and h.question in {t.format(**parse(s.question).fields)
                                                           for t in HELDOUT[s.family]}
    assert seen.scenes.features.shape == held.scenes.features.shape


def test_run_eval_records_the_phrasing(tmp_path, tiny_random):
    from arrcoc_lab.evaluation.evaluate import run_eval

    report = run_eval(tiny_random, "docsynth:test", ["uniform"], None, 1, tmp_path / "out", cache_dir=tmp_path,
                      progress=False, phrasing="heldout")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["phrasing"] == saved["phrasing"] == "heldout"
    rows = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(parse(r["question"]).source == "heldout" for r in rows)


def test_unknown_phrasing_is_an_input_error():
    from arrcoc_lab.evaluation.evaluate import load_eval_set, run_eval

    for call in (lambda: load_eval_set(None, phrasing="unseen"),
                 lambda: run_eval(None, "scenebench:test", ["arrcoc"], None, 1, "unused", phrasing="unseen")):
        with pytest.raises(InputError, match="seen.*heldout"):
            call()



@pytest.mark.parametrize("module, make", [(scenebench, scenebench.SceneBench), (docsynth, docsynth.DocSynth)],
                         ids=["scenebench", "docsynth"])
def test_detail_families_are_exactly_the_fine_detail_questions(module, make):
    """phrasing.DETAIL_FAMILIES (what PhaseConfig.detail_weights may weigh) names the families the
    datasets ask as fine detail, and only those."""
    dataset = make("test", n=120)  # built when the test runs, not when pytest collects it
    samples = [dataset[i] for i in range(len(dataset))]
    assert {s.family for s in samples if s.difficulty == "detail"} == set(module.DETAIL_FAMILIES)
    assert all((s.difficulty == "detail") == (s.family in phrasing.DETAIL_FAMILIES) for s in samples)
    assert set(phrasing.DETAIL_FAMILIES) <= set(phrasing.FAMILIES)
