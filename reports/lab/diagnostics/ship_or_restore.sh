#!/usr/bin/env bash
# Candidate weights -> shipped or restored (reports/lab/RUN.md, "Where it is"): export WEIGHTS as the
# shipped lab weights, run the evaluation (~11-15 min), and apply the ship rule against the committed
# evaluation (git HEAD): 64-token `arrcoc` gist and detail no worse, and `full` gist and detail both
# better. Ships: the model card gets the table (export --evaluation).
# Else: the candidate's evaluation is kept in OUT (default runs/lab/<name>_evaluation) and the shipped
# weights and reports/lab/evaluation/ are restored from git. Exit 0 shipped, 3 not shipped, 1 failed.
# Usage: bash reports/lab/diagnostics/ship_or_restore.sh runs/lab/phase0k/model.safetensors [OUT]
set -uo pipefail
cd "$(git rev-parse --show-toplevel)"
weights=${1:?usage: ship_or_restore.sh WEIGHTS [OUT]}
[ -f "$weights" ] || { echo "no such weights: $weights" >&2; exit 1; }
git diff --quiet HEAD -- arrcoc_lab/weights/lab reports/lab/evaluation \
  || { echo "arrcoc_lab/weights/lab or reports/lab/evaluation has uncommitted changes: commit or restore them first" >&2; exit 1; }
out=${2:-runs/lab/$(basename "$(dirname "$weights")")_evaluation}
PY=.venv/bin/python
restore() { git checkout -q HEAD -- arrcoc_lab/weights/lab reports/lab/evaluation; }
$PY -m arrcoc_lab export "$weights" || { restore; exit 1; }
$PY -m arrcoc_lab run-phase evaluation || { restore; exit 1; }
shipped=$(mktemp) && trap 'rm -f "$shipped"' EXIT
git show HEAD:reports/lab/evaluation/metrics.json > "$shipped"
$PY - "$shipped" reports/lab/evaluation/metrics.json <<'PY'
import json, sys
old, new = (json.load(open(p))["policies"] for p in sys.argv[1:3])
row = lambda m, p: (m[p]["accuracy_gist"], m[p]["accuracy_detail"])
(og, od), (ng, nd) = row(old, "arrcoc"), row(new, "arrcoc")
(fg, fd), (mg, md) = row(old, "full"), row(new, "full")
print(f"arrcoc at 64 gist / detail: {og:.1%} / {od:.1%} shipped, {ng:.1%} / {nd:.1%} candidate")
print(f"full gist / detail:         {fg:.1%} / {fd:.1%} shipped, {mg:.1%} / {md:.1%} candidate")
ok = ng >= og - 1e-9 and nd >= od - 1e-9 and mg > fg and md > fd
print("ships" if ok else "not shipped")
sys.exit(0 if ok else 3)
PY
rule=$?
if [ $rule -eq 0 ]; then
  $PY -m arrcoc_lab export "$weights" --evaluation reports/lab/evaluation/metrics.json || exit 1
  exit 0
fi
mkdir -p "$out" && cp -r reports/lab/evaluation/. "$out"/
restore
echo "the candidate's evaluation: $out; the shipped weights and reports/lab/evaluation restored"
exit $rule
