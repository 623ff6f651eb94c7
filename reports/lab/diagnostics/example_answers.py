"""The shipped weights on every SceneBench example question (arrcoc_lab/assets/examples/questions.json)
at budgets 45 / 64 / 100, as RUN.md quotes them.
usage: python reports/lab/diagnostics/example_answers.py > example_answers.log"""
import json, warnings; warnings.simplefilter("ignore")
from arrcoc_lab import load_pipeline
from arrcoc_lab.examples import example_path
pipe = load_pipeline("lab")
ex = json.load(open("arrcoc_lab/assets/examples/questions.json"))["examples"]
for e in ex:
    if e["kind"] != "scenebench": continue
    for q in e["questions"]:
        outs = [pipe(example_path(e["name"]), q["question"], budget=b, policy="arrcoc").answer for b in (45, 64, 100)]
        print(e["name"], q["kind"], q["question"], "ref", q["answer"], "| 45/64/100:", outs)
