#!/usr/bin/env bash
# End-to-end GRE: two anygated gateways (release build), each in its own
# namespace, joined over an underlay namespace that routes between them:
#
#   site A 10.1.0.2 ─TAP─ gw1 ─veth─ U ─veth─ gw2 ─TAP─ site B 10.2.0.2
#
# The same daemons first forward site to site plainly across the underlay,
# then through a GRE tunnel (routes switched with anygatectl), so the two
# figures come from one run. The stack owns the underlay (packet
# attachments); ENCAP=gre-in-udp switches the encapsulation.
# Needs root, /dev/net/tun and iperf3.  Usage: Benchmarks/e2e-tunnel.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ENCAP=${ENCAP:-gre}
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="agt$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-tunnel.XXXXXX)
BIN=.build/release
. scripts/two-sites-topology.sh
trap sites_cleanup EXIT

# The gateways start without routes to the other site: the plain path goes
# through U, which routes the sites for this comparison.
sites_start
ip -n "${P}U" route add 10.1.0.0/16 via 198.51.100.1
ip -n "${P}U" route add 10.2.0.0/16 via 203.0.113.2

tcp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5301 -t "$SECS" -f m 2>&1 \
        | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") printf "%.2f", $(i-1) / 1000 }'
}
udp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5401 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5401 -u -b 0 -l 22 -t "$SECS" 2>&1 \
        | awk -v secs="$SECS" '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); printf "%d", (a[2] - a[1]) / secs } }'
}

ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
PT=$(tcp); PU=$(udp)
# Switch both directions into the tunnel.
$CTL1 route add 10.2.0.0/16 via 172.16.0.2 >/dev/null
$CTL2 route add 10.1.0.0/16 via 172.16.0.1 >/dev/null
ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
TT=$(tcp); TU=$(udp)
echo "== ${SECS}s per measurement; encapsulation $ENCAP, stack backend; $(nproc) cores; $(uname -r)"
printf "%-34s %14s %14s %8s\n" "measurement" "plain" "tunnel" "ratio"
printf "%-34s %14s %14s %8s\n" "TCP throughput, 1 stream (Gbit/s)" "$PT" "$TT" "$(awk -v a="$TT" -v b="$PT" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
printf "%-34s %14s %14s %8s\n" "UDP 64-byte frames (packets/s)" "$PU" "$TU" "$(awk -v a="$TU" -v b="$PU" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
$CTL1 show tunnels
