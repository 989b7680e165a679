#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine, without systemd:
#   munged -> MariaDB (mariadbd) -> slurmdbd -> slurmctld -> slurmd, 2 fake GPUs, partition "debug".
#
#   bash .ci/slurm/up.sh            # install if needed, start what is not running; no-op when already up
#   bash .ci/slurm/up.sh --restart  # restart the slurm daemons (slurmdbd, slurmctld, slurmd) even if up
#
# Idempotent: daemons already running from an earlier up.sh are kept unless their config changed (then they
# are restarted). Pids: $CI_SLURM_DIR/run/*.pid, logs: $CI_SLURM_DIR/log/, cluster facts for tests:
# $CI_SLURM_DIR/env (shell KEY=VALUE). Settings: see common.sh. Stop with .ci/slurm/down.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=.ci/slurm/common.sh
source "$HERE/common.sh"

FORCE_RESTART=0
for arg in "$@"; do
    case $arg in
        --restart) FORCE_RESTART=1 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "up.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "up.sh: must run as root" >&2; exit 1; }
for v in CI_SLURM_NGPUS CI_SLURM_DEFMEMPERCPU CI_SLURM_CRED_EXPIRE CI_SLURM_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "up.sh: $v must be a whole number, not '${!v}'" >&2; exit 2; }
done

T_START=$(date +%s.%N)
mkdir -p "$RUN_DIR" "$LOG_DIR" "$STATE_DIR"
# Serialise concurrent up.sh/down.sh. Every daemon is started with 9>&- so none inherits (and holds) the lock.
exec 9>"$CI_SLURM_DIR/.lock"
flock -w 120 9 || { log "ERROR: another up.sh/down.sh holds $CI_SLURM_DIR/.lock"; exit 1; }
cd /   # daemons inherit the cwd; never pin a checkout

dump_logs() {
    local f
    for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.out; do
        [[ -s $f ]] || continue
        echo "----- tail -n 25 $f -----" >&2
        tail -n 25 "$f" >&2
    done
    if command -v scontrol >/dev/null && [[ -n ${HOST:-} ]]; then
        echo "----- scontrol show node $HOST -----" >&2
        timeout 5 scontrol show node "$HOST" >&2 2>&1 || true
    fi
    echo "----- daemons -----" >&2
    local d pid
    for d in "${DAEMONS[@]}"; do
        if pid=$(live_pid "$d"); then echo "$d: running (pid $pid)" >&2; else echo "$d: NOT running" >&2; fi
    done
}
fail() {
    log "ERROR: $*"
    dump_logs
    log "ERROR: SLURM bring-up failed: $*"
    exit 1
}

