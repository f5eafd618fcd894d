#!/usr/bin/env bash
# End-to-end: anygated with `stack.workers: 2` against `stack.workers: 1`,
# two gateways side by side in one run (each its own namespaces, the same
# topology as e2e.sh: host A ─TAP─ anygated ─TAP─ host B), measured in turn:
# TCP 1 and 4 streams, 64-byte UDP in 16 flows (iperf3 -P 16), and each
# worker's share of the UDP frames (show stats --json: workers). ROUNDS
# rounds, medians. This machine has 2 cores, and the traffic generators and
# receivers share them with the gateway: see BENCHMARKS.md for what that means.
# Usage: Benchmarks/e2e-workers.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "e2e-workers.sh needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
. scripts/netns-topology.sh
declare -A PS DIRS PIDS
cleanup() {
    for w in 1 2; do
        [ -n "${PS[$w]:-}" ] || continue
        P=${PS[$w]} DIR=${DIRS[$w]} DAEMON_PID=${PIDS[$w]:-}
        ns_cleanup
    done
}
trap cleanup EXIT
for w in 1 2; do
    P="agw$w$(printf '%03x' $((RANDOM % 4096)))"; DIR=$(mktemp -d /tmp/anygate-e2e-workers.XXXXXX)
    PS[$w]=$P; DIRS[$w]=$DIR
    WORKERS=$w ns_start .build/release/anygated
    PIDS[$w]=$DAEMON_PID
    ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
done
ctl() { .build/release/anygatectl --socket "${DIRS[$1]}/control.sock" "${@:2}"; }
tcp() { # workers streams
    local P=${PS[$1]}
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5301 -P "$2" -t "$SECS" -f m 2>&1 \
        | awk -v p="$2" '/receiver/ && (p == 1 || /SUM/) { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.2f", $(i-1) / 1000 } }'
}
udp() { # workers: packets/s received, 16 flows of 64-byte frames
    local P=${PS[$1]}
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5401 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5401 -u -b 0 -l 22 -P 16 -t "$SECS" 2>&1 \
        | awk -v secs="$SECS" '/SUM.*receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); printf "%d", (a[2] - a[1]) / secs } }'
}
shares() { # workers: each worker's share of received frames since $2 (JSON of show stats)
    ctl "$1" --json show stats | python3 -c '
import json, sys
before = {w["index"]: w["rxPackets"] for w in json.loads(sys.argv[1]).get("workers") or []}
now = json.load(sys.stdin).get("workers") or []
d = [w["rxPackets"] - before.get(w["index"], 0) for w in now]
t = sum(d) or 1
print(" / ".join("%d%%" % round(100 * x / t) for x in d) if d else "-")' "$2"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; $(nproc) cores; $(uname -r)"
for w in 1 2; do for m in t1 t4 u; do : > "${DIRS[$w]}/$m"; done; done
for r in $(seq "$ROUNDS"); do
    line="   round $r:"
    for w in 1 2; do
        tcp $w 1 >> "${DIRS[$w]}/t1"; echo >> "${DIRS[$w]}/t1"
        tcp $w 4 >> "${DIRS[$w]}/t4"; echo >> "${DIRS[$w]}/t4"
        before=$(ctl $w --json show stats)
        udp $w >> "${DIRS[$w]}/u"; echo >> "${DIRS[$w]}/u"
        line="$line workers=$w $(tail -1 "${DIRS[$w]}/t1")/$(tail -1 "${DIRS[$w]}/t4") Gbit/s $(tail -1 "${DIRS[$w]}/u") pps"
        [ $w = 2 ] && line="$line (UDP shares $(shares 2 "$before"))"
        line="$line;"
    done
    echo "$line"
done
printf "%-34s %12s %12s %10s\n" "measurement (median)" "workers: 1" "workers: 2" "2 ÷ 1"
for m in t1 t4 u; do
    case $m in t1) name="TCP, 1 stream (Gbit/s)";; t4) name="TCP, 4 streams (Gbit/s)";; u) name="UDP 64-byte, 16 flows (packets/s)";; esac
    A=$(median < "${DIRS[1]}/$m"); B=$(median < "${DIRS[2]}/$m")
    printf "%-34s %12s %12s %10s\n" "$name" "$A" "$B" "$(ratio "$B" "$A")"
done
echo "== workers: 2 after the run"
ctl 2 show stats | tail -20
