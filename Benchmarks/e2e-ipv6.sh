#!/usr/bin/env bash
# End-to-end: TCP through one anygated over IPv6 against IPv4, the same
# gateway and hosts in the same run (the topology of e2e.sh, dual-stack:
# host A ─TAP─ anygated ─TAP─ host B), 1 and 4 streams, alternating,
# ROUNDS rounds, medians and the IPv6 ÷ IPv4 ratio.
# Usage: Benchmarks/e2e-ipv6.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "e2e-ipv6.sh needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
. scripts/netns-topology.sh
P="ag6$(printf '%03x' $((RANDOM % 4096)))"; DIR=$(mktemp -d /tmp/anygate-e2e-ipv6.XXXXXX)
trap ns_cleanup EXIT
WORKERS=1 ns_start .build/release/anygated
ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
ip netns exec "${P}A" ping -6 -c 1 -W 2 2001:db8:2::2 >/dev/null
tcp() { # address streams
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c "$1" -p 5301 -P "$2" -t "$SECS" -f m 2>&1 \
        | awk -v p="$2" '/receiver/ && (p == 1 || /SUM/) { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.2f", $(i-1) / 1000 } }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; $(nproc) cores; $(uname -r)"
for m in v4t1 v6t1 v4t4 v6t4; do : > "$DIR/$m"; done
for r in $(seq "$ROUNDS"); do
    a=$(tcp 10.2.0.2 1); b=$(tcp 2001:db8:2::2 1); c=$(tcp 10.2.0.2 4); d=$(tcp 2001:db8:2::2 4)
    echo "$a" >> "$DIR/v4t1"; echo "$b" >> "$DIR/v6t1"; echo "$c" >> "$DIR/v4t4"; echo "$d" >> "$DIR/v6t4"
    echo "   round $r: IPv4 $a/$c Gbit/s, IPv6 $b/$d Gbit/s (1/4 streams)"
done
printf '%-28s %10s %10s %9s\n' "measurement (median)" IPv4 IPv6 "6 ÷ 4"
for s in 1 4; do
    v4=$(median < "$DIR/v4t$s"); v6=$(median < "$DIR/v6t$s")
    printf '%-28s %10s %10s %9s\n' "TCP, $s stream(s) (Gbit/s)" "$v4" "$v6" "$(ratio "$v6" "$v4")"
done
echo "== after the run"
.build/release/anygatectl --socket "$DIR/control.sock" show stats | tail -12
