#!/bin/bash
# The whole chain with plain sbatch, for clusters where you'd rather not use `lcr submit`:
#   lcr plan jobs/llama31-8b-aalcr.toml && bash sbatch/submit-all.sh shards/llama31-8b-aalcr
# Shard counts are read from the run directory; extra sbatch flags go in SBATCH_FLAGS.
set -euo pipefail
RUN_DIR=${1:?usage: bash sbatch/submit-all.sh RUN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
read -r N_GEN N_JUDGE < <("$PY" - "$RUN_DIR" <<'PYEOF'
import json, sys
from lcr.rundir import RunDir
rd = RunDir(sys.argv[1])
cfg, _ = rd.load_config()
print(len(json.loads(rd.plan_file.read_text())["shards"]), cfg.judge.shards)
PYEOF
)
FLAGS=(${SBATCH_FLAGS:-})
gen=$(sbatch --parsable "${FLAGS[@]}" --array="0-$((N_GEN - 1))" "$HERE/generate.sbatch" "$RUN_DIR")
merge=$(sbatch --parsable "${FLAGS[@]}" --dependency="afterany:${gen%%;*}" --kill-on-invalid-dep=yes \
  "$HERE/merge.sbatch" "$RUN_DIR")
judge=$(sbatch --parsable "${FLAGS[@]}" --array="0-$((N_JUDGE - 1))" --dependency="afterok:${merge%%;*}" \
  --kill-on-invalid-dep=yes "$HERE/judge.sbatch" "$RUN_DIR")
report=$(sbatch --parsable "${FLAGS[@]}" --dependency="afterok:${judge%%;*}" --kill-on-invalid-dep=yes \
  "$HERE/report.sbatch" "$RUN_DIR")
echo "generate ${gen%%;*}  merge ${merge%%;*}  judge ${judge%%;*}  report ${report%%;*}"
