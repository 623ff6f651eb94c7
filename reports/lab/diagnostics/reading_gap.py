"""Does a phase-0 checkpoint use the sign in its reading views? (reading_pace.py's measure, on the pipeline)

usage: reading_gap.py CHECKPOINT [LEVEL] [N] [JITTER] [QSTATES] [OTHERS]
N (default 128) held-out fine-detail signs of SceneBench val, each shown as phase 0's reading
views show it: the sign's cells at LEVEL (default: the top level), every other cell at the
minimum; with JITTER < 1 (PhaseConfig.reading_jitter) the scene rolled so the sign sits within
±JITTER · half the image of the reading spot (0: at it). Printed: the teacher-forced answer loss with the scene's own features / with another
scene's features under the same view (the gap is how much the view is used), and, from greedy
decoding with the scene's own features, the exact-match and ANLS of the answers. With QSTATES 0
(the fifth argument; default 1) the LLM gets no MiniLM question states, as phase 0 trains it while
PhaseConfig.question_states is 0. OTHERS (default: the minimum level) is every other cell's level:
`reading_gap.py CKPT 3 128 1 1 3` is the `full` policy's view (every cell at the top level).
"""
import sys

import torch

from arrcoc_lab import load_pipeline
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.metrics import anls, exact_match
from arrcoc_lab.policies import OraclePolicy
from arrcoc_lab.training.sampling import roll_to_reading_spot

torch.set_num_threads(1)
ck = sys.argv[1]
pipe = load_pipeline("lab", weights=ck)
m, g = pipe.model.eval(), pipe.model.geometry
level = int(sys.argv[2]) if len(sys.argv) > 2 else g.max_level_index
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
jitter = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
qstates = bool(int(sys.argv[5])) if len(sys.argv) > 5 else True
others = int(sys.argv[6]) if len(sys.argv) > 6 else g.min_level
es = load_eval_set(m, "scenebench:val", 200, progress=False)
signs = [s for s in es.samples if s.difficulty == "detail" and s.target_box][:n]
loss = {"own": [], "other": []}
em, an = [], []
for a in range(0, len(signs), 16):
    chunk = signs[a:a + 16]
    idx = es.scenes.rows([s.scene_index for s in chunk])
    f, p = es.scenes.features[idx].float(), es.scenes.pixels[idx].float()
    boxes = [s.target_box for s in chunk]
    if jitter < 1:
        boxes, _ = roll_to_reading_spot(f, p, boxes, [], [True] * len(chunk), jitter, g, es.image_hw, [0, a], 0, 1)
    on_sign = target_cells(boxes, g, es.image_hw) > 0  # (B, Hc, Wc)
    view = torch.where(on_sign, level, others).long()
    for name, perm in (("own", torch.arange(len(chunk))), ("other", torch.roll(torch.arange(len(chunk)), 1))):
        with torch.no_grad():
            out = m(p[perm], [s.question for s in chunk], policy=OraclePolicy(on_sign.float(), view),
                    budget=[g.max_tokens] * len(chunk), features=f[perm], answers=[s.answer for s in chunk],
                    generate=name == "own", seeds=list(range(len(chunk))), probes=False,
                    question_states=[qstates] * len(chunk))
        loss[name] += out.answer_loss.per_sample.tolist()
        if name == "own":
            em += [exact_match(a, s.answer) for a, s in zip(out.answers, chunk)]
            an += [anls(a, s.answer) for a, s in zip(out.answers, chunk)]
own, other = (sum(v) / len(v) for v in (loss["own"], loss["other"]))
print(f"{ck} level {level}, others {others}, jitter {jitter}, question states {int(qstates)}: {len(signs)} signs, answer loss "
      f"own / other {own:.3f} / {other:.3f}, exact {sum(em) / len(em):.3f}, ANLS {sum(an) / len(an):.3f}", flush=True)
