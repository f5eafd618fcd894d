#!/usr/bin/env bash
# The demo on real interfaces: anygated in its own network namespace,
# two hosts in two more, pings across, then the daemon's view of it all.
# Needs root and /dev/net/tun; everything is removed on exit.
set -euo pipefail
BIN=${1:-.build/release}
P="agd$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-demo.XXXXXX)
. "$(dirname "$0")/netns-topology.sh"
trap ns_cleanup EXIT

echo "== starting anygated in namespace ${P}R with TAPs ${P}-ta (to host A) and ${P}-tb (to host B)"
ns_start "$BIN/anygated"
CTL="$BIN/anygatectl --socket $DIR/control.sock"

echo
echo "== host A (10.1.0.2) pings host B (10.2.0.2) through anygated"
ip netns exec "${P}A" ping -c 3 -i 0.2 -W 2 10.2.0.2
echo
echo "== host B pings host A, and A pings the router"
ip netns exec "${P}B" ping -c 2 -i 0.2 -W 2 10.1.0.2 | tail -2
ip netns exec "${P}A" ping -c 2 -i 0.2 -W 2 10.1.0.1 | tail -2
echo
echo "== a route to nowhere: anygated answers net unreachable"
ip netns exec "${P}A" ping -c 1 -W 2 192.0.2.1 | sed -n 2p || true
echo
echo "== anygatectl show interfaces";  $CTL show interfaces
echo; echo "== anygatectl show routes";   $CTL show routes
echo; echo "== anygatectl show neighbors"; $CTL show neighbors
echo; echo "== anygatectl show stats";     $CTL show stats
echo
echo "== stopping anygated and removing the namespaces"
