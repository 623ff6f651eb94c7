"""The inspector driven the way a user drives it: by setting widget values. Every assertion is on
the widget's state and figure data, checked against the pipeline's own outputs for the same
inputs (the tiny preset: the lab weights may be untrained, and the point is the wiring)."""
from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
from PIL import Image

from arrcoc_lab.apps import rendering
from arrcoc_lab.data.examples import SEED_QUESTIONS
from arrcoc_lab.examples import get_example, list_examples
from arrcoc_lab.widgets import Inspector

DETAIL, GIST = SEED_QUESTIONS  # "What's the formula on the billboard?", "What city is this?"


@pytest.fixture
def pipe(tiny_pipe, monkeypatch):
    """The session's tiny pipeline, counting SAM encodes (cache misses) in `pipe.sam_calls`."""
    encode = tiny_pipe.model.encode_image
    monkeypatch.setattr(tiny_pipe, "sam_calls", 0, raising=False)

    def counting(pixels):
        tiny_pipe.sam_calls += 1
        return encode(pixels)

    monkeypatch.setattr(tiny_pipe.model, "encode_image", counting)
    return tiny_pipe


@pytest.fixture
def photo():
    """An image no other test has shown the pipeline, so its first run is a cache miss."""
    rng = np.random.default_rng(1234)
    return (rng.random((150, 180, 3)) * 255).astype(np.uint8)


def test_starts_on_an_example_and_draws_the_pipelines_output(pipe):
    insp = Inspector(pipe)
    first = list_examples()[0]
    assert insp.picker.value == f"example:{first.name}" and insp.error is None
    np.testing.assert_array_equal(insp.image, first.load())
    assert insp.query.value == first.question_pair()[0]  # the example's detail question
    out = insp.last_output
    ref = pipe(insp.image, insp.query.value, budget="balanced", policy="arrcoc")
    np.testing.assert_array_equal(out.tokens_per_cell, ref.tokens_per_cell)
    assert out.budget == pipe.geometry.quality_budgets["balanced"] and insp.mode.value == "balanced"
    fd = insp.figure_data()
    assert fd["mode"] == "tokens" and fd["num_tokens"] == ref.num_tokens
    np.testing.assert_array_equal(fd["overlay"], rendering.overlay(insp.image, ref, mode="tokens", alpha=0.5, cmap="magma"))
    assert insp.canvas.array is fd["overlay"] and insp.canvas.src.startswith("data:image/webp;base64,")
    assert insp.canvas.boxes == ref.cell_boxes.reshape(-1, 4).tolist()
    assert insp.canvas.natural_size == [insp.image.shape[1], insp.image.shape[0]]
    assert fd["compression_ratio"] == pytest.approx(ref.compression_ratio)
    assert [t[1] for t in fd["colorbar"]["ticks"]] == [str(t) for t in pipe.geometry.levels]
    assert fd["colorbar"]["title"] == "tokens per cell (log scale)" and fd["colorbar"]["note"] == rendering.CELL_NOTE
    bar = np.asarray(Image.open(io.BytesIO(insp.colorbar.value)).convert("RGB"))
    np.testing.assert_array_equal(bar, rendering.colorbar("magma", fd["colorbar"]["ticks"], fd["colorbar"]["title"],
                                                          insp.display_width, note=rendering.CELL_NOTE))
    assert "arrcoc-colorbar" in insp.colorbar._dom_classes
    assert ref.answer in insp.answer.value and f"{ref.compression_ratio:.1f}×" in insp.stats.value
    assert all(stage in insp.timings.value for stage in ref.timings)


def test_view_colormap_opacity_only_redraw(pipe):
    insp = Inspector(pipe)
    calls, out = insp.calls, insp.last_output
    with insp.hold():
        insp.view.value, insp.cmap.value, insp.opacity.value = "relevance", "viridis", 0.3
    fd = insp.figure_data()
    np.testing.assert_array_equal(fd["values"], out.relevance)
    np.testing.assert_array_equal(fd["overlay"], rendering.overlay(insp.image, out, mode="relevance", alpha=0.3, cmap="viridis"))
    assert fd["colorbar"]["title"] == "relevance to the question"
    insp.view.value = "levels"
    np.testing.assert_array_equal(insp.figure_data()["values"], rendering.map_values(out, "levels"))
    np.testing.assert_array_equal(insp.overlay, rendering.overlay(insp.image, out, mode="levels", alpha=0.3, cmap="viridis"))
    assert insp.calls == calls and insp.last_output is out  # no pipeline call for any of it


