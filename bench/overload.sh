#!/usr/bin/env bash
# bench/overload.sh: attacks a release mqtt-server (and Mosquitto, for comparison) with the
# overload scenarios of mqtt-bench and reports the figures and checks of each run:
#   slow-consumer  a QoS 0 and a QoS 1 subscriber that never read while 4 publishers flood
#   flood          connect/disconnect churn + half-open sockets that never send CONNECT
#   huge-packet    fixed headers announcing 268,435,455 bytes, the body sent slowly
#   soak           mixed traffic (QoS 0/1/2, retained churn, takeovers, reconnect storms)
# Every run is bounded in time. Each broker runs with the open-file limit raised to the hard
# limit (20 000 on the reference machine): --half-open plus the churners must stay below it.
# Run `bench/overload.sh --help` for the options.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=overload.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
DURATION=20
PHASE=5
SOAK=1800
SOAK_WINDOW=60
HALF_OPEN=5000
CHURNERS=16
BROKERS="mqtt-server,mosquitto"
SCENARIOS="slow-consumer,flood,huge-packet,soak"
OUT=""
KEEP=""
BUILD=1
BASE_PORT=28883

usage() {
    cat <<EOF
Usage: bench/overload.sh [OPTIONS]

Starts target/release/mqtt-server (and Mosquitto, installed with apt if missing) on their own
127.0.0.1 ports, runs the overload scenarios of target/release/mqtt-bench against each with
--broker-pid (RSS and open files sampled from /proc), prints a Markdown summary and exits 1
if a check failed against mqtt-server (Mosquitto's failed checks are reported, not fatal).

Options:
  --duration S     seconds of attack of slow-consumer, flood and huge-packet (default $DURATION)
  --phase S        seconds of the bystander's before/after phases (default $PHASE)
  --soak S         seconds of the soak, mqtt-server only (default $SOAK, the issue's 30 min)
  --soak-window S  start and end windows of the soak (default $SOAK_WINDOW)
  --half-open N    half-open sockets of the flood (default $HALF_OPEN)
  --churners N     connect/disconnect loops of the flood (default $CHURNERS)
  --brokers LIST   mqtt-server,mosquitto or one of them (default $BROKERS)
  --scenarios LIST subset of $SCENARIOS
  --out FILE       also write the summary to FILE
  --keep DIR       keep configs, logs and raw JSON reports in DIR
  --no-build       use the existing release binaries
  --base-port P    ports P (mqtt-server) and P+1 (Mosquitto) (default $BASE_PORT)
  -h, --help       this help
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --phase) PHASE=$2; shift 2 ;;
        --soak) SOAK=$2; shift 2 ;;
        --soak-window) SOAK_WINDOW=$2; shift 2 ;;
        --half-open) HALF_OPEN=$2; shift 2 ;;
        --churners) CHURNERS=$2; shift 2 ;;
        --brokers) BROKERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --base-port) BASE_PORT=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "$KEEP" ]; then
    WORK=$KEEP
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
fi
mkdir -p "$WORK/raw" "$WORK/conf" "$WORK/log"

cd "$REPO"
release_binaries
if [[ ",$BROKERS," == *",mosquitto,"* ]]; then
    find_mosquitto
fi

# the open-file limit: brokers and mqtt-bench inherit the hard limit
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ $((HALF_OPEN + CHURNERS + 200)) -le "$NOFILE" ] ||
    die "--half-open $HALF_OPEN + --churners $CHURNERS need more than the open-file limit $NOFILE"

port_of() { case $1 in mqtt-server) echo "$BASE_PORT" ;; mosquitto) echo $((BASE_PORT + 1)) ;; esac; }

# Same limits for both: 1 MiB packets, 20 in flight, 1000 queued, QoS 0 not queued offline.
config_of() {
    local port f
    port=$(port_of "$1")
    case $1 in
        mqtt-server)
            f=$WORK/conf/mqtt-server.toml
            write_server_config "$f" "$port" $((NOFILE - 100))
            ;;
        mosquitto)
            f=$WORK/conf/mosquitto.conf
            write_mosquitto_config "$f" "$port" $((NOFILE - 100))
            ;;
    esac
    echo "$f"
}

