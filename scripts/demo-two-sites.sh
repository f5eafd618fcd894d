#!/usr/bin/env bash
# The appliance's main job, on real interfaces: two sites, each a host
# behind its own anygated gateway, the gateways joined by a GRE tunnel
# across an "internet" namespace that knows nothing of the sites' prefixes.
#
#   host A 10.1.0.2 ─TAP─ gateway 1 ─veth─ internet ─veth─ gateway 2 ─TAP─ host B 10.2.0.2
#                       198.51.100.1  ═══ GRE key 7 ═══  203.0.113.2
#
# Pings across, a short TCP transfer checked end to end, then each
# gateway's `show tunnels`, `show flows` and `show stats`. Everything is
# removed on exit, Ctrl-C included. Needs root and /dev/net/tun.
# Usage: scripts/demo-two-sites.sh [BIN_DIR]   (default .build/release)
set -euo pipefail
BIN=${1:-.build/release}
P="ag2s$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-demo2.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in A G1 U G2 B; do ip netns del "${P}$n" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo; echo "== interrupted: tearing down"; exit 130' INT TERM

echo "== building the topology: namespaces ${P}{A,G1,U,G2,B}"
for n in A G1 U G2 B; do ip netns add "${P}$n"; ip -n "${P}$n" link set lo up; done
ip netns exec "${P}U" sysctl -qw net.ipv4.ip_forward=1
ip -n "${P}G1" link add "${P}-g1u" type veth peer name "${P}-u1" netns "${P}U"
ip -n "${P}G2" link add "${P}-g2u" type veth peer name "${P}-u2" netns "${P}U"
for x in "G1 ${P}-g1u" "U ${P}-u1" "U ${P}-u2" "G2 ${P}-g2u"; do
    set -- $x
    ip netns exec "${P}$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
    ip -n "${P}$1" link set "$2" up
done
ip -n "${P}U" addr add 198.51.100.254/24 dev "${P}-u1"
ip -n "${P}U" addr add 203.0.113.254/24 dev "${P}-u2"

conf() { # side lan-address local remote tunnel-address underlay-gateway uplink mac remote-site
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
    local: $3
    remote: $4
    key: 7
    mss-clamp: auto
    keepalive: {interval: 2s, retries: 3}
    addresses: [$5]
routes:
  - {to: 0.0.0.0/0, via: $6}
  - {to: $9, via: ${5%.*}.$(( ${5##*.} == 1 ? 2 : 1 ))}
YAML
}
# The tunnel addresses are x.x.x.1/30 and x.x.x.2/30: each side routes the
# other site to the other end.
conf 1 10.1.0.1/24 198.51.100.1 203.0.113.2 172.16.0.1 198.51.100.254 "${P}-g1u" 02:00:00:00:11:01 10.2.0.0/16
conf 2 10.2.0.1/24 203.0.113.2 198.51.100.1 172.16.0.2 203.0.113.254 "${P}-g2u" 02:00:00:00:22:01 10.1.0.0/16
sed -i 's|addresses: \[172.16.0.\([12]\)\]|addresses: [172.16.0.\1/30]|' "$DIR/gw1.yaml" "$DIR/gw2.yaml"
for side in 1 2; do
    echo "== starting gateway $side: $BIN/anygated --config $DIR/gw$side.yaml (namespace ${P}G$side)"
    ip netns exec "${P}G$side" "$BIN/anygated" --config "$DIR/gw$side.yaml" 2>"$DIR/gw$side.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "$DIR/gw$side.sock" ] && break; sleep 0.1; done
    [ -S "$DIR/gw$side.sock" ] || { echo "gateway $side did not start:"; cat "$DIR/gw$side.log"; exit 1; }
done
ip -n "${P}G1" link set "${P}-t1" netns "${P}A"; ip -n "${P}G2" link set "${P}-t2" netns "${P}B"
ip -n "${P}A" addr add 10.1.0.2/24 dev "${P}-t1"; ip -n "${P}A" link set "${P}-t1" up; ip -n "${P}A" route add default via 10.1.0.1
ip -n "${P}B" addr add 10.2.0.2/24 dev "${P}-t2"; ip -n "${P}B" link set "${P}-t2" up; ip -n "${P}B" route add default via 10.2.0.1
CTL1="$BIN/anygatectl --socket $DIR/gw1.sock"
CTL2="$BIN/anygatectl --socket $DIR/gw2.sock"

echo
echo "== the internet namespace has no route to either site:"
ip -n "${P}U" route show | sed 's/^/   /'
echo
echo "== host A (10.1.0.2) pings host B (10.2.0.2) through the tunnel"
ip netns exec "${P}A" ping -c 4 -i 0.2 -W 2 10.2.0.2
echo
echo "== host B pings host A"
ip netns exec "${P}B" ping -c 2 -i 0.2 -W 2 10.1.0.2 | tail -2
echo
echo "== a 4 MB TCP transfer from A to B, checked end to end"
head -c 4000000 /dev/urandom > "$DIR/payload"
want=$(sha256sum < "$DIR/payload" | cut -d' ' -f1)
ip netns exec "${P}B" timeout 20 nc -l -p 5001 > "$DIR/received" &
NC=$!
sleep 0.3
start=$(date +%s.%N)
ip netns exec "${P}A" timeout 20 nc -N 10.2.0.2 5001 < "$DIR/payload"
wait "$NC" || true
end=$(date +%s.%N)
got=$(sha256sum < "$DIR/received" | cut -d' ' -f1)
if [ "$got" = "$want" ]; then
    echo "   4000000 bytes in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s, sha256 matches at both ends"
else
    echo "   transfer FAILED: received $(stat -c %s "$DIR/received") bytes, checksum differs"; exit 1
fi
echo
echo "== the underlay carries GRE between the gateways only (tcpdump in the internet namespace)"
ip netns exec "${P}U" timeout 3 tcpdump -l -n -c 2 -i "${P}-u1" ip proto 47 2>/dev/null | sed 's/^/   /' &
TD=$!
sleep 0.5
ip netns exec "${P}A" ping -c 2 -i 0.2 -W 2 10.2.0.2 >/dev/null
wait "$TD" || true
for side in 1 2; do
    CTL="CTL$side"
    echo
    echo "== gateway $side: anygatectl show tunnels"; ${!CTL} show tunnels
    echo; echo "== gateway $side: anygatectl show flows";   ${!CTL} show flows
    echo; echo "== gateway $side: anygatectl show stats";   ${!CTL} show stats
done
echo
echo "== done; tearing everything down"