def test_query_budget_policy_rerun_without_reencoding(pipe, photo):
    insp = Inspector(pipe, image=photo, query=DETAIL)
    assert pipe.sam_calls == 1 and insp.encodes == 1 and insp.last_output.timings["sam"] > 0
    insp.query.value = GIST
    assert insp.last_output.query == GIST and insp.last_output.timings["sam"] == 0.0
    insp.mode.value = "fast"
    assert insp.budget.value == pipe.geometry.quality_budgets["fast"] and insp.last_output.budget == insp.budget.value
    insp.budget.value = 30  # moving the slider switches to a custom budget
    assert insp.mode.value == "custom" and insp.budget_arg() == 30 and insp.last_output.budget == 30
    insp.policy.value = "uniform"
    insp.mode.value = "default"  # the slider shows the policy's own default
    assert insp.budget_arg() is None and insp.budget.value == pipe.geometry.uniform_budget
    assert insp.last_output.policy == "uniform" and insp.last_output.budget == pipe.geometry.uniform_budget
    assert insp.last_output.timings["sam"] == 0.0
    assert pipe.sam_calls == 1 and insp.encodes == 1 and insp.calls == 6
    insp.query.value = DETAIL  # asked before, but under other settings: a new run, still no encode
    assert insp.calls == 7 and insp.last_output.timings["sam"] == 0.0
    with insp.hold():  # back to the first settings: outputs are memoised per (image, query, budget, policy)
        insp.policy.value, insp.mode.value = "arrcoc", "balanced"
    insp.query.value = GIST
    assert insp.last_output.policy == "arrcoc" and insp.calls == 7 and pipe.sam_calls == 1


def test_compare_difference_map_is_nonzero_exactly_where_allocations_differ(pipe):
    insp = Inspector(pipe, query=DETAIL, compare=[GIST], policy="heuristic", budget="accurate")
    a = pipe(insp.image, DETAIL, budget="accurate", policy="heuristic")
    b = pipe(insp.image, GIST, budget="accurate", policy="heuristic")
    assert (a.tier, b.tier) == ("accurate", "fast") and a.num_tokens != b.num_tokens
    fig = insp.figure_data()["compare"]
    assert fig["queries"] == [DETAIL, GIST] and [o.num_tokens for o in insp.compare_outputs] == [a.num_tokens, b.num_tokens]
    diff = fig["differences"][0]
    np.testing.assert_array_equal(diff, a.tokens_per_cell - b.tokens_per_cell)
    np.testing.assert_array_equal(diff != 0, a.tokens_per_cell != b.tokens_per_cell)
    assert diff.any()
    for k, o in enumerate((a, b)):
        np.testing.assert_array_equal(fig["overlays"][k], rendering.overlay(insp.image, o, mode="tokens", alpha=0.5))
    # the picture: a cell's centre shows the diverging map's neutral middle exactly where A and B agree
    picture, neutral = fig["difference_overlays"][0], rendering.colormap(np.array([0.5]), rendering.DIFF_CMAP)[0].astype(np.float32)
    for (i, j), d in np.ndenumerate(diff):
        x0, y0, x1, y1 = a.cell_boxes[i, j]
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        expected = (insp.image[cy, cx].astype(np.float32) * 0.5 + neutral * 0.5).astype(np.uint8)
        assert np.array_equal(picture[cy, cx], expected) == (d == 0), (i, j, d)
    rows = insp.cell_rows()
    assert [r["diff"][0] for r in rows] == diff.ravel().tolist() and "A − B" in insp.table.value
    assert insp.compare_box.layout.display == "flex" and len(insp.compare_row.children) == 3
    for k, tile in enumerate(insp.compare_row.children):  # A, B (tokens per cell) and A − B: each with its colour bar
        bar = tile.children[-1]
        assert "arrcoc-colorbar" in bar._dom_classes and Image.open(io.BytesIO(bar.value)).width == insp._tile_width
    ticks = rendering.difference_ticks(int(np.abs(diff).max()))
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(insp.compare_row.children[2].children[-1].value)).convert("RGB")),
        rendering.colorbar(rendering.DIFF_CMAP, ticks[1], ticks[0], insp._tile_width, note=rendering.DIFF_NOTE))

    # the learned policy (weights may be untrained): the map is still exactly the outputs' difference
    insp.policy.value = "arrcoc"
    a, b = (pipe(insp.image, q, budget="accurate", policy="arrcoc") for q in (DETAIL, GIST))
    diff = insp.figure_data()["compare"]["differences"][0]
    np.testing.assert_array_equal(diff, a.tokens_per_cell - b.tokens_per_cell)
    np.testing.assert_array_equal(diff != 0, a.tokens_per_cell != b.tokens_per_cell)

    insp.compare_queries.value = f"{GIST}\nHow many windows are there?"  # three queries: A − B and A − C
    assert len(insp.compare_outputs) == 3 and len(insp.figure_data()["compare"]["differences"]) == 2
    insp.compare.value = False
    assert insp.compare_outputs == [] and insp.figure_data()["compare"] == {}
    assert insp.compare_box.layout.display == "none"


