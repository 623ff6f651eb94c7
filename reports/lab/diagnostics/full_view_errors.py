"""What the `full` view gets wrong when it misreads a sign (session 33): the full view's fine detail
is the one bar of issue 15 still missed, code and number its weak families. For every fine-detail
question of the first SCENES scenes of SceneBench test (cached features, as the evaluation), the
`full` policy's greedy answer against the reference: per family the exact-match share, the share
of wrong answers of the right length, the mean character errors of those, and the most frequent
character confusions (reference -> read) among same-length answers; then the `arrcoc` policy at
64 tokens on the same questions, for comparison.
usage: python reports/lab/diagnostics/full_view_errors.py WEIGHTS [SCENES] > full_view_errors.log"""
import collections, dataclasses, sys, warnings; warnings.simplefilter("ignore")

from arrcoc_lab import load_pipeline
from arrcoc_lab.evaluation.evaluate import evaluate, load_eval_set

weights = sys.argv[1]
scenes = int(sys.argv[2]) if len(sys.argv) > 2 else 300
pipe = load_pipeline("lab", weights=weights)
es = load_eval_set(pipe.model, "scenebench:test", scenes, progress=False)
es = dataclasses.replace(es, samples=[s for s in es.samples if s.difficulty == "detail"], positions=None)
print(f"weights {weights}; SceneBench test, {scenes} scenes, {len(es.samples)} fine-detail questions")
for policy, budget in (("full", None), ("arrcoc", 64)):
    rows = evaluate(pipe.model, es, policy, budget, progress=False)
    print(f"\n== {policy}" + (f" at {budget} tokens" if budget else ""))
    for family in sorted({r["family"] for r in rows}):
        fam = [r for r in rows if r["family"] == family]
        wrong = [r for r in fam if not r["correct"]]
        same = [r for r in wrong if len(r["pred"]) == len(r["answer"])]
        errs = [sum(a != b for a, b in zip(r["answer"], r["pred"])) for r in same]
        pairs = collections.Counter((a, b) for r in same for a, b in zip(r["answer"], r["pred"]) if a != b)
        print(f"{family:8s} right {len(fam) - len(wrong)}/{len(fam)}; wrong of the right length "
              f"{len(same)}/{len(wrong)}, {sum(errs) / max(1, len(errs)):.2f} characters off; "
              f"confusions {', '.join(f'{a}->{b} {n}' for (a, b), n in pairs.most_common(8))}")
        print("   e.g. " + ", ".join(f"{r['answer']}->{r['pred']}" for r in wrong[:10]))
