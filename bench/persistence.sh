#!/usr/bin/env bash
# bench/persistence.sh: the cost of durable persistence (issue 6), with mqtt-bench.
#
# Runs QoS 1 traffic between clients with persistent sessions (Clean Session 0, so the broker
# must keep what it queues for them) against four brokers in alternation: mqtt-server without
# persistence, mqtt-server with `durability = "periodic"`, mqtt-server with
# `durability = "sync"`, and Mosquitto with `persistence true`. Every run gets a fresh broker
# process and an empty store directory. Writes the tables into BENCHMARKS.md between the
# persistence.sh markers (appended if the file has none; the rest of the file is kept).
# `bench/persistence.sh --help` lists the options; bench/README.md explains the method.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=persistence.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
INVOCATION="bench/persistence.sh${*:+ $*}"

ROUNDS=3
DURATION=10
DRAIN=5
PAIRS=10
INFLIGHT=20
PAYLOADS="64,4096"
LAT_RATES="1000,5000"
LAT_PAYLOAD=64
FLUSH_MS=100
MOSQ_AUTOSAVE=1800
SCENARIOS="pairs,latency"
OUT="$REPO/BENCHMARKS.md"
BUILD=1
KEEP=""
STORE_ROOT=""
BASE_PORT=27893
SYNC_TARGET=50000
WORK=""
STORES=""

usage() {
    cat <<EOF
Usage: bench/persistence.sh [OPTIONS]

QoS 1 throughput and latency with persistent sessions against mqtt-server without
persistence, with durability "periodic", with durability "sync", and Mosquitto with
persistence true (installed with apt if missing); writes the tables into BENCHMARKS.md.

Options:
  --rounds N            rounds; the four brokers alternate within a round (default $ROUNDS)
  --duration S          seconds of load per run (default $DURATION)
  --drain S             mqtt-bench --drain: seconds to wait for late deliveries (default $DRAIN)
  --scenarios LIST      pairs,latency or one of them (default $SCENARIOS)
  --pairs N             publisher/subscriber pairs of the throughput runs (default $PAIRS)
  --inflight N          QoS 1 messages each publisher keeps unacknowledged (default $INFLIGHT)
  --payloads LIST       payload sizes in bytes of the throughput runs (default $PAYLOADS)
  --latency-rates LIST  msg/s of the one-publisher latency runs, $LAT_PAYLOAD B (default $LAT_RATES)
  --flush-ms MS         mqtt-server flush_interval_ms in periodic mode (default $FLUSH_MS)
  --mosquitto-autosave S  Mosquitto autosave_interval, seconds (default $MOSQ_AUTOSAVE, its own
                        default: it writes its store only that often and at shutdown)
  --store-dir DIR       where the stores are created (default: the work directory, under
                        /tmp); the file system decides what an fsync costs
  --out FILE            report to write (default BENCHMARKS.md in the repository)
  --no-build            use the existing release binaries instead of cargo build --release --bins
  --keep DIR            keep configs, logs and raw JSON results in DIR
  --base-port P         ports P (mqtt-server) and P+1 (Mosquitto) (default $BASE_PORT)
  -h, --help            this help

Example, a quick try: bench/persistence.sh --rounds 1 --duration 2 --out /tmp/p.md
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --drain) DRAIN=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --inflight) INFLIGHT=$2; shift 2 ;;
        --payloads) PAYLOADS=$2; shift 2 ;;
        --latency-rates) LAT_RATES=$2; shift 2 ;;
        --flush-ms) FLUSH_MS=$2; shift 2 ;;
        --mosquitto-autosave) MOSQ_AUTOSAVE=$2; shift 2 ;;
        --store-dir) STORE_ROOT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=$2; shift 2 ;;
        --base-port) BASE_PORT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for v in ROUNDS DURATION DRAIN PAIRS INFLIGHT FLUSH_MS MOSQ_AUTOSAVE BASE_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "${v,,}: expected a positive integer, got '${!v}'"
done
for v in PAYLOADS LAT_RATES; do
    [[ ${!v} =~ ^[0-9]+(,[0-9]+)*$ ]] || die "${v,,}: expected comma-separated numbers, got '${!v}'"
done
for s in ${SCENARIOS//,/ }; do
    case $s in pairs | latency) ;; *) die "unknown scenario: $s" ;; esac
