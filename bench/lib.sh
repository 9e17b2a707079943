# shellcheck shell=bash
# bench/lib.sh: what the benchmark scripts (compare.sh, persistence.sh, overload.sh) share —
# messages, the release binaries, Debian's Mosquitto, and starting and stopping one broker
# process. Sourced, not run: set SCRIPT (the name shown in messages) and REPO first.

log() { printf '[%s] %s: %s\n' "$(date +%H:%M:%S)" "$SCRIPT" "$*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v ss >/dev/null || die "ss (iproute2) is required"

# Builds the release binaries unless BUILD=0, then sets SERVER_BIN and BENCH_BIN.
release_binaries() {
    local target_dir=${CARGO_TARGET_DIR:-$REPO/target}
    if [ "${BUILD:-1}" = 1 ]; then
        log "cargo build --release --bins"
        (cd "$REPO" && cargo build --release --bins) ||
            die "the release build failed (--no-build benchmarks the binaries already in target/release)"
    fi
    SERVER_BIN=$target_dir/release/mqtt-server
    BENCH_BIN=$target_dir/release/mqtt-bench
    [ -x "$SERVER_BIN" ] && [ -x "$BENCH_BIN" ] || die "no release binaries in $target_dir/release"
}

# Sets MOSQUITTO to Debian's mosquitto, installing the package first if it is missing.
find_mosquitto() {
    MOSQUITTO=$(command -v mosquitto || true)
    [ -n "$MOSQUITTO" ] || { [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto; } || true
    if [ -z "$MOSQUITTO" ]; then
        log "installing Debian's mosquitto (apt-get)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null ||
            { as_root apt-get update -qq >/dev/null &&
                as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
        MOSQUITTO=/usr/sbin/mosquitto
    fi
    [ -x "$MOSQUITTO" ] || die "mosquitto not found after installation"
}

# Whether something listens on 127.0.0.1 TCP port $1.
listening() { ss -Hltn "sport = :$1" | grep -q .; }

# start_broker_process NAME PORT LOGFILE COMMAND...: starts a broker in the background (output
# appended to LOGFILE) and waits up to 10 s until it listens on PORT; sets BPID.
start_broker_process() {
    local name=$1 port=$2 logfile=$3
    shift 3
    listening "$port" && die "port $port is already in use (try --base-port)"
    "$@" >>"$logfile" 2>&1 &
    BPID=$!
    for _ in $(seq 100); do
        listening "$port" && return 0
        kill -0 "$BPID" 2>/dev/null || break
        sleep 0.1
    done
    tail -5 "$logfile" >&2
    die "$name did not start listening on 127.0.0.1:$port"
}

# stop_broker_process [SECONDS]: SIGTERM to BPID, SIGKILL if it is still running after SECONDS
# (default 5; a broker flushing a store may need longer).
stop_broker_process() {
    local tenths=$((${1:-5} * 10))
    [ -n "${BPID:-}" ] || return 0
    kill "$BPID" 2>/dev/null || true
    for _ in $(seq "$tenths"); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BPID" 2>/dev/null || true
    wait "$BPID" 2>/dev/null || true
    BPID=""
}

# The broker's /proc/PID/status field $1 in KiB (VmRSS, VmHWM), 0 when gone.
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$BPID/status" 2>/dev/null || echo 0; }

# The broker's open file descriptors.
fd_count() { { ls -U "/proc/$BPID/fd" 2>/dev/null || true; } | wc -l; }

# write_mosquitto_config FILE PORT MAX_CONNECTIONS [LINE...]: Mosquitto with the settings every
# benchmark gives both brokers (1 MiB packets, 20 in flight, 1000 queued, QoS 0 not queued for
# offline clients, TCP_NODELAY, warnings only, no persistence unless a LINE says otherwise).
write_mosquitto_config() {
    local f=$1 port=$2 maxc=$3
    shift 3
    {
        echo "user root"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        echo "set_tcp_nodelay true"
        echo "max_packet_size 1048576"
        echo "max_inflight_messages 20"
        echo "max_queued_messages 1000"
        echo "queue_qos0_messages false"
        if [ $# -gt 0 ]; then printf '%s\n' "$@"; else echo "persistence false"; fi
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "max_connections $maxc"
    } >"$f"
    # `user root` keeps the privileges it is started with (it would otherwise switch to the
    # `mosquitto` user and lose the raised open-files limit); dropped when we are not root.
    [ "$(id -u)" = 0 ] || sed -i '/^user root$/d' "$f"
}

# write_server_config FILE PORT MAX_CONNECTIONS: mqtt-server with the same settings as
# write_mosquitto_config; callers append sections (`[persistence]`) to FILE.
write_server_config() {
    cat >"$1" <<EOF2
log_level = "warn"

[[listener]]
bind = "127.0.0.1:$2"

[limits]
max_packet_size = 1048576
max_connections = $3
connect_timeout_secs = 10
max_inflight_messages = 20
max_queued_messages = 1000

[mqtt]
queue_qos0_messages = false
EOF2
}
