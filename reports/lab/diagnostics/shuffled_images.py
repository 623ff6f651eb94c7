import sys, torch
torch.set_num_threads(1)
from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.evaluate import load_eval_set
from arrcoc_lab.policies import get_policy
ck = sys.argv[1]
pipe = load_pipeline("lab", weights=ck); m = pipe.model.eval(); g = m.geometry
es = load_eval_set(m, "scenebench:val", 20, progress=False)
for fam in ("landmark", "city", "sky", "count", "code"):
    ss = [s for s in es.samples if s.family == fam][:20]
    idx = es.scenes.rows([s.scene_index for s in ss])
    f = es.scenes.features[idx].float(); p = es.scenes.pixels[idx].float()
    res = {}
    for name, perm in (("true", torch.arange(len(ss))), ("shuffled", torch.roll(torch.arange(len(ss)), 1))):
        with torch.no_grad():
            out = m(p[perm], [s.question for s in ss], policy=get_policy("uniform"), budget=[256]*len(ss), features=f[perm],
                    answers=[s.answer for s in ss], generate=False, seeds=list(range(len(ss))), probes=False)
        res[name] = float(out.answer_loss.per_sample.mean())
        if name == "true":
            v = out.trace.visual  # (B, T, D)
            print(fam, "visual token std across scenes", float(v.std(0).mean()), "within", float(v.std(1).mean()), "norm", float(v.norm(dim=-1).mean()))
    print(fam, res)
