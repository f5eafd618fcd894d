#!/usr/bin/env bash
# The appliance's main job, on real interfaces: two dual-stack sites, each
# a host behind its own anygated gateway, the gateways joined by two GRE
# tunnels across an "internet" namespace that knows nothing of the sites'
# prefixes and routes both IPv4 and IPv6:
#
#   host A 10.1.0.2        ─TAP─ gateway 1 ─veth─ internet ─veth─ gateway 2 ─TAP─ host B 10.2.0.2
#          2001:db8:1::2         198.51.100.1  ═══ gre0, key 7 ═══  203.0.113.2          2001:db8:2::2
#                                2001:db8:ff01::1 ═══ gre6, key 6 ═══ 2001:db8:ff02::2
#
# The sites' IPv6 traffic travels inside gre0 (over IPv4), their IPv4
# traffic inside gre6 (over IPv6). Pings across, a TCP transfer of each
# family checked end to end, then each gateway's `show tunnels`, `show
# flows` and `show stats`. Everything is removed on exit, Ctrl-C
# included. Needs root and /dev/net/tun.
# Usage: scripts/demo-two-sites.sh [BIN_DIR]   (default .build/release)
set -euo pipefail
BIN=${1:-.build/release}
P="ag2s$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-demo2.XXXXXX)
. "$(dirname "$0")/two-sites-topology.sh"
trap sites_cleanup EXIT
trap 'echo; echo "== interrupted: tearing down"; exit 130' INT TERM

echo "== building the topology: namespaces ${P}{A,G1,U,G2,B}; gateways $BIN/anygated with configs in $DIR"
ROUTE_SITES=1 DUAL_STACK=1 KEEPALIVE="{interval: 2s, retries: 3}" sites_start

echo
echo "== the internet namespace has no route to either site:"
ip -n "${P}U" route show | sed 's/^/   /'
ip -n "${P}U" -6 route show | grep -v '^fe80' | sed 's/^/   /'
echo
echo "== host A (10.1.0.2) pings host B (10.2.0.2): IPv4 inside gre6, over the IPv6 underlay"
# The gateways' IPv6 addresses pass duplicate address detection first (about a second).
for _ in $(seq 20); do ip netns exec "${P}A" ping -c 1 -W 1 10.2.0.2 >/dev/null 2>&1 && break; sleep 0.3; done
ip netns exec "${P}A" ping -c 4 -i 0.2 -W 2 10.2.0.2
echo
echo "== host A (2001:db8:1::2) pings host B (2001:db8:2::2): IPv6 inside gre0, over the IPv4 underlay"
for _ in $(seq 20); do ip netns exec "${P}A" ping -6 -c 1 -W 1 2001:db8:2::2 >/dev/null 2>&1 && break; sleep 0.3; done
ip netns exec "${P}A" ping -6 -c 4 -i 0.2 -W 2 2001:db8:2::2
echo
echo "== host B pings host A, both families"
ip netns exec "${P}B" ping -c 2 -i 0.2 -W 2 10.1.0.2 | tail -2
ip netns exec "${P}B" ping -6 -c 2 -i 0.2 -W 2 2001:db8:1::2 | tail -2

head -c 4000000 /dev/urandom > "$DIR/payload"
want=$(sha256sum < "$DIR/payload" | cut -d' ' -f1)
transfer() { # label destination port family
    echo
    echo "== a 4 MB TCP transfer from A to B over $1, checked end to end"
    ip netns exec "${P}B" timeout 20 nc "-$4" -l -p "$3" > "$DIR/received" &
    local nc=$!
    sleep 0.3
    local start end got
    start=$(date +%s.%N)
    ip netns exec "${P}A" timeout 20 nc "-$4" -N "$2" "$3" < "$DIR/payload"
    wait "$nc" || true
    end=$(date +%s.%N)
    got=$(sha256sum < "$DIR/received" | cut -d' ' -f1)
    if [ "$got" = "$want" ]; then
        echo "   $1: 4000000 bytes in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s, sha256 matches at both ends"
    else
        echo "   $1: transfer FAILED: received $(stat -c %s "$DIR/received") bytes, checksum differs"; exit 1
    fi
}
transfer "IPv4 (inside gre6, over IPv6)" 10.2.0.2 5001 4
transfer "IPv6 (inside gre0, over IPv4)" 2001:db8:2::2 5002 6
echo
echo "== the underlay carries GRE between the gateways only, over both families (tcpdump in the internet namespace)"
ip netns exec "${P}U" timeout 4 tcpdump -l -n -c 8 -i "${P}-u1" "ip proto 47 or ip6 proto 47" 2>/dev/null | sed 's/^/   /' &
TD=$!
sleep 0.5
ip netns exec "${P}A" ping -c 2 -i 0.2 -W 2 10.2.0.2 >/dev/null
ip netns exec "${P}A" ping -6 -c 2 -i 0.2 -W 2 2001:db8:2::2 >/dev/null
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
