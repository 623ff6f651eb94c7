"""A clickable picture of the cell grid: an anywidget (plain ES module, nothing to build) that
shows a PNG, outlines the selected cell, shows a per-cell tooltip on hover and reports clicks
back to Python as a cell index in `selected` (-1: none)."""
from __future__ import annotations

import anywidget
import numpy as np
import traitlets
from PIL import Image

from .render import data_url

_ESM = r"""
function render({ model, el }) {
  const wrap = document.createElement("div");
  wrap.className = "arrcoc-canvas";
  wrap.style.cssText = "position:relative;display:inline-block;line-height:0";
  const img = document.createElement("img");
  img.className = "arrcoc-canvas-img";
  img.style.cssText = "display:block;cursor:crosshair;image-rendering:auto";
  const box = document.createElement("div");
  box.className = "arrcoc-canvas-selected";
  box.style.cssText = "position:absolute;border:2px solid #00e5ff;outline:1px solid #000;" +
    "pointer-events:none;box-sizing:border-box;display:none";
  wrap.append(img, box);
  el.append(wrap);

  const cellAt = (event) => {
    const r = img.getBoundingClientRect();
    const [w, h] = model.get("natural_size");
    const x = (event.clientX - r.left) * w / r.width, y = (event.clientY - r.top) * h / r.height;
    return model.get("boxes").findIndex(([x0, y0, x1, y1]) => x >= x0 && x < x1 && y >= y0 && y < y1);
  };
  const drawBox = () => {
    const k = model.get("selected"), boxes = model.get("boxes"), [w, h] = model.get("natural_size");
    if (k < 0 || k >= boxes.length) { box.style.display = "none"; return; }
    const [x0, y0, x1, y1] = boxes[k];
    Object.assign(box.style, { display: "block", left: `${100 * x0 / w}%`, top: `${100 * y0 / h}%`,
                               width: `${100 * (x1 - x0) / w}%`, height: `${100 * (y1 - y0) / h}%` });
  };
  const draw = () => {
    img.src = model.get("src");
    img.alt = model.get("alt");
    img.style.width = `${model.get("display_width")}px`;
    drawBox();
  };
  img.addEventListener("click", (event) => {
    const k = cellAt(event);
    model.set("selected", k === model.get("selected") ? -1 : k);
    model.save_changes();
  });
  img.addEventListener("mousemove", (event) => {
    const k = cellAt(event), tips = model.get("tips");
    img.title = k >= 0 && k < tips.length ? tips[k] : "";
  });
  model.on("change:src", draw);
  model.on("change:display_width", draw);
  model.on("change:selected", drawBox);
  model.on("change:boxes", drawBox);
  draw();
  return () => {
    model.off("change:src", draw);
    model.off("change:display_width", draw);
    model.off("change:selected", drawBox);
    model.off("change:boxes", drawBox);
  };
}
export default { render };
"""


class CellCanvas(anywidget.AnyWidget):
    """An image with clickable cells. `array` keeps the last picture set from Python."""

    _esm = _ESM
    src = traitlets.Unicode("").tag(sync=True)  # data URL of the picture
    alt = traitlets.Unicode("").tag(sync=True)
    natural_size = traitlets.List([1, 1]).tag(sync=True)  # (width, height) of the picture in pixels
    boxes = traitlets.List([]).tag(sync=True)  # cell boxes (x0, y0, x1, y1), row-major
    tips = traitlets.List([]).tag(sync=True)  # hover text per cell
    selected = traitlets.Int(-1).tag(sync=True)  # index into boxes, -1 for none
    display_width = traitlets.Int(384).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.array: np.ndarray | None = None

    def show(self, array: np.ndarray, boxes: np.ndarray, tips: list[str] | None = None, alt: str = "",
             fmt: str = "webp", max_side: int | None = 768) -> None:
        """Display an HxWx3 uint8 picture with its (cells_h, cells_w, 4) cell boxes (pixel
        coordinates of `array`). What is sent is at most `max_side` pixels on its long side and
        lossy WebP by default (~20-40 KB rather than ~100-350 KB of PNG); `array` keeps the original."""
        self.array = array
        shown = array
        if max_side and max(array.shape[:2]) > max_side:
            k = max_side / max(array.shape[:2])
            shown = np.asarray(Image.fromarray(array).resize(
                (max(1, round(array.shape[1] * k)), max(1, round(array.shape[0] * k))), Image.LANCZOS))
        with self.hold_sync():
            self.natural_size = [int(array.shape[1]), int(array.shape[0])]
            self.boxes = np.asarray(boxes).reshape(-1, 4).astype(int).tolist()
            self.tips = list(tips or [])
            self.alt = alt
            self.src = data_url(shown, fmt)
