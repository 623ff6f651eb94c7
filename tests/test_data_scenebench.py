"""SceneBench: determinism, structure of questions and regions, and the text calibration."""

import time

import numpy as np
import pytest

from arrcoc_lab.data import SPLIT_SEEDS, SceneBench, glyph_calibration
from arrcoc_lab.data.scenebench import LANDMARK_CITIES, SKIES, TEMPLATES

GEOMETRIES = {"lab": (256, 8, (14, 18)), "paper": (1024, 16, (28, 36))}  # size, patch, cap range px


@pytest.fixture(scope="module")
def bench():
    return SceneBench("train", n=60)  # 10 scenes


def test_indexing_groups_six_questions_per_scene(bench):
    assert len(bench) == 60 and bench.num_scenes == 10
    first = [bench[i] for i in range(6)]
    assert {s.scene_index for s in first} == {0} and bench[6].scene_index == 1
    assert [s.difficulty for s in first] == ["gist"] * 4 + ["detail"] * 2
    assert first[0].id == "scenebench/train/000000/0" and bench[-1].id == "scenebench/train/000009/5"
    with pytest.raises(IndexError, match="out of range"):
        bench[60]


def test_samples_regenerate_bit_identically_from_their_index(bench):
    late = bench[47]
    bench.scene(2)  # visit other scenes in between
    fresh = SceneBench("train", n=600)[47]  # another instance, another n
    assert np.array_equal(late.image, fresh.image)
    assert (late.question, late.answer, late.target_box) == (fresh.question, fresh.answer, fresh.target_box)
    late.image[:] = 0  # callers may write to their copy without touching the cache
    assert bench[47].image.any()


def test_splits_use_disjoint_seeds():
    assert SPLIT_SEEDS == {"train": 0, "val": 1_000_000, "test": 2_000_000}
    train, val = SceneBench("train", n=6), SceneBench("val", n=6)
    assert not np.array_equal(train.scene(0).image, val.scene(0).image)


def test_questions_regions_and_answers_agree(bench):
    for i in range(bench.num_scenes):
        scene = bench.scene(i)
        regions = {r.name: r for r in scene.regions}
        boards = [r for r in scene.regions if r.role in ("billboard", "sign")]
        landmark, sky, count, city, d1, d2 = scene.samples
        assert landmark.answer in LANDMARK_CITIES and city.answer == LANDMARK_CITIES[landmark.answer]
        assert sky.answer in SKIES and sky.target == "sky"
        assert count.answer == str(len(boards)) and count.target == "global" and count.target_box is None
        assert 2 <= len(boards) <= 4 and "billboard" in regions
        assert d1.target != d2.target
        for s in (d1, d2):
            assert s.answer == regions[s.target].text and s.target_box == regions[s.target].box
        for s in scene.samples:
            assert 1 <= len(s.answer) <= 6 and s.answers == (s.answer,)
            assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        for r in scene.regions:
            assert 0 <= r.box[0] < r.box[2] <= 256 and 0 <= r.box[1] < r.box[3] <= 256


def test_phrasings_vary_within_families():
    seen: dict[str, set] = {}
    bench = SceneBench("val", n=6 * 40)
    for i in range(40):
        for s in bench.scene(i).samples:
            seen.setdefault(s.family, set()).add(s.question)
    assert set(seen) == set(TEMPLATES)  # every family occurs
    assert all(len(q) >= 2 for q in seen.values()), {f: len(q) for f, q in seen.items()}


def test_pairs_ask_about_two_separate_regions(bench):
    for mode in ("detail", "mixed"):
        pairs = list(bench.pairs(mode))
        assert len(pairs) == bench.num_scenes
        for a, b in pairs:
            assert a.scene_index == b.scene_index and a.target != b.target
            assert "global" not in (a.target, b.target)
            ax0, ay0, ax1, ay1 = a.target_box
            bx0, by0, bx1, by1 = b.target_box
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0  # boxes do not overlap
    with pytest.raises(ValueError, match="known"):
        next(bench.pairs("nearby"))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_glyph_calibration_bounds(name):
    size, patch, (lo, hi) = GEOMETRIES[name]
    cal = glyph_calibration(size, patch)
    assert lo <= cal.glyph_px <= hi
    assert cal.token_side_px[4] == 4 * patch and cal.token_side_px[64] == patch
    assert cal.glyph_tokens[4] <= 0.6  # smaller than one token at uniform 16x compression
    assert cal.glyph_tokens[64] >= 1.5  # spans >= 1.5 tokens at full resolution


@pytest.mark.parametrize("name", GEOMETRIES)
def test_rendered_sign_text_has_calibrated_height(name):
    """Measure the text inside the billboard of a real scene, from its pixels."""
    size, patch, (lo, hi) = GEOMETRIES[name]
    scene = SceneBench("test", n=6, image_size=size, patch_size=patch).scene(0)
    board = next(r for r in scene.regions if r.name == "billboard")
    x0, y0, x1, y1 = board.box
    crop = scene.image[y0:y1, x0:x1].astype(int)
    colours, counts = np.unique(crop.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    ink_rows = np.flatnonzero((np.abs(crop - background).sum(axis=2) > 300).any(axis=1))
    height = ink_rows[-1] - ink_rows[0] + 1
    assert lo <= height <= hi
    assert height / (4 * patch) <= 0.6 and height / patch >= 1.5


def test_content_is_the_same_at_every_geometry():
    lab = SceneBench("val", n=6).scene(3)
    paper = SceneBench("val", n=6, image_size=1024, patch_size=16).scene(3)
    assert [(s.question, s.answer) for s in lab.samples] == [(s.question, s.answer) for s in paper.samples]
    assert paper.image.shape == (1024, 1024, 3)


def test_rendering_is_fast():
    bench = SceneBench("test", n=6 * 20)
    bench.scene(0)  # fonts load once
    start = time.perf_counter()
    for i in range(1, 21):
        bench.scene(i)
    assert (time.perf_counter() - start) / 20 < 0.05  # a few ms each; generous on a shared CPU


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        SceneBench("dev")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SceneBench("train", image_size=250, patch_size=8)
    with pytest.raises(ValueError, match="accepted: 1.."):
        SceneBench("train", n=0)


def test_calibration_rejects_geometry_without_whole_cells():
    with pytest.raises(ValueError, match="multiple of 8"):
        glyph_calibration(250, 8)


def test_preview_cli_writes_small_pngs(tmp_path):
    from arrcoc_lab.data.preview import main

    main(["--out", str(tmp_path), "--scenes", "1", "--pages", "1"])
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["calibration.png", "docsynth_0.png", "scenebench_0.png"]
    assert all(p.stat().st_size < 120_000 for p in tmp_path.glob("*.png"))
