#!/usr/bin/env bash
# End-to-end GRE: two anygated gateways (release build), each in its own
# namespace, joined over an underlay namespace that routes between them,
# measured in the same run as OpenVPN 2.6 without cipher over the same
# shape of network:
#
#   site A 10.1.0.2 ─TAP─ gw1 ─veth─ U ─veth─ gw2 ─TAP─ site B 10.2.0.2
#   site A 10.11.0.2 ─veth─ ovpn1 ─veth─ OU ─veth─ ovpn2 ─veth─ site B 10.12.0.2
#
# The same daemons first forward site to site plainly across the underlay,
# then through the GRE tunnel (routes switched with anygatectl). The stack
# owns the underlay (packet attachments); ENCAP=gre-in-udp switches the
# encapsulation; BACKEND=host gives the underlay to the gateways' kernels
# and the tunnels host sockets (no plain path then: the stacks have no
# uplink of their own). OpenVPN: p2p, UDP, `--cipher none --auth none
# --disable-dco`, a tun device in each gateway namespace (installed with
# apt-get when missing). Reports, per path, TCP (1 stream) with the
# sender's retransmissions, 64-byte UDP packets/s, and ratios; ROUNDS
# rounds, medians. After the tunnel runs, each gateway's uplink frames as
# the kernel counted them are compared with what the daemon received plus
# the kernel-side drops it reports.
# Needs root, /dev/net/tun and iperf3.  Usage: Benchmarks/e2e-tunnel.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
ENCAP=${ENCAP:-gre}
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
command -v openvpn >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q openvpn >/dev/null; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="agt$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-tunnel.XXXXXX)
BIN=.build/release
. scripts/two-sites-topology.sh
OVPN_PIDS=()
cleanup() {
    for p in "${OVPN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in OA O1 OU O2 OB; do ip netns del "${P}$n" 2>/dev/null || true; done
    sites_cleanup
}
trap cleanup EXIT

# The gateways start without routes to the other site: the plain path goes
# through U, which routes the sites for this comparison.
sites_start
ip -n "${P}U" route add 10.1.0.0/16 via 198.51.100.1
ip -n "${P}U" route add 10.2.0.0/16 via 203.0.113.2

# OpenVPN's network: the same shape, the kernel routing each site into a tun.
for n in OA O1 OU O2 OB; do ip netns add "${P}$n"; ip -n "${P}$n" link set lo up; done
for n in O1 OU O2; do ip netns exec "${P}$n" sysctl -qw net.ipv4.ip_forward=1; done
link() { # ns1 if1 addr1 ns2 if2 addr2
    ip -n "${P}$1" link add "$2" type veth peer name "$5" netns "${P}$4"
    ip -n "${P}$1" addr add "$3" dev "$2"; ip -n "${P}$1" link set "$2" up
    ip -n "${P}$4" addr add "$6" dev "$5"; ip -n "${P}$4" link set "$5" up
}
link OA "${P}-oa" 10.11.0.2/24 O1 "${P}-o1a" 10.11.0.1/24
link O1 "${P}-o1u" 198.51.100.1/24 OU "${P}-ou1" 198.51.100.254/24
link O2 "${P}-o2u" 203.0.113.2/24 OU "${P}-ou2" 203.0.113.254/24
link O2 "${P}-o2b" 10.12.0.1/24 OB "${P}-ob" 10.12.0.2/24
ip -n "${P}OA" route add default via 10.11.0.1
ip -n "${P}OB" route add default via 10.12.0.1
ip -n "${P}O1" route add 203.0.113.0/24 via 198.51.100.254
ip -n "${P}O2" route add 198.51.100.0/24 via 203.0.113.254
ovpn() { # ns local remote tun-local tun-remote other-site
    ip netns exec "${P}$1" openvpn --dev tun0 --proto udp --local "$2" --remote "$3" --port 1194 --lport 1194 \
        --ifconfig "$4" "$5" --route "$6" 255.255.0.0 --cipher none --auth none --disable-dco \
        --verb 1 --log "$DIR/openvpn-$1.log" &
    OVPN_PIDS+=($!)
}
ovpn O1 198.51.100.1 203.0.113.2 172.17.0.1 172.17.0.2 10.12.0.0
ovpn O2 203.0.113.2 198.51.100.1 172.17.0.2 172.17.0.1 10.11.0.0
for _ in $(seq 100); do ip netns exec "${P}OA" ping -c 1 -W 1 10.12.0.2 >/dev/null 2>&1 && break; sleep 0.2; done

