#!/bin/bash
# The whole chain with plain sbatch, for clusters where you'd rather not use `lcr submit`:
#   lcr plan jobs/llama31-8b-aalcr.toml && bash sbatch/submit-all.sh shards/llama31-8b-aalcr
# One job (or array) per stage of lcr/stages.py, in its order, each after the one before, running
# sbatch/STAGE.sbatch. Time, CPUs, GPUs, partition, account, memory and the shard arrays come from
# the run's config.toml (lcr/plain.py reads them as `lcr submit` does); logs go to RUN/logs/.
# Every stage is first checked with `sbatch --test-only`, so a chain the cluster cannot take is
# refused whole, before any job is queued. The job ids go to RUN/jobs.json (`lcr status RUN`).
# Environment: SBATCH_FLAGS="--qos=high --partition=big" is added to every stage's flags (after
# the config's, so it wins); PYTHON is the interpreter with lcr installed (default python3).
set -euo pipefail
RUN_DIR=${1:?usage: bash sbatch/submit-all.sh RUN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
read -r -a FLAGS <<< "${SBATCH_FLAGS:-}"
CHAIN=$("$PY" -m lcr.plain "$RUN_DIR")  # STAGES=(...), SETUP, AFTER_<stage>, ARGS_<stage>=(...)
eval "$CHAIN"
export LCR_SETUP=$SETUP  # slurm.setup's lines: each job runs them first

for stage in "${STAGES[@]}"; do  # nothing is queued unless every stage would be accepted
  script="$HERE/$stage.sbatch"
  [[ -f $script ]] || { echo "submit-all.sh: no $script for stage $stage of lcr/stages.py" >&2; exit 2; }
  declare -n args="ARGS_$stage"
  if ! said=$(sbatch --test-only "${args[@]}" "${FLAGS[@]}" "$script" "$RUN_DIR" 2>&1); then
    echo "submit-all.sh: sbatch refuses the $stage stage, so nothing was queued: ${said##*$'\n'}" >&2
    exit 2
  fi
done

queued=() prev=""
for stage in "${STAGES[@]}"; do
  declare -n args="ARGS_$stage" after="AFTER_$stage"
  dep=()
  [[ -z $prev ]] || dep=(--dependency="$after:$prev" --kill-on-invalid-dep=yes)
  if ! id=$(sbatch --parsable "${args[@]}" "${dep[@]}" "${FLAGS[@]}" "$HERE/$stage.sbatch" "$RUN_DIR"); then
    ids=("${queued[@]#*=}")
    [[ ${#ids[@]} -eq 0 ]] || scancel "${ids[@]}"
    echo "submit-all.sh: sbatch failed for the $stage stage; the jobs queued before it (${ids[*]:-none}) were cancelled" >&2
    exit 1
  fi
  prev=${id%%;*}
  queued+=("$stage=$prev")
done
"$PY" -m lcr.plain "$RUN_DIR" --record "${queued[@]}"
echo "${queued[*]}  (in $RUN_DIR/jobs.json; watch with: lcr status $RUN_DIR)"
