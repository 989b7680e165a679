#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by .ci/slurm/up.sh. Only daemons whose pids up.sh recorded in
# $CI_SLURM_DIR/run/ are stopped (SIGTERM, SIGKILL after 15 s); daemons started by something else are left alone.
#
#   bash .ci/slurm/down.sh              # cancel all jobs, stop slurmd, slurmctld, slurmdbd, mariadbd, munged
#   bash .ci/slurm/down.sh --keep-jobs  # do not scancel running/pending jobs first
#   bash .ci/slurm/down.sh --purge      # also drop the accounting database and delete $CI_SLURM_DIR
#                                       # (saved job state, logs): the next up.sh starts from scratch
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=.ci/slurm/common.sh
source "$HERE/common.sh"

PURGE=0 KEEP_JOBS=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        --keep-jobs) KEEP_JOBS=1 ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "down.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "down.sh: must run as root" >&2; exit 1; }
[[ -d $CI_SLURM_DIR ]] || { log "nothing to stop ($CI_SLURM_DIR does not exist)"; exit 0; }
mkdir -p "$RUN_DIR"
exec 9>"$CI_SLURM_DIR/.lock"
flock -w 120 9 || { log "ERROR: another up.sh/down.sh holds $CI_SLURM_DIR/.lock"; exit 1; }
cd /

# Cancel jobs first, so no orphaned slurmstepd/job processes outlive slurmd.
if ((!KEEP_JOBS)) && live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -z $(timeout 5 squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
fi

for name in slurmd slurmctld slurmdbd; do stop_daemon "$name"; done

if ((PURGE)); then
    if live_pid mariadbd >/dev/null || mariadb-admin --socket="$MYSQL_SOCK" --connect-timeout=2 ping >/dev/null 2>&1; then
        mariadb --socket="$MYSQL_SOCK" -uroot -e "DROP DATABASE IF EXISTS \`$CI_SLURM_DB_NAME\`" &&
            log "dropped database $CI_SLURM_DB_NAME"
    fi
fi
for name in mariadbd munged; do stop_daemon "$name"; done

if ((PURGE)); then
    find "$CI_SLURM_DIR" -mindepth 1 -maxdepth 1 ! -name .lock -exec rm -rf {} +
    log "deleted $CI_SLURM_DIR (state, logs)"
else
    rm -f "$CI_SLURM_DIR/env"
fi
log "SLURM down"
