#!/usr/bin/env bash
# Start a real one-node Slurm cluster (munged, mariadbd, slurmdbd, slurmctld, slurmd) as root,
# without systemd, with every file under one state folder. Idempotent: if the cluster is already
# up and healthy it only prints the environment.
#
#   eval "$(sbatch/local-cluster/start.sh)"          # start (or reuse) and export SLURM_CONF
#   sbatch/local-cluster/start.sh --reset            # wipe state and database, start afresh
#
# State folder: ${LCR_SLURM_DIR:-/tmp/lcr-slurm}. Only `export ...` lines go to stdout; all
# progress and errors go to stderr.
set -euo pipefail

export PATH=$PATH:/usr/sbin:/sbin  # the daemons live in sbin, often not on a user's PATH
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${LCR_SLURM_DIR:-/tmp/lcr-slurm}
CLUSTER=lcr
NODE=$(hostname -s)
DB_PORT=${LCR_SLURM_DB_PORT:-3307}
# Not the Slurm defaults (6817-6819), so a system Slurm on the same host does not collide.
CTLD_PORT=${LCR_SLURM_CTLD_PORT:-6917}
SLURMD_PORT=${LCR_SLURM_SLURMD_PORT:-6918}
DBD_PORT=${LCR_SLURM_DBD_PORT:-6919}
TIMEOUT=${LCR_SLURM_TIMEOUT:-60}

CONF=$STATE/slurm.conf
MUNGE_DIR=$STATE/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket.2
DB_DIR=$STATE/mysql
DB_SOCK=$DB_DIR/run/mysqld.sock
RUN=$STATE/run
LOG=$STATE/log
MARIADBD_PID=
CONFIG_CHANGED=0

# Daemons are started with `9<&-`: fd 9 holds the start/stop lock and must not outlive this script.

log() { echo "[local-cluster] $*" >&2; }

die() {
    log "ERROR: $*"
    exit 1
}

