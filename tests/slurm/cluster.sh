#!/usr/bin/env bash
# One-node SLURM test cluster with two fake GPUs, for exercising the
# Snakemake SLURM profile (slurm/config.yaml) on a single machine.
#
# Usage (as root):
#   tests/slurm/cluster.sh install   # apt-get install slurm-wlm munge (if sbatch is missing)
#   tests/slurm/cluster.sh start     # write config, start munged/slurmctld/slurmd, wait for the node
#   tests/slurm/cluster.sh status    # show daemons, sinfo and squeue
#   tests/slurm/cluster.sh env       # print the export lines for the client commands
#   tests/slurm/cluster.sh stop      # cancel jobs, stop the daemons this script started
#
# Environment:
#   RSLIB_SLURM_DIR       state directory (config, logs, spool)   [/tmp/rslib-slurm]
#   RSLIB_SLURM_TIMEOUT   seconds to wait for the node to be idle [90]
#   RSLIB_SLURM_MEM_MB    node RealMemory in MB                   [real memory minus max(1024, 10%)]
#   RSLIB_SLURM_ETC_LINK  1: also point /etc/slurm/slurm.conf at the generated
#                         config so that sbatch/squeue work without SLURM_CONF;
#                         0: never touch /etc/slurm                [1]
#
# The cluster: one node named after `hostname -s` (address 127.0.0.1), its
# real CPU topology, RealMemory with a safety margin, Gres=gpu:2 backed by two
# character devices (fake GPUs, no real hardware), one default partition `gpu`,
# select/cons_tres (needed for --gpus), no accounting database (sacct has no
# data; use squeue), MinJobAge=300, proctrack/linuxproc and task/none (no
# cgroups). Jobs that request --gpus=N see CUDA_VISIBLE_DEVICES.
set -euo pipefail

STATE_DIR="${RSLIB_SLURM_DIR:-/tmp/rslib-slurm}"
ETC_DIR="$STATE_DIR/etc"
CONF="$ETC_DIR/slurm.conf"
GRES_CONF="$ETC_DIR/gres.conf"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
CTLD_STATE="$STATE_DIR/ctld"
SPOOL_DIR="$STATE_DIR/spool"
DEV_DIR="$STATE_DIR/dev"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_MARK="$RUN_DIR/munged.started-by-us"
TIMEOUT="${RSLIB_SLURM_TIMEOUT:-90}"
ETC_LINK_WANTED="${RSLIB_SLURM_ETC_LINK:-1}"
ETC_LINK="/etc/slurm/slurm.conf"
MUNGE_KEY="/etc/munge/munge.key"
MUNGE_SOCKET_DIR="/run/munge"
MUNGE_PID_FILE="/run/munge/munged.pid"
NODE="$(hostname -s)"

export SLURM_CONF="$CONF"

say() { echo "[cluster.sh] $*"; }
die() { echo "[cluster.sh] ERROR: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "'$1' must run as root (it starts system daemons)."
}

need_binaries() {
    local b missing=()
    for b in sbatch srun squeue sinfo scontrol slurmctld slurmd munged munge unmunge; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        die "missing programs: ${missing[*]} -- run '$0 install' first."
    fi
}

# pid_alive PIDFILE NAME: the pid in PIDFILE is a running process called NAME.
pid_alive() {
    local pidfile="$1" name="$2" pid comm
    [ -s "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    # zombies keep their comm; check the state too
    if grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
        return 1
    fi
    [ "$comm" = "$name" ]
}

pid_of() { tr -dc '0-9' <"$1"; }

# stop_pidfile PIDFILE NAME: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pidfile() {
    local pidfile="$1" name="$2" pid i
    if pid_alive "$pidfile" "$name"; then
        pid="$(pid_of "$pidfile")"
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 30); do
            pid_alive "$pidfile" "$name" || break
            sleep 0.5
        done
        if pid_alive "$pidfile" "$name"; then
            say "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$pidfile"
}

munge_works() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

show_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -f "$f" ]; then
            echo "----- last 40 lines of $f -----" >&2
            tail -n 40 "$f" >&2 || true
        else
            echo "----- $f: not present -----" >&2
        fi
    done
}

# ---------------------------------------------------------------- install
cmd_install() {
    need_root install
    if command -v sbatch >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v munged >/dev/null 2>&1; then
        say "slurm-wlm and munge are already installed ($(command -v sbatch)); nothing to do."
        return 0
    fi
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update
    say "apt-get install -y slurm-wlm munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
    say "installed: $(command -v sbatch)"
}

