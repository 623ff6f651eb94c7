"""JupyterLab widgets of ARR-COC Lab (see docs/WIDGETS.md).

    from arrcoc_lab import load_pipeline
    from arrcoc_lab.widgets import Inspector
    Inspector(load_pipeline("lab"))
"""
from .canvas import CellCanvas
from .inspector import Inspector
from .sources import Source, default_sources

__all__ = ["CellCanvas", "Inspector", "Source", "default_sources"]
