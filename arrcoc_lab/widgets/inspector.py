"""The ARR-COC inspector: an ipywidgets app over one pipeline.

    from arrcoc_lab.widgets import Inspector
    insp = Inspector(pipe)                       # picker starts on the first shipped example
    insp                                          # displays in JupyterLab
    insp.query.value = "What city is this?"       # drive it from Python, as the tests do
    insp.last_output, insp.figure_data()          # and read its state back

Inputs: image picker (the shipped examples, arrcoc_lab.list_examples()) or upload, query, quality
mode + budget slider, policy, view (relevance / tokens per cell / LOD grid), colormap, opacity,
cell selector (dropdown, or click the picture), compare mode (more queries, one per line, side by
side with the tokens-per-cell difference A − B). Outputs: every picture with its colour bar and
legend, answer, tokens and compression ratio, per-stage timings, per-cell table.

What re-runs: SAM features are cached per image, so a new query/budget/policy re-runs only the
query-dependent stages; outputs are memoised per (image, query, budget, policy), so compare mode
does not recompute B when only A changes, and the queries not seen yet run as one `pipe.batch`.
View, colormap, opacity and cell selection only redraw.

Drawing: plain PNGs, and one tiny anywidget (`CellCanvas`: click to select a cell, its outline).
Every picture is exactly what `arrcoc_lab.apps.rendering` draws, the same pixels the CLI and the
Gradio demo show, so tests assert array equality. Why not plotly or matplotlib: docs/WIDGETS.md.
"""
from __future__ import annotations

import contextlib
import html
import logging
from collections import OrderedDict

import ipywidgets as W
import numpy as np

from arrcoc_lab.apps import rendering
from arrcoc_lab.inputs import load_image

from .canvas import CellCanvas
from .render import answer_html, cell_rows, cell_table_html, encode, summary_html, timings_html
from .sources import Source, default_sources

log = logging.getLogger(__name__)

CMAPS = ("magma", "viridis", "inferno", "plasma", "cividis", "turbo", "gray")
VIEWS = (("Relevance heatmap", "relevance"), ("Tokens per cell", "tokens"), ("LOD grid", "levels"))
MEMO_SIZE = 64
BAR_CLASS = "arrcoc-colorbar"  # every colour bar image (the browser test finds them by it)


