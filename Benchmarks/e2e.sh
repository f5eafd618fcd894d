#!/usr/bin/env bash
# End-to-end forwarding: anygated (release build) between two network
# namespaces, measured in the same run as the Linux kernel forwarding
# between the same two namespaces over veth pairs.
#
#   host A ──TAP── anygated (ns R) ──TAP── host B      10.1.0.2 -> 10.2.0.2
#   host A ──veth── Linux router (ns L) ──veth── host B   10.5.0.2 -> 10.6.0.2
#
# Reports TCP throughput (iperf3, one stream) and 64-byte UDP packets/s
# (iperf3 -u, 22-byte payloads: 64-byte Ethernet frames), and their ratio.
# Needs root, /dev/net/tun and iperf3 (make bench-e2e installs it).
# Each measurement runs ROUNDS times, the two paths alternating, and the
# median is reported (this machine's figures vary from run to run).
# Usage: Benchmarks/e2e.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "e2e.sh needs root"; exit 1; }
[ -c /dev/net/tun ] || { echo "e2e.sh needs /dev/net/tun"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="age$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e.XXXXXX)
. scripts/netns-topology.sh
IPERF_PIDS=()
cleanup() { for p in "${IPERF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; ns_cleanup; }
trap cleanup EXIT

ns_start .build/release/anygated
# The Linux path: namespace L forwards between two veth pairs.
ip netns add "${P}L"
ip -n "${P}L" link set lo up
ip netns exec "${P}L" sysctl -qw net.ipv4.ip_forward=1
ip -n "${P}A" link add "${P}-va" type veth peer name "${P}-la" netns "${P}L"
ip -n "${P}B" link add "${P}-vb" type veth peer name "${P}-lb" netns "${P}L"
ip -n "${P}A" addr add 10.5.0.2/24 dev "${P}-va"; ip -n "${P}A" link set "${P}-va" up
ip -n "${P}B" addr add 10.6.0.2/24 dev "${P}-vb"; ip -n "${P}B" link set "${P}-vb" up
ip -n "${P}L" addr add 10.5.0.1/24 dev "${P}-la"; ip -n "${P}L" link set "${P}-la" up
ip -n "${P}L" addr add 10.6.0.1/24 dev "${P}-lb"; ip -n "${P}L" link set "${P}-lb" up
ip -n "${P}A" route add 10.6.0.0/24 via 10.5.0.1
ip -n "${P}B" route add 10.5.0.0/24 via 10.6.0.1
ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
ip netns exec "${P}A" ping -c 1 -W 2 10.6.0.2 >/dev/null

ip netns exec "${P}B" iperf3 -s -1 -p 5201 >/dev/null 2>&1 & IPERF_PIDS+=($!)
sleep 0.5

# Receiver-side TCP throughput in Gbit/s.
tcp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true
    sleep 0.3
    ip netns exec "${P}A" iperf3 -c "$1" -p 5301 -t "$SECS" -f m 2>&1 \
        | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.2f", $(i-1) / 1000 } }'
}
# Receiver-side UDP packets/s for 64-byte frames, sender unthrottled.
udp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5401 >/dev/null 2>&1 || true
    sleep 0.3
    ip netns exec "${P}A" iperf3 -c "$1" -p 5401 -u -b 0 -l 22 -t "$SECS" 2>&1 \
        | awk -v secs="$SECS" '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); printf "%d", (a[2] - a[1]) / secs } }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; $(nproc) cores; $(uname -r)"
: > "$DIR/at"; : > "$DIR/lt"; : > "$DIR/au"; : > "$DIR/lu"
for r in $(seq "$ROUNDS"); do
    tcp 10.2.0.2 >> "$DIR/at"; echo >> "$DIR/at"
    tcp 10.6.0.2 >> "$DIR/lt"; echo >> "$DIR/lt"
    udp 10.2.0.2 >> "$DIR/au"; echo >> "$DIR/au"
    udp 10.6.0.2 >> "$DIR/lu"; echo >> "$DIR/lu"
    echo "   round $r: anygated $(tail -1 "$DIR/at") Gbit/s $(tail -1 "$DIR/au") pps; linux $(tail -1 "$DIR/lt") Gbit/s $(tail -1 "$DIR/lu") pps"
done
AT=$(median < "$DIR/at"); LT=$(median < "$DIR/lt"); AU=$(median < "$DIR/au"); LU=$(median < "$DIR/lu")
printf "%-34s %14s %14s %8s\n" "measurement (median)" "anygated" "linux" "ratio"
printf "%-34s %14s %14s %8s\n" "TCP throughput, 1 stream (Gbit/s)" "$AT" "$LT" "$(awk -v a="$AT" -v l="$LT" 'BEGIN { if (l > 0) printf "%.2f", a / l }')"
printf "%-34s %14s %14s %8s\n" "UDP 64-byte frames (packets/s)" "$AU" "$LU" "$(awk -v a="$AU" -v l="$LU" 'BEGIN { if (l > 0) printf "%.2f", a / l }')"
echo "== anygated after the run:"
.build/release/anygatectl --socket "$DIR/control.sock" show interfaces
