"""Patch/cell/LOD geometry shared by every stage.

An image of `image_size`² pixels is cut by SAM into patches of `patch_size`² pixels; patches are
grouped into square cells of `cell_patches`² patches; each cell is sent to the LLM at one LOD
level, i.e. as `levels[k]` tokens (a square number: the cell's patch block pooled to a
sqrt(level)×sqrt(level) grid). The paper geometry is DeepSeek-OCR's: 1024², patch 16 → 64×64
patches, 8×8-patch cells → 64 cells, levels 1/4/16/64 → 64 (gist) … 256 (uniform 16×) … 4096 (full).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Geometry:
    image_size: int = 1024  # square model input side in pixels (images are resized to it)
    patch_size: int = 16  # SAM patch side in pixels
    cell_patches: int = 8  # a cell is cell_patches × cell_patches patches
    levels: tuple[int, ...] = (1, 4, 16, 64)  # LOD levels: tokens per cell, ascending squares
    min_level: int = 0  # index into levels: fewest tokens any cell may get
    max_level: int = -1  # index into levels: most tokens any cell may get (-1 = last)
    max_level_step: int = 1  # neighbouring cells (4-neighbourhood) differ by at most this many levels
    quality_budgets: dict = field(
        default_factory=lambda: {"fast": 64, "balanced": 180, "accurate": 400}
    )  # the seeds' quality modes, in tokens
    hard_query_min_tokens: int = 160  # fewer tokens for a detail question counts as misclassified

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise InputError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.patches_per_side % self.cell_patches:
            raise InputError(f"{self.patches_per_side} patches per side is not a multiple of cell_patches {self.cell_patches}")
        if list(self.levels) != sorted(set(self.levels)):
            raise InputError(f"levels must be strictly ascending, got {self.levels}")
        for lv in self.levels:
            side = math.isqrt(lv)
            if side * side != lv or self.cell_patches % side:
                raise InputError(f"level {lv} must be a square whose root divides cell_patches={self.cell_patches}")
        if not 0 <= self.min_level <= self.max_level_index:
            raise InputError(f"min_level {self.min_level} outside 0..{self.max_level_index}")

    # --- derived sizes -------------------------------------------------------------------
    @property
    def max_level_index(self) -> int:
        return self.max_level % len(self.levels)

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def cells_per_side(self) -> int:
        return self.patches_per_side // self.cell_patches

    @property
    def n_cells(self) -> int:
        return self.cells_per_side**2

    @property
    def min_tokens(self) -> int:
        return self.n_cells * self.levels[self.min_level]

    @property
    def max_tokens(self) -> int:
        return self.n_cells * self.levels[self.max_level_index]

    @property
    def full_tokens(self) -> int:
        """Tokens with no compression at all: one per patch."""
        return self.patches_per_side**2

    @property
    def uniform_level(self) -> int:
        """Level index of fixed 16× compression (DeepSeek-OCR Base): 1/16 of full tokens."""
        target = self.cell_patches**2 // 16
        return self.levels.index(target) if target in self.levels else min(1, len(self.levels) - 1)

    @property
    def uniform_budget(self) -> int:
        return self.n_cells * self.levels[self.uniform_level]

    def level_side(self, k: int) -> int:
        """Tokens per cell side at level k."""
        return math.isqrt(self.levels[k])

    def level_stride(self, k: int) -> int:
        """Patches per token side at level k."""
        return self.cell_patches // self.level_side(k)

    def budget_for_mode(self, mode: str) -> int:
        if mode not in self.quality_budgets:
            raise InputError(f"unknown quality mode {mode!r}; known: {sorted(self.quality_budgets)}")
        return self.quality_budgets[mode]

    def check_budget(self, budget) -> int:
        """A budget is an int within [min_tokens, max_tokens]; anything else is an InputError."""
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
            raise InputError(f"budget must be an integer number of tokens in [{self.min_tokens}, {self.max_tokens}], got {budget!r}")
        if not self.min_tokens <= budget <= self.max_tokens:
            raise InputError(
                f"budget {budget} is outside the accepted range [{self.min_tokens}, {self.max_tokens}] "
                f"({self.n_cells} cells × {self.levels[self.min_level]}..{self.levels[self.max_level_index]} tokens)"
            )
        return int(budget)

    def cell_boxes(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        """Pixel boxes (x0, y0, x1, y1) of every cell, (cells_h, cells_w, 4), in an image of the
        given size (default: the model input size). Boxes tile the image exactly."""
        h = height or self.image_size
        w = width or self.image_size
        n = self.cells_per_side
        ys = np.round(np.linspace(0, h, n + 1)).astype(int)
        xs = np.round(np.linspace(0, w, n + 1)).astype(int)
        boxes = np.zeros((n, n, 4), dtype=int)
        boxes[..., 0] = xs[None, :-1]
        boxes[..., 1] = ys[:-1, None]
        boxes[..., 2] = xs[None, 1:]
        boxes[..., 3] = ys[1:, None]
        return boxes

    def scaled(self, n_cells_ref: int = 64) -> float:
        """Ratio of this geometry's cell count to the paper's, for scaling token thresholds."""
        return self.n_cells / n_cells_ref

    def to_dict(self) -> dict:
        return {
            "image_size": self.image_size, "patch_size": self.patch_size, "cell_patches": self.cell_patches,
            "levels": list(self.levels), "min_level": self.min_level, "max_level": self.max_level,
            "max_level_step": self.max_level_step, "quality_budgets": dict(self.quality_budgets),
            "hard_query_min_tokens": self.hard_query_min_tokens,
        }