# ---------------------------------------------------------------- munge
ensure_munge() {
    if munge_works; then
        say "munged is already running (munge -n | unmunge works)"
        return 0
    fi
    # Key: created by the Debian package; recreate if missing.
    if [ ! -s "$MUNGE_KEY" ]; then
        say "creating munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY"
        elif command -v create-munge-key >/dev/null 2>&1; then
            create-munge-key -f
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 2>/dev/null
        fi
    fi
    # munged refuses to run as root unless its directories belong to root
    # ("Logfile is insecure: invalid ownership"), so it runs as user munge,
    # which owns the key, the log dir, the seed dir and the socket dir.
    local have_munge_user=0
    if id munge >/dev/null 2>&1; then
        have_munge_user=1
        mkdir -p "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge /etc/munge
        chown munge:munge "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge /etc/munge "$MUNGE_KEY"
        chmod 0755 "$MUNGE_SOCKET_DIR"
        chmod 0700 /var/lib/munge /var/log/munge /etc/munge
        chmod 0400 "$MUNGE_KEY"
    else
        mkdir -p "$MUNGE_SOCKET_DIR"
    fi
    # a stale socket/pid file from a killed munged blocks the start
    rm -f "$MUNGE_SOCKET_DIR/munge.socket.2" "$MUNGE_SOCKET_DIR/munge.socket.2.lock" "$MUNGE_PID_FILE"

    if [ "$have_munge_user" -eq 1 ]; then
        say "starting munged as user munge"
        if command -v runuser >/dev/null 2>&1; then
            runuser -u munge -- munged || true
        else
            su -s /bin/sh munge -c munged || true
        fi
    fi
    if ! munge_works; then
        sleep 1
    fi
    if ! munge_works; then
        say "munged as user munge did not come up; trying 'munged --force' as root"
        munged --force || true
        sleep 1
    fi
    local i
    for i in $(seq 1 20); do
        munge_works && break
        sleep 0.5
    done
    munge_works || { show_logs; die "munged does not work (munge -n | unmunge fails)."; }
    mkdir -p "$RUN_DIR"
    if [ -s "$MUNGE_PID_FILE" ]; then
        cp "$MUNGE_PID_FILE" "$MUNGE_MARK"
    else
        pgrep -n -x munged >"$MUNGE_MARK" || true
    fi
    say "munged is running (pid $(cat "$MUNGE_MARK" 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------- config
node_line() {
    # `slurmd -C` prints this host's real topology, e.g.
    # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local hw cpus sockets cores threads real mem margin
    hw="$(slurmd -C | head -n 1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    sockets="$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")"
    cores="$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")"
    threads="$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")"
    real="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [ -n "$cpus" ] || cpus="$(nproc)"
    [ -n "$real" ] || real="$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)"
    if [ -n "${RSLIB_SLURM_MEM_MB:-}" ]; then
        mem="$RSLIB_SLURM_MEM_MB"
    else
        # slurmd drains a node whose configured RealMemory exceeds what it
        # finds, so stay below it: minus 10 %, at least 1 GiB.
        margin=$(( real / 10 ))
        [ "$margin" -ge 1024 ] || margin=1024
        mem=$(( real - margin ))
        [ "$mem" -ge 512 ] || mem=512
    fi
    if [ -n "$sockets" ] && [ -n "$cores" ] && [ -n "$threads" ]; then
        echo "NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:2 State=UNKNOWN"
    else
        echo "NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN"
    fi
}

make_fake_gpus() {
    # gres.conf File= must name character devices (regular files are
    # rejected). These are copies of /dev/null (major 1, minor 3).
    mkdir -p "$DEV_DIR"
    local i f
    for i in 0 1; do
        f="$DEV_DIR/fakegpu$i"
        if [ -e "$f" ] && [ ! -c "$f" ]; then
            rm -f "$f"
        fi
        [ -c "$f" ] || mknod -m 0666 "$f" c 1 3
    done
}

render_slurm_conf() {
    local node
    node="$(node_line)"
    cat <<EOF
# Generated by tests/slurm/cluster.sh -- one-node test cluster, do not edit.
ClusterName=rslib-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SPOOL_DIR
MailProg=/bin/true
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in this sandbox
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no accounting database: sacct has nothing, use squeue for job status
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# --gpus needs cons_tres; track cores and memory like a real cluster
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
MpiDefault=none
ReturnToService=2
# keep finished jobs visible to squeue for 5 minutes (snakemake's squeue status check)
MinJobAge=300
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
$node
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

render_gres_conf() {
    cat <<EOF
# Generated by tests/slurm/cluster.sh -- two fake GPUs (character devices).
AutoDetect=off
NodeName=$NODE Name=gpu File=$DEV_DIR/fakegpu[0-1]
EOF
}

# config_current: the files on disk equal what this script would write now
# (same host, CPUs, memory, state dir).
config_current() {
    [ -f "$CONF" ] && [ -f "$GRES_CONF" ] || return 1
    [ "$(render_slurm_conf)" = "$(cat "$CONF")" ] || return 1
    [ "$(render_gres_conf)" = "$(cat "$GRES_CONF")" ] || return 1
}

write_config() {
    mkdir -p "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" "$CTLD_STATE" "$SPOOL_DIR"
    make_fake_gpus
    render_slurm_conf >"$CONF"
    render_gres_conf >"$GRES_CONF"
    say "node: $(grep '^NodeName=' "$CONF")"
    say "wrote $CONF and $GRES_CONF"
}

link_etc() {
    [ "$ETC_LINK_WANTED" = "1" ] || return 0
    mkdir -p "$(dirname "$ETC_LINK")"
    if [ -L "$ETC_LINK" ]; then
        ln -sfn "$CONF" "$ETC_LINK"
        say "linked $ETC_LINK -> $CONF (SLURM_CONF not needed for client commands)"
    elif [ -e "$ETC_LINK" ]; then
        say "$ETC_LINK exists and is not ours; leaving it. Use: eval \"\$($0 env)\""
    else
        ln -s "$CONF" "$ETC_LINK"
        say "linked $ETC_LINK -> $CONF (SLURM_CONF not needed for client commands)"
    fi
}

unlink_etc() {
    if [ -L "$ETC_LINK" ] && [ "$(readlink "$ETC_LINK")" = "$CONF" ]; then
        rm -f "$ETC_LINK"
        say "removed link $ETC_LINK"
    fi
}

node_state() {
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true
}

wait_idle() {
    local deadline state resumed=0
    deadline=$(( $(date +%s) + TIMEOUT ))
    while :; do
        state="$(node_state)"
        case "$state" in
            idle|idle\*|mixed|allocated|completing)
                [ "${state%\*}" = "$state" ] && { say "node $NODE is $state"; return 0; }
                ;;
            down*|drain*|fail*|inval*)
                if [ "$resumed" -eq 0 ]; then
                    say "node $NODE is $state; trying scontrol update state=resume"
                    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                    resumed=1
                fi
                ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "[cluster.sh] ERROR: node $NODE not idle after ${TIMEOUT}s (state: '${state:-unknown}')" >&2
            scontrol show node "$NODE" >&2 2>/dev/null || true
            show_logs
            exit 1
        fi
        sleep 1
    done
}

