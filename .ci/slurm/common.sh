# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for .ci/slurm/up.sh and down.sh (sourced, not run).
# Every setting can be overridden from the environment.
CI_SLURM_DIR=${CI_SLURM_DIR:-/tmp/ci-slurm}           # pids (run/), logs (log/), state/, env file
CI_SLURM_CLUSTER=${CI_SLURM_CLUSTER:-ci}
CI_SLURM_PARTITION=${CI_SLURM_PARTITION:-debug}
CI_SLURM_NGPUS=${CI_SLURM_NGPUS:-2}                   # fake GPUs: /dev/fakegpu0 .. N-1
CI_SLURM_DEFMEMPERCPU=${CI_SLURM_DEFMEMPERCPU:-2048}  # MB; else one job takes the node's whole memory
CI_SLURM_CRED_EXPIRE=${CI_SLURM_CRED_EXPIRE:-10}        # s; a requeued job restarts after this + 1 s
CI_SLURM_TIMEOUT=${CI_SLURM_TIMEOUT:-90}              # seconds for the whole bring-up (after apt)
CI_SLURM_DB_NAME=${CI_SLURM_DB_NAME:-slurm_acct_db}
CI_SLURM_DB_USER=${CI_SLURM_DB_USER:-slurm}
CI_SLURM_DB_PASS=${CI_SLURM_DB_PASS:-ci-slurm-db-pass}

RUN_DIR=$CI_SLURM_DIR/run
LOG_DIR=$CI_SLURM_DIR/log
STATE_DIR=$CI_SLURM_DIR/state
ETC=/etc/slurm
MYSQL_SOCK=/run/mysqld/mysqld.sock
# daemons in start order; down.sh stops them in reverse
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

log() { printf '[ci-slurm %s] %s\n' "$(date +%T)" "$*" >&2; }

# pid recorded in $RUN_DIR/NAME.pid if that process is alive and is NAME, else nothing.
# (/proc/PID/comm guards against a stale pid file naming a recycled pid.)
live_pid() {
    local name=$1 f=$RUN_DIR/$1.pid pid comm
    [[ -s $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    echo "$pid"
}

# stop_daemon NAME: SIGTERM the recorded pid, wait up to 15 s, then SIGKILL; forget the pid.
stop_daemon() {
    local name=$1 pid i
    if pid=$(live_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -e /proc/$pid ]] || break
            # a zombie counts as gone
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.1
        done
        if [[ -e /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
            log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.3
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.confhash"
}
