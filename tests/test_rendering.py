"""The pictures explain themselves (issue 19): every overlay comes with a colour bar and a legend,
text is drawn in a TrueType font that has every glyph the pictures use, and it is big enough to
read where the pictures are shown."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from arrcoc_lab.apps import rendering

MISSING = "\uffff"  # a noncharacter: no font has it, so it renders as the font's missing-glyph box
WIDTHS = (256, 384, 512, 768)  # the widths pictures are drawn at: CLI/inspector 256–384, demo 512–768


def _mask(f, text: str) -> np.ndarray:
    m = f.getmask(text)
    return np.asarray(m, dtype=np.uint8).reshape(m.size[1], m.size[0])


def _ink(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(array).convert("L")) < 128


@pytest.mark.parametrize("char", ["—", "−", "×", "…", "“", "·"])
def test_the_font_has_the_glyphs_the_pictures_use(char):
    f = rendering.font(14)
    assert type(f).__name__ == "FreeTypeFont"  # DejaVu Sans, not PIL's bitmap default
    box = _mask(f, MISSING)
    glyph = _mask(f, char)
    assert glyph.any(), f"{char!r} draws nothing"
    assert glyph.shape != box.shape or not np.array_equal(glyph, box), f"{char!r} is the missing-glyph box"


def test_titles_with_dashes_render_as_dashes_not_boxes():
    title = "A − B — tokens per cell"
    bar = rendering.colorbar(rendering.DIFF_CMAP, rendering.difference_ticks(3)[1], title, width=384)
    boxed = rendering.colorbar(rendering.DIFF_CMAP, rendering.difference_ticks(3)[1],
                               title.replace("−", MISSING).replace("—", MISSING), width=384)
    assert not np.array_equal(bar, boxed)
    # the dashes themselves: one or two pixel rows of ink, where the missing glyph is a tall box
    f = rendering.font(rendering.text_size(384))
    for char in "—−":
        assert _mask(f, char).any(axis=1).sum() <= 3 < _mask(f, MISSING).any(axis=1).sum()
    assert rendering.difference_ticks(3) == ("tokens per cell, A − B", [(0.0, "−3"), (0.5, "0"), (1.0, "+3")])
    head = rendering.heading("A: What does the billboard say? — 43 tokens", 512)
    assert head.shape[1] == 512 and _ink(head).any()


@pytest.mark.parametrize("width", WIDTHS)
def test_text_is_readable_at_the_widths_used(width):
    assert rendering.text_size(width) >= 12 and rendering.label_size(width, width) >= 11
    for size in (rendering.text_size(width), rendering.label_size(width, width)):
        _, top, _, bottom = rendering.font(size).getbbox("0123456789", anchor="ls")
        assert bottom - top >= 8  # digits at least 8 px tall
    bar = rendering.colorbar("magma", [(0.0, "1"), (1.0, "64")], "tokens per cell (log scale)", width,
                             note=rendering.CELL_NOTE)
    assert bar.shape[1] == width
    # title and note are both drawn in full (not cut to an ellipsis) at every width used
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    f = rendering.font(rendering.text_size(width))
    assert probe.textlength(rendering.CELL_NOTE, font=f) <= width - 2 * max(10, rendering.text_size(width))


def test_every_overlay_figure_has_its_colour_bar_and_legend(tiny_pipe):
    rgb = (np.random.default_rng(0).random((200, 260, 3)) * 255).astype(np.uint8)  # wider than MIN_WIDTH
    out = tiny_pipe(rgb, "What city is this?", budget="balanced")
    levels = tiny_pipe.geometry.levels
    for mode in rendering.MODES:
        picture = rendering.overlay(rgb, out, mode=mode)
        fig = rendering.overlay_figure(rgb, out, mode=mode, levels=levels)
        h = rgb.shape[0]
        np.testing.assert_array_equal(fig[:h], picture)  # the overlay itself is unchanged, the bar is under it
        bar = fig[h:]
        assert fig.shape[1] == rgb.shape[1] and bar.shape[0] > 20
        ends = rendering.colormap(np.array([0.0, 1.0]), "magma")
        for colour in ends:  # the gradient's two ends are in the strip
            assert (np.abs(bar.astype(int) - colour).sum(axis=-1) <= 6).any()
    # with a heading: question above, bar below
    fig = rendering.overlay_figure(rgb, out, levels=levels, head=rendering.describe(out, "paris"))
    assert fig.shape[0] > rendering.overlay_figure(rgb, out, levels=levels).shape[0]
    diff = np.array([[3, 0], [-3, 0]])
    fig = rendering.difference_figure(rgb, diff, out.cell_boxes)
    np.testing.assert_array_equal(fig[: rgb.shape[0]], rendering.difference_overlay(rgb, diff, out.cell_boxes))
    assert fig.shape[0] > rgb.shape[0]


def test_side_by_side_has_one_colour_bar_under_the_row(tiny_pipe, rgb):
    outs = tiny_pipe.compare(rgb, ["What city is this?", "What does the sign say?"], budget="balanced")
    plain = rendering.side_by_side(rgb, outs, legend=False)
    row = rendering.side_by_side(rgb, outs)
    assert plain.shape[1] == row.shape[1] == 2 * rgb.shape[1] + 6
    np.testing.assert_array_equal(row[: plain.shape[0]], plain)
    assert row.shape[0] > plain.shape[0]


def test_the_readme_figure_has_its_colour_bar_and_legend(tiny_pipe, rgb):
    import matplotlib.pyplot as plt

    from arrcoc_lab.apps.figures import two_questions_figure

    fig = two_questions_figure(tiny_pipe, rgb, ["What city is this?", "What does the sign say?"], budget=16,
                               answers=["paris", None])
    try:
        panels, bar = fig.axes[:2], fig.axes[2]
        assert "answer" in panels[0].get_title() and "(reference “paris”)" in panels[0].get_title()
        assert rendering.CELL_NOTE in bar.get_xlabel() and "log scale" in bar.get_xlabel()
        assert [t.get_text() for t in bar.get_xticklabels()] == ["1", "4", "16", "64"]
    finally:
        plt.close(fig)


@pytest.mark.parametrize("shape", [(300, 2, 3), (2, 300, 3), (1, 1, 3), (40, 30, 3)])
def test_thin_and_tiny_pictures_still_get_their_colour_bar(shape):
    """An upload of any shape reaches these functions (the demo resizes its long side to 512–768 px,
    which leaves a 1-pixel-wide image 1 pixel wide): they are centred on a strip wide enough for the bar."""
    picture = np.full(shape, 128, np.uint8)
    fig = rendering.annotate(picture, "magma", "tokens per cell (log scale)", [(0.0, "1"), (1.0, "64")],
                             note=rendering.CELL_NOTE, head="What does the billboard say?\nanswer “a+m=9”")
    assert fig.shape[1] == max(shape[1], rendering.MIN_WIDTH) and fig.shape[0] > shape[0]
    assert rendering.colorbar("magma", [(0.0, "0"), (1.0, "1")], "relevance", width=5).shape[1] >= 5
