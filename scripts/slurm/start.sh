#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for the tests (make test-slurm).
#
#   scripts/slurm/start.sh      # install (Debian packages) if needed, then start; idempotent
#   scripts/slurm/stop.sh       # stop what this script started, by pid
#
# What runs: munged, MariaDB (accounting database), slurmdbd, slurmctld and slurmd, all as
# root and without systemd. The one node is shaped like a GPU node of a real cluster (16
# CPUs, 64 GB, two GPUs) so profiles/slurm's requests are scheduled as written: slurmd is
# told to trust slurm.conf (SlurmdParameters=config_overrides) rather than this machine,
# and the two GPUs are character devices made with mknod (they behave as /dev/null).
# Two partitions, "gpu" and "cpu", and an account "weightspace" match the placeholders in
# profiles/slurm/config.yaml. Nothing is enforced: the daemons only schedule and account.
#
# State, logs and pid files live in $WEIGHTSPACE_SLURM_DIR (default /tmp/weightspace-slurm).
# slurm.conf, gres.conf and slurmdbd.conf are written to /etc/slurm, which is where the
# jobs' inner srun looks (the slurm executor strips SLURM_CONF from their environment).
set -euo pipefail

STATE=${WEIGHTSPACE_SLURM_DIR:-/tmp/weightspace-slurm}
DB_PORT=${WEIGHTSPACE_SLURM_DB_PORT:-13306}
CLUSTER=weightspace
ACCOUNT=weightspace
HOST=$(uname -n); HOST=${HOST%%.*}     # the short name, as slurmd finds its node
NODE_CPUS=16
NODE_MEM_MB=64000
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
BINARIES=(munged slurmctld slurmd sbatch sacct sacctmgr slurmdbd mariadbd mariadb-install-db)

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

# --- install -----------------------------------------------------------------------------
missing() {
    local b
    for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$b" >/dev/null 2>&1 || return 0; done
    return 1
}
export PATH=$PATH:/usr/sbin:/sbin
if missing; then
    say "installing ${PACKAGES[*]} from Debian's packages"
    # Keep apt from starting the services itself (there is no init system to own them).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"${1}" 2>&1; }
    mkdir -p "$STATE/log"
    if ! install "$STATE/log/apt.log"; then
        say "apt-get install failed with the current package lists: apt-get update, then again"
        apt-get update -qq >>"$STATE/log/apt.log" 2>&1 || true
        install "$STATE/log/apt.log" || { [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; tail -20 "$STATE/log/apt.log"; die "apt-get install failed (log: $STATE/log/apt.log)"; }
    fi
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    missing && die "installed ${PACKAGES[*]} but a binary is still missing: ${BINARIES[*]}"
fi

mkdir -p "$STATE"/{log,run,state,spool,dev} /etc/slurm
chmod 755 "$STATE"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for SECONDS WHAT LOG COMMAND...: poll COMMAND until it succeeds; fail with LOG's tail.
wait_for() {
    local seconds=$1 what=$2 log=$3; shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            [ -f "$log" ] && tail -20 "$log" >&2
            die "$what did not come up within ${seconds}s (log: $log)"
        fi
        sleep 0.2
    done
}

# --- configuration -----------------------------------------------------------------------
for i in 0 1; do
    [ -c "$STATE/dev/nvidia$i" ] || mknod "$STATE/dev/nvidia$i" c 1 3
done

write_if_changed() {  # write stdin to $1 only when it differs (a changed file means restart)
    local tmp; tmp=$(mktemp)
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
    mv "$tmp" "$1"; chmod 644 "$1"; return 0
}

changed=0
write_if_changed /etc/slurm/slurm.conf <<CONF && changed=1
# Written by weightspace scripts/slurm/start.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
DefMemPerCPU=1000
# squeue forgets a job MinJobAge seconds after it ends; sacct (accounting) keeps it.
MinJobAge=300
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
CONF

write_if_changed /etc/slurm/gres.conf <<CONF && changed=1
AutoDetect=off
Name=gpu File=$STATE/dev/nvidia[0-1]
CONF

write_if_changed /etc/slurm/slurmdbd.conf <<CONF && changed=1
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

if [ $changed = 1 ] && [ -x "$(dirname "$0")/stop.sh" ]; then
    "$(dirname "$0")/stop.sh" --slurm-only >/dev/null 2>&1 || true  # pick up the new configuration
fi

# --- munge -------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    runuser -u munge -- mungekey --create
fi
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$STATE/run/munged.pid" 2>/dev/null || true
    wait_for 10 munged /var/log/munge/munged.log sh -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
fi

# --- MariaDB, for slurmdbd ----------------------------------------------------------------
DB=$STATE/mysql
SOCK=$DB/mysqld.sock
if [ ! -d "$DB/data/mysql" ]; then
    say "initialising the accounting database in $DB"
    mkdir -p "$DB" && chown mysql:mysql "$DB"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || { tail -20 "$STATE/log/mariadb-install.log"; die "mariadb-install-db failed"; }
fi
# mariadbd runs as user mysql: its pid file and log live in its own folder.
if ! alive "$DB/mariadb.pid"; then
    say "starting MariaDB on 127.0.0.1:$DB_PORT"
    nohup mariadbd --no-defaults --user=mysql --datadir="$DB/data" --socket="$SOCK" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$DB/mariadb.pid" \
        --log-error="$DB/mariadb.log" --innodb-buffer-pool-size=32M --skip-log-bin \
        >/dev/null 2>&1 &
    wait_for 30 MariaDB "$DB/mariadb.log" mariadb-admin --no-defaults -S "$SOCK" -u root ping
    mariadb --no-defaults -S "$SOCK" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
fi

# --- slurmdbd, then the cluster and account it knows -------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
    say "starting slurmdbd"
    slurmdbd
    wait_for 30 slurmdbd "$STATE/log/slurmdbd.log" sacctmgr -n list cluster
fi
if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i add account "$ACCOUNT" Description="weightspace tests" Organization=weightspace >/dev/null
fi
if ! sacctmgr -n -P -s list user root format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
fi

# --- slurmctld and slurmd ----------------------------------------------------------------
if ! alive "$STATE/run/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -i
    wait_for 30 slurmctld "$STATE/log/slurmctld.log" scontrol ping
fi
if ! alive "$STATE/run/slurmd.pid"; then
    say "starting slurmd (node $HOST: $NODE_CPUS CPUs, ${NODE_MEM_MB} MB, 2 GPUs)"
    slurmd
fi
node_ready() { sinfo -h -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated)$'; }
deadline=$((SECONDS + 30))
until node_ready; do
    # A node left drained or down by an earlier run (or a changed slurm.conf) is put back.
    case "$(sinfo -h -n "$HOST" -o %T)" in drain*|down*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;; esac
    [ $SECONDS -ge $deadline ] && { tail -20 "$STATE/log/slurmd.log" >&2; die "node $HOST is not idle: $(sinfo -h -N -o '%N %T %E')"; }
    sleep 0.2
done
say "ready: $(sinfo -h -o '%P %D %T %G' | tr '\n' ';')"
