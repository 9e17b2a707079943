#!/usr/bin/env bash
# bench/compare.sh: mqtt-server against Mosquitto (and rumqttd) with mqtt-bench.
#
# Starts each broker on its own 127.0.0.1 port with equivalent settings, runs every
# scenario against them in alternation (A B C A B C ...), takes medians over the rounds and
# writes the tables into BENCHMARKS.md (between the compare.sh markers; the rest of the file
# is kept). Run `bench/compare.sh --help` for the options; bench/README.md explains the method.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=compare.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
INVOCATION="bench/compare.sh${*:+ $*}"

ROUNDS=3
DURATION=10
DRAIN=5
SCENARIOS="fan-in,fan-out,pairs,latency,connections,churn"
QOS_LIST="0,1"
PAYLOADS="64,4096"
CLIENTS=10
INFLIGHT=20
LAT_PAYLOAD=64
LAT_FRACTION=0.5
CONNS=19800
LOADGENS=2
CONNECT_TIME=60
RUMQTTD_MODE=auto
OUT="$REPO/BENCHMARKS.md"
BUILD=1
KEEP=""
BASE_PORT=27883

usage() {
    cat <<EOF
Usage: bench/compare.sh [OPTIONS]

Benchmarks mqtt-server against Mosquitto (installed with apt if missing) and, when available,
rumqttd, with target/release/mqtt-bench, and writes the results into BENCHMARKS.md.

Options:
  --rounds N          rounds per scenario; brokers alternate within a round (default $ROUNDS)
  --duration S        seconds of load per run (default $DURATION)
  --drain S           mqtt-bench --drain: seconds to wait for late deliveries (default $DRAIN)
  --scenarios LIST    comma-separated subset of
                      fan-in,fan-out,pairs,latency,connections,churn (default: all)
  --qos LIST          QoS levels of the throughput and latency runs (default $QOS_LIST)
  --payloads LIST     payload sizes in bytes of the throughput runs (default $PAYLOADS)
  --clients N         publishers (fan-in), subscribers (fan-out), pairs (default $CLIENTS)
  --connections N     idle connections held in the connections scenario, spread over
                      --loadgens processes (default $CONNS; at most the fd hard limit - 200)
  --loadgens N        mqtt-bench processes for the connections scenario (default $LOADGENS)
  --connect-time S    seconds allowed to open them (mqtt-bench --duration; default $CONNECT_TIME)
  --latency-fraction F  latency runs publish at F x Mosquitto's closed-loop rate (default $LAT_FRACTION)
  --rumqttd           include rumqttd (cargo install rumqttd if it is not installed)
  --no-rumqttd        leave rumqttd out (default: include it if it is installed)
  --out FILE          report to write (default BENCHMARKS.md in the repository)
  --no-build          use the existing release binaries instead of cargo build --release --bins
  --keep DIR          keep configs, logs and raw JSON results in DIR
  --base-port P       ports P (mqtt-server), P+1 (Mosquitto), P+2 (rumqttd) (default $BASE_PORT)
  -h, --help          this help

Example, a quick try: bench/compare.sh --rounds 1 --duration 2 --out /tmp/b.md
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --drain) DRAIN=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --qos) QOS_LIST=$2; shift 2 ;;
        --payloads) PAYLOADS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --loadgens) LOADGENS=$2; shift 2 ;;
        --connect-time) CONNECT_TIME=$2; shift 2 ;;
        --latency-fraction) LAT_FRACTION=$2; shift 2 ;;
        --rumqttd) RUMQTTD_MODE=yes; shift ;;
        --no-rumqttd) RUMQTTD_MODE=no; shift ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=$2; shift 2 ;;
        --base-port) BASE_PORT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for v in ROUNDS DURATION DRAIN CLIENTS CONNS LOADGENS CONNECT_TIME BASE_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "${v,,}: expected a positive integer, got '${!v}'"
done
for s in ${SCENARIOS//,/ }; do
    case $s in fan-in | fan-out | pairs | latency | connections | churn) ;; *) die "unknown scenario: $s" ;; esac
done
has_scenario() { [[ ,$SCENARIOS, == *,$1,* ]]; }
command -v python3 >/dev/null || die "python3 is required (json module only)"
case $OUT in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# --- binaries ---------------------------------------------------------------------------
release_binaries
find_mosquitto