done
has_scenario() { [[ ,$SCENARIOS, == *,$1,* ]]; }
command -v python3 >/dev/null || die "python3 is required (json module only)"
case $OUT in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# --- binaries ---------------------------------------------------------------------------
release_binaries
"$BENCH_BIN" pairs --help | grep -q -- --persistent-sessions ||
    die "$BENCH_BIN has no --persistent-sessions option: rebuild it"

find_mosquitto

# The variants, in the order they alternate within a round.
VARIANTS=(off periodic sync mosquitto)

# --- work directory -------------------------------------------------------------------------
if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    WORK=$(cd "$KEEP" && pwd)
else
    WORK=$(mktemp -d /tmp/mqtt-persistence.XXXXXX)
fi
mkdir -p "$WORK/conf" "$WORK/logs" "$WORK/raw"
if [ -n "$STORE_ROOT" ]; then
    mkdir -p "$STORE_ROOT"
    STORES=$(mktemp -d "$(cd "$STORE_ROOT" && pwd)/mqtt-persistence-stores.XXXXXX")
else
    STORES=$WORK/stores
    mkdir -p "$STORES"
fi
# Mosquitto started as root switches to the `mosquitto` user unless its configuration says
# `user root` (written below when we are root); a non-root Mosquitto runs as us. Either way
# the store directories are ours, so they are writable by the broker.
MANIFEST=$WORK/manifest.tsv
COMMANDS=$WORK/commands.tsv
: >"$MANIFEST"
: >"$COMMANDS"

BPID=""
LOADGEN_PID=""
cleanup() {
    [ -n "$LOADGEN_PID" ] && kill "$LOADGEN_PID" 2>/dev/null || true
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true
    [ -n "$BPID" ] && wait "$BPID" 2>/dev/null || true
    [ -n "$STORES" ] && [ "$STORES" != "$WORK/stores" ] && rm -rf "$STORES"
    [ -z "$KEEP" ] && [ -n "$WORK" ] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_of() { case $1 in mosquitto) echo $((BASE_PORT + 1)) ;; *) echo "$BASE_PORT" ;; esac; }

# Writes the configuration of variant $1 with its store in directory $2; prints its path.
write_config() {
    local v=$1 store=$2 port f
    port=$(port_of "$v")
    case $v in
        off | periodic | sync)
            f=$WORK/conf/mqtt-server-$v.toml
            write_server_config "$f" "$port" 10000
            if [ "$v" != off ]; then
                cat >>"$f" <<EOF

[persistence]
enabled = true
path = "$store"
durability = "$v"
flush_interval_ms = $FLUSH_MS
EOF
            fi
            ;;
        mosquitto)
            f=$WORK/conf/mosquitto.conf
            write_mosquitto_config "$f" "$port" 10000 "persistence true" \
                "persistence_location $store/" "autosave_interval $MOSQ_AUTOSAVE"
            ;;
    esac
    echo "$f"
}

# Sets BARGV to the command line that starts variant $1 with configuration file $2.
broker_argv() {
    case $1 in
        mosquitto) BARGV=("$MOSQUITTO" -c "$2") ;;
        *) BARGV=("$SERVER_BIN" --config "$2") ;;
    esac
}

# Starts variant $1 on the empty store directory $2; sets BPID.
start_broker() {
    local cfg
    cfg=$(write_config "$1" "$2")
    broker_argv "$1" "$cfg"
    start_broker_process "$1" "$(port_of "$1")" "$WORK/logs/$1.log" "${BARGV[@]}"
}

# Stops the broker (SIGTERM: both flush their store on the way out; SIGKILL after 20 s).
stop_broker() { stop_broker_process 20; }
# CPU seconds (user + system) the broker has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$BPID/stat" 2>/dev/null || echo 0
}

# What the store holds once the broker has stopped: "BYTES SESSIONS" (sessions: mqtt-server's
# `store inspect`; "-" for Mosquitto, which has no such tool, and without persistence).
store_after() {
    local v=$1 store=$2 bytes sessions=-
    bytes=$(du -sb "$store" 2>/dev/null | cut -f1)
    if [ "$v" = periodic ] || [ "$v" = sync ]; then
        sessions=$("$SERVER_BIN" store inspect "$store" 2>/dev/null | awk '/^sessions:/ { sub(",", "", $2); print $2; exit }')
    fi
    echo "${bytes:-0} ${sessions:--}"
}

# record KIND GROUP VARIANT ROUND FILE PEAK_KB RC CPU_S STORE_BYTES SESSIONS_LEFT
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$MANIFEST"; }

