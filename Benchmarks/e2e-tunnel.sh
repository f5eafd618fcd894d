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
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for n in A G1 U G2 B; do ip netns del "${P}$n" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

for n in A G1 U G2 B; do ip netns add "${P}$n"; ip -n "${P}$n" link set lo up; done
ip netns exec "${P}U" sysctl -qw net.ipv4.ip_forward=1
ip -n "${P}G1" link add "${P}-g1u" type veth peer name "${P}-u1" netns "${P}U"
ip -n "${P}G2" link add "${P}-g2u" type veth peer name "${P}-u2" netns "${P}U"
for x in "G1 ${P}-g1u" "U ${P}-u1" "U ${P}-u2" "G2 ${P}-g2u"; do
    set -- $x
    ip netns exec "${P}$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null
    ip -n "${P}$1" link set "$2" up
done
ip -n "${P}U" addr add 198.51.100.254/24 dev "${P}-u1"
ip -n "${P}U" addr add 203.0.113.254/24 dev "${P}-u2"
ip -n "${P}U" route add 10.1.0.0/16 via 198.51.100.1
ip -n "${P}U" route add 10.2.0.0/16 via 203.0.113.2

conf() { # side lan local remote tunnel-address underlay-gateway uplink mac
    cat > "$DIR/gw$1.yaml" <<YAML
control: {socket: $DIR/gw$1.sock}
log: {level: warning}
interfaces:
  - name: lan0
    attach: {tap: ${P}-t$1}
    addresses: [$2]
  - name: wan0
    attach: {packet: $7}
    mac: $8
    addresses: [$3/24]
tunnels:
  - name: gre0
    encapsulation: $ENCAP
    local: $3
    remote: $4
    key: 7
    mss-clamp: auto
    addresses: [$5]
routes:
  - {to: 0.0.0.0/0, via: $6}
YAML
}
conf 1 10.1.0.1/24 198.51.100.1 203.0.113.2 172.16.0.1/30 198.51.100.254 "${P}-g1u" 02:00:00:00:11:01
conf 2 10.2.0.1/24 203.0.113.2 198.51.100.1 172.16.0.2/30 203.0.113.254 "${P}-g2u" 02:00:00:00:22:01
for side in 1 2; do
    ip netns exec "${P}G$side" .build/release/anygated --config "$DIR/gw$side.yaml" 2>"$DIR/gw$side.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$DIR/gw$side.sock" ] && break; sleep 0.1; done
done
ip -n "${P}G1" link set "${P}-t1" netns "${P}A"; ip -n "${P}G2" link set "${P}-t2" netns "${P}B"
ip -n "${P}A" addr add 10.1.0.2/24 dev "${P}-t1"; ip -n "${P}A" link set "${P}-t1" up; ip -n "${P}A" route add default via 10.1.0.1
ip -n "${P}B" addr add 10.2.0.2/24 dev "${P}-t2"; ip -n "${P}B" link set "${P}-t2" up; ip -n "${P}B" route add default via 10.2.0.1
CTL1=".build/release/anygatectl --socket $DIR/gw1.sock"
CTL2=".build/release/anygatectl --socket $DIR/gw2.sock"

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