RUMQTTD=""
RUMQTTD_NOTE=""
if [ "$RUMQTTD_MODE" != no ]; then
    RUMQTTD=$(command -v rumqttd || true)
    [ -n "$RUMQTTD" ] || { [ -x "$HOME/.cargo/bin/rumqttd" ] && RUMQTTD=$HOME/.cargo/bin/rumqttd; } || true
    if [ -z "$RUMQTTD" ] && [ "$RUMQTTD_MODE" = yes ]; then
        log "cargo install rumqttd (takes a few minutes)"
        cargo install rumqttd || die "cargo install rumqttd failed"
        RUMQTTD=$HOME/.cargo/bin/rumqttd
    fi
    [ -n "$RUMQTTD" ] || RUMQTTD_NOTE="rumqttd is not installed (cargo install rumqttd, then run with --rumqttd)"
else
    RUMQTTD_NOTE="rumqttd left out (--no-rumqttd)"
fi
BROKERS=(mqtt-server mosquitto)
[ -n "$RUMQTTD" ] && BROKERS+=(rumqttd)

# --- limits and work directory ------------------------------------------------------------
HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"
if [ $((CONNS + 200)) -gt "$HARD_NOFILE" ]; then
    CONNS=$((HARD_NOFILE - 200))
    log "open-files limit $HARD_NOFILE: holding $CONNS connections"
fi
PER_LOADGEN=$((CONNS / LOADGENS))
HOLD=$((DURATION > 5 ? DURATION : 5)) # seconds each load generator holds its connections
# Handshakes in progress per load generator: all of them together stay below the smallest
# listen backlog (Mosquitto's 100), beyond which the kernel drops SYNs (1 s retransmissions).
CONCURRENCY=$((90 / LOADGENS > 0 ? 90 / LOADGENS : 1))
CONNS=$((PER_LOADGEN * LOADGENS))
CONN_MAX=$((CONNS + 100))

if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    WORK=$(cd "$KEEP" && pwd)
else
    WORK=$(mktemp -d /tmp/mqtt-compare.XXXXXX)
fi
mkdir -p "$WORK/conf" "$WORK/logs" "$WORK/raw"
MANIFEST=$WORK/manifest.tsv
COMMANDS=$WORK/commands.tsv
: >"$MANIFEST"
: >"$COMMANDS"

BPID=""
LOADGEN_PIDS=()
cleanup() {
    local p
    for p in "${LOADGEN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true
    [ -n "$BPID" ] && wait "$BPID" 2>/dev/null || true
    [ -z "$KEEP" ] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_of() {
    case $1 in mqtt-server) echo "$BASE_PORT" ;; mosquitto) echo $((BASE_PORT + 1)) ;; rumqttd) echo $((BASE_PORT + 2)) ;; esac
}

# Writes the configuration of broker $1 with max connections $2; prints its path.
write_config() {
    local b=$1 maxc=$2 port f
    port=$(port_of "$b")
    case $b in
        mqtt-server)
            f=$WORK/conf/mqtt-server-$maxc.toml
            write_server_config "$f" "$port" "$maxc"
            ;;
        mosquitto)
            f=$WORK/conf/mosquitto-$maxc.conf
            write_mosquitto_config "$f" "$port" "$maxc"
            ;;
        rumqttd)
            f=$WORK/conf/rumqttd-$maxc.toml
            cat >"$f" <<EOF
id = 0

[router]
id = 0
max_connections = $maxc
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 10000
    max_payload_size = 1048576
    max_inflight_count = 20
    dynamic_filters = true
EOF
            ;;
    esac
    echo "$f"
}

# Sets BARGV to the command line that starts broker $1 with configuration file $2.
broker_argv() {
    case $1 in
        mqtt-server) BARGV=("$SERVER_BIN" --config "$2") ;;
        mosquitto) BARGV=("$MOSQUITTO" -c "$2") ;;
        rumqttd) BARGV=("$RUMQTTD" -q -c "$2") ;;
    esac
}

# Starts broker $1 allowing $2 connections; sets BPID.
start_broker() {
    local cfg
    cfg=$(write_config "$1" "$2")
    broker_argv "$1" "$cfg"
    start_broker_process "$1" "$(port_of "$1")" "$WORK/logs/$1.log" "${BARGV[@]}"
}

stop_broker() { stop_broker_process 5; }

# record KIND GROUP BROKER ROUND FILE PEAK_KB RC EXTRA
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$MANIFEST"; }