class Inspector:
    def __init__(self, pipe, image=None, query: str | None = None, compare: list[str] | None = None, *,
                 image_name: str = "your image", budget="balanced", policy: str = "arrcoc", view: str = "tokens",
                 cmap: str = "magma", opacity: float = 0.5, display_width: int = 384, sources: dict | None = None):
        self.pipe = pipe
        g = pipe.geometry
        self.sources = dict(sources if sources is not None else default_sources())
        self.display_width = display_width
        self._tile_width = display_width * 2 // 3  # compare-mode pictures
        self.image: np.ndarray | None = None  # the validated RGB array the pipeline sees
        self.last_output = None  # PipelineOutput of query A
        self.compare_outputs: list = []  # [A, B, ...] in compare mode, else []
        self.error: str | None = None
        self.calls, self.encodes = 0, 0  # pipeline calls made, of which ran SAM (timings["sam"] > 0)
        self._memo: OrderedDict = OrderedDict()
        self._image_version = 0
        self._held, self._pending, self._syncing = 0, False, False
        self._overlay: np.ndarray | None = None
        self._colorbar: tuple[str, list] = ("", [])  # title, ticks of the main picture's colour bar
        self._compare_fig: dict = {}
        self._tiles: list[tuple[W.HTML, CellCanvas, W.Image]] = []

        # --- inputs
        self.picker = W.Dropdown(options=[(s.label, k) for k, s in self.sources.items()], value=None,
                                 description="Image", layout=W.Layout(width="380px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.query = W.Text(description="Query", continuous_update=False, layout=W.Layout(width="560px"))
        modes = [("Default", "default")] + [(f"{m.title()} ({b})", m) for m, b in  # fewest tokens first
                                            sorted(g.quality_budgets.items(), key=lambda mb: mb[1])]
        self.mode = W.ToggleButtons(options=modes + [("Custom", "custom")], value="default",
                                    description="Quality", style={"button_width": "auto"})
        self.budget = W.IntSlider(min=g.min_tokens, max=g.max_tokens, value=g.min_tokens, description="Budget",
                                  continuous_update=False, layout=W.Layout(width="560px"))
        self.policy = W.Dropdown(options=list(pipe.policies), value=policy, description="Policy")
        self.view = W.ToggleButtons(options=VIEWS, value=view, description="View", style={"button_width": "auto"})
        self.cmap = W.Dropdown(options=CMAPS, value=cmap, description="Colormap")
        self.opacity = W.FloatSlider(min=0.0, max=1.0, step=0.05, value=opacity, description="Opacity",
                                     continuous_update=False)
        n_h = n_w = g.cells_per_side
        self.cell = W.Dropdown(options=[("none", -1)] + [(f"row {k // n_w}, col {k % n_w}", k) for k in range(n_h * n_w)],
                               value=-1, description="Cell")
        self.compare = W.Checkbox(value=False, description="Compare queries")
        self.compare_queries = W.Textarea(placeholder="one more query per line (B, C, …)", continuous_update=False,
                                          layout=W.Layout(width="460px", height="52px"))
        # --- outputs
        self.canvas = CellCanvas(display_width=display_width)
        self.canvas.add_class("arrcoc-main-canvas")
        self.colorbar = W.Image(format="png", layout=W.Layout(width=f"{display_width}px"), _dom_classes=[BAR_CLASS])
        self.answer, self.stats = W.HTML(), W.HTML()
        self.timings, self.table, self.status = W.HTML(), W.HTML(), W.HTML()
        self.compare_row = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.compare_box = W.VBox([W.HTML("<b>Compare: tokens per cell, and A − B</b>"), self.compare_row],
                                  layout=W.Layout(display="none"))
        self.widget = self._layout()

        for w, fn in ((self.picker, self._on_pick), (self.upload, self._on_upload), (self.mode, self._on_mode),
                      (self.budget, self._on_budget), (self.policy, self._on_policy),
                      *((w, lambda c: self.run()) for w in (self.query, self.compare, self.compare_queries)),
                      *((w, lambda c: self.render()) for w in (self.view, self.cmap, self.opacity))):
            w.observe(fn, names="value")
        self.cell.observe(lambda c: self.select_cell(c.new), names="value")
        self.canvas.observe(lambda c: self.select_cell(c.new), names="selected")

        with self.hold():
            if isinstance(image, str) and image in self.sources:  # "example:NAME": that picker entry
                self.picker.value = image
            elif image is not None:
                self.set_image(image, image_name, [q for q in [query, *(compare or [])] if q])
            elif self.sources:
                self.picker.value = next(iter(self.sources))
            if query:
                self.query.value = query
            if compare:
                self.compare_queries.value = "\n".join(compare)
                self.compare.value = True
            self.set_budget(budget)

    # ------------------------------------------------------------------ layout / display
    def _layout(self) -> W.VBox:
        label = lambda text: W.HTML(f"<b>{text}</b>")  # noqa: E731
        controls = W.VBox([
            W.HBox([self.picker, self.upload]), self.query, self.mode, self.budget,
            W.HBox([self.policy, self.view]), W.HBox([self.cmap, self.opacity, self.cell]),
            W.HBox([self.compare, self.compare_queries]), self.status])
        right = W.VBox([self.answer, self.stats, label("Per-stage timings"), self.timings,
                        label("Cells (click the picture or pick a cell)"), self.table],
                       layout=W.Layout(margin="0 0 0 16px", max_width="520px"))
        box = W.VBox([W.HTML("<h3 style='margin:4px 0'>ARR-COC inspector</h3>"), controls,
                      W.HBox([W.VBox([self.canvas, self.colorbar]), right]), self.compare_box])
        box.add_class("arrcoc-inspector")
        return box

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        out = self.last_output
        data["text/plain"] = (f"ARR-COC Inspector ({self.picker.label}; query {out.query!r}: {out.num_tokens} tokens, "
                              f"answer {out.answer!r}) — needs a running kernel to display" if out else "ARR-COC Inspector")
        return data

    @contextlib.contextmanager
    def hold(self):
        """Batch several value changes into one pipeline run."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
            if not self._held and self._pending:
                self._pending = False
                self.run()

    # ------------------------------------------------------------------ inputs
    def set_image(self, image, name: str = "image", questions: list[str] | None = None) -> None:
        """Add an image (path, PIL, array or encoded bytes) to the picker and select it."""
        try:
            rgb = load_image(image, self.pipe.max_pixels)
        except ValueError as e:
            return self._fail(e)
        n = sum(k.startswith("user/") for k in self.sources)
        key = f"user/{n}"
        self.sources[key] = Source(key, name, lambda: (rgb, list(questions or [])))
        with self._quiet():
            self.picker.options = [(s.label, k) for k, s in self.sources.items()]
        self.picker.value = key

    def set_budget(self, budget) -> None:
        """What `pipe(..., budget=)` takes, read by `rendering.parse_budget` (None / "default", a
        quality mode in any case, a whole number of tokens: Custom), or "custom" (keep the slider)."""
        custom = isinstance(budget, str) and budget.strip().lower() == "custom"
        value = "custom" if custom else rendering.parse_budget(budget, self.pipe.geometry)  # InputError otherwise
        with self._quiet():
            self.mode.value = "default" if value is None else value if isinstance(value, str) else "custom"
            if isinstance(value, int):
                self.budget.value = value
        self._on_mode(None)  # a mode moves the slider to its budget; then one run

    def budget_arg(self):
        """What goes to `pipe(budget=...)`: None, a quality-mode name or the slider's int."""
        m = self.mode.value
        return None if m == "default" else int(self.budget.value) if m == "custom" else m

    def queries(self) -> list[str]:
        """[A] or, in compare mode, [A, B, ...]."""
        more = [q.strip() for q in self.compare_queries.value.splitlines() if q.strip()] if self.compare.value else []
        return [self.query.value] + more

    @contextlib.contextmanager
    def _quiet(self):
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    def _on_pick(self, change) -> None:
        if self._syncing or self.picker.value is None:
            return
        try:
            image, questions = self.sources[self.picker.value].fetch()
            self.image = load_image(image, self.pipe.max_pixels)
        except ValueError as e:
            return self._fail(e)
        self._image_version += 1
        with self.hold():
            if questions:
                self.query.value = questions[0]
                self.compare_queries.value = "\n".join(questions[1:])
            self.run()

    def _on_upload(self, change) -> None:
        files = change.new
        if files:
            f = files[-1]
            self.set_image(bytes(f["content"]), f"upload: {f.get('name', 'image')}")

    def _on_mode(self, change) -> None:
        if self._syncing:
            return
        m = self.mode.value
        if m != "custom":
            g = self.pipe.geometry
            value = (self.pipe.resolve(self.policy.value)[1] if m == "default"
                     else g.quality_budgets[m])
            with self._quiet():
                self.budget.value = int(np.clip(value, g.min_tokens, g.max_tokens))
        self.run()

    def _on_budget(self, change) -> None:
        if self._syncing:
            return
        with self._quiet():
            self.mode.value = "custom"
        self.run()

    def _on_policy(self, change) -> None:
        if self.mode.value == "default":
            return self._on_mode(None)  # the slider shows this policy's default budget
        self.run()

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Run the pipeline for the current inputs (the image is encoded once; outputs are memoised)."""
        if self._held:
            self._pending = True
            return
        if self.image is None:
            return
        budget, policy = self.budget_arg(), self.policy.value
        try:
            outs = self._outputs(self.queries(), budget, policy)
        except ValueError as e:  # InputError: empty query, bad budget, ...
            return self._fail(e)
        self.error = None
        self.last_output, self.compare_outputs = outs[0], (outs if self.compare.value else [])
        self.status.value = (f"<span class='arrcoc-status'>{html.escape(self.picker.label or '')} · "
                             f"{self.calls} pipeline calls, SAM ran {self.encodes}×</span>")
        self.render()

    def _outputs(self, queries: list[str], budget, policy: str) -> list:
        """One output per query: memoised ones as they are, the others in one `pipe.batch` call."""
        resolved = self.pipe.resolve(policy, budget)[1]  # "balanced" and 45 are one key
        keys = [(self._image_version, q, resolved, policy) for q in queries]
        todo = list(dict.fromkeys(k for k in keys if k not in self._memo))
        if todo:
            new = self.pipe.batch([self.image] * len(todo), [k[1] for k in todo], budget=budget, policy=policy)
            self.calls += len(todo)
            self.encodes += any(o.timings.get("sam", 0.0) > 0.0 for o in new)
            log.debug("inspector: %s policy=%s budget=%s -> %s tokens", todo, policy, budget, [o.num_tokens for o in new])
            self._memo.update(zip(todo, new))
        for k in keys:
            self._memo.move_to_end(k)
        outs = [self._memo[k] for k in keys]
        while len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return outs

    def _fail(self, e: Exception) -> None:
        self.error = str(e)
        log.warning("inspector: %s", e)
        self.status.value = f"<span class='arrcoc-error' style='color:#b00020'>⚠ {html.escape(str(e))}</span>"

    # ------------------------------------------------------------------ drawing
    def render(self) -> None:
        """Redraw every output from the last run (no pipeline call)."""
        out = self.last_output
        if out is None:
            return
        mode, cmap, alpha = self.view.value, self.cmap.value, float(self.opacity.value)
        self._overlay = rendering.overlay(self.image, out, mode=mode, alpha=alpha, cmap=cmap)
        self.canvas.show(self._overlay, out.cell_boxes, self._tips(out), alt=f"{mode} overlay for {out.query}",
                         max_side=2 * self.display_width)
        self._colorbar = rendering.colorbar_ticks(out, mode, self.pipe.geometry.levels)
        self.colorbar.value = encode(rendering.colorbar(cmap, self._colorbar[1], self._colorbar[0], self.display_width,
                                                        note=rendering.CELL_NOTE))
        self.answer.value, self.stats.value = answer_html(out), summary_html(out)
        self.timings.value = timings_html(out.timings)
        self._render_compare(mode, cmap, alpha)
        self._render_table()

    def _tips(self, out) -> list[str]:
        return [f"cell ({i}, {j}): {int(t)} tokens, level L{int(out.levels[i, j])}, "
                f"relevance {out.cell_relevance[i, j]:.2f}" for (i, j), t in np.ndenumerate(out.tokens_per_cell)]

    def _tile(self, k: int) -> tuple[W.HTML, CellCanvas, W.Image]:
        while len(self._tiles) <= k:
            canvas = CellCanvas(display_width=self._tile_width)
            canvas.observe(lambda c: self.select_cell(c.new), names="selected")
            bar = W.Image(format="png", layout=W.Layout(width=f"{self._tile_width}px"), _dom_classes=[BAR_CLASS])
            self._tiles.append((W.HTML(layout=W.Layout(max_width=f"{self._tile_width}px")), canvas, bar))
        return self._tiles[k]

    def _render_compare(self, mode: str, cmap: str, alpha: float) -> None:
        outs = self.compare_outputs
        if len(outs) < 2:
            self._compare_fig = {}
            self.compare_box.layout.display = "none"
            return
        a, names = outs[0], [chr(65 + k) for k in range(len(outs))]
        fig = {"queries": [o.query for o in outs], "overlays": [], "differences": [], "difference_overlays": []}
        bar_title, ticks = rendering.colorbar_ticks(a, mode, self.pipe.geometry.levels)
        legend = encode(rendering.colorbar(cmap, ticks, bar_title, self._tile_width, note=rendering.CELL_NOTE))
        children = []
        for k, o in enumerate(outs):
            title, canvas, bar = self._tile(k)
            fig["overlays"].append(rendering.overlay(self.image, o, mode=mode, alpha=alpha, cmap=cmap))
            canvas.show(fig["overlays"][-1], o.cell_boxes, self._tips(o), max_side=2 * self._tile_width)
            title.value = (f"<b>{names[k]}</b>: {html.escape(o.query)}<br>{o.num_tokens} tokens · "
                           f"answer <i>{html.escape(o.answer) or '∅'}</i>")
            bar.value = legend
            children.append(W.VBox([title, canvas, bar]))
        for k, o in enumerate(outs[1:], start=len(outs)):
            title, canvas, bar = self._tile(k)
            diff = rendering.difference(a, o)
            fig["differences"].append(diff)
            fig["difference_overlays"].append(rendering.difference_overlay(self.image, diff, a.cell_boxes, alpha))
            canvas.show(fig["difference_overlays"][-1], a.cell_boxes,
                        [f"cell ({i}, {j}): A − {names[k - len(outs) + 1]} = {int(d):+d} tokens"
                         for (i, j), d in np.ndenumerate(diff)], max_side=2 * self._tile_width)
            bar_title, ticks = rendering.difference_ticks(int(np.abs(diff).max()))
            bar.value = encode(rendering.colorbar(rendering.DIFF_CMAP, ticks, bar_title, self._tile_width,
                                                  note=rendering.DIFF_NOTE))
            title.value = (f"<b>A − {names[k - len(outs) + 1]}</b>: {a.num_tokens} − {o.num_tokens} = "
                           f"{a.num_tokens - o.num_tokens:+d} tokens; {int((diff != 0).sum())} cells differ")
            children.append(W.VBox([title, canvas, bar]))
        self._compare_fig = fig
        self.compare_row.children = children
        self.compare_box.layout.display = "flex"

    # ------------------------------------------------------------------ cells
    def select_cell(self, k: int) -> None:
        """Select cell k (row-major; -1 for none) in the dropdown, every picture and the table."""
        if self._syncing:
            return
        with self._quiet():
            self.cell.value = k
            for canvas in [self.canvas] + [t[1] for t in self._tiles]:
                canvas.selected = k
        self._render_table()

    @property
    def selected_cell(self) -> tuple[int, int] | None:
        k, n_w = self.cell.value, self.pipe.geometry.cells_per_side
        return None if k < 0 else (k // n_w, k % n_w)

    def cell_rows(self) -> list[dict]:
        out = self.last_output
        return cell_rows(out, self.compare_outputs[1:]) if out is not None else []

    def _render_table(self) -> None:
        self.table.value = cell_table_html(self.cell_rows(), self.cell.value)

    # ------------------------------------------------------------------ state for tests / scripts
    @property
    def overlay(self) -> np.ndarray | None:
        """The picture shown: `rendering.overlay(image, last_output, view, opacity, colormap)`."""
        return self._overlay

    def figure_data(self) -> dict:
        """Everything the outputs show, as arrays and numbers."""
        out = self.last_output
        if out is None:
            return {}
        k = self.cell.value
        return {
            "mode": self.view.value, "cmap": self.cmap.value, "alpha": float(self.opacity.value),
            "values": rendering.map_values(out, self.view.value), "overlay": self._overlay,
            "colorbar": {"title": self._colorbar[0], "ticks": list(self._colorbar[1]), "note": rendering.CELL_NOTE},
            "answer": out.answer, "num_tokens": out.num_tokens, "compression_ratio": out.compression_ratio,
            "timings": dict(out.timings), "cells": self.cell_rows(),
            "selected_cell": self.selected_cell, "selected_box": tuple(self.canvas.boxes[k]) if k >= 0 else None,
            "compare": self._compare_fig,
        }
