#!/usr/bin/env bash
# End-to-end: forwarding under a punt flood. One gateway (host A ─TAP─
# anygated ─TAP─ host B, scripts/netns-topology.sh) with a host twin on each
# interface (TWINS=1: the stack punts OSPF, BGP and BFD to them). Host A
# forwards traffic to B — TCP, 1 stream; 64-byte UDP in 16 flows as fast as
# they go; and the same offered at 100 000 datagrams a second — first alone, then while A floods the gateway's own address 10.1.0.1 with
# TCP SYNs to port 179 (BGP: punted) at RATE packets a second
# (Benchmarks/punt-flood.c, sendmmsg on a raw socket), arriving on the same
# interface as the forwarded traffic. Reports medians of ROUNDS rounds, the
# ratio with ÷ without the flood, and how many flood packets were punted
# and how many the twin's rate limit (10 000/s) dropped.
# Usage: Benchmarks/e2e-punt.sh [SECONDS] [ROUNDS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
RATE=${3:-100000}
[ "$(id -u)" = 0 ] || { echo "e2e-punt.sh needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
. scripts/netns-topology.sh
P="agp$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-punt.XXXXXX)
trap ns_cleanup EXIT
cc -O2 -o "$DIR/punt-flood" Benchmarks/punt-flood.c
TWINS=1 ns_start .build/release/anygated
ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
ctl() { .build/release/anygatectl --socket "$DIR/control.sock" "$@"; }
tcp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5301 -t "$SECS" -f m 2>&1 \
        | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.3f", $(i-1) / 1000 } }'
}
udp() { # [bits/s per stream, 0: as fast as it goes]
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5401 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5401 -u -b "${1:-0}" -l 22 -P 16 -t "$SECS" 2>&1 \
        | awk -v secs="$SECS" '/SUM.*receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); printf "%d", (a[2] - a[1]) / secs } }'
}
flood() { # seconds → "sent rate" (in the background: to $DIR/flood)
    ip netns exec "${P}A" "$DIR/punt-flood" 10.1.0.2 10.1.0.1 "${PORT:-179}" "$RATE" "$1" > "$DIR/flood"
}
stat() { # counter name in show stats --json (counters, or drops)
    ctl --json show stats | python3 -c 'import json, sys; s = json.load(sys.stdin); print(s["counters"].get(sys.argv[1], s["drops"].get(sys.argv[1], 0)))' "$1"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds, flood ${RATE} SYN/s to 10.1.0.1:179; $(nproc) cores; $(uname -r); $(date -u +%FT%TZ)"
# The offered load of the fixed-rate row: 100 000 datagrams a second in all (22-byte payloads, 16 flows).
FIXED=$((22 * 8 * 100000 / 16))
for m in t0 t1 u0 u1 f0 f1 sent punted limited; do : > "$DIR/$m"; done
for r in $(seq "$ROUNDS"); do
    tcp >> "$DIR/t0"; echo >> "$DIR/t0"
    udp >> "$DIR/u0"; echo >> "$DIR/u0"
    udp "$FIXED" >> "$DIR/f0"; echo >> "$DIR/f0"
    p0=$(stat punted); l0=$(stat punt-rate-limited)
    flood $((SECS + 2)) & F=$!; sleep 1
    tcp >> "$DIR/t1"; echo >> "$DIR/t1"
    wait $F; cut -d' ' -f2 "$DIR/flood" >> "$DIR/sent"
    flood $((SECS + 2)) & F=$!; sleep 1
    udp >> "$DIR/u1"; echo >> "$DIR/u1"
    wait $F; cut -d' ' -f2 "$DIR/flood" >> "$DIR/sent"
    flood $((SECS + 2)) & F=$!; sleep 1
    udp "$FIXED" >> "$DIR/f1"; echo >> "$DIR/f1"
    wait $F; cut -d' ' -f2 "$DIR/flood" >> "$DIR/sent"
    echo $(( $(stat punted) - p0 )) >> "$DIR/punted"; echo $(( $(stat punt-rate-limited) - l0 )) >> "$DIR/limited"
    echo "   round $r: TCP $(tail -1 "$DIR/t0") → $(tail -1 "$DIR/t1") Gbit/s; UDP $(tail -1 "$DIR/u0") → $(tail -1 "$DIR/u1") pps;" \
         "UDP at 100 000/s $(tail -1 "$DIR/f0") → $(tail -1 "$DIR/f1") pps;" \
         "flood $(tail -1 "$DIR/sent") SYN/s; punted $(tail -1 "$DIR/punted"), rate-limited $(tail -1 "$DIR/limited")"
done
T0=$(median < "$DIR/t0"); T1=$(median < "$DIR/t1"); U0=$(median < "$DIR/u0"); U1=$(median < "$DIR/u1")
F0=$(median < "$DIR/f0"); F1=$(median < "$DIR/f1")
printf "%-36s %12s %12s %8s\n" "forwarding (median)" "no flood" "flood" "ratio"
printf "%-36s %12s %12s %8s\n" "TCP, 1 stream (Gbit/s)" "$T0" "$T1" "$(ratio "$T1" "$T0")"
printf "%-36s %12s %12s %8s\n" "UDP 64-byte, 16 flows (packets/s)" "$U0" "$U1" "$(ratio "$U1" "$U0")"
printf "%-36s %12s %12s %8s\n" "UDP 64-byte, 100 000/s offered" "$F0" "$F1" "$(ratio "$F1" "$F0")"
echo "flood achieved (median SYN/s): $(median < "$DIR/sent"); per round punted $(median < "$DIR/punted"), rate-limited $(median < "$DIR/limited") (goal: forwarding ≥ 0.90 of its rate)"
echo "== after the run"
ctl show stats | grep -E "punt|inject|ledger" || true
