#!/usr/bin/env bash
# Stop the local SLURM cluster that scripts/slurm/start.sh started, by the pids it recorded.
#   scripts/slurm/stop.sh               # slurmd, slurmctld, slurmdbd, MariaDB, munged
#   scripts/slurm/stop.sh --slurm-only  # the three SLURM daemons (start.sh restarts them)
# Installed packages, the accounting database and job history are kept for the next start.
set -uo pipefail

STATE=${WEIGHTSPACE_SLURM_DIR:-/tmp/weightspace-slurm}
daemons=(slurmd slurmctld slurmdbd)
[ "${1:-}" = --slurm-only ] || daemons+=(mariadb munged)

stop() {  # stop NAME: TERM the pid in its pid file, wait up to 15 s, then KILL
    local name=$1 pidfile=$STATE/run/$1.pid pid
    [ "$name" = mariadb ] && pidfile=$STATE/mysql/mariadb.pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm-local: stopping $name (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "slurm-local: $name did not stop, killing it"; kill -KILL "$pid"; }
    fi
    rm -f "$pidfile"
}

for d in "${daemons[@]}"; do stop "$d"; done
exit 0
