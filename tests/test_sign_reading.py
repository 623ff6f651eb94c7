"""evaluation/sign_reading.py: what the downstream reads with each sign's cells at one level and
every other cell at the minimum (no allocator), and `arrcoc-lab read-signs`."""
import json

import numpy as np
import pytest

from arrcoc_lab.apps.cli import main
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.errors import InputError
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.sign_reading import reading_table, sign_reading
from arrcoc_lab.pipeline import load_pipeline


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pipe = load_pipeline("lab", weights="random")
    return pipe, load_eval_set(pipe.model, "scenebench:test", 2, str(tmp_path_factory.mktemp("cache")), progress=False)


@pytest.mark.parametrize("levels", [[3], [2, 0]])
def test_each_level_shows_the_signs_at_that_level_and_the_rest_at_the_minimum(lab, levels):
    pipe, es = lab
    g = pipe.geometry
    signs = [s for s in es.samples if s.difficulty == "detail" and s.target_box]
    results = sign_reading(pipe.model, es, levels, progress=False)
    assert [r.level for r in results] == levels and all(r.n == len(signs) > 0 for r in results)
    cells = target_cells([s.target_box for s in signs], g, es.image_hw).flatten(1).gt(0).sum(1).numpy()  # (B,)
    n_cells = g.cells_per_side ** 2
    for r in results:  # the tokens a view: the sign's cells at the level, the others at the minimum
        want = np.mean(cells * g.levels[r.level] + (n_cells - cells) * g.levels[g.min_level])
        assert r.avg_tokens == pytest.approx(want) and r.tokens_per_cell == g.levels[r.level]
        assert 0.0 <= r.exact <= 1.0 and len(r.examples) == min(6, len(signs))
        assert all(ref == s.answer for (ref, _), s in zip(r.examples, signs))
    table = reading_table(results)
    assert table.count("\n") == 2 + len(levels) and f"{100 * results[0].exact:.1f}%" in table


def test_bad_levels_and_sets_without_signs_are_refused(lab):
    pipe, es = lab
    with pytest.raises(InputError, match=r"0\.\.3"):
        sign_reading(pipe.model, es, [4], progress=False)
    gist_only = type(es)([s for s in es.samples if s.difficulty != "detail"], es.scenes, es.image_hw, es.spec)
    with pytest.raises(InputError, match="no fine-detail question"):
        sign_reading(pipe.model, gist_only, progress=False)


def test_read_signs_prints_the_table_and_writes_metrics(capsys, tmp_path):
    out = tmp_path / "signs"
    assert main(["read-signs", "--weights", "random", "--n-scenes", "1", "--levels", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "read exactly" in text and str(out / "metrics.json") in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"] == "scenebench:test" and [r["level"] for r in m["levels"]] == [2] and m["levels"][0]["n"] > 0
