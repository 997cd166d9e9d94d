#!/usr/bin/env bash
# The shared-prefix attention measurements (issue 18), one step per call of a lent GPU:
#   bash jobs/gpu/shared-prefix.sh a OUT     # op check; (a) 512 tokens: calibrate, both engines
#   bash jobs/gpu/shared-prefix.sh b OUT     # (b) 1024 tokens: shared-prefix and naive
#   bash jobs/gpu/shared-prefix.sh c OUT     # (c) real lengths, first 12 sets: both
#   bash jobs/gpu/shared-prefix.sh r OUT     # op check; (a) on the shared-prefix engine, calibrating
#   bash jobs/gpu/shared-prefix.sh g OUT     # op check; greedy agreement with batch controls
# Every bench runs the shared-prefix engine first, then the stock engine (naive: every unit in
# one generate call). Results: OUT/*.json and logs; the table ends each log.
set -uo pipefail
cd "$(dirname "$0")/../.."
. jobs/gpu/env.sh
STEP=$1 OUT=${2:-/tmp/out}
mkdir -p "$OUT"
JOB=jobs/bench-llama31-8b.toml
SEEDS="sampling.seeds=[0,1,2]"
bench() {  # NAME ARGS...: one bench, its log, its table
  local name=$1; shift
  timeout "${LIMIT:-400}" python3 -m lcr.cli bench "$JOB" "$@" --set "$SEEDS" \
    --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $?"
  grep -E "faster|greedy|x floor|^(defaults|shared)|Error|error:|Traceback" "$OUT/$name.log" | \
    grep -v "INFO\|DEBUG" | tail -25
}
opcheck() {  # one layer, random KV: errors against stock and fp32, kernel times
  timeout 120 python3 -m lcr.cli bench --attention-check --json "$OUT/ops.json" 2>&1 | \
    grep -v "INFO\|WARNING" | tail -12
}
case $STEP in
  a)
    opcheck
    LIMIT=420 bench a --scale 0.33 --shards 1 --output-tokens 512 --policies document_set,naive \
      --engine-set "" --engine-set "shared_prefix_attention=false" --calibrate \
      --calibrate-steps 48 --work-dir /tmp/ba
    cp /tmp/ba/calibration.json "$OUT/calibration.json" ;;
  b)
    bench b --scale 0.33 --shards 1 --output-tokens 1024 --policies document_set \
      --engine-set "" --engine-set "shared_prefix_attention=false;policies=naive" \
      --calibration /tmp/ba/calibration.json --work-dir /tmp/bb ;;
  c)
    LIMIT=560 bench c --run-dir jobs/bench-aalcr-real --sets 12 --shards 1 --output-tokens 512 \
      --policies document_set --engine-set "" \
      --engine-set "shared_prefix_attention=false;policies=naive" \
      --calibration /tmp/ba/calibration.json --work-dir /tmp/bc ;;
  r)  # op check; (a) again on the shared-prefix engine alone, calibrating (fit rule of 12-02)
    opcheck
    LIMIT=280 bench r --scale 0.33 --shards 1 --output-tokens 512 --policies document_set \
      --engine-set "" --calibrate --calibrate-steps 48 --work-dir /tmp/br
    cp /tmp/br/calibration.json "$OUT/calibration.json" ;;
  g)
    opcheck
    LIMIT=330 bench g --scale 0.1 --shards 1 --output-tokens 64 --policies document_set \
      --engine-set "" --engine-set "shared_prefix_attention=false" --greedy 256 \
      --calibration jobs/gpu/results/2026-12-01-h200/calibration.json --work-dir /tmp/bg
    cp /tmp/bg/greedy-*.json "$OUT/" ;;
esac
