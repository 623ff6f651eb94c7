"""Does a phase-0 checkpoint use the landmark? (reading_gap.py's measure, for the gist questions about it)

usage: gist_gap.py CHECKPOINT [JITTER] [N] [FAMILIES]
N (default 128) questions of SceneBench val of FAMILIES (comma-separated, default landmark,city;
"count" or "sky" ask about the whole image, so JITTER must stay 1 for them) at the uniform 64-token view; with
JITTER < 1 (PhaseConfig.gist_jitter) each scene rolled so its landmark sits within ±JITTER · half
the image of the reading spot (0: at it). Printed: the teacher-forced answer loss with the scene's
own features / another scene's (the gap is how much the image is used) and the greedy answers'
exact match (landmark, city: six kinds, chance ~17 %; count: 2-4 boards, the commonest
~38 %).
"""
import sys

import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.metrics import exact_match
from arrcoc_lab.policies import get_policy
from arrcoc_lab.training.sampling import GIST_SPOT_FAMILIES, roll_to_reading_spot

torch.set_num_threads(1)
ck = sys.argv[1]
jitter = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
families = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else tuple(GIST_SPOT_FAMILIES)
if jitter < 1 and not set(families) <= set(GIST_SPOT_FAMILIES):
    sys.exit(f"JITTER < 1 rolls the landmark to the spot: only for {sorted(GIST_SPOT_FAMILIES)}")
pipe = load_pipeline("lab", weights=ck)
m, g = pipe.model.eval(), pipe.model.geometry
es = load_eval_set(m, "scenebench:val", 200, progress=False)
qs = [s for s in es.samples if s.family in families and (s.target_box or jitter == 1)][:n]
loss = {"own": [], "other": []}
em = []
for a in range(0, len(qs), 16):
    chunk = qs[a:a + 16]
    idx = es.scenes.rows([s.scene_index for s in chunk])
    f, p = es.scenes.features[idx].float(), es.scenes.pixels[idx].float()
    if jitter < 1:
        roll_to_reading_spot(f, p, [s.target_box for s in chunk], [], [True] * len(chunk), jitter, g, es.image_hw, [0, a], 0, 1)
    for name, perm in (("own", torch.arange(len(chunk))), ("other", torch.roll(torch.arange(len(chunk)), 1))):
        with torch.no_grad():
            out = m(p[perm], [s.question for s in chunk], policy=get_policy("uniform"), budget=[g.uniform_budget] * len(chunk),
                    features=f[perm], answers=[s.answer for s in chunk], generate=name == "own",
                    seeds=list(range(len(chunk))), probes=False)
        loss[name] += out.answer_loss.per_sample.tolist()
        if name == "own":
            em += [exact_match(a, s.answer) for a, s in zip(out.answers, chunk)]
own, other = (sum(v) / len(v) for v in (loss["own"], loss["other"]))
print(f"{ck} gist ({', '.join(families)}), jitter {jitter}: {len(qs)} questions, answer loss own / other "
      f"{own:.3f} / {other:.3f}, exact {sum(em) / len(em):.3f}", flush=True)