port_busy() {
    # true if something listens on TCP port $1
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p {found = 1} END {exit !found}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# ---------------------------------------------------------------- start
cmd_start() {
    need_root start
    need_binaries
    say "state directory: $STATE_DIR"
    if pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd \
        && munge_works && scontrol ping >/dev/null 2>&1; then
        if config_current; then
            say "slurmctld and slurmd are already running with this config; nothing to start"
            link_etc
            wait_idle
            return 0
        fi
        say "daemons are running with a different config (host, CPUs, memory or settings changed); restarting"
    fi
    # stale, partial or outdated state: stop what is left of ours, start clean
    if [ -d "$STATE_DIR" ]; then
        say "cleaning up previous state in $STATE_DIR"
        stop_pidfile "$SLURMD_PID" slurmd
        stop_pidfile "$CTLD_PID" slurmctld
        rm -rf "$CTLD_STATE" "$SPOOL_DIR" "$LOG_DIR"
    fi
    local port
    for port in 6817 6818; do
        if port_busy "$port"; then
            die "TCP port $port is in use by another process (another slurmctld/slurmd?). Stop it first."
        fi
    done
    ensure_munge
    write_config
    link_etc
    say "starting slurmctld -f $CONF (state cleared)"
    if ! slurmctld -c -f "$CONF"; then
        show_logs
        die "slurmctld failed to start"
    fi
    local i
    for i in $(seq 1 40); do
        scontrol ping >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! scontrol ping >/dev/null 2>&1; then
        show_logs
        die "slurmctld does not answer 'scontrol ping'"
    fi
    say "starting slurmd -f $CONF"
    if ! slurmd -f "$CONF"; then
        show_logs
        die "slurmd failed to start"
    fi
    wait_idle
    say "cluster is up. Client commands need: export SLURM_CONF=$CONF$( [ -L "$ETC_LINK" ] && [ "$(readlink "$ETC_LINK")" = "$CONF" ] && echo " (or nothing: $ETC_LINK points there)")"
    sinfo
}

# ---------------------------------------------------------------- stop
cmd_stop() {
    need_root stop
    if pid_alive "$CTLD_PID" slurmctld; then
        local jobs
        jobs="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ' || true)"
        if [ -n "${jobs// /}" ]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            sleep 2
        fi
    fi
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    if [ -f "$MUNGE_MARK" ]; then
        local mpid
        mpid="$(tr -dc '0-9' <"$MUNGE_MARK")"
        if [ -n "$mpid" ] && [ "$(cat "/proc/$mpid/comm" 2>/dev/null || true)" = "munged" ]; then
            say "stopping munged (pid $mpid, started by this script)"
            kill -TERM "$mpid" 2>/dev/null || true
        fi
        rm -f "$MUNGE_MARK"
    fi
    unlink_etc
    say "stopped (state kept in $STATE_DIR; the next start clears it)"
}

# ---------------------------------------------------------------- status/env
cmd_status() {
    local ok=0
    pid_alive "$CTLD_PID" slurmctld && say "slurmctld running (pid $(pid_of "$CTLD_PID"))" || { say "slurmctld not running"; ok=1; }
    pid_alive "$SLURMD_PID" slurmd && say "slurmd running (pid $(pid_of "$SLURMD_PID"))" || { say "slurmd not running"; ok=1; }
    munge_works && say "munge works" || { say "munge does not work"; ok=1; }
    if [ "$ok" -eq 0 ]; then
        sinfo || true
        squeue || true
    fi
    return "$ok"
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 {install|start|stop|restart|status|env}" >&2
        exit 2
        ;;
esac