# Runs mqtt-bench against broker $1 (fresh process); $2 kind, $3 group, $4 round, rest: args.
# The throughput and latency runs restart the broker so that every RSS figure starts fresh.
RC=0
bench_run() {
    local b=$1 kind=$2 group=$3 round=$4 out peak maxc=10000
    shift 4
    out=$WORK/raw/${group//|/_}_${b}_r$round.json
    start_broker "$b" "$maxc"
    RC=0
    # In the background and waited for, so that an interrupt stops everything at once.
    "$BENCH_BIN" "$@" --port "$(port_of "$b")" --json -q --broker-pid "$BPID" >"$out" 2>"$out.err" &
    LOADGEN_PIDS=($!)
    wait "${LOADGEN_PIDS[0]}" || RC=$?
    LOADGEN_PIDS=()
    peak=$(status_kb VmHWM)
    stop_broker
    record "$kind" "$group" "$b" "$round" "$out" "${peak:-0}" "$RC" "-"
}

json_field() { python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }

note_cmd() { printf '%s\t%s\n' "$1" "$2" >>"$COMMANDS"; }

# --- scenarios ------------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "brokers: ${BROKERS[*]}; rounds $ROUNDS, ${DURATION}s per run; work dir $WORK"
for b in "${BROKERS[@]}"; do
    broker_argv "$b" "$(write_config "$b" 10000)"
    note_cmd "broker:$b" "ulimit -n $HARD_NOFILE; ${BARGV[*]}"
done

for s in fan-in fan-out pairs; do
    has_scenario "$s" || continue
    case $s in fan-in) nflag=--publishers ;; fan-out) nflag=--subscribers ;; pairs) nflag=--pairs ;; esac
    for q in ${QOS_LIST//,/ }; do
        for p in ${PAYLOADS//,/ }; do
            args=("$s" --qos "$q" --payload "$p" --duration "$DURATION" --drain "$DRAIN" --inflight "$INFLIGHT" "$nflag" "$CLIENTS")
            note_cmd "$s|$q|$p" "mqtt-bench ${args[*]} --port PORT --json -q --broker-pid PID"
            for r in $(seq "$ROUNDS"); do
                for b in "${BROKERS[@]}"; do
                    log "$s QoS $q ${p} B, round $r/$ROUNDS: $b"
                    bench_run "$b" tp "$s|$q|$p" "$r" "${args[@]}"
                    [ "$RC" = 0 ] || log "  mqtt-bench exit status $RC (see report)"
                done
            done
        done
    done
done

if has_scenario latency; then
    for q in ${QOS_LIST//,/ }; do
        group="latency|$q|$LAT_PAYLOAD"
        # The probe: the same one publisher -> one subscriber path, closed loop (pairs --pairs 1),
        # gives Mosquitto's maximum rate, roughly; the latency runs use a fraction of it.
        probe=(pairs --pairs 1 --qos "$q" --payload "$LAT_PAYLOAD" --duration "$DURATION" --drain "$DRAIN" --inflight "$INFLIGHT")
        log "latency QoS $q: Mosquitto's closed-loop rate (probe)"
        bench_run mosquitto probe "$group" 0 "${probe[@]}"
        max_rate=$(json_field "$WORK/raw/${group//|/_}_mosquitto_r0.json" messages.delivered_per_s) ||
            die "the Mosquitto probe run failed: $(cat "$WORK/raw/${group//|/_}_mosquitto_r0.json.err")"
        rate=$(python3 -c 'import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))' "$max_rate" "$LAT_FRACTION")
        log "  Mosquitto closed loop: $max_rate msg/s; latency runs at $rate msg/s"
        args=(latency --qos "$q" --payload "$LAT_PAYLOAD" --duration "$DURATION" --drain "$DRAIN" --inflight "$INFLIGHT" --rate "$rate")
        note_cmd "probe|$q|$LAT_PAYLOAD" "mqtt-bench ${probe[*]} --port MOSQUITTO_PORT --json -q --broker-pid PID"
        note_cmd "$group" "mqtt-bench ${args[*]} --port PORT --json -q --broker-pid PID"
        for r in $(seq "$ROUNDS"); do
            for b in "${BROKERS[@]}"; do
                log "latency QoS $q at $rate msg/s, round $r/$ROUNDS: $b"
                bench_run "$b" lat "$group" "$r" "${args[@]}"
                [ "$RC" = 0 ] || log "  mqtt-bench exit status $RC (see report)"
            done
        done
    done
fi

if has_scenario churn; then
    args=(churn --duration "$DURATION")
    note_cmd "churn|0|0" "mqtt-bench ${args[*]} --port PORT --json -q --broker-pid PID"
    for r in $(seq "$ROUNDS"); do
        for b in "${BROKERS[@]}"; do
            log "churn, round $r/$ROUNDS: $b"
            bench_run "$b" churn "churn|0|0" "$r" "${args[@]}"
            [ "$RC" = 0 ] || log "  mqtt-bench exit status $RC (see report)"
        done
    done
fi

# Idle connections: LOADGENS mqtt-bench processes in parallel, each from its own loopback
# source addresses (fresh ones every run, so no TIME_WAIT is ever in the way); the broker's
# RSS and open files are sampled once all connections are open.
RUN_NO=0
run_connections() {
    local b=$1 r=$2 idle_rss idle_fds g addrs out target best_fds=0 best_rss=0 f m alive rc=0 peak
    local outs=() rcs=()
    RUN_NO=$((RUN_NO + 1))
    start_broker "$b" "$CONN_MAX"
    sleep 0.5
    idle_rss=$(status_kb VmRSS)
    idle_fds=$(fd_count)
    LOADGEN_PIDS=()
    for ((g = 0; g < LOADGENS; g++)); do
        addrs="127.$((100 + RUN_NO % 150)).$g.1,127.$((100 + RUN_NO % 150)).$g.2"
        out=$WORK/raw/connections_${b}_r${r}_g$g.json
        outs+=("$out")
        "$BENCH_BIN" connections --port "$(port_of "$b")" --connections "$PER_LOADGEN" --hold "$HOLD" --duration "$CONNECT_TIME" --concurrency "$CONCURRENCY" \
            --bind-addrs "$addrs" --json -q --broker-pid "$BPID" >"$out" 2>"$out.err" &
        LOADGEN_PIDS+=($!)
    done
    target=$((idle_fds + CONNS))
    while :; do
        f=$(fd_count)
        m=$(status_kb VmRSS)
        if [ "$f" -ge "$best_fds" ]; then best_fds=$f; best_rss=$m; fi
        if [ "$f" -ge "$target" ]; then
            # All open: let the broker settle a moment, then sample again if they still are.
            sleep 1
            f=$(fd_count)
            m=$(status_kb VmRSS)
            if [ "$f" -ge "$target" ]; then best_fds=$f; best_rss=$m; fi
            break
        fi
        alive=0
        for g in "${LOADGEN_PIDS[@]}"; do kill -0 "$g" 2>/dev/null && alive=1; done
        [ "$alive" = 1 ] || break
        sleep 0.2
    done
    for g in "${LOADGEN_PIDS[@]}"; do
        rc=0
        wait "$g" || rc=$?
        rcs+=("$rc")
    done
    LOADGEN_PIDS=()
    peak=$(status_kb VmHWM)
    stop_broker
    out=$WORK/raw/connections_${b}_r$r.json
    printf '{"idle_rss_kb": %s, "idle_fds": %s, "held_rss_kb": %s, "held_fds": %s, "target_connections": %s, "loadgens": [%s], "rcs": [%s]}\n' \
        "${idle_rss:-0}" "$idle_fds" "${best_rss:-0}" "$best_fds" "$CONNS" \
        "$(printf '"%s",' "${outs[@]}" | sed 's/,$//')" "$(IFS=,; echo "${rcs[*]}")" >"$out"
    rc=0
    for g in "${rcs[@]}"; do [ "$g" = 0 ] || rc=$g; done
    record conn "connections|0|0" "$b" "$r" "$out" "${peak:-0}" "$rc" "-"
    log "  $b: $((best_fds - idle_fds)) connections held, RSS ${idle_rss} kB idle -> ${best_rss} kB"
}

if has_scenario connections; then
    note_cmd "connections|0|0" "$LOADGENS x in parallel: mqtt-bench connections --connections $PER_LOADGEN --hold $HOLD --duration $CONNECT_TIME --concurrency $CONCURRENCY --bind-addrs 127.X.G.1,127.X.G.2 --port PORT --json -q --broker-pid PID  (X: a fresh number per run, G: the process index; broker max_connections $CONN_MAX; ulimit -n $HARD_NOFILE)"
    for r in $(seq "$ROUNDS"); do
        for b in "${BROKERS[@]}"; do
            log "connections ($LOADGENS x $PER_LOADGEN), round $r/$ROUNDS: $b"
            run_connections "$b" "$r"
        done
    done
fi

# --- report ---------------------------------------------------------------------------------
META=$WORK/meta.tsv
{
    printf 'invocation\t%s\n' "$INVOCATION"
    printf 'start\t%s\n' "$START_TIME"
    printf 'end\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'load_start\t%s\n' "$LOAD_START"
    printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    printf 'mem_kb\t%s\n' "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'os\t%s\n' "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-?}")"
    printf 'nofile\t%s\n' "$HARD_NOFILE"
    printf 'server_version\t%s (git %s)\n' "$("$SERVER_BIN" --version)" \
        "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'bench_version\t%s\n' "$("$BENCH_BIN" --version)"
    printf 'rustc\t%s\n' "$(rustc --version 2>/dev/null || echo unknown)"
    printf 'mosquitto_version\t%s\n' "$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
    [ -n "$RUMQTTD" ] && printf 'rumqttd_version\t%s\n' "$("$RUMQTTD" --version 2>/dev/null || echo unknown)"
    printf 'rumqttd_note\t%s\n' "$RUMQTTD_NOTE"
    printf 'brokers\t%s\n' "${BROKERS[*]}"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'duration\t%s\n' "$DURATION"
    printf 'conns\t%s\n' "$CONNS"
    printf 'loadgens\t%s\n' "$LOADGENS"
    printf 'clients\t%s\n' "$CLIENTS"
    printf 'lat_fraction\t%s\n' "$LAT_FRACTION"
    for b in "${BROKERS[@]}"; do printf 'conf:%s\t%s\n' "$b" "$WORK/conf/$(basename "$(write_config "$b" 10000)")"; done
} >"$META"

log "writing $OUT"
python3 - "$META" "$MANIFEST" "$COMMANDS" "$OUT" "$REPO/BENCHMARKS.md" <<'PYEOF'
import json, os, statistics, sys

meta_path, manifest_path, commands_path, out_path, repo_doc = sys.argv[1:6]
meta = {}
for line in open(meta_path):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
brokers = meta["brokers"].split()
peers = [b for b in brokers if b != "mqtt-server"]
NAMES = {"mqtt-server": "mqtt-server", "mosquitto": "Mosquitto", "rumqttd": "rumqttd"}

runs = []
for line in open(manifest_path):
    kind, group, broker, rnd, path, peak, rc, _extra = line.rstrip("\n").split("\t")
    try:
        data = json.load(open(path))
    except (OSError, ValueError):
        data = None
    runs.append(dict(kind=kind, group=group, broker=broker, round=int(rnd), data=data,
                     peak_kb=int(peak or 0), rc=int(rc)))
commands = []
for line in open(commands_path):
    k, _, v = line.rstrip("\n").partition("\t")
    commands.append((k, v))

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d

def fmt_rate(x):
    return "n/a" if x is None else f"{x:,.0f}"

def fmt_mib(kb):
    return "n/a" if kb is None else f"{kb / 1024:.1f} MiB"

def fmt_us(x):
    if x is None:
        return "n/a"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"

def failed(rs):
    return any(r["rc"] != 0 or r["data"] is None or (get(r["data"], "errors") or 0) > 0 for r in rs)

def select(kind, group, broker):
    return [r for r in runs if r["kind"] == kind and r["group"] == group and r["broker"] == broker]

def groups(kind):
    seen = []
    for r in runs:
        if r["kind"] == kind and r["group"] not in seen:
            seen.append(r["group"])
    return seen

warn_notes = []
tp_summary, lat_summary, conn_summary = [], [], None
def mark(rs, what):
    if failed(rs):
        warn_notes.append(what)
        return " ⚠"
    return ""

L = []
w = L.append
w("<!-- compare.sh:begin (generated by bench/compare.sh: edit outside these markers) -->")
w("")
w("## Broker comparison")
w("")
w(f"Generated by `{meta['invocation']}` from {meta['start']} to {meta['end']}"
  f" ({meta['rounds']} round(s) of {meta['duration']} s per scenario, brokers alternating"
  f" {' '.join(NAMES[b] for b in brokers)} within each round; figures are medians over the rounds).")
w("")
w("### Machine and versions")
w("")
mem_gib = int(meta["mem_kb"]) / 1024 / 1024
w(f"- Machine: {meta['nproc']} cores ({meta['cpu']}), {mem_gib:.1f} GiB memory, {meta['kernel']},"
  f" {meta['os']}; open-files hard limit {meta['nofile']} per process. Load average (1/5/15 min)"
  f" {meta['load_start']} at the start, {meta['load_end']} at the end: the load generator,"
  f" the broker and anything else running share these cores.")
w(f"- mqtt-server: {meta['server_version']}; load generator: {meta['bench_version']}; {meta['rustc']}.")
w(f"- Mosquitto: {meta['mosquitto_version']} (Debian package).")
if "rumqttd_version" in meta:
    w(f"- rumqttd: {meta['rumqttd_version']} (crates.io, `cargo install rumqttd`).")
if meta.get("rumqttd_note"):
    w(f"- {meta['rumqttd_note']}.")
w("")
w("### Broker settings")
w("")
w("Each broker runs alone on its own 127.0.0.1 port, is started afresh for every run (so each RSS"
  " figure starts from a new process) and uses equivalent settings: no persistence, 20 QoS 1/2"
  " messages in flight per client, 1000 queued per client (overflow dropped), QoS 0 not queued for"
  " offline clients, 1 MiB maximum packet, TCP_NODELAY, warnings-only logging, 10000 connections"
  f" allowed ({meta['conns']}+100 in the connections scenario). rumqttd has no per-client queue"
  " bound: it keeps messages in a per-topic commit log (its default 10 segments of 100 MiB), so its"
  " memory under load is not comparable one to one.")
w("")
for b in brokers:
    path = meta.get(f"conf:{b}")
    lang = "toml" if path and path.endswith(".toml") else "text"
    w(f"{NAMES[b]} (`{[v for k, v in commands if k == 'broker:' + b][0]}`):")
    w("")
    w(f"```{lang}")
    try:
        w(open(path).read().rstrip())
    except (OSError, TypeError):
        w("(configuration file missing)")
    w("```")
    w("")

w("### Commands")
w("")
w("Every run is `mqtt-bench <scenario> ...` with `--json -q --broker-pid PID` against the"
  " broker's port. Throughput runs are closed loop: each QoS 1 publisher keeps at most 20"
  " messages unacknowledged (`--inflight 20`, Mosquitto's default window), each QoS 0 publisher"
  " writes as fast as its socket accepts. msg/s is *delivered* messages per second at the"
  " subscribers over the delivery window (the honest figure when a broker drops: loss % beside"
  " it). A broker that reads publishers faster than its subscribers drain drops the excess"
  " (max_queued_messages); one that reads them slower pushes back on them through TCP and"
  " loses nothing, so loss shows the policy as much as the speed. RSS is the broker's peak"
  " resident memory during the run (VmHWM of the fresh process).")
w("")
w("```text")
for k, v in commands:
    if not k.startswith("broker:"):
        w(v)
w("```")
w("")

tp_groups = groups("tp")
if tp_groups:
    w("### Throughput (fan-in, fan-out, pairs)")
    w("")
    w(f"{meta['clients']} publishers (fan-in, one shared topic), {meta['clients']} subscribers of one"
      f" topic (fan-out) or {meta['clients']} publisher/subscriber pairs (pairs). Target: mqtt-server"
      " delivers at least 2x the best peer.")
    w("")
    head = "| scenario | QoS | payload | mqtt-server msg/s (loss) | RSS |"
    sep = "|---|---|---|---|---|"
    for p in peers:
        head += f" {NAMES[p]} msg/s (loss) | RSS |"
        sep += "---|---|"
    head += " ratio vs best peer | target ≥ 2x |"
    sep += "---|---|"
    w(head)
    w(sep)
    for g in tp_groups:
        s, q, p = g.split("|")
        row = f"| {s} | {q} | {int(p):,} B |"
        rates = {}
        for b in brokers:
            rs = select("tp", g, b)
            rate = med([get(r["data"], "messages.delivered_per_s") for r in rs])
            loss = med([get(r["data"], "messages.loss_pct") for r in rs])
            rss = med([r["peak_kb"] or None for r in rs])
            rates[b] = rate
            m = mark(rs, f"{s} QoS {q} {p} B: {NAMES[b]}")
            loss_s = "n/a" if loss is None else f"{loss:.1f} %"
            row += f" {fmt_rate(rate)} ({loss_s}){m} | {fmt_mib(rss)} |"
        best = max((rates[b] for b in peers if rates[b]), default=None)
        if rates.get("mqtt-server") and best:
            ratio = rates["mqtt-server"] / best
            tp_summary.append(ratio >= 2)
            row += f" {ratio:.2f}x | {'yes' if ratio >= 2 else 'no'} |"
        else:
            row += " n/a | n/a |"
        w(row)
    w("")

lat_groups = groups("lat")
if lat_groups:
    w("### Latency at a fixed rate")
    w("")
    w(f"One publisher, one subscriber, open loop at {meta['lat_fraction']} x the rate Mosquitto"
      " delivered closed loop in a probe run of the same length on the same path (`pairs --pairs 1`:"
      " its maximum, roughly). Target:"
      " mqtt-server's p99 ≤ Mosquitto's. Percentiles are medians over the rounds of each run's"
      " percentile.")
    w("")
    head = "| QoS | payload | rate msg/s |"
    sep = "|---|---|---|"
    for b in brokers:
        head += f" {NAMES[b]} p50 / p99 / p99.9 / max (loss, RSS) |"
        sep += "---|"
    head += " p99 vs Mosquitto | target met |"
    sep += "---|---|"
    w(head)
    w(sep)
    for g in lat_groups:
        _, q, p = g.split("|")
        probe = select("probe", g, "mosquitto")
        probe_rate = get(probe[0]["data"], "messages.delivered_per_s") if probe else None
        rs0 = select("lat", g, brokers[0])
        rate = get(rs0[0]["data"], "params.rate") if rs0 else None
        row = f"| {q} | {int(p):,} B | {fmt_rate(rate)} (probe: {fmt_rate(probe_rate)}) |"
        p99 = {}
        for b in brokers:
            rs = select("lat", g, b)
            v = {k: med([get(r["data"], "latency_us." + k) for r in rs]) for k in ("p50", "p99", "p999", "max")}
            loss = med([get(r["data"], "messages.loss_pct") for r in rs])
            rss = med([r["peak_kb"] or None for r in rs])
            p99[b] = v["p99"]
            m = mark(rs, f"latency QoS {q}: {NAMES[b]}")
            loss_s = "n/a" if loss is None else f"{loss:.1f} %"
            row += (f" {fmt_us(v['p50'])} / {fmt_us(v['p99'])} / {fmt_us(v['p999'])} / {fmt_us(v['max'])}"
                    f" ({loss_s}, {fmt_mib(rss)}){m} |")
        ours, theirs = p99.get("mqtt-server"), p99.get("mosquitto")
        if ours is not None and theirs:
            lat_summary.append(ours <= theirs)
            row += f" {ours / theirs:.2f}x | {'yes' if ours <= theirs else 'no'} |"
        else:
            row += " n/a | n/a |"
        w(row)
    w("")

churn_groups = groups("churn")
if churn_groups:
    w("### Subscription churn")
    w("")
    w("One client subscribes and unsubscribes in a loop while 1000 other subscriptions exist"
      " (mqtt-bench churn defaults); no target, for information.")
    w("")
    w("| broker | SUBSCRIBE+UNSUBSCRIBE pairs/s | SUBACK p50 / p99 | RSS |")
    w("|---|---|---|---|")
    for b in brokers:
        rs = select("churn", churn_groups[0], b)
        ops = med([get(r["data"], "churn.ops_per_s") for r in rs])
        p50 = med([get(r["data"], "churn.suback_latency_us.p50") for r in rs])
        p99 = med([get(r["data"], "churn.suback_latency_us.p99") for r in rs])
        rss = med([r["peak_kb"] or None for r in rs])
        m = mark(rs, f"churn: {NAMES[b]}")
        w(f"| {NAMES[b]} | {fmt_rate(ops)}{m} | {fmt_us(p50)} / {fmt_us(p99)} | {fmt_mib(rss)} |")
    w("")

conn_groups = groups("conn")
if conn_groups:
    conns = int(meta["conns"])
    w("### Memory per idle connection")
    w("")
    w(f"{meta['loadgens']} mqtt-bench processes open {conns:,} connections in total"
      f" ({conns // int(meta['loadgens']):,} each, from their own loopback source addresses) and"
      " hold them idle (keep-alive 60 s); the broker's RSS and open files are sampled once all are"
      " open. Per connection = (RSS held - RSS idle) / connections held. The 1,000,000 figure is"
      " that slope extrapolated on paper (idle RSS + 10^6 x per connection); it leaves out the"
      " kernel's socket memory, which is outside every broker's RSS, and a real million needs"
      " 10^6 open files and ≥ 36 source addresses. Target: mqtt-server ≤ Mosquitto per connection.")
    w("")
    w("| broker | connections held | RSS idle | RSS held | bytes / connection | connects/s | 1,000,000 connections (extrapolated) | target met |")
    w("|---|---|---|---|---|---|---|---|")
    per = {}
    rows = []
    for b in brokers:
        rs = select("conn", conn_groups[0], b)
        held, idle, full, pc, cps = [], [], [], [], []
        for r in rs:
            d = r["data"] or {}
            n = (d.get("held_fds") or 0) - (d.get("idle_fds") or 0)
            rates, windows = [], []
            for lp in d.get("loadgens", []):
                try:
                    ld = json.load(open(lp))
                except (OSError, ValueError):
                    continue
                windows.append(get(ld, "connections.connect_window_s") or 0)
                rates.append(get(ld, "connections.connected") or 0)
            if windows and max(windows) > 0:
                cps.append(sum(rates) / max(windows))
            if n > 0:
                held.append(n)
                idle.append(d["idle_rss_kb"])
                full.append(d["held_rss_kb"])
                pc.append((d["held_rss_kb"] - d["idle_rss_kb"]) * 1024 / n)
        m = mark(rs, f"connections: {NAMES[b]}")
        per[b] = med(pc)
        rows.append((b, med(held), med(idle), med(full), per[b], med(cps), m))
    for b, held, idle, full, pc, cps, m in rows:
        if pc is not None and idle is not None:
            million = (idle * 1024 + pc * 1e6) / 2**30
            mill_s = f"{million:.2f} GiB"
        else:
            mill_s = "n/a"
        tgt = ""
        if b == "mqtt-server":
            tgt = "n/a" if pc is None or not per.get("mosquitto") else ("yes" if pc <= per["mosquitto"] else "no")
            conn_summary = None if tgt == "n/a" else tgt == "yes"
        held_s = "n/a" if held is None else f"{held:,.0f}"
        pc_s = "n/a" if pc is None else f"{pc:,.0f}"
        w(f"| {NAMES[b]} | {held_s}{m} | {fmt_mib(idle)} | {fmt_mib(full)} | {pc_s} | {fmt_rate(cps)} | {mill_s} | {tgt} |")
    w("")

summary = []
if tp_summary:
    met = sum(1 for ok in tp_summary if ok)
    summary.append(f"Throughput ≥ 2x the best peer: met in {met} of {len(tp_summary)} configurations.")
if lat_summary:
    met = sum(1 for ok in lat_summary if ok)
    summary.append(f"Latency p99 ≤ Mosquitto's at half its maximum rate: met in {met} of {len(lat_summary)}.")
if conn_summary is not None:
    summary.append("Memory per idle connection ≤ Mosquitto's: " + ("met." if conn_summary else "not met."))
if summary:
    w("### Targets at a glance")
    w("")
    for line in summary:
        w(f"- {line}")
    w("")

if warn_notes:
    w("⚠ At least one run of these reported a connection error or a non-zero exit status of"
      " mqtt-bench (the raw JSON is kept with `--keep DIR`): " + "; ".join(warn_notes) + ".")
    w("")

w("<details><summary>Per-round values (msg/s, p99 latency, bytes/connection)</summary>")
w("")
w("| kind | group | broker | per round |")
w("|---|---|---|---|")
for kind in ("tp", "lat", "churn", "conn"):
    for g in groups(kind):
        for b in brokers:
            vals = []
            for r in select(kind, g, b):
                d = r["data"]
                if kind == "tp":
                    v = fmt_rate(get(d, "messages.delivered_per_s"))
                elif kind == "lat":
                    v = fmt_us(get(d, "latency_us.p99"))
                elif kind == "churn":
                    v = fmt_rate(get(d, "churn.ops_per_s"))
                else:
                    n = ((d or {}).get("held_fds") or 0) - ((d or {}).get("idle_fds") or 0)
                    v = f"{(d['held_rss_kb'] - d['idle_rss_kb']) * 1024 / n:,.0f}" if n > 0 else "n/a"
                if r["rc"] != 0:
                    v += f" (exit {r['rc']})"
                vals.append(v)
            w(f"| {kind} | {g.replace('|', ' ')} | {NAMES[b]} | {', '.join(vals)} |")
w("")
w("</details>")
w("")
w("<!-- compare.sh:end -->")
generated = "\n".join(L) + "\n"

BEGIN, END = "<!-- compare.sh:begin", "<!-- compare.sh:end -->"
def parts(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < b:
        return None
    return text[:b], text[e + len(END):].lstrip("\n")

kept = parts(out_path) or parts(repo_doc)
if kept is None:
    kept = ("# Benchmarks\n\nHow to reproduce: `bench/compare.sh` (see bench/README.md).\n\n",
            "## Criterion micro-benchmarks\n\nTODO\n\n## What stands in the way\n\nTODO\n")
with open(out_path, "w") as f:
    f.write(kept[0] + generated + "\n" + kept[1])
PYEOF
log "done: $OUT"
