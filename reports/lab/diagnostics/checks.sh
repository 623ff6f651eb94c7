#!/usr/bin/env bash
# One round of the downstream checks on a checkpoint (sessions 24-27), run beside a training run.
#
# usage: reports/lab/diagnostics/checks.sh CHECKPOINT LABEL LOG   (from the repository root)
#
# Pauses the running papermill kernel (its step time would otherwise grow about tenfold), runs the
# four checks two at a time on one thread each (~2.3 min a round on 2 cores), appends them to LOG
# under "## LABEL", then lets the run continue. The four (128 SceneBench val questions each):
#   the `full` view's signs (every cell at the top level), the `full` view's landmark and city,
#   a sign at level 2 and at the top level with every other cell at the minimum.
set -euo pipefail
ck=$1; label=$2; log=$(realpath -m "$3")
root=$PWD; py=$root/.venv/bin/python
ck=$(realpath "$ck")
[ -d "$ck" ] && ck=$ck/model.safetensors  # a checkpoint folder: its weights
[ -f "$ck" ] || { echo "no weights at $ck" >&2; exit 1; }
tmp=$(mktemp -d)
kernel=$(pgrep -f ipykernel_launcher || true)
# on any exit: the run goes on, a failed check shows its error, the scratch goes
trap '[ -n "$kernel" ] && kill -CONT $kernel; [ -f "$tmp/done" ] || tail -5 "$tmp/err" >&2; rm -rf "$tmp"' EXIT
[ -n "$kernel" ] && kill -STOP $kernel
cd reports/lab/diagnostics
"$py" reading_gap.py "$ck" 3 128 1 1 3 > "$tmp/1" 2>>"$tmp/err" &
"$py" gist_levels.py "$ck" 3 3 > "$tmp/2" 2>>"$tmp/err" &
wait -n; wait -n
"$py" reading_gap.py "$ck" 2 128 1 1 > "$tmp/3" 2>>"$tmp/err" &
"$py" reading_gap.py "$ck" 3 128 1 1 > "$tmp/4" 2>>"$tmp/err" &
wait -n; wait -n
{ echo "## $label ($ck)"; cat "$tmp/1" "$tmp/2" "$tmp/3" "$tmp/4"; } | sed "s#$root/##g" >> "$log"
touch "$tmp/done"
tail -5 "$log"