# Runs mqtt-bench against variant $1 (fresh process, empty store); $2 kind, $3 group,
# $4 round, rest: mqtt-bench arguments.
RC=0
bench_run() {
    local v=$1 kind=$2 group=$3 round=$4 out peak cpu store after
    shift 4
    out=$WORK/raw/${group//|/_}_${v}_r$round.json
    store=$STORES/${group//|/_}_${v}_r$round
    mkdir -p "$store"
    start_broker "$v" "$store"
    RC=0
    # In the background and waited for, so that an interrupt stops everything at once.
    "$BENCH_BIN" "$@" --port "$(port_of "$v")" --json -q --broker-pid "$BPID" >"$out" 2>"$out.err" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || RC=$?
    LOADGEN_PID=""
    peak=$(status_kb VmHWM)
    cpu=$(cpu_s)
    stop_broker
    after=$(store_after "$v" "$store")
    [ -n "$KEEP" ] || rm -rf "$store"
    record "$kind" "$group" "$v" "$round" "$out" "${peak:-0}" "$RC" "${cpu:-0}" ${after}
}

# Notes command $2 under key $1, with paths shown relative to the repository and the work
# directory shown as WORKDIR (the --keep directory, or a temporary one).
note_cmd() {
    local c=${2//$REPO\//}
    printf '%s\t%s\n' "$1" "${c//$WORK/WORKDIR}" >>"$COMMANDS"
}

# --- runs -----------------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "variants: ${VARIANTS[*]}; rounds $ROUNDS, ${DURATION}s per run; work dir $WORK; stores in $STORES"
for v in "${VARIANTS[@]}"; do
    broker_argv "$v" "$(write_config "$v" "$STORES/STORE")"
    note_cmd "broker:$v" "${BARGV[*]}"
done

if has_scenario pairs; then
    for p in ${PAYLOADS//,/ }; do
        args=(pairs --qos 1 --persistent-sessions --pairs "$PAIRS" --inflight "$INFLIGHT" --payload "$p" --duration "$DURATION" --drain "$DRAIN")
        note_cmd "pairs|$p" "mqtt-bench ${args[*]} --port PORT --json -q --broker-pid PID"
        for r in $(seq "$ROUNDS"); do
            for v in "${VARIANTS[@]}"; do
                log "pairs QoS 1 ${p} B, round $r/$ROUNDS: $v"
                bench_run "$v" tp "pairs|$p" "$r" "${args[@]}"
                [ "$RC" = 0 ] || log "  mqtt-bench exit status $RC (see report)"
            done
        done
    done
fi

if has_scenario latency; then
    for rate in ${LAT_RATES//,/ }; do
        args=(latency --qos 1 --persistent-sessions --inflight "$INFLIGHT" --payload "$LAT_PAYLOAD" --rate "$rate" --duration "$DURATION" --drain "$DRAIN")
        note_cmd "latency|$rate" "mqtt-bench ${args[*]} --port PORT --json -q --broker-pid PID"
        for r in $(seq "$ROUNDS"); do
            for v in "${VARIANTS[@]}"; do
                log "latency QoS 1 at $rate msg/s, round $r/$ROUNDS: $v"
                bench_run "$v" lat "latency|$rate" "$r" "${args[@]}"
                [ "$RC" = 0 ] || log "  mqtt-bench exit status $RC (see report)"
            done
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
    printf 'store_fs\t%s\n' "$(df -PT "$STORES" | awk 'NR == 2 { print $2 " on " $1 " (" $7 ")" }')"
    printf 'server_version\t%s (git %s)\n' "$("$SERVER_BIN" --version)" \
        "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
    printf 'bench_version\t%s\n' "$("$BENCH_BIN" --version)"
    printf 'rustc\t%s\n' "$(rustc --version 2>/dev/null || echo unknown)"
    printf 'mosquitto_version\t%s\n' "$("$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
    printf 'variants\t%s\n' "${VARIANTS[*]}"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'duration\t%s\n' "$DURATION"
    printf 'pairs\t%s\n' "$PAIRS"
    printf 'inflight\t%s\n' "$INFLIGHT"
    printf 'flush_ms\t%s\n' "$FLUSH_MS"
    printf 'mosq_autosave\t%s\n' "$MOSQ_AUTOSAVE"
    printf 'sync_target\t%s\n' "$SYNC_TARGET"
    for v in "${VARIANTS[@]}"; do printf 'conf:%s\t%s\n' "$v" "$(write_config "$v" "STORE_DIR")"; done
} >"$META"

log "writing $OUT"
python3 - "$META" "$MANIFEST" "$COMMANDS" "$OUT" <<'PYEOF'
import json, statistics, sys

meta_path, manifest_path, commands_path, out_path = sys.argv[1:5]
meta = {}
for line in open(meta_path):
    k, _, v = line.rstrip("\n").partition("\t")
    meta[k] = v
variants = meta["variants"].split()
NAMES = {"off": "mqtt-server, no persistence", "periodic": "mqtt-server periodic",
         "sync": "mqtt-server sync", "mosquitto": "Mosquitto persistence true"}
SHORT = {"off": "off", "periodic": "periodic", "sync": "sync", "mosquitto": "Mosquitto"}

runs = []
for line in open(manifest_path):
    kind, group, variant, rnd, path, peak, rc, cpu, store_bytes, left = line.rstrip("\n").split("\t")
    try:
        data = json.load(open(path))
    except (OSError, ValueError):
        data = None
    runs.append(dict(kind=kind, group=group, variant=variant, round=int(rnd), data=data,
                     peak_kb=int(peak or 0), rc=int(rc), cpu_s=float(cpu or 0),
                     store_bytes=int(store_bytes or 0),
                     left=None if left == "-" else int(left)))
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

def fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}"

def failed(rs):
    return any(r["rc"] != 0 or r["data"] is None or (get(r["data"], "errors") or 0) > 0
               or (get(r["data"], "sessions.failed") or 0) > 0 for r in rs)

def select(kind, group, variant):
    return sorted((r for r in runs if r["kind"] == kind and r["group"] == group
                   and r["variant"] == variant), key=lambda r: r["round"])

def groups(kind):
    seen = []
    for r in runs:
        if r["kind"] == kind and r["group"] not in seen:
            seen.append(r["group"])
    return seen

def by_round(kind, group, variant, path):
    return {r["round"]: get(r["data"], path) for r in select(kind, group, variant)}

def ratios(kind, group, a, b, path):
    """Per-round a/b (same round: adjacent runs), in round order."""
    ra, rb = by_round(kind, group, a, path), by_round(kind, group, b, path)
    return [ra[k] / rb[k] if ra.get(k) and rb.get(k) else None for k in sorted(ra)]

warn_notes = []
def mark(rs, what):
    if failed(rs):
        warn_notes.append(what)
        return " ⚠"
    return ""

def lost_total(rs):
    return sum(get(r["data"], "messages.lost") or 0 for r in rs)

L = []
w = L.append
w("<!-- persistence.sh:begin (generated by bench/persistence.sh: edit outside these markers) -->")
w("")
w("## Persistence: QoS 1 with persistent sessions")
w("")
w(f"Generated by `{meta['invocation']}` from {meta['start']} to {meta['end']}"
  f" ({meta['rounds']} round(s) of {meta['duration']} s per run; in each round the four"
  f" brokers run one after the other, {', '.join(SHORT[v] for v in variants)}; figures are"
  " medians over the rounds, ratios are medians of the per-round ratios).")
w("")
w("### Machine and versions")
w("")
mem_gib = int(meta["mem_kb"]) / 1024 / 1024
w(f"- Machine: {meta['nproc']} cores ({meta['cpu']}), {mem_gib:.1f} GiB memory, {meta['kernel']},"
  f" {meta['os']}. Load average (1/5/15 min) {meta['load_start']} at the start,"
  f" {meta['load_end']} at the end: the load generator, the broker and anything else running"
  " share these cores.")
w(f"- Stores on {meta['store_fs']}: what an fsync costs there decides the `sync` figures.")
w(f"- mqtt-server: {meta['server_version']}; load generator: {meta['bench_version']}; {meta['rustc']}.")
w(f"- Mosquitto: {meta['mosquitto_version']} (Debian package).")
w("- rumqttd is left out: version 0.20 keeps persistent sessions in memory only (no store on"
  " disk), so it has nothing to compare here; `bench/compare.sh` measures it without persistence.")
w("")
w("### Broker settings")
w("")
w("Every run starts a fresh broker process on an empty store directory. Common settings, as in"
  " `bench/compare.sh`: 20 QoS 1/2 messages in flight per client, 1000 queued per client, QoS 0"
  " not queued, 1 MiB maximum packet, TCP_NODELAY, warnings-only logging. mqtt-server `sync`"
  " sends a PUBACK (and a SUBACK) only once what it depends on is fsynced, one fsync serving"
  " every client (group commit); `periodic` writes at once and fsyncs every"
  f" {meta['flush_ms']} ms. Mosquitto's `persistence true` saves a snapshot of its whole state"
  f" every `autosave_interval` ({meta['mosq_autosave']} s here) and at shutdown; nothing is written"
  " during a run shorter than that, so its figures are those of an in-memory broker, and a crash"
  " loses everything since the last snapshot.")
w("")
for v in variants:
    path = meta.get(f"conf:{v}")
    lang = "text" if v == "mosquitto" else "toml"
    w(f"{NAMES[v]} (`{[c for k, c in commands if k == 'broker:' + v][0]}`):")
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
w("Every run is `mqtt-bench <scenario> ...` with `--json -q --broker-pid PID` against the broker's"
  " port. `--persistent-sessions`: every client (publishers and subscribers) connects with Clean"
  " Session 0 and a fixed client id, so the broker keeps a session for each and must store what it"
  " queues or has in flight for the subscribers; at the end mqtt-bench discards every session"
  " (CONNECT with Clean Session 1, then DISCONNECT), so stores do not grow between runs. msg/s is"
  f" *delivered* messages per second at the subscribers; {meta['pairs']} pairs with"
  f" `--inflight {meta['inflight']}` keep up to {int(meta['pairs']) * int(meta['inflight'])}"
  " QoS 1 publications unacknowledged at once: what group commit can share an fsync among."
  " RSS is the broker's peak resident memory (VmHWM of the fresh process).")
w("")
w("```text")
for k, v in commands:
    if not k.startswith("broker:"):
        w(v)
w("```")
w("")

target = float(meta["sync_target"])
tp_groups = groups("tp")
summary = []
if tp_groups:
    w("### Throughput: pairs, QoS 1, persistent sessions")
    w("")
    head = "| payload |"
    sep = "|---|"
    for v in variants:
        head += f" {SHORT[v]} msg/s (loss) | RSS |"
        sep += "---|---|"
    head += " periodic / off (target ≥ 0.80) | sync / off | sync / Mosquitto |"
    sep += "---|---|---|"
    w(head)
    w(sep)
    for g in tp_groups:
        _, p = g.split("|")
        row = f"| {int(p):,} B |"
        for v in variants:
            rs = select("tp", g, v)
            rate = med([get(r["data"], "messages.delivered_per_s") for r in rs])
            loss = med([get(r["data"], "messages.loss_pct") for r in rs])
            rss = med([r["peak_kb"] or None for r in rs])
            m = mark(rs, f"pairs {p} B: {NAMES[v]}")
            loss_s = "n/a" if loss is None else f"{loss:.1f} %"
            row += f" {fmt_rate(rate)} ({loss_s}){m} | {fmt_mib(rss)} |"
        path = "messages.delivered_per_s"
        po = med(ratios("tp", g, "periodic", "off", path))
        so = med(ratios("tp", g, "sync", "off", path))
        sm = med(ratios("tp", g, "sync", "mosquitto", path))
        row += f" {fmt_ratio(po)}{'' if po is None else (' ✓' if po >= 0.8 else ' ✗')} | {fmt_ratio(so)} | {fmt_ratio(sm)} |"
        w(row)
        if po is not None:
            summary.append(f"`periodic` within 20 % of no persistence, {int(p):,} B: periodic/off ="
                           f" {po:.2f} ({'met' if po >= 0.8 else 'not met'}).")
        sync_rate = med([get(r["data"], path) for r in select("tp", g, "sync")])
        if int(p) == 64 and sync_rate is not None:
            summary.append(f"`sync` ≥ {target:,.0f} msg/s with 64 B payloads: {sync_rate:,.0f} msg/s"
                           f" ({sync_rate / target:.2f} x the target; {'met' if sync_rate >= target else 'not met'}).")
    w("")

lat_groups = groups("lat")
if lat_groups:
    w("### Latency: one publisher at a fixed rate, QoS 1, persistent sessions")
    w("")
    w("End-to-end, publisher write to subscriber read; p50 / p99 / p99.9 / max over every message"
      " of a run, medians over the rounds.")
    w("")
    head = "| rate msg/s |"
    sep = "|---|"
    for v in variants:
        head += f" {SHORT[v]} p50 / p99 / p99.9 / max (loss) |"
        sep += "---|"
    head += " p99 sync / off | p99 sync / Mosquitto |"
    sep += "---|---|"
    w(head)
    w(sep)
    for g in lat_groups:
        _, rate = g.split("|")
        row = f"| {int(rate):,} |"
        for v in variants:
            rs = select("lat", g, v)
            vals = {k: med([get(r["data"], "latency_us." + k) for r in rs]) for k in ("p50", "p99", "p999", "max")}
            loss = med([get(r["data"], "messages.loss_pct") for r in rs])
            m = mark(rs, f"latency {rate} msg/s: {NAMES[v]}")
            loss_s = "n/a" if loss is None else f"{loss:.1f} %"
            row += (f" {fmt_us(vals['p50'])} / {fmt_us(vals['p99'])} / {fmt_us(vals['p999'])} /"
                    f" {fmt_us(vals['max'])} ({loss_s}){m} |")
        so = med(ratios("lat", g, "sync", "off", "latency_us.p99"))
        sm = med(ratios("lat", g, "sync", "mosquitto", "latency_us.p99"))
        row += f" {fmt_ratio(so)} | {fmt_ratio(sm)} |"
        w(row)
    w("")

lost = sum(lost_total(select(k, g, v)) for k in ("tp", "lat") for g in groups(k) for v in variants)
left = [r["left"] for r in runs if r["left"] is not None]
summary.append(f"Messages lost over all runs: {lost:,}.")
if left:
    summary.append(f"Sessions left in mqtt-server's stores after the runs (all discarded by"
                   f" mqtt-bench at the end): at most {max(left)}.")
w("### At a glance")
w("")
for line in summary:
    w(f"- {line}")
w("")
if warn_notes:
    w("⚠ At least one run of these reported an error, a non-zero exit status of mqtt-bench or a"
      " session it could not discard (the raw JSON is kept with `--keep DIR`): "
      + "; ".join(warn_notes) + ".")
    w("")

w("<details><summary>Per-round values</summary>")
w("")
w("msg/s (throughput) or p99 (latency), then the broker's peak RSS, the CPU time it used over"
  " the whole run (setup and drain included) and the store's size after it stopped.")
w("")
w("| run | broker | " + " | ".join(f"round {i}" for i in range(1, int(meta["rounds"]) + 1)) + " |")
w("|---|---|" + "---|" * int(meta["rounds"]))
for kind in ("tp", "lat"):
    for g in groups(kind):
        s, x = g.split("|")
        label = f"pairs {int(x):,} B" if kind == "tp" else f"latency {int(x):,} msg/s"
        for v in variants:
            cells = []
            for r in select(kind, g, v):
                d = r["data"]
                if kind == "tp":
                    c = fmt_rate(get(d, "messages.delivered_per_s"))
                else:
                    c = "p99 " + fmt_us(get(d, "latency_us.p99"))
                c += (f", {fmt_mib(r['peak_kb'] or None)}, CPU {r['cpu_s']:.1f} s,"
                      f" store {r['store_bytes'] / 1024:,.0f} KiB")
                if (get(d, "messages.lost") or 0) > 0:
                    c += f", lost {get(d, 'messages.lost'):,}"
                if r["rc"] != 0:
                    c += f" (exit {r['rc']})"
                cells.append(c)
            w(f"| {label} | {SHORT[v]} | " + " | ".join(cells) + " |")
for g in groups("tp"):
    _, x = g.split("|")
    path = "messages.delivered_per_s"
    for a, b in (("periodic", "off"), ("sync", "off"), ("sync", "mosquitto")):
        rs = ratios("tp", g, a, b, path)
        w(f"| pairs {int(x):,} B | ratio {SHORT[a]} / {SHORT[b]} | " + " | ".join(fmt_ratio(v) for v in rs) + " |")
    if int(x) == 64:
        rs = [v / target if v else None for v in by_round("tp", g, "sync", path).values()]
        w(f"| pairs 64 B | sync / {target:,.0f} msg/s target | " + " | ".join(fmt_ratio(v) for v in rs) + " |")
w("")
w("</details>")
w("")
w("<!-- persistence.sh:end -->")
generated = "\n".join(L) + "\n"

BEGIN, END = "<!-- persistence.sh:begin", "<!-- persistence.sh:end -->"
try:
    text = open(out_path).read()
except OSError:
    text = None
if text is None:
    new = generated
else:
    b, e = text.find(BEGIN), text.find(END)
    if b >= 0 and e > b:
        new = text[:b] + generated + text[e + len(END):].lstrip("\n")
        if not new.endswith("\n"):
            new += "\n"
    else:
        new = text.rstrip("\n") + "\n\n" + generated
with open(out_path, "w") as f:
    f.write(new)
PYEOF
log "done: $OUT"
