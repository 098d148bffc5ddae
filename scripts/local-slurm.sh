#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests of `--launcher slurm`:
# slurmctld + slurmd without systemd, its own state directory and slurm.conf, two fake GPUs
# as generic resources (so `--gres=gpu:1` sets CUDA_VISIBLE_DEVICES in a job).
#
#   scripts/local-slurm.sh start    install (Debian packages, once) and start; idempotent
#   scripts/local-slurm.sh stop     stop both daemons
#   scripts/local-slurm.sh status   say whether it is up (exit 0) or not (exit 1)
#   scripts/local-slurm.sh env      print `export SLURM_CONF=...` for the clients
#
# Needs root (apt-get, mknod, slurmd). VTAB_SLURM_DIR (default /tmp/vtab-slurm) holds the
# configuration, state, logs and pid files. Authentication is off (auth/none): this is a
# test cluster on 127.0.0.1 inside a throw-away machine, never a shared one.
set -euo pipefail
dir="${VTAB_SLURM_DIR:-/tmp/vtab-slurm}"
conf="$dir/slurm.conf"
node="vtab-node"
say() { printf '\033[1m[local-slurm]\033[0m %s\n' "$*" >&2; }

install() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [[ ${#missing[@]} -eq 0 ]] && return
  say "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' own services are not wanted: no systemd here, this script starts them.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_conf() {
  mkdir -p "$dir"/{state,spool,log,dev}
  # gres File= must name character devices; these are never opened by a job.
  for i in 0 1; do
    [[ -c "$dir/dev/gpu$i" ]] || mknod "$dir/dev/gpu$i" c 195 "$i"
  done
  cat >"$dir/gres.conf" <<EOF
NodeName=$node Name=gpu File=$dir/dev/gpu[0-1]
EOF
  cat >"$conf" <<EOF
ClusterName=vtab
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  SLURM_CONF="$conf" sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

start() {
  install
  export SLURM_CONF="$conf"
  if pid_alive "$dir/slurmctld.pid" && pid_alive "$dir/slurmd.pid" && up; then
    say "already up ($conf)"
    return
  fi
  write_conf
  pid_alive "$dir/slurmctld.pid" || slurmctld -f "$conf"
  pid_alive "$dir/slurmd.pid" || slurmd -f "$conf" -N "$node"
  for _ in $(seq 1 100); do
    if up; then
      say "up: partition debug, node $node with 2 gpus (export SLURM_CONF=$conf)"
      return
    fi
    # A node left DOWN by an earlier run of the daemons comes back here.
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    sleep 0.1
  done
  say "error: the cluster did not come up; see $dir/log/slurmctld.log and $dir/log/slurmd.log"
  exit 1
}

stop() {
  for d in slurmd slurmctld; do
    if pid_alive "$dir/$d.pid"; then
      kill "$(cat "$dir/$d.pid")"
    fi
  done
  say "stopped"
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status)
    if [[ -f "$conf" ]] && SLURM_CONF="$conf" up; then
      echo "up (SLURM_CONF=$conf)"
    else
      echo "down"
      exit 1
    fi
    ;;
  env) echo "export SLURM_CONF=\"$conf\"" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
