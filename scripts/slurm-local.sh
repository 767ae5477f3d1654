#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for `launcher=slurm` sweeps and the engine tests:
# munged, MariaDB + slurmdbd (accounting: submitit asks `sacct` for job states), slurmctld and slurmd
# from Debian's packages (apt-get install -y slurm-wlm slurmdbd mariadb-server munge).
#
#   scripts/slurm-local.sh up        # start what is not running (idempotent); prints the time it took
#                                    # and, on stdout, the `export SLURM_CONF=...` line of `env`
#   eval "$(scripts/slurm-local.sh env)"   # SLURM_CONF for sbatch/squeue/sacct/scancel and submitit
#   scripts/slurm-local.sh status    # each daemon, the node and the queue; exit 0 only when all run
#   scripts/slurm-local.sh down      # cancel the cluster's jobs, stop its daemons (by their pid files)
#
# Everything (configs, munge key and socket, spool, logs, pid files, the MariaDB datadir) lives in ONE
# folder: $SLURM_LOCAL_DIR, default .slurm-local/ in the repository. Daemons listen on loopback only
# (see communication_parameters); the node is `localhost` with this machine's CPU count and memory; ports are $SLURM_LOCAL_PORT .. +3
# (default 16817: slurmctld, slurmd, slurmdbd, MariaDB), fixed when the folder is first set up.
# No systemd and no /etc, /run or /var file is touched: another cluster on the same machine (the
# system's, or one in another folder on other ports) is left alone. `down` stops only the processes
# whose pid files are in the folder; `rm -rf` the folder afterwards to start from scratch.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"   # the daemons, for users whose PATH lacks them

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$(realpath -m "${SLURM_LOCAL_DIR:-$REPO/.slurm-local}")"
CONF="$DIR/etc/slurm.conf"
NODE=localhost
CLUSTER=local
USER_NAME="$(id -un)"
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order

die() { echo "slurm-local: $*" >&2; exit 1; }
note() { echo "slurm-local: $*" >&2; }

pidfile() { echo "$DIR/run/$1.pid"; }

# The pid in the daemon's pid file, if that process is alive and is that daemon of this folder (not a
# reused pid): its command line names the daemon, and it or its environment (slurmdbd: SLURM_CONF) this folder.
running_pid() {
  local file pid
  file="$(pidfile "$1")"
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc 0-9 <"$file")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1" || return 1
  cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' | grep -qF "$DIR/" || return 1
  echo "$pid"
}