BPID=""
start_broker() {
    local conf
    conf=$(config_of "$1")
    case $1 in
        mqtt-server) start_broker_process "$1" "$(port_of "$1")" "$WORK/log/$1.log" "$SERVER_BIN" -c "$conf" ;;
        mosquitto) start_broker_process "$1" "$(port_of "$1")" "$WORK/log/$1.log" "$MOSQUITTO" -c "$conf" ;;
    esac
}

stop_broker() { stop_broker_process 10; }
trap 'stop_broker; [ -n "$KEEP" ] || rm -rf "$WORK"' EXIT

FAILED=0
run() { # broker scenario args...
    local broker=$1 scenario=$2 port out
    shift 2
    port=$(port_of "$broker")
    out=$WORK/raw/${scenario}_${broker}.json
    log "$broker: mqtt-bench $scenario $*"
    if "$BENCH_BIN" "$scenario" --port "$port" --broker-pid "$BPID" --json --quiet "$@" \
        >"$out" 2>"$out.err"; then
        :
    else
        log "$broker: $scenario reported failed checks or errors"
        [ "$broker" != mqtt-server ] || FAILED=1
    fi
}

IFS=, read -r -a BROKER_LIST <<<"$BROKERS"
for broker in "${BROKER_LIST[@]}"; do
    start_broker "$broker"
    for scenario in ${SCENARIOS//,/ }; do
        case $scenario in
            slow-consumer)
                run "$broker" slow-consumer --duration "$DURATION" --phase "$PHASE" \
                    --publishers 4 --drain 10 ;;
            flood)
                run "$broker" flood --duration "$DURATION" --phase "$PHASE" \
                    --churners "$CHURNERS" --half-open "$HALF_OPEN" --broker-connect-timeout 10 ;;
            huge-packet)
                run "$broker" huge-packet --duration "$DURATION" --phase "$PHASE" \
                    --attackers 8 --announced 268435455 --chunk 1024 --interval-ms 100 ;;
            soak)
                # the soak measures mqtt-server; Mosquitto's would take as long again
                [ "$broker" = mqtt-server ] || continue
                run "$broker" soak --duration "$SOAK" --window "$SOAK_WINDOW" ;;
            *) die "unknown scenario $scenario" ;;
        esac
    done
    stop_broker
done

summary() {
    python3 - "$WORK/raw" <<'EOF'
import json, os, sys
raw = sys.argv[1]
print("| scenario | broker | figure | value |")
print("|---|---|---|---|")
for name in sorted(os.listdir(raw)):
    if not name.endswith(".json"):
        continue
    scenario, broker = name[:-5].rsplit("_", 1)
    path = os.path.join(raw, name)
    try:
        r = json.load(open(path))
    except Exception:
        err = open(path + ".err").read().strip().splitlines()
        print(f"| {scenario} | {broker} | run failed | {err[-1] if err else '?'} |")
        continue
    o = r.get("overload", {})
    for p in o.get("phases", []):
        lat = p.get("latency_us") or {}
        print(f"| {scenario} | {broker} | bystander {p['name']} | {p['received_per_s']} msg/s, "
              f"p99 {lat.get('p99', '?')} µs ({p['secs']} s) |")
    for k, s in sorted(o.get("broker", {}).items()):
        print(f"| {scenario} | {broker} | broker {k} | RSS {s.get('rss_kb')} KiB, {s.get('fds')} fds |")
    for k, v in sorted(o.get("figures", {}).items()):
        print(f"| {scenario} | {broker} | {k} | {int(v) if float(v).is_integer() else v} |")
    for c in o.get("checks", []):
        print(f"| {scenario} | {broker} | check {'ok' if c['ok'] else '**FAILED**'}: {c['name']} | {c['detail']} |")
    for e in r.get("error_messages", []):
        if not e.startswith("check failed"):
            print(f"| {scenario} | {broker} | error | {e} |")
EOF
}

{
    echo "# bench/overload.sh $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -sr), open-file limit $NOFILE."
    echo "mqtt-server $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); $([ -n "${MOSQUITTO:-}" ] && "$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
    echo "Options: duration $DURATION s, phase $PHASE s, soak $SOAK s (window $SOAK_WINDOW s), half-open $HALF_OPEN, churners $CHURNERS."
    echo
    summary
} | tee ${OUT:+"$OUT"}
exit "$FAILED"