def test_cell_selection_from_dropdown_and_click(pipe):
    insp = Inspector(pipe, query=DETAIL, compare=[GIST])
    n_w = pipe.geometry.cells_per_side
    insp.cell.value = 3
    assert insp.selected_cell == (3 // n_w, 3 % n_w) and insp.canvas.selected == 3
    assert all(t[1].selected == 3 for t in insp._tiles)  # every picture outlines it
    assert "data-cell='3' class=\"selected\"" in insp.table.value
    assert insp.figure_data()["selected_box"] == tuple(insp.last_output.cell_boxes[3 // n_w, 3 % n_w])
    insp.canvas.selected = 1  # what the browser sends on a click
    assert insp.cell.value == 1 and insp.figure_data()["selected_cell"] == (0, 1)
    insp.canvas.selected = -1
    assert insp.selected_cell is None and 'class="selected"' not in insp.table.value


def test_picker_upload_and_bad_inputs(pipe, photo):
    insp = Inspector(pipe)
    # the picker offers the shipped examples (package data: nothing renders or downloads), by their example:NAME
    assert list(insp.sources) == [f"example:{e.name}" for e in list_examples()]
    assert [s.label for s in insp.sources.values()][:1] == ["scenebench-paris (SceneBench scene)"]
    astronaut = get_example("astronaut")
    insp.picker.value = "example:astronaut"
    assert insp.image.shape == (512, 512, 3) and insp.query.value == astronaut.question_pair()[0]
    assert insp.compare_queries.value == astronaut.question_pair()[1]
    assert insp.last_output.image_size == (512, 512) and insp.overlay.shape == (512, 512, 3)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    insp.upload.value = ({"name": "mine.png", "type": "image/png", "size": buf.tell(),
                          "content": memoryview(buf.getvalue()),
                          "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert insp.picker.label == "upload: mine.png" and np.array_equal(insp.image, photo)
    assert insp.query.value == astronaut.question_pair()[0]  # an upload keeps the question
    good = insp.last_output
    insp.query.value = "   "
    assert "query is empty" in insp.error and "query is empty" in insp.status.value
    assert insp.last_output is good
    insp.set_image(b"not an image", "broken")
    assert "cannot read the image data" in insp.error and np.array_equal(insp.image, photo)
    insp.query.value = GIST
    assert insp.error is None and insp.last_output.query == GIST
    bundle = insp._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "ARR-COC Inspector" in bundle["text/plain"]


def test_starts_on_a_named_example_without_adding_it_twice(pipe):
    """The quickstart opens the inspector on its example by name: the picker selects that entry."""
    insp = Inspector(pipe, image="example:astronaut", query=GIST, compare=[DETAIL])
    assert insp.picker.value == "example:astronaut" and len(insp.sources) == len(list_examples())
    np.testing.assert_array_equal(insp.image, get_example("astronaut").load())
    assert insp.queries() == [GIST, DETAIL] and [o.query for o in insp.compare_outputs] == [GIST, DETAIL]
