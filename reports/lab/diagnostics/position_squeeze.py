"""Session 18: Does the `full` view fail on RoPE positions never trained? Teacher-forced answer loss own/other and
teacher-forced exact on held-out signs, sign at LEVEL, others at OTHERS, with the LLM's positions as
they are (sequential) or with the visual tokens squeezed into SPAN positions (text continues after).
usage: position_squeeze.py CKPT LEVEL OTHERS SPAN [N]   (SPAN 0: positions as they are)"""
import sys
import torch
from arrcoc_lab import load_pipeline
from arrcoc_lab.data.features import target_cells
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.evaluation.metrics import exact_match
from arrcoc_lab.policies import OraclePolicy
torch.set_num_threads(1)
ck, level, others, span = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
n = int(sys.argv[5]) if len(sys.argv) > 5 else 128
pipe = load_pipeline("lab", weights=ck); m, g = pipe.model.eval(), pipe.model.geometry
llm = m.llm
state = {}
orig_build, orig_fwd = llm.build, llm.model.forward
def build(visual, visual_mask, *a, **k):
    state["T"] = visual_mask.sum(1); state["left"] = k.get("left_pad", False)
    return orig_build(visual, visual_mask, *a, **k)
def fwd(*a, **k):
    if span > 0 and k.get("position_ids") is None and "attention_mask" in k and k.get("inputs_embeds") is not None:
        att = k["attention_mask"]; B, S = att.shape
        T = state["T"].to(torch.float32)[:, None]  # (B, 1)
        start = (att.argmax(1) if state["left"] else torch.zeros(B, dtype=torch.long))[:, None]
        j = (torch.arange(S)[None] - start).float()  # index within the real sequence
        scale = torch.clamp(span / T, max=1.0)
        pos = torch.where(j < T, j * scale, j - T + T * scale)
        k["position_ids"] = pos.clamp(min=0)
    return orig_fwd(*a, **k)
llm.build = build; llm.model.forward = fwd
es = load_eval_set(m, "scenebench:val", 200, progress=False)
signs = [s for s in es.samples if s.difficulty == "detail" and s.target_box][:n]
loss = {"own": [], "other": []}; em = []
for a in range(0, len(signs), 16):
    chunk = signs[a:a + 16]
    idx = es.scenes.rows([s.scene_index for s in chunk])
    f, p = es.scenes.features[idx].float(), es.scenes.pixels[idx].float()
    on_sign = target_cells([s.target_box for s in chunk], g, es.image_hw) > 0
    view = torch.where(on_sign, level, others).long()
    for name, perm in (("own", torch.arange(len(chunk))), ("other", torch.roll(torch.arange(len(chunk)), 1))):
        with torch.no_grad():
            out = m(p[perm], [s.question for s in chunk], policy=OraclePolicy(on_sign.float(), view),
                    budget=[g.max_tokens] * len(chunk), features=f[perm], answers=[s.answer for s in chunk],
                    generate=False, seeds=list(range(len(chunk))), probes=False)
        loss[name] += out.answer_loss.per_sample.tolist()
        if name == "own":
            em += [exact_match(x, s.answer) for x, s in zip(out.answer_loss.predictions, chunk)]
mean = lambda v: sum(v) / len(v)
print(f"level {level} others {others} span {span}: loss own/other {mean(loss['own']):.3f} / {mean(loss['other']):.3f}, tf-exact {mean(em):.3f}", flush=True)
