"""Is the landmark recognised once it is seen in detail? (reading_gap.py's views, for the gist questions about it)

usage: gist_levels.py CHECKPOINT [LEVEL] [OTHERS] [N]
       gist_levels.py CHECKPOINT POLICY [BUDGET] [N]
N (default 128) landmark and city questions of SceneBench val (the 128 of gist_gap.py), each shown
with the landmark's cells at LEVEL (default 2: what 64 tokens can give it) and every other cell at
OTHERS (default: the minimum; 1 is the uniform level). `gist_levels.py CKPT 1 1` is the uniform
64-token view (gist_gap.py's); `gist_levels.py CKPT 3 3` the `full` policy's. With a policy name
(`arrcoc`) in place of LEVEL, that policy's own view at BUDGET tokens (default 64; the analyzer is
the checkpoint's: meaningful for shipped weights, after phase 1a). Printed: the teacher-forced
answer loss with the scene's own features / another scene's, the view's mean tokens and the share
of them on the landmark's cells, and the greedy answers' exact match (six kinds, chance ~17 %),
overall and for landmark and city apart.
"""
import sys

import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.metrics import exact_match
from arrcoc_lab.policies import OraclePolicy, get_policy
from arrcoc_lab.training.sampling import GIST_SPOT_FAMILIES

torch.set_num_threads(1)
ck = sys.argv[1]
pipe = load_pipeline("lab", weights=ck)
m, g = pipe.model.eval(), pipe.model.geometry
arg = sys.argv[2] if len(sys.argv) > 2 else "2"
named = not arg.isdigit()  # a policy's own view
level = None if named else int(arg)
others = int(sys.argv[3]) if len(sys.argv) > 3 else (g.uniform_budget if named else g.min_level)
n = int(sys.argv[4]) if len(sys.argv) > 4 else 128
es = load_eval_set(m, "scenebench:val", 200, progress=False)
qs = [s for s in es.samples if s.family in GIST_SPOT_FAMILIES and s.target_box][:n]
loss = {"own": [], "other": []}
em, tokens, share = {f: [] for f in GIST_SPOT_FAMILIES}, [], []
for a in range(0, len(qs), 16):
    chunk = qs[a:a + 16]
    idx = es.scenes.rows([s.scene_index for s in chunk])
    f, p = es.scenes.features[idx].float(), es.scenes.pixels[idx].float()
    on_target = target_cells([s.target_box for s in chunk], g, es.image_hw) > 0  # (B, Hc, Wc)
    if named:
        policy, budget = get_policy(arg), [others] * len(chunk)
    else:
        policy, budget = OraclePolicy(on_target.float(), torch.where(on_target, level, others).long()), [g.max_tokens] * len(chunk)
    for name, perm in (("own", torch.arange(len(chunk))), ("other", torch.roll(torch.arange(len(chunk)), 1))):
        with torch.no_grad():
            out = m(p[perm], [s.question for s in chunk], policy=policy, budget=budget, features=f[perm],
                    answers=[s.answer for s in chunk], generate=name == "own", seeds=list(range(len(chunk))), probes=False)
        loss[name] += out.answer_loss.per_sample.tolist()
        if name == "own":
            per_cell = torch.as_tensor(g.levels)[out.trace.allocation.levels]  # (B, Hc, Wc) tokens of each cell
            tokens += per_cell.sum((1, 2)).tolist()
            share += ((per_cell * on_target).sum((1, 2)) / per_cell.sum((1, 2))).tolist()
            for ans, s in zip(out.answers, chunk):
                em[s.family].append(exact_match(ans, s.answer))
own, other = (sum(v) / len(v) for v in (loss["own"], loss["other"]))
every = [x for v in em.values() for x in v]
parts = ", ".join(f"{f} {sum(v) / len(v):.3f} ({len(v)})" for f, v in em.items() if v)
what = f"{arg} at {others} tokens" if named else f"landmark at level {level}, others {others}"
print(f"{ck} gist, {what} ({sum(tokens) / len(tokens):.0f} tokens, {100 * sum(share) / len(share):.0f} % on the landmark): {len(qs)} questions, "
      f"answer loss own / other {own:.3f} / {other:.3f}, exact {sum(every) / len(every):.3f} ({parts})", flush=True)
