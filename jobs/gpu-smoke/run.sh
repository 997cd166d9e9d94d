#!/usr/bin/env bash
# The real product on one GPU, from `lcr submit` to the report (jobs/gpu-smoke/README.md):
#   bash jobs/gpu-smoke/run.sh clean OUT    # plan, submit (local executor), stage times
#   bash jobs/gpu-smoke/run.sh killed OUT   # the same run, its generate job SIGKILLed mid-run,
#                                           # then `lcr rerun`: nothing lost or duplicated
#   bash jobs/gpu-smoke/run.sh unfit OUT    # settings the card cannot hold: one line each
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-clean} OUT=${2:-/tmp/out} ROOT=${SMOKE_ROOT:-/tmp/smoke}
mkdir -p "$OUT"
python3 jobs/gpu-smoke/build.py "$ROOT" "${SMOKE_SCALE:-40}" || exit 1
args() {  # ARGS for run $1 with more --set pairs; SMOKE_SET (a CPU rehearsal) comes last
  local run=$1; shift
  ARGS=(jobs/gpu-smoke/job.toml --set "run.root='$ROOT/runs'" --set "run.name='$run'"
        --set "data.path='$ROOT/snapshot'" --set "model.path='$ROOT/model'"
        --set "judge.model='$ROOT/model'" "$@" ${SMOKE_SET:-})
}
RUN=gpu-smoke-$MODE
if [ "$MODE" = unfit ]; then  # each: plan, submit, the one line submit and status print
  for case in "weights:engine.gpu_memory_utilization=0.1" \
              "window:engine.batch_sets=8;engine.gpu_memory_utilization=0.3"; do
    name=${case%%:*} sets=() RUN=gpu-smoke-unfit-$name
    IFS=';' read -ra kv <<<"${case#*:}"
    for x in "${kv[@]}"; do sets+=(--set "$x"); done
    args "$RUN" "${sets[@]}"
    python3 -m lcr.cli plan "${ARGS[@]}" >"$OUT/plan-unfit-$name.txt" 2>&1
    START=$(date +%s.%N)
    python3 -m lcr.cli submit "${ARGS[@]}" >"$OUT/submit-unfit-$name.log" 2>&1
    echo "== $name (${case#*:}): lcr submit exit $? after $(python3 -c \
      "print(round($(date +%s.%N) - $START, 1))") s"
    grep -A3 "error:" "$OUT/submit-unfit-$name.log" | grep -v "INFO\|WARNING"
    python3 -m lcr.cli status "$ROOT/runs/$RUN" 2>&1 | grep -v "INFO\|WARNING" | tail -6
  done
  exit 0
fi
args "$RUN"
START=$(date +%s.%N)
python3 -m lcr.cli plan "${ARGS[@]}" >"$OUT/plan-$MODE.txt" 2>&1
echo "== lcr plan: exit $? ($(python3 -c "print(round($(date +%s.%N) - $START, 1))") s)"
grep -v "INFO\|WARNING" "$OUT/plan-$MODE.txt" | tail -15
if [ "$MODE" = clean ]; then
  python3 -m lcr.cli submit "${ARGS[@]}" >"$OUT/submit-$MODE.log" 2>&1
  echo "== lcr submit: exit $?"
else
  python3 -m lcr.cli submit "${ARGS[@]}" >"$OUT/submit-$MODE.log" 2>&1 &
  SUB=$!
  SHARD="$ROOT/runs/$RUN/generate/shard-0000.jsonl"
  for _ in $(seq 600); do  # until a third of the units are written
    [ -f "$SHARD" ] && [ "$(wc -l <"$SHARD")" -ge 21 ] && break
    sleep 1
  done
  echo "== $(wc -l <"$SHARD") records written; SIGKILL the generate job and all its processes"
  python3 - "$SUB" <<'PY'
import sys, psutil
for job in psutil.Process(int(sys.argv[1])).children():
    if "submitit" in " ".join(job.cmdline()):
        tree = [job, *job.children(recursive=True)]
        for p in tree:
            p.kill()
        print("killed", [p.pid for p in tree])
PY
  wait "$SUB"
  echo "== lcr submit after the kill: exit $? (records now $(wc -l <"$SHARD"))"
  python3 -m lcr.cli status "$ROOT/runs/$RUN" 2>&1 | tail -12
  python3 -m lcr.cli rerun "$ROOT/runs/$RUN" >"$OUT/rerun-$MODE.log" 2>&1
  echo "== lcr rerun: exit $?"
fi
grep -E "error|Error|Traceback" "$OUT/submit-$MODE.log" | grep -v "INFO\|WARNING" | tail -5
python3 jobs/gpu-smoke/inspect_run.py "$ROOT/runs/$RUN" "$START" | tee "$OUT/inspect-$MODE.txt"
cp -r "$ROOT/runs/$RUN/report.md" "$OUT/report-$MODE.md" 2>/dev/null