DEADLINE=0
# wait_for DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds or the bring-up deadline passes.
wait_for() {
    local what=$1
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < DEADLINE)) || fail "timed out (CI_SLURM_TIMEOUT=${CI_SLURM_TIMEOUT}s) waiting for $what"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- packages
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt-get, log: $LOG_DIR/apt.log)"
    # Keep maintainer scripts from starting daemons with package defaults (we start them ourselves).
    added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && added_policy=1
    fi
    apt_install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" \
            >>"$LOG_DIR/apt.log" 2>&1
    }
    rc=0
    apt_install || { log "apt-get install failed; running apt-get update and retrying";
                     DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$LOG_DIR/apt.log" 2>&1 && apt_install; } || rc=$?
    ((added_policy)) && rm -f /usr/sbin/policy-rc.d
    if ((rc)); then tail -n 30 "$LOG_DIR/apt.log" >&2; fail "apt-get install ${missing[*]} failed"; fi
    log "installed in $(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
fi
DEADLINE=$((SECONDS + CI_SLURM_TIMEOUT))
T_UP=$(date +%s.%N)

# ---------------------------------------------------------------- node facts and configs
HOST=$(hostname -s)
# e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
HW=$(slurmd -C | head -n 1)
hw() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(hw CPUs) BOARDS=$(hw Boards) SOCKETS=$(hw SocketsPerBoard) CORES=$(hw CoresPerSocket)
THREADS=$(hw ThreadsPerCore) MEM=$(hw RealMemory)
[[ -n $CPUS && -n $MEM && -n $CORES ]] || fail "could not parse 'slurmd -C': $HW"
# Declare less memory than slurmd detects (else the node drains with "Low RealMemory").
REALMEM=$((MEM * 9 / 10))
DEFMEM=$CI_SLURM_DEFMEMPERCPU
((DEFMEM * CPUS <= REALMEM)) || DEFMEM=$((REALMEM / CPUS))

GEN=$(mktemp -d)
trap 'rm -rf "$GEN"' EXIT
render() {
    sed -e "s|@CLUSTER@|$CI_SLURM_CLUSTER|g" -e "s|@PARTITION@|$CI_SLURM_PARTITION|g" \
        -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$CI_SLURM_DIR|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@BOARDS@|$BOARDS|g" -e "s|@SOCKETS@|$SOCKETS|g" \
        -e "s|@CORES@|$CORES|g" -e "s|@THREADS@|$THREADS|g" -e "s|@REALMEM@|$REALMEM|g" \
        -e "s|@DEFMEMPERCPU@|$DEFMEM|g" -e "s|@CRED_EXPIRE@|$CI_SLURM_CRED_EXPIRE|g" -e "s|@NGPUS@|$CI_SLURM_NGPUS|g" \
        -e "s|@DBUSER@|$CI_SLURM_DB_USER|g" -e "s|@DBPASS@|$CI_SLURM_DB_PASS|g" -e "s|@DBNAME@|$CI_SLURM_DB_NAME|g" \
        "$HERE/$1.in"
}
render_slurm_conf() {
    render slurm.conf
    # see "job ids" below
    [[ ! -s $STATE_DIR/first_job_id ]] || echo "FirstJobId=$(cat "$STATE_DIR/first_job_id")"
}
render_slurm_conf >"$GEN/slurm.conf"
render slurmdbd.conf >"$GEN/slurmdbd.conf"
{
    render gres.conf | grep -v '@GRES_LINES@'
    for ((i = 0; i < CI_SLURM_NGPUS; i++)); do echo "NodeName=$HOST Name=gpu File=/dev/fakegpu$i"; done
} >"$GEN/gres.conf"
if ((CI_SLURM_NGPUS == 0)); then
    sed -i -e 's/^GresTypes=gpu//' -e 's/ Gres=gpu:0//' "$GEN/slurm.conf"
fi

mkdir -p "$ETC"
install_conf() {  # install_conf NAME MODE OWNER
    if ! cmp -s "$GEN/$1" "$ETC/$1"; then
        install -m "$2" -o "$3" -g "$3" "$GEN/$1" "$ETC/$1"
        log "wrote $ETC/$1"
    fi
    # keep mode/owner right even when the content did not change
    chmod "$2" "$ETC/$1"
    chown "$3:$3" "$ETC/$1"
}
install_conf slurm.conf 0644 root
install_conf gres.conf 0644 root
install_conf slurmdbd.conf 0600 slurm   # slurmdbd refuses a config readable by others
HASH_CTL=$(cat "$ETC/slurm.conf" "$ETC/gres.conf" | sha256sum | cut -c1-16)
HASH_DBD=$(sha256sum <"$ETC/slurmdbd.conf" | cut -c1-16)

# Fake GPU devices: character devices (same major/minor as /dev/null).
for ((i = 0; i < CI_SLURM_NGPUS; i++)); do
    dev=/dev/fakegpu$i
    if [[ ! -c $dev ]]; then
        rm -f "$dev"
        mknod -m 0666 "$dev" c 1 3
    fi
done

# Directories and log files with the owners the daemons need.
install -d -o slurm -g slurm -m 0755 "$STATE_DIR/slurmctld"
install -d -o root -g root -m 0755 "$STATE_DIR/slurmd"
# slurmctld/slurmdbd (running as slurm) chdir to their log directory and want it writable (for core files)
chown slurm:slurm "$LOG_DIR"
chmod 0755 "$LOG_DIR"
touch_owned() { [[ -e $1 ]] || touch "$1"; chown "$2:$2" "$1"; chmod "${3:-0640}" "$1"; }
touch_owned "$LOG_DIR/slurmctld.log" slurm
touch_owned "$LOG_DIR/slurmdbd.log" slurm
touch_owned "$LOG_DIR/mariadb.log" mysql
# munged insists that its log directory belongs to root or munge: keep its log in /var/log/munge, linked here.
install -d -o munge -g munge -m 0700 /var/log/munge
ln -sfn /var/log/munge/munged.log "$LOG_DIR/munged.log"

# needs_start NAME HASH: 0 when NAME must be (re)started; stops it first when its config changed.
needs_start() {
    local name=$1 hash=${2:-} pid
    if pid=$(live_pid "$name"); then
        if ((FORCE_RESTART)) && [[ $name == slurm* ]]; then
            log "restarting $name (--restart)"
        elif [[ -n $hash && $(cat "$RUN_DIR/$name.confhash" 2>/dev/null) != "$hash" ]]; then
            log "restarting $name: its configuration changed"
        else
            return 1
        fi
        stop_daemon "$name"
    fi
    # A daemon of that name that up.sh did not start would hold the port: say so instead of failing obscurely.
    local other
    for other in $(pgrep -x "$name" || true); do
        [[ $(awk '{print $3}' "/proc/$other/stat" 2>/dev/null) == Z ]] && continue
        fail "$name (pid $other) is running but was not started by up.sh (no $RUN_DIR/$name.pid); stop it first"
    done
    return 0
}
record_pid() {  # record_pid NAME PIDFILE_WRITTEN_BY_DAEMON [HASH]
    local pid
    wait_for "$1 to write its pid file $2" test -s "$2"
    pid=$(tr -dc 0-9 <"$2")
    echo "$pid" >"$RUN_DIR/$1.pid"
    [[ -z ${3:-} ]] || echo "$3" >"$RUN_DIR/$1.confhash"
    live_pid "$1" >/dev/null || fail "$1 exited right after starting (pid $pid)"
}

# ---------------------------------------------------------------- munged
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if live_pid munged >/dev/null; then
    :
elif munge_ok 2>/dev/null; then
    log "munged already running (not started by up.sh; left alone)"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force --log-file=/var/log/munge/munged.log \
        --pid-file=/run/munge/munged.pid </dev/null >>"$LOG_DIR/munged.out" 2>&1 9>&- \
        || fail "munged failed to start"
    record_pid munged /run/munge/munged.pid
    wait_for "munge to encode/decode a credential" munge_ok
    log "started munged (pid $(live_pid munged))"
fi

# ---------------------------------------------------------------- MariaDB
db_ping() { mariadb-admin --socket="$MYSQL_SOCK" --connect-timeout=2 ping; }
if live_pid mariadbd >/dev/null; then
    :
elif db_ping >/dev/null 2>&1; then
    log "MariaDB already running on $MYSQL_SOCK (not started by up.sh; left alone)"
else
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising /var/lib/mysql"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=socket \
            --skip-test-db >>"$LOG_DIR/mariadb.out" 2>&1 || fail "mariadb-install-db failed"
    fi
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    rm -f /run/mysqld/mysqld.pid
    # No TCP port: slurmdbd reaches it through the unix socket (StorageHost=localhost).
    setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$MYSQL_SOCK" \
        --pid-file=/run/mysqld/mysqld.pid --log-error="$LOG_DIR/mariadb.log" --skip-networking \
        --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
        </dev/null >>"$LOG_DIR/mariadb.out" 2>&1 9>&- &
    record_pid mariadbd /run/mysqld/mysqld.pid
    wait_for "MariaDB to answer on $MYSQL_SOCK" db_ping
    log "started mariadbd (pid $(live_pid mariadbd))"
fi
mariadb --socket="$MYSQL_SOCK" -uroot <<SQL || fail "could not create the accounting database/user"
CREATE DATABASE IF NOT EXISTS \`$CI_SLURM_DB_NAME\`;
CREATE USER IF NOT EXISTS '$CI_SLURM_DB_USER'@'localhost' IDENTIFIED BY '$CI_SLURM_DB_PASS';
ALTER USER '$CI_SLURM_DB_USER'@'localhost' IDENTIFIED BY '$CI_SLURM_DB_PASS';
GRANT ALL ON \`$CI_SLURM_DB_NAME\`.* TO '$CI_SLURM_DB_USER'@'localhost';
SQL

# ---------------------------------------------------------------- slurmdbd
if needs_start slurmdbd "$HASH_DBD"; then
    rm -f "$RUN_DIR/slurmdbd.pid"
    slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.out" 2>&1 9>&- || fail "slurmdbd failed to start"
    record_pid slurmdbd "$RUN_DIR/slurmdbd.pid" "$HASH_DBD"
    log "started slurmdbd (pid $(live_pid slurmdbd))"
fi
wait_for "slurmdbd to answer sacctmgr" sacctmgr -n -P list cluster format=cluster

# Register the cluster (creates account root and user root's association), before slurmctld starts.
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CI_SLURM_CLUSTER"; then
    sacctmgr -i add cluster "$CI_SLURM_CLUSTER" >>"$LOG_DIR/sacctmgr.out" 2>&1 ||
        fail "sacctmgr add cluster $CI_SLURM_CLUSTER failed: $(tail -n 5 "$LOG_DIR/sacctmgr.out")"
    log "registered cluster $CI_SLURM_CLUSTER in slurmdbd"
fi
if ! sacctmgr -n -P list assoc cluster="$CI_SLURM_CLUSTER" account=root user=root format=user | grep -qx root; then
    sacctmgr -i add user root account=root cluster="$CI_SLURM_CLUSTER" >>"$LOG_DIR/sacctmgr.out" 2>&1 ||
        fail "could not add user root to account root: $(tail -n 5 "$LOG_DIR/sacctmgr.out")"
fi

# Job ids: slurmctld numbers jobs from its saved state. If that state is gone (fresh $CI_SLURM_DIR) while the
# database still holds jobs, new jobs would reuse old ids and `sacct -j ID` (what submitit polls) would mix the
# old and new job. Continue numbering after the largest id in the database instead.
if [[ ! -e $STATE_DIR/slurmctld/job_state && ! -e $STATE_DIR/slurmctld/job_state.old ]] && ! live_pid slurmctld >/dev/null; then
    max_id=$(mariadb --socket="$MYSQL_SOCK" -uroot -N -B -e \
        "SELECT COALESCE(MAX(id_job),0) FROM \`$CI_SLURM_DB_NAME\`.\`${CI_SLURM_CLUSTER}_job_table\`" 2>/dev/null || echo 0)
    if ((max_id > 0)); then
        echo $((max_id + 1)) >"$STATE_DIR/first_job_id"
        log "no saved slurmctld state but the database has jobs up to $max_id: FirstJobId=$((max_id + 1))"
        render_slurm_conf >"$GEN/slurm.conf"
        install_conf slurm.conf 0644 root
        HASH_CTL=$(cat "$ETC/slurm.conf" "$ETC/gres.conf" | sha256sum | cut -c1-16)
    fi
fi

# ---------------------------------------------------------------- slurmctld, slurmd
# slurm.conf/gres.conf are read by both daemons: a change restarts both.
restart_ctl=0
needs_start slurmctld "$HASH_CTL" && restart_ctl=1
restart_d=0
if needs_start slurmd "$HASH_CTL"; then restart_d=1; fi
if ((restart_ctl)); then
    rm -f "$RUN_DIR/slurmctld.pid"
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 9>&- || fail "slurmctld failed to start"
    record_pid slurmctld "$RUN_DIR/slurmctld.pid" "$HASH_CTL"
    log "started slurmctld (pid $(live_pid slurmctld))"
fi
ctld_up() { scontrol ping | grep -q 'is UP'; }
wait_for "slurmctld to answer 'scontrol ping'" ctld_up
if ((restart_d)); then
    rm -f "$RUN_DIR/slurmd.pid"
    slurmd </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 9>&- || fail "slurmd failed to start"
    record_pid slurmd "$RUN_DIR/slurmd.pid" "$HASH_CTL"
    log "started slurmd (pid $(live_pid slurmd))"
fi

# ---------------------------------------------------------------- wait for a usable node
resumed=0
node_ok() {
    local state
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1)
    case $state in
        idle | mixed | allocated | completing) return 0 ;;
        *'*') return 1 ;;  # not responding yet
        drain* | down | fail* | inval*)
            # Drain/down state restored from an earlier run's saved state: resume once.
            if ((!resumed)); then
                resumed=1
                log "node $HOST is $state ($(scontrol show node "$HOST" | sed -n 's/.*Reason=//p')); resuming it"
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                return 1
            fi
            fail "node $HOST is $state: $(scontrol show node "$HOST" | sed -n 's/.*Reason=//p')"
            ;;
    esac
    return 1
}
until node_ok; do
    ((SECONDS < DEADLINE)) || fail "timed out waiting for node $HOST to become idle (state: $(sinfo -h -N -o %T 2>&1))"
    sleep 0.2
done
sinfo -h -p "$CI_SLURM_PARTITION" -o %P >/dev/null 2>&1 || fail "partition $CI_SLURM_PARTITION missing"
wait_for "sacct to work" sacct -n -X -S now-1hours

cat >"$CI_SLURM_DIR/env" <<EOF
CI_SLURM_CLUSTER=$CI_SLURM_CLUSTER
CI_SLURM_PARTITION=$CI_SLURM_PARTITION
CI_SLURM_NODE=$HOST
CI_SLURM_CPUS=$CPUS
CI_SLURM_REALMEM=$REALMEM
CI_SLURM_DEFMEMPERCPU=$DEFMEM
CI_SLURM_NGPUS=$CI_SLURM_NGPUS
CI_SLURM_ACCOUNT=root
CI_SLURM_DIR=$CI_SLURM_DIR
EOF
T_END=$(date +%s.%N)
log "SLURM up: cluster=$CI_SLURM_CLUSTER partition=$CI_SLURM_PARTITION node=$HOST cpus=$CPUS" \
    "mem=${REALMEM}M gpus=$CI_SLURM_NGPUS ($(awk -v a="$T_UP" -v b="$T_END" 'BEGIN{printf "%.1f", b-a}') s;" \
    "env in $CI_SLURM_DIR/env)"
