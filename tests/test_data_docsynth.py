"""DocSynth: determinism, page structure versus answers, and calibrated answer text."""

import numpy as np
import pytest

from arrcoc_lab.data import DocSynth

GEOMETRIES = {"lab": (256, 8, (14, 18)), "paper": (1024, 16, (28, 36))}  # size, patch, cap range px


@pytest.fixture(scope="module")
def docs():
    return DocSynth("train", n=48)  # 8 pages


def test_indexing_and_regeneration(docs):
    assert len(docs) == 48 and docs.num_scenes == 8
    assert [docs[i].difficulty for i in range(6)] == ["gist"] * 3 + ["detail"] * 3
    sample = docs[29]
    docs.scene(0)
    fresh = DocSynth("train", n=600)[29]
    assert np.array_equal(sample.image, fresh.image) and sample.answer == fresh.answer
    assert sample.id == "docsynth/train/000004/5" and sample.scene_index == 4
    assert not np.array_equal(docs.scene(0).image, DocSynth("test", n=6).scene(0).image)


def test_answers_match_the_page(docs):
    for i in range(docs.num_scenes):
        scene = docs.scene(i)
        regions = {r.name: r for r in scene.regions}
        has_chart, rows, side, date, value, title = scene.samples
        assert has_chart.answer == ("yes" if "chart" in regions else "no")
        table = regions["table"].box
        dark = scene.image[table[1]:table[3], table[0] + 1].mean(axis=1) < 100  # horizontal rules
        rules = np.count_nonzero(np.diff(np.r_[0, dark.astype(int)]) == 1)
        assert int(rows.answer) == rules - 1  # n rows sit between n + 1 rules
        sidebar = regions["sidebar"].box
        assert side.answer == ("left" if sidebar[2] < 128 else "right")
        assert value.family in ("revenue", "page")
        for s in (date, value, title):
            assert s.answer == regions[s.target].text and s.target_box == regions[s.target].box
        assert all(1 <= len(s.answer) <= 6 for s in scene.samples)


def test_revenue_question_names_its_quarter():
    docs = DocSynth("val", n=6 * 12)
    asked = [docs.scene(i).samples[4] for i in range(12)]
    revenue = [s for s in asked if s.family == "revenue"]
    assert revenue and any(s.family == "page" for s in asked)
    for s in revenue:
        assert f"Q{s.target[-1]}" in s.question and s.target.startswith("chart_q")


def test_pairs_are_separate_regions(docs):
    for mode in ("detail", "mixed"):
        for a, b in docs.pairs(mode):
            ax0, ay0, ax1, ay1 = a.target_box
            bx0, by0, bx1, by1 = b.target_box
            assert a.target != b.target and (ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_signature_date_is_calibrated(name):
    """Dark ink rows inside the date region, measured from pixels."""
    size, patch, (lo, hi) = GEOMETRIES[name]
    scene = DocSynth("test", n=6, image_size=size, patch_size=patch).scene(1)
    x0, y0, x1, y1 = next(r for r in scene.regions if r.name == "signature_date").box
    crop = scene.image[y0:y1, x0:x1].mean(axis=2)
    rows = np.flatnonzero((crop < 128).any(axis=1))
    height = rows[-1] - rows[0] + 1
    assert lo <= height <= hi
    assert height / (4 * patch) <= 0.6 and height / patch >= 1.5


def test_bad_arguments_raise_value_errors(docs):
    with pytest.raises(ValueError, match="known"):
        DocSynth("validation")
    with pytest.raises(ValueError, match="known"):
        next(docs.pairs("far"))
