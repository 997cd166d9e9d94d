#!/usr/bin/env bash
# Stop the local Slurm cluster started by start.sh (by its pid files). Idempotent.
#
#   sbatch/local-cluster/stop.sh           # stop the daemons, keep state (jobs, accounting)
#   sbatch/local-cluster/stop.sh --wipe    # also cancel all jobs and delete the state folder
#
# State folder: ${LCR_SLURM_DIR:-/tmp/lcr-slurm}. Messages go to stderr.
set -euo pipefail

STATE=${LCR_SLURM_DIR:-/tmp/lcr-slurm}
STOPPED=()

log() { echo "[local-cluster] $*" >&2; }

die() {
    log "ERROR: $*"
    exit 1
}

# Print the pid in the pid file if it names a live process whose command is $2.
live_pid() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    running "$pid" "$name" || return 1
    echo "$pid"
}

# True if process $1 runs command $2 and is not a zombie waiting to be reaped.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat =~ ^$1\ \($2\)\ ([A-Z]) && ${BASH_REMATCH[1]} != Z ]]
}

# stop_daemon PIDFILE NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    if ! pid=$(live_pid "$pidfile" "$name"); then
        rm -f "$pidfile"
        return 1
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 80; i++)); do
        running "$pid" "$name" || break
        sleep 0.25
    done
    if running "$pid" "$name"; then
        log "$name (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    STOPPED+=("$name")
}

# Before a wipe, end the jobs too: their slurmstepd processes would outlive the spool folder.
cancel_all_jobs() {
    local conf=$STATE/slurm.conf i
    [[ -r $conf ]] && live_pid "$STATE/run/slurmctld.pid" slurmctld >/dev/null || return 0
    export SLURM_CONF=$conf
    if [[ -n $(squeue -h -o %A 2>/dev/null) ]]; then
        log "cancelling all jobs"
        squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            [[ -z $(squeue -h -t RUNNING,COMPLETING -o %A 2>/dev/null) ]] && break
            sleep 0.25
        done
    fi
}

main() {
    local wipe=0 arg
    for arg in "$@"; do
        case $arg in
            --wipe) wipe=1 ;;
            -h | --help)
                sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
                exit 0
                ;;
            *) die "unknown argument: $arg (try --help)" ;;
        esac
    done
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    # Same lock as start.sh, which calls this script while already holding it.
    if [[ -z ${LCR_SLURM_LOCKED:-} ]]; then
        exec 9<"$(dirname "${BASH_SOURCE[0]}")/start.sh"
        flock -w 300 9 || die "another start.sh/stop.sh holds the lock for over 300s"
    fi
    if [[ ! -d $STATE ]]; then
        log "nothing to stop: $STATE does not exist"
        return 0
    fi
    ((wipe)) && cancel_all_jobs
    # Reverse order of start: clients of a daemon stop before the daemon.
    stop_daemon "$STATE/run/slurmd.pid" slurmd || true
    stop_daemon "$STATE/run/slurmctld.pid" slurmctld || true
    stop_daemon "$STATE/run/slurmdbd.pid" slurmdbd || true
    stop_daemon "$STATE/mysql/run/mysqld.pid" mariadbd || true
    stop_daemon "$STATE/munge/munged.pid" munged || true
    if ((wipe)); then
        # Refuse to delete a folder start.sh did not make (LCR_SLURM_DIR=/ would be a bad day).
        [[ -e $STATE/.lcr-slurm ]] || die "$STATE lacks the .lcr-slurm marker; not deleting it"
        log "deleting $STATE"
        rm -rf -- "$STATE"
    fi
    if ((${#STOPPED[@]})); then
        log "stopped: ${STOPPED[*]}"
    else
        log "no daemon was running"
    fi
}

main "$@"
