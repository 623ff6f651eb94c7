"""Can the downstream read? Fine-detail questions answered with each sign's cells shown at one
level and every other cell at the minimum (phase 0's reading views), so no allocator is involved:
what CLIP, the adapter and the LLM can read once tokens are where the sign is. Training shows
itself with it (the phase reports, `arrcoc-lab read-signs`); evaluation's bars need the allocator
too (evaluate.py)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..data.features import target_cells
from ..errors import InputError
from ..policies import OraclePolicy
from ..modeling.allocator import stable_seed
from .evaluate import EvalSet
from .metrics import exact_match


@dataclass
class SignReading:
    level: int  # the level of the signs' cells
    tokens_per_cell: int  # what that level gives a cell
    exact: float  # share of signs read exactly
    n: int  # fine-detail questions with a sign
    avg_tokens: float  # visual tokens a view, on average
    examples: list = field(default_factory=list)  # (reference, prediction) of the first few

    def to_dict(self) -> dict:
        return asdict(self)


def check_levels(levels, geometry) -> list[int]:
    n = len(geometry.levels)
    bad = [lv for lv in levels if not 0 <= int(lv) < n]
    if bad or not levels:
        raise InputError(f"levels {list(levels)}: each must be one of 0..{n - 1} (tokens a cell: {geometry.levels})")
    return [int(lv) for lv in levels]


@torch.no_grad()
def sign_reading(model, es: EvalSet, levels=None, batch_size: int = 16, progress: bool = True,
                 n_examples: int = 6) -> list[SignReading]:
    """One SignReading per level (default: the top level and the level below it)."""
    g = model.geometry
    levels = check_levels(levels if levels is not None else [g.max_level_index, g.max_level_index - 1], g)
    signs = [s for s in es.samples if s.difficulty == "detail" and s.target_box]
    if not signs:
        raise InputError(f"{es.spec}: no fine-detail question with a target box among {len(es.samples)} questions")
    device = next(model.relevance.parameters()).device
    cell_tokens = torch.tensor(g.levels, device=device)  # level → tokens a cell
    out = []
    for level in levels:
        right, tokens, examples = 0, 0, []
        for start in tqdm(range(0, len(signs), batch_size), desc=f"signs at level {level}", disable=not progress):
            chunk = signs[start:start + batch_size]
            idx = es.scenes.rows([s.scene_index for s in chunk])
            on_sign = target_cells([s.target_box for s in chunk], g, es.image_hw).to(device) > 0  # (B, Hc, Wc)
            view = torch.where(on_sign, level, g.min_level).long()  # the sign at `level`, the rest at the minimum
            res = model(es.scenes.pixels[idx].float().to(device), [s.question for s in chunk],
                        policy=OraclePolicy(on_sign.float(), view), budget=[g.max_tokens] * len(chunk),
                        features=es.scenes.features[idx].float().to(device), generate=True,
                        seeds=[stable_seed(s.id) for s in chunk])
            tokens += int(cell_tokens[view].sum())
            for s, pred in zip(chunk, res.answers):
                right += exact_match(pred, s.answers or s.answer)
                if len(examples) < n_examples:
                    examples.append((s.answer, pred))
        out.append(SignReading(level, g.levels[level], right / len(signs), len(signs), tokens / len(signs), examples))
    return out


def reading_table(results: list[SignReading]) -> str:
    lines = ["level  tokens/cell  signs  read exactly  tokens a view", "-----  -----------  -----  ------------  -------------"]
    lines += [f"{r.level:>5}  {r.tokens_per_cell:>11}  {r.n:>5}  {100 * r.exact:>11.1f}%  {r.avg_tokens:>13.1f}" for r in results]
    return "\n".join(lines) + "\n"