# TCP, 1 stream: "Gbit/s retransmissions" (receiver throughput, sender retransmits).
tcp() { # from-ns to-ns address
    ip netns exec "${P}$2" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}$1" iperf3 -c "$3" -p 5301 -t "$SECS" -f m 2>&1 | awk '
        /sender/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") retr = $(i+1) }
        /receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") rate = $(i-1) / 1000 }
        END { printf "%.2f %d", rate, retr }'
}
udp() { # from-ns to-ns address
    ip netns exec "${P}$2" iperf3 -s -D -1 -p 5401 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}$1" iperf3 -c "$3" -p 5401 -u -b 0 -l 22 -t "$SECS" 2>&1 \
        | awk -v secs="$SECS" '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, a, "/"); printf "%d", (a[2] - a[1]) / secs } }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

[ "${BACKEND:-stack}" = stack ] && ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
for path in plain tunnel openvpn; do : > "$DIR/$path-t"; : > "$DIR/$path-r"; : > "$DIR/$path-u"; done
measure() { # path from to address
    local t; t=$(tcp "$2" "$3" "$4")
    echo "${t% *}" >> "$DIR/$1-t"; echo "${t#* }" >> "$DIR/$1-r"
    udp "$2" "$3" "$4" >> "$DIR/$1-u"; echo >> "$DIR/$1-u"
}
BACKEND=${BACKEND:-stack}
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; encapsulation $ENCAP, $BACKEND backend; $(nproc) cores; $(uname -r)"
for r in $(seq "$ROUNDS"); do
    if [ "$BACKEND" = stack ]; then measure plain A B 10.2.0.2; else echo 0 >> "$DIR/plain-t"; echo 0 >> "$DIR/plain-r"; echo 0 >> "$DIR/plain-u"; fi
    # Both directions into the tunnel, then back to plain for the next round.
    $CTL1 route add 10.2.0.0/16 via 172.16.0.2 >/dev/null
    $CTL2 route add 10.1.0.0/16 via 172.16.0.1 >/dev/null
    ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
    measure tunnel A B 10.2.0.2
    $CTL1 route del 10.2.0.0/16 via 172.16.0.2 >/dev/null
    $CTL2 route del 10.1.0.0/16 via 172.16.0.1 >/dev/null
    measure openvpn OA OB 10.12.0.2
    echo "   round $r: plain $(tail -1 "$DIR/plain-t") Gbit/s; tunnel $(tail -1 "$DIR/tunnel-t") Gbit/s ($(tail -1 "$DIR/tunnel-r") retr);" \
         "openvpn $(tail -1 "$DIR/openvpn-t") Gbit/s ($(tail -1 "$DIR/openvpn-r") retr)"
done
printf "%-34s %10s %10s %10s %16s\n" "measurement (median)" "plain" "tunnel" "openvpn" "tunnel÷openvpn"
T=(); for path in plain tunnel openvpn; do T+=("$(median < "$DIR/$path-t")"); done
R=(); for path in plain tunnel openvpn; do R+=("$(median < "$DIR/$path-r")"); done
U=(); for path in plain tunnel openvpn; do U+=("$(median < "$DIR/$path-u")"); done
printf "%-34s %10s %10s %10s %16s\n" "TCP, 1 stream (Gbit/s)" "${T[0]}" "${T[1]}" "${T[2]}" "$(ratio "${T[1]}" "${T[2]}")"
printf "%-34s %10s %10s %10s\n" "TCP retransmissions (sender)" "${R[0]}" "${R[1]}" "${R[2]}"
printf "%-34s %10s %10s %10s %16s\n" "UDP 64-byte (packets/s)" "${U[0]}" "${U[1]}" "${U[2]}" "$(ratio "${U[1]}" "${U[2]}")"
# Every frame that reached a gateway's uplink: received by the daemon, or dropped by the kernel and reported.
for side in 1 2; do
    [ "$BACKEND" = stack ] || break
    ctl=$([ $side = 1 ] && echo "$CTL1" || echo "$CTL2")
    kernel=$(ip -n "${P}G$side" -s -j link show "${P}-g${side}u" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])')
    daemon=$($ctl --json show interfaces | python3 -c '
import json, sys
w = [i for i in json.load(sys.stdin) if i["name"] == "wan0"][0]
print(w["counters"]["rxPackets"] + w["drops"].get("kernel-rx-queue", 0))')
    echo "gw$side uplink: kernel counted $kernel frames; daemon received + kernel drops it reports: $daemon"
done
$CTL1 show tunnels
echo "== gw1"; $CTL1 show interfaces
echo "== gw2"; $CTL2 show interfaces
