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
. "$(dirname "$0")/two-sites-topology.sh"
trap sites_cleanup EXIT
trap 'echo; echo "== interrupted: tearing down"; exit 130' INT TERM

echo "== building the topology: namespaces ${P}{A,G1,U,G2,B}; gateways $BIN/anygated with configs in $DIR"
ROUTE_SITES=1 KEEPALIVE="{interval: 2s, retries: 3}" sites_start

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
