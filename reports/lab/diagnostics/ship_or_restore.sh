#!/usr/bin/env bash
# Candidate weights -> shipped or restored (reports/lab/RUN.md, "Where it is"): export WEIGHTS as the
# shipped lab weights, run the evaluation (~11-15 min), and apply the ship rule against the committed
# evaluation (git HEAD), fixed in session 30 before its candidate was evaluated: every bar of issue 15
# the shipped weights meet is still met; 64-token `arrcoc` gist and detail and `full` gist and detail
# each at most 1 point below the shipped (1 point is ~6 of SceneBench test's 600 detail questions, half
# a binomial standard error); and `full` closer to its bars (90 % gist, 85 % detail) by at least 1
# point, the two shortfalls summed, or at them (session 34: a shortfall under 1 point could not
# shrink by 1, so a candidate meeting every bar was refused). Ships: the model card gets the table.
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
old, new = (json.load(open(p)) for p in sys.argv[1:3])
row = lambda m, p: (m["policies"][p]["accuracy_gist"], m["policies"][p]["accuracy_detail"])
short = lambda g, d: max(0.0, 0.90 - g) + max(0.0, 0.85 - d)  # the full view's distance to its bars
(og, od), (ng, nd) = row(old, "arrcoc"), row(new, "arrcoc")
(fg, fd), (mg, md) = row(old, "full"), row(new, "full")
print(f"arrcoc at 64 gist / detail: {og:.1%} / {od:.1%} shipped, {ng:.1%} / {nd:.1%} candidate")
print(f"full gist / detail:         {fg:.1%} / {fd:.1%} shipped, {mg:.1%} / {md:.1%} candidate")
print(f"full's shortfall to its bars: {short(fg, fd):.1%} shipped, {short(mg, md):.1%} candidate")
lost = [b for b, v in old["bars"].items() if v["met"] and not new["bars"].get(b, {}).get("met")]
print(f"bars lost: {lost or 'none'}")
tol = 0.01
ok = (not lost and min(ng - og, nd - od, mg - fg, md - fd) >= -tol - 1e-9
      and short(mg, md) <= max(0.0, short(fg, fd) - tol) + 1e-9)
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