# Print the last lines of every log, then fail.
fail() {
    local f
    for f in "$LOG"/* "$MUNGE_DIR"/munged.log; do
        [[ -s $f ]] || continue
        echo "----- tail $f -----" >&2
        tail -n 25 "$f" >&2
    done
    die "$* (logs: $LOG; $HERE/stop.sh stops what did start)"
}

# True if the pid file names a live process whose command is $2 (guards against pid reuse).
alive() {
    local pidfile=$1 name=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    running "$pid" "$name"
}

# True if process $1 runs command $2 and is not a zombie waiting to be reaped.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat =~ ^$1\ \($2\)\ ([A-Z]) && ${BASH_REMATCH[1]} != Z ]]
}

# wait_for WHAT SECONDS GUARD COMMAND...: retry COMMAND until it succeeds; fail at once if
# GUARD (a command: is the daemon still alive?) fails after a short grace, or at the timeout.
wait_for() {
    local what=$1 secs=$2 guard=$3 start=$SECONDS
    shift 3
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - start >= 3)) && ! $guard; then
            fail "$what died while starting"
        fi
        ((SECONDS - start < secs)) || fail "$what not ready after ${secs}s"
        sleep 0.5
    done
}

print_env() {
    local tmp=$STATE/env.sh.tmp
    printf 'export SLURM_CONF=%q\n' "$CONF" >"$tmp"
    mv -f "$tmp" "$STATE/env.sh"
    cat "$STATE/env.sh"
}

check_prerequisites() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it starts munged, mariadbd and Slurm daemons)"
    local pair bin pkg path missing=()
    for pair in munged:munge mungekey:munge mariadbd:mariadb-server \
        mariadb-install-db:mariadb-server mariadb:mariadb-client mariadb-admin:mariadb-client \
        slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client \
        sacct:slurm-client sacctmgr:slurm-client scontrol:slurm-client runuser:util-linux; do
        bin=${pair%%:*} pkg=${pair#*:}
        path=$(command -v "$bin") && [[ -f $path && -x $path ]] \
            || missing+=("$bin (apt-get install $pkg)")
    done
    ((${#missing[@]} == 0)) || die "missing binaries: ${missing[*]}"
    local user
    for user in munge mysql; do
        id -u "$user" >/dev/null 2>&1 || die "user '$user' missing (reinstall its Debian package)"
    done
    # Debian's slurmdbd pulls in the mysql plugin, but check: without it slurmdbd dies.
    compgen -G "/usr/lib/*/slurm*/accounting_storage_mysql.so" >/dev/null \
        || die "accounting_storage_mysql plugin missing (apt-get install slurm-wlm-mysql-plugin)"
    ((${#MUNGE_SOCK} < 100)) || die "LCR_SLURM_DIR too long for a unix socket path: $STATE"
}

munged_alive() { alive "$MUNGE_DIR/munged.pid" munged; }
mariadbd_alive() { alive "$DB_DIR/run/mysqld.pid" mariadbd || running "$MARIADBD_PID" mariadbd; }
slurmdbd_alive() { alive "$RUN/slurmdbd.pid" slurmdbd; }
slurmctld_alive() { alive "$RUN/slurmctld.pid" slurmctld; }
slurmd_alive() { alive "$RUN/slurmd.pid" slurmd; }

all_alive() {
    munged_alive && mariadbd_alive && slurmdbd_alive && slurmctld_alive && slurmd_alive
}

any_alive() {
    munged_alive || mariadbd_alive || slurmdbd_alive || slurmctld_alive || slurmd_alive
}

# Daemons up, node schedulable and accounting answering; retried for a while so that a busy
# moment does not restart a cluster that others are using.
healthy() {
    all_alive && [[ -r $CONF ]] || return 1
    wait_node_ready 15 && sacct_ready
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null; }

node_ready() {
    [[ $(node_state) =~ ^(idle|mixed|allocated|completing|planned|reserved)$ ]]
}

# wait_node_ready SECONDS: wait for the node to take jobs; resume it once if drained.
wait_node_ready() {
    local secs=$1 start=$SECONDS resumed=0 state
    until node_ready; do
        state=$(node_state || true)
        # A drain left over from an earlier run survives restarts: clear it once.
        if [[ $state == drain* && $resumed -eq 0 && $((SECONDS - start)) -ge 3 ]]; then
            log "node $NODE is $state ($(sinfo -h -n "$NODE" -o %E)); resuming it"
            scontrol update NodeName="$NODE" State=RESUME >&2 || true
            resumed=1
        fi
        ((SECONDS - start < secs)) || return 1
        sleep 0.5
    done
}

sacct_ready() { sacct -n -X -S now-1hours -o JobID >/dev/null 2>&1; }

make_dirs() {
    install -d -m 0755 "$STATE" "$STATE/dev" "$RUN" "$LOG" "$STATE/ctld" "$STATE/spool" "$DB_DIR"
    touch "$STATE/.lcr-slurm"  # marker: stop.sh --wipe deletes only folders that carry it
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR"
    install -d -m 0750 -o mysql -g mysql "$DB_DIR/data"
    install -d -m 0755 -o mysql -g mysql "$DB_DIR/run"
    # Fake GPUs: gres needs existing device files, or slurmd drops them and the node drains.
    local i
    for i in 0 1 2 3; do
        [[ -e $STATE/dev/nvidia$i ]] || ln -sfn /dev/null "$STATE/dev/nvidia$i"
    done
}

make_secrets() {
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        log "creating munge key"
        head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0600 "$MUNGE_DIR/munge.key"
    if [[ ! -s $DB_DIR/slurm.pass ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_DIR/slurm.pass")
    fi
}

start_munge() {
    munged_alive && return 0
    log "starting munged"
    rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
    runuser -u munge -- munged --socket="$MUNGE_SOCK" --key-file="$MUNGE_DIR/munge.key" \
        --log-file="$MUNGE_DIR/munged.log" --pid-file="$MUNGE_DIR/munged.pid" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG/munged.out" 2>&1 9<&- \
        || fail "munged failed to start"
    wait_for "munged" 10 munged_alive bash -c "munge -n -S '$MUNGE_SOCK' | unmunge -S '$MUNGE_SOCK'"
}

db_sql() { mariadb --no-defaults -S "$DB_SOCK" -u root "$@"; }

start_mariadb() {
    if mariadbd_alive; then
        create_db_user
        return 0
    fi
    if [[ ! -d $DB_DIR/data/mysql ]]; then
        log "initialising mariadb datadir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --auth-root-authentication-method=socket --skip-test-db \
            </dev/null >>"$LOG/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
    fi
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    rm -f "$DB_SOCK" "$DB_DIR/run/mysqld.pid"
    touch "$LOG/mariadb.err"
    chown mysql:mysql "$LOG/mariadb.err"
    # Slurm's recommended InnoDB settings; a small buffer pool keeps the footprint low.
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" --socket="$DB_SOCK" \
        --pid-file="$DB_DIR/run/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$LOG/mariadb.err" --innodb-buffer-pool-size=256M \
        --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
        </dev/null >>"$LOG/mariadb.out" 2>&1 9<&- &
    MARIADBD_PID=$!
    wait_for "mariadbd" 30 mariadbd_alive mariadb-admin --no-defaults -S "$DB_SOCK" -u root ping
    create_db_user
}

create_db_user() {
    local pass host
    pass=$(cat "$DB_DIR/slurm.pass")
    {
        echo "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
        for host in 127.0.0.1 localhost; do
            echo "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$pass';"
            echo "ALTER USER 'slurm'@'$host' IDENTIFIED BY '$pass';"
            echo "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';"
        done
    } | db_sql || fail "could not create the slurm database user"
}

# write_file PATH MODE < content: replace atomically if the content changed, and note the change.
write_file() {
    local tmp=$1.tmp
    cat >"$tmp"
    chmod "$2" "$tmp"
    if cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$1"
        CONFIG_CHANGED=1
    fi
}

write_configs() {
    local node_line
    # slurmd -C prints this host's real layout; a mismatch with slurm.conf drains the node.
    node_line=$(slurmd -C | head -n 1 | sed -E "s/^NodeName=[^ ]+ //")
    [[ $node_line == *CPUs=* ]] || fail "unexpected 'slurmd -C' output: $node_line"
    write_file "$STATE/slurmdbd.conf" 600 <<EOF
# Written by sbatch/local-cluster/start.sh; rewritten on every start.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DB_DIR/slurm.pass")
StorageLoc=slurm_acct_db
EOF
    chown root:root "$STATE/slurmdbd.conf"
    write_file "$STATE/gres.conf" 644 <<EOF
# Four fake GPUs: device files are symlinks to /dev/null.
AutoDetect=off
NodeName=$NODE Name=gpu File=$STATE/dev/nvidia[0-3]
EOF
    write_file "$CONF" 644 <<EOF
# Written by sbatch/local-cluster/start.sh; rewritten on every start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job may restart on the node only after it expires.
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# Munge socket for talking to slurmdbd: clients ignore AuthInfo there.
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=gres/gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
# CR_Core, not CR_Core_Memory: with memory tracking, a job without --mem takes the whole node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=60
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $node_line Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_slurmdbd() {
    if ! slurmdbd_alive; then
        start_slurmdbd_daemon
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in the accounting database"
        sacctmgr -i add cluster "$CLUSTER" >&2 || fail "sacctmgr add cluster failed"
    fi
}

start_slurmdbd_daemon() {
    log "starting slurmdbd on 127.0.0.1:$DBD_PORT"
    # slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF.
    slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 9<&- || fail "slurmdbd failed to start"
    wait_for "slurmdbd" 30 slurmdbd_alive sacctmgr -n -P list cluster format=cluster
}

start_slurm() {
    if ! slurmctld_alive; then
        log "starting slurmctld on 127.0.0.1:$CTLD_PORT"
        slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.out" 2>&1 9<&- \
            || fail "slurmctld failed to start"
    fi
    wait_for "slurmctld" 30 slurmctld_alive scontrol ping
    if ! slurmd_alive; then
        log "starting slurmd for node $NODE"
        slurmd -f "$CONF" -N "$NODE" </dev/null >>"$LOG/slurmd.out" 2>&1 9<&- \
            || fail "slurmd failed to start"
    fi
    if ! wait_node_ready "$TIMEOUT"; then
        scontrol show node "$NODE" >&2 || true
        slurmd_alive || fail "slurmd died while starting"
        fail "node $NODE is '$(node_state)', not idle, after ${TIMEOUT}s"
    fi
    wait_for "sacct (slurmdbd)" 20 slurmdbd_alive sacct_ready
}

main() {
    local reset=0 arg
    for arg in "$@"; do
        case $arg in
            --reset) reset=1 ;;
            -h | --help)
                sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
                exit 0
                ;;
            *) die "unknown argument: $arg (try --help)" ;;
        esac
    done
    check_prerequisites
    # One start or stop at a time (parallel test sessions call start.sh too).
    exec 9<"${BASH_SOURCE[0]}"
    flock -w 300 9 || die "another start.sh/stop.sh held the lock for 300s"
    export SLURM_CONF=$CONF
    if ((reset)); then
        log "--reset: wiping $STATE (controller state and database together)"
        LCR_SLURM_LOCKED=1 "$HERE/stop.sh" --wipe
    fi
    local t0=$SECONDS
    make_dirs
    make_secrets
    write_configs
    if ((CONFIG_CHANGED)) && any_alive; then
        log "configuration changed: restarting the running daemons, keeping state"
        LCR_SLURM_LOCKED=1 "$HERE/stop.sh"
    elif healthy; then
        log "cluster already up ($STATE)"
        print_env
        return 0
    elif all_alive; then
        log "all daemons run but the cluster is unhealthy: restarting them, keeping state"
        LCR_SLURM_LOCKED=1 "$HERE/stop.sh"
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    log "cluster up in $((SECONDS - t0))s: node $NODE, partition debug, 4 fake GPUs ($STATE)"
    print_env
}

main "$@"
