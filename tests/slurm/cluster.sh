#!/usr/bin/env bash
# A single-node SLURM cluster on loopback, everything under one folder.
#
#   tests/slurm/cluster.sh install     # Debian's packages, if any daemon is missing
#   tests/slurm/cluster.sh start DIR   # munged, slurmctld, slurmd
#   tests/slurm/cluster.sh stop DIR    # stops exactly the daemons `start` recorded in DIR/pids
#   tests/slurm/cluster.sh env DIR     # prints `export SLURM_CONF=...` for sbatch, sacct, ...
#
# Needs root and Debian's slurm-wlm and munge. The node advertises two GPUs as a GRES backed by
# /dev/null and /dev/zero, so GPU requests (--gres/--gpus) go through SLURM's real scheduling
# path on a machine without one, two jobs at a time as on a 2-core machine's two CPUs.
#
# No accounting (slurmdbd, MariaDB): Debian's mariadb-server needs a newer perl than a fresh
# machine has, and installing it would upgrade the host's perl. Finished jobs stay visible to
# squeue for MinJobAge (an hour), which is where the executor plugin and the test read states.
set -euo pipefail

usage="usage: cluster.sh install | start DIR | stop DIR | env DIR"
cmd=${1:?$usage}
[[ $cmd == install ]] || dir=$(realpath -m "${2:?$usage}")
node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
# Ports away from SLURM's defaults (6817-6818), so a real install is untouched.
ctld_port=16817 slurmd_port=16818
munge_socket=/run/munge/munge.socket.2
# The jobstep plugin drops SLURM_CONF before its nested srun, so on the node srun must find the
# configuration at the default path: a link there to ours, made only when nothing is there.
system_conf=/etc/slurm/slurm.conf

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2
    shift 2
    for _ in $(seq $((t * 4))); do
        if timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    echo "cluster.sh: $what did not come up in ${t}s; see $dir/log" >&2
    return 1
}

start() {
    trap 'echo "cluster.sh: start failed; stopping what it started" >&2; stop' ERR
    mkdir -p "$dir"/{log,munge,state,spool,run}
    : >"$dir/pids"

    # munge: the authentication every SLURM daemon and client uses, on its default socket where
    # every client looks; one already there (a system service) is used as it is, and left running.
    if [[ -S $munge_socket ]] && munge -n >/dev/null 2>&1; then
        echo "using the munged that answers on $munge_socket"
    else
        mkdir -p "$(dirname "$munge_socket")"
        cp /etc/munge/munge.key "$dir/munge/munge.key"
        chmod 700 "$dir/munge" && chmod 400 "$dir/munge/munge.key"
        munged --force --key-file="$dir/munge/munge.key" --socket="$munge_socket" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
            --seed-file="$dir/munge/seed"
        wait_for 10 munged test -s "$dir/munge/munged.pid"
        echo "munged $(cat "$dir/munge/munged.pid")" >>"$dir/pids"
    fi

    cat >"$dir/gres.conf" <<EOF
NodeName=$node Name=gpu File=/dev/null
NodeName=$node Name=gpu File=/dev/zero
EOF
    cat >"$dir/slurm.conf" <<EOF
ClusterName=sharpminima
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
InactiveLimit=0
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    if [[ -e $system_conf || -L $system_conf ]]; then
        echo "cluster.sh: $system_conf exists; this test cluster will not replace it" >&2
        return 1
    fi
    mkdir -p "$(dirname "$system_conf")" && ln -s "$dir/slurm.conf" "$system_conf"
    echo "link $system_conf" >>"$dir/pids"

    slurmctld -f "$dir/slurm.conf"
    wait_for 30 slurmctld test -s "$dir/run/slurmctld.pid"
    echo "slurmctld $(cat "$dir/run/slurmctld.pid")" >>"$dir/pids"
    slurmd -f "$dir/slurm.conf" -N "$node"
    wait_for 30 slurmd test -s "$dir/run/slurmd.pid"
    echo "slurmd $(cat "$dir/run/slurmd.pid")" >>"$dir/pids"
    wait_for 60 "the node" bash -c "sinfo -h -N -o %t | grep -qx idle"
    trap - ERR
    echo "cluster up in $dir: $(sinfo -h -o '%P %D nodes %c cpus %G')"
}

install() {
    local missing=0
    for daemon in munged slurmctld slurmd squeue; do
        command -v "$daemon" >/dev/null || missing=1
    done
    ((missing)) || return 0
    local packages=(slurm-wlm munge) upgrades
    apt-get update -qq
    # Install what is missing, upgrade nothing: a dry run first, refused if it would replace
    # any installed package ("Inst NAME [OLD VERSION] ...").
    upgrades=$(apt-get install -s --no-install-recommends "${packages[@]}" | grep '^Inst [^ ]* \[' || true)
    if [[ -n $upgrades ]]; then
        echo "cluster.sh: installing ${packages[*]} would upgrade installed packages:" >&2
        echo "$upgrades" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
}

stop() {
    [[ -f $dir/pids ]] || return 0
    # Last started first; each by the PID recorded when it started.
    tac "$dir/pids" | while read -r name pid; do
        if [[ $name == link ]]; then
            [[ $(readlink "$pid") == "$dir/slurm.conf" ]] && rm "$pid" && echo "removed $pid"
        elif kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            echo "stopped $name ($pid)"
        fi
    done
    rm -f "$dir/pids"
}

case $cmd in
install) install ;;
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$dir/slurm.conf" ;;
*) echo "$usage" >&2 && exit 2 ;;
esac
