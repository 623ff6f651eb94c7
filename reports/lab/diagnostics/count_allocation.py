"""Tokens per cell that `arrcoc` gives SceneBench test count questions at 64 tokens (RUN.md,
"Session 23"): usage `python count_allocation.py [WEIGHTS] [N_SCENES]` (default: the shipped weights,
60 scenes = 10 count questions). Prints reference, answer and the 4×4 tokens per cell, row-major."""
import sys
import warnings

from arrcoc_lab import load_pipeline
from arrcoc_lab.data import load_dataset

warnings.simplefilter("ignore")
weights = sys.argv[1] if len(sys.argv) > 1 else None
n = int(sys.argv[2]) if len(sys.argv) > 2 else 60
pipe = load_pipeline("lab", weights=weights) if weights else load_pipeline("lab")
uniform_like = 0
for s in load_dataset("scenebench:test", n=n):
    if s.family != "count":
        continue
    out = pipe(s.image, s.question, budget=64, policy="arrcoc")
    tpc = out.trace.allocation.tokens_per_cell[0].flatten().tolist()
    uniform_like += len(set(tpc)) == 1
    print(s.answer, out.answer, tpc)
print("allocations equal to uniform's:", uniform_like)
