#!/usr/bin/env bash
# End-to-end GRE with IPv6: the dual-stack two-site network of
# scripts/two-sites-topology.sh (release build; the stack owns the
# underlay), each site's TCP measured through each tunnel in the same run:
#
#   inner IPv4 over outer IPv4 (gre0)    inner IPv6 over outer IPv4 (gre0)
#   inner IPv4 over outer IPv6 (gre6)    inner IPv6 over outer IPv6 (gre6)
#
# The routes are switched between the tunnels with anygatectl. TCP, one
# stream, receiver throughput; ROUNDS rounds of SECONDS, medians, and each
# combination's ratio to IPv4 over IPv4. ENCAP=gre-in-udp switches both
# tunnels' encapsulation. Needs root, /dev/net/tun and iperf3.
# Usage: Benchmarks/e2e-tunnel6.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
ENCAP=${ENCAP:-gre}
export ENCAP ENCAP6=$ENCAP
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="ag6t$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-tunnel6.XXXXXX)
BIN=.build/release
. scripts/two-sites-topology.sh
trap sites_cleanup EXIT
ROUTE_SITES=1 DUAL_STACK=1 sites_start

# Routes of both families into one tunnel on both gateways.
route() { # family(4|6) tunnel(gre0|gre6)
    for side in 1 2; do
        local o=$((3 - side)) CTL="CTL$side"
        if [ "$1" = 4 ]; then
            local via=172.16.0.$o; [ "$2" = gre6 ] && via=172.16.6.$o
            ${!CTL} route del 10.$o.0.0/16 >/dev/null
            ${!CTL} route add 10.$o.0.0/16 via "$via" >/dev/null
        else
            ${!CTL} route del 2001:db8:$o::/48 >/dev/null
            ${!CTL} route add 2001:db8:$o::/48 dev "$2" >/dev/null
        fi
    done
}
for _ in $(seq 40); do ip netns exec "${P}A" ping -6 -c 1 -W 1 2001:db8:2::2 >/dev/null 2>&1 && break; sleep 0.3; done
for _ in $(seq 40); do ip netns exec "${P}A" ping -c 1 -W 1 10.2.0.2 >/dev/null 2>&1 && break; sleep 0.3; done

tcp() { # address
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}A" iperf3 -c "$1" -p 5301 -t "$SECS" -f m 2>&1 | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i-1) / 1000 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A R
for round in $(seq "$ROUNDS"); do
    for combo in "4 gre0 10.2.0.2" "6 gre0 2001:db8:2::2" "4 gre6 10.2.0.2" "6 gre6 2001:db8:2::2"; do
        set -- $combo
        route "$1" "$2"
        ip netns exec "${P}A" ping -$1 -c 1 -W 2 "$3" >/dev/null 2>&1 || true
        v=$(tcp "$3")
        R["$1-$2"]+="$v "
        echo "round $round: inner IPv$1 through $2: $v Gbit/s"
    done
done
m() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | median; }
base=$(m 4-gre0)
echo
echo "TCP, 1 stream, medians of $ROUNDS rounds of ${SECS} s (Gbit/s), encapsulation $ENCAP; ratio to IPv4 inside IPv4:"
printf "%-32s %8s %8s\n" "combination" "Gbit/s" "ratio"
for k in "4-gre0 inner IPv4, outer IPv4" "6-gre0 inner IPv6, outer IPv4" "4-gre6 inner IPv4, outer IPv6" "6-gre6 inner IPv6, outer IPv6"; do
    key=${k%% *}; label=${k#* }
    v=$(m "$key")
    printf "%-32s %8s %8s\n" "$label" "$v" "$(awk "BEGIN { printf \"%.2f\", $v / $base }")"
done