# wait_for SECONDS DAEMON COMMAND...: poll COMMAND every 0.2 s; fail naming the daemon's log when it
# does not succeed in time or the daemon died.
wait_for() {
  local seconds="$1" daemon="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -s "$(pidfile "$daemon")" ]] && ! running_pid "$daemon" >/dev/null; then
      die "$daemon exited; see $DIR/log/$daemon.log"
    fi
    ((SECONDS < deadline)) || die "$daemon did not come up within ${seconds}s; see $DIR/log/$daemon.log"
    sleep 0.2
  done
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# setting KEY FILE: the value of KEY= in a config file.
setting() { sed -n "s/^$1=//p" "$2" | head -1; }

# -- set-up: configs written once, on the first `up` ----------------------------------------------
# Loopback only. SLURM daemons (and srun, slurmstepd) listen on all interfaces unless told to bind to
# the address of `hostname` (NoInAddrAny); that is loopback where /etc/hosts maps the hostname to
# 127.x (Debian's default 127.0.1.1 line, or this container's). Elsewhere binding there would make
# the daemons unreachable on 127.0.0.1, so they keep all interfaces and a warning says how to fix it.
communication_parameters() {
  local host address
  host="$(hostname)"
  address="$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')"
  if [[ "$address" == 127.* ]]; then
    echo "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
  else
    note "WARNING: hostname $host resolves to ${address:-nothing}, not to 127.x: slurmctld, slurmd and slurmdbd" \
      "will listen on all interfaces. For loopback only: add '127.0.1.1 $host' to /etc/hosts, rm -rf $DIR, up again."
    echo "# hostname $host does not resolve to loopback: the daemons listen on all interfaces"
  fi
}

write_configs() {
  local base="${SLURM_LOCAL_PORT:-16817}" cpus mem_mb port
  for port in "$base" $((base + 1)) $((base + 2)) $((base + 3)); do
    port_free "$port" || die "port $port (127.0.0.1) is in use; choose others with SLURM_LOCAL_PORT=<first of 4 free ports>"
  done
  # What slurmd detects (not `nproc`, which follows OMP_NUM_THREADS); memory less 5 % for the OS, so
  # the node never registers with less than configured.
  local hardware
  hardware="$(slurmd -C | head -1)"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")"
  mem_mb="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")"
  [[ -n "$cpus" && -n "$mem_mb" ]] || die "cannot read CPUs and RealMemory from \`slurmd -C\`: $hardware"
  mem_mb=$((mem_mb * 95 / 100))
  mkdir -p "$DIR"/{etc,run,log,spool/ctld,spool/d,munge,mysql}
  chmod 700 "$DIR/munge" "$DIR/etc"
  for path in "$DIR/run/munge.socket" "$DIR/run/mysqld.sock"; do
    ((${#path} < 100)) || die "$path is too long for a unix socket; choose a shorter SLURM_LOCAL_DIR"
  done
  [[ -s "$DIR/munge/munge.key" ]] || (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
  local db_pass
  db_pass="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
  local comm
  comm="$(communication_parameters)"
  local auth="AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket,cred_expire=10"
  # cred_expire=10: a requeued job may start 10 s after it ended (the default, 120 s, stalls preemption tests).
  cat >"$DIR/etc/plugstack.conf" <<<"# no SPANK plugins: the system's /etc/slurm/plugstack.conf is not read"
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm-local.sh: the accounting daemon and its MariaDB (127.0.0.1 only).
$auth
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((base + 2))
$comm
SlurmUser=$USER_NAME
PidFile=$(pidfile slurmdbd)
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((base + 3))
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster on 127.0.0.1. Settings a container without
# systemd or cgroup delegation needs: proctrack/linuxproc, task/none (no cgroups).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
$comm
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
$auth
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/etc/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Scheduling passes every few seconds (defaults: 30 s backfill, 60 s main loop): a requeued job waits
# cred_expire (10 s) and then starts at the next pass.
SchedulerParameters=bf_interval=2,sched_interval=5
DefMemPerCPU=1024
# A job asking for more than the node has is refused by sbatch, not left pending (PartitionConfig) forever.
EnforcePartLimits=ALL
ReturnToService=2
KillWait=10
InactiveLimit=0
MinJobAge=300
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((base + 2))
AccountingStoragePass=$DIR/run/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  note "configured $DIR: node $NODE with $cpus CPUs and $mem_mb MB, ports $base-$((base + 3))"
}

# -- the daemons -----------------------------------------------------------------------------------
start_munged() {
  munged --socket="$DIR/run/munge.socket" --key-file="$DIR/munge/munge.key" --pid-file="$(pidfile munged)" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force
  wait_for 20 munged test -S "$DIR/run/munge.socket"
}

start_mariadbd() {
  local -a server=(--no-defaults --datadir="$DIR/mysql" --socket="$DIR/run/mysqld.sock" --user="$USER_NAME")
  if [[ ! -d "$DIR/mysql/mysql" ]]; then
    mariadb-install-db "${server[@]}" --auth-root-authentication-method=socket --skip-test-db \
      >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  # The sizes slurmdbd recommends (the buffer pool is touched lazily: a few MB for a handful of jobs).
  setsid mariadbd "${server[@]}" --bind-address=127.0.0.1 --port="$(setting StoragePort "$DIR/etc/slurmdbd.conf")" \
    --pid-file="$(pidfile mariadbd)" --log-error="$DIR/log/mariadbd.log" --skip-log-bin \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --performance-schema=OFF --skip-name-resolve </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadbd mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root -e "SELECT 1"
  if [[ ! -e "$DIR/mysql/.slurm-user" ]]; then
    local pass
    pass="$(setting StoragePass "$DIR/etc/slurmdbd.conf")"
    mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    touch "$DIR/mysql/.slurm-user"
  fi
}

start_slurmdbd() {
  SLURM_CONF="$CONF" slurmdbd   # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 60 slurmdbd sacctmgr -n list cluster
}

start_slurmctld() {
  slurmctld -f "$CONF"
  wait_for 60 slurmctld ctld_up
}

ctld_up() { scontrol ping | grep -q UP; }

start_slurmd() {
  slurmd -f "$CONF" -N "$NODE"
  wait_for 60 slurmd node_usable
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

# The node takes jobs: idle, mixed or allocated; a node left down or drained by an earlier run is resumed.
node_usable() {
  local state
  state="$(node_state)"
  case "$state" in
    idle* | mixed* | allocated* | completing*) return 0 ;;
    down* | drain* | fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1
}

up() {
  local started=$SECONDS
  local tool
  for tool in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y slurm-wlm slurmdbd mariadb-server munge"
  done
  command -v ss >/dev/null || die "ss not found: apt-get install -y iproute2"
  [[ -s "$CONF" ]] || write_configs
  export SLURM_CONF="$CONF"
  local daemon
  for daemon in "${DAEMONS[@]}"; do
    if pid="$(running_pid "$daemon")"; then
      note "$daemon already running (pid $pid)"
    else
      "start_$daemon"
      note "$daemon started (pid $(running_pid "$daemon" || echo '?'))"
    fi
  done
  wait_for 60 slurmd node_usable
  note "up in $((SECONDS - started)) s: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
  echo "export SLURM_CONF=$CONF"
}

# -- stopping --------------------------------------------------------------------------------------
# stop_daemons NAME...: SIGTERM to each that runs (by its pid file), then wait for all; SIGKILL after 30 s.
stop_daemons() {
  local name pid deadline
  local -A pids=()
  for name in "$@"; do
    if pid="$(running_pid "$name")"; then
      kill -TERM "$pid" && pids[$name]="$pid"
    else
      rm -f "$(pidfile "$name")"
    fi
  done
  deadline=$((SECONDS + 30))
  for name in "${!pids[@]}"; do
    pid="${pids[$name]}"
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      note "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
    note "$name stopped (pid $pid)"
  done
}

# The cluster's jobs end through SLURM itself, so their processes (slurmstepd, tasks) do not outlive it.
cancel_jobs() {
  running_pid slurmctld >/dev/null || return 0
  local jobs
  jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
  [[ -n "${jobs// /}" ]] || return 0
  note "cancelling jobs $jobs"
  # shellcheck disable=SC2086
  scancel $jobs 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while [[ -n "$(squeue -h -o %A 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.5; done
}

down() {
  [[ -s "$CONF" ]] || { note "nothing set up in $DIR"; return 0; }
  export SLURM_CONF="$CONF"
  cancel_jobs
  stop_daemons slurmd slurmctld   # the reverse of the start order, a stage at a time
  stop_daemons slurmdbd
  stop_daemons mariadbd munged
}

status() {
  [[ -s "$CONF" ]] || { echo "not set up: $DIR"; return 1; }
  export SLURM_CONF="$CONF"
  local daemon pid missing=0
  for daemon in "${DAEMONS[@]}"; do
    if pid="$(running_pid "$daemon")"; then
      printf '%-10s running (pid %s)\n' "$daemon" "$pid"
    else
      printf '%-10s stopped\n' "$daemon"
      missing=1
    fi
  done
  if running_pid slurmctld >/dev/null; then
    sinfo -o '%P %D %c %m %T %N' || true
    squeue || true
  fi
  echo "SLURM_CONF=$CONF"
  return "$missing"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 up|down|status|env   (state in \$SLURM_LOCAL_DIR, default $REPO/.slurm-local)" ;;
esac
