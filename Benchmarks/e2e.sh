#!/usr/bin/env bash
# End-to-end forwarding: anygated (release build) between two network
# namespaces, measured in the same run as the Linux kernel forwarding
# between the same two namespaces over veth pairs, and as a minimal C
# TAP-to-TAP forwarder with virtio-net headers (Benchmarks/tapfwd.c: no
# parsing, the ceiling for any TAP-based forwarder here).
#
#   host A ──TAP── anygated (ns R) ──TAP── host B      10.1.0.2 -> 10.2.0.2
#   host A ──TAP── tapfwd (ns F) ──TAP── host B        10.7.0.1 -> 10.7.0.2
#   host A ──veth── Linux router (ns L) ──veth── host B   10.5.0.2 -> 10.6.0.2
#
# With URING=1 a fourth path, Benchmarks/tapfwd-uring.c (tapfwd with io_uring
# instead of epoll and read/write; liburing-dev installed when missing), shows
# whether io_uring beats batched system calls for TAP I/O here.
#
# Reports TCP throughput (iperf3, 1 and 4 streams), 64-byte UDP packets/s
# (iperf3 -u, 22-byte payloads: 64-byte Ethernet frames), ping round trip,
# and the forwarder's CPU during the 1-stream TCP run; ratios to tapfwd
# and to Linux.
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
TAPFWD_PID=
URING_PID=
cleanup() {
    for p in "${IPERF_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$TAPFWD_PID" ] && kill "$TAPFWD_PID" 2>/dev/null || true
    [ -n "$URING_PID" ] && kill "$URING_PID" 2>/dev/null || true
    ip netns del "${P}F" 2>/dev/null || true
    ip netns del "${P}FU" 2>/dev/null || true
    ns_cleanup
}
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
# A reference forwarder: two TAPs on one subnet (10.N.0.1 in A, 10.N.0.2 in B),
# joined by the program in its own namespace; prints its PID.
reference() { # binary namespace-suffix tap-prefix N
    ip netns add "${P}$2"
    ip netns exec "${P}$2" "$1" "${P}-$3a" "${P}-$3b" > "$DIR/$2.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do grep -q ready "$DIR/$2.log" 2>/dev/null && break; sleep 0.1; done
    ip -n "${P}$2" link set "${P}-$3a" netns "${P}A"; ip -n "${P}$2" link set "${P}-$3b" netns "${P}B"
    ip -n "${P}A" addr add "10.$4.0.1/24" dev "${P}-$3a"; ip -n "${P}A" link set "${P}-$3a" up
    ip -n "${P}B" addr add "10.$4.0.2/24" dev "${P}-$3b"; ip -n "${P}B" link set "${P}-$3b" up
    echo "$pid"
}
cc -O2 -o "$DIR/tapfwd" Benchmarks/tapfwd.c
TAPFWD_PID=$(reference "$DIR/tapfwd" F f 7)
PATHS="anygated tapfwd linux"
if [ "${URING:-0}" = 1 ]; then
    [ -f /usr/include/liburing.h ] || { apt-get update -q >/dev/null && apt-get install -y -q liburing-dev >/dev/null; }
    cc -O2 -o "$DIR/tapfwd-uring" Benchmarks/tapfwd-uring.c -luring
    URING_PID=$(reference "$DIR/tapfwd-uring" FU u 8)
    ip netns exec "${P}A" ping -c 1 -W 2 10.8.0.2 >/dev/null
    PATHS="$PATHS uring"
fi
ip netns exec "${P}A" ping -c 1 -W 2 10.2.0.2 >/dev/null
ip netns exec "${P}A" ping -c 1 -W 2 10.6.0.2 >/dev/null
ip netns exec "${P}A" ping -c 1 -W 2 10.7.0.2 >/dev/null

ip netns exec "${P}B" iperf3 -s -1 -p 5201 >/dev/null 2>&1 & IPERF_PIDS+=($!)
sleep 0.5

# Receiver-side TCP throughput in Gbit/s ($2 streams, default 1); with $3,
# also the CPU that process used meanwhile (% of one core) into $DIR/cpu.
tcp() {
    ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true
    sleep 0.3
    local before=0 start=0
    if [ -n "${3:-}" ]; then before=$(awk '{ print $14 + $15 }' "/proc/$3/stat"); start=$(date +%s%N); fi
    ip netns exec "${P}A" iperf3 -c "$1" -p 5301 -P "${2:-1}" -t "$SECS" -f m 2>&1 \
        | awk -v p="${2:-1}" '/receiver/ && (p == 1 || /SUM/) { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.2f", $(i-1) / 1000 } }'
    if [ -n "${3:-}" ]; then
        local after end; after=$(awk '{ print $14 + $15 }' "/proc/$3/stat"); end=$(date +%s%N)
        awk -v t=$((after - before)) -v ns=$((end - start)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%d\n", 100 * t / hz / (ns / 1e9) }' >> "$DIR/cpu-$3"
    fi
}
# Average ping round trip in µs (20 pings, 10 ms apart).
rtt() {
    ip netns exec "${P}A" ping -c 20 -i 0.01 -q "$1" 2>&1 | awk -F'/' '/^rtt/ { printf "%d", $5 * 1000 }'
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
declare -A ADDR=([anygated]=10.2.0.2 [tapfwd]=10.7.0.2 [linux]=10.6.0.2 [uring]=10.8.0.2)
declare -A PID=([anygated]=$DAEMON_PID [tapfwd]=$TAPFWD_PID [linux]= [uring]=$URING_PID)
for path in $PATHS; do for m in t1 t4 u rtt; do : > "$DIR/$path-$m"; done; : > "$DIR/cpu-${PID[$path]:-none}"; done
for r in $(seq "$ROUNDS"); do
    line="   round $r:"
    for path in $PATHS; do
        a=${ADDR[$path]}
        echo "$(tcp "$a" 1 "${PID[$path]}")" >> "$DIR/$path-t1"
        echo "$(tcp "$a" 4)" >> "$DIR/$path-t4"
        echo "$(udp "$a")" >> "$DIR/$path-u"
        echo "$(rtt "$a")" >> "$DIR/$path-rtt"
        line="$line $path $(tail -1 "$DIR/$path-t1")/$(tail -1 "$DIR/$path-t4") Gbit/s $(tail -1 "$DIR/$path-u") pps $(tail -1 "$DIR/$path-rtt") µs;"
    done
    echo "$line"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
printf "%-30s %10s %10s %10s %12s %10s\n" "measurement (median)" "anygated" "tapfwd" "linux" "÷ tapfwd" "÷ linux"
for m in t1 t4 u rtt; do
    case $m in t1) name="TCP, 1 stream (Gbit/s)";; t4) name="TCP, 4 streams (Gbit/s)";; u) name="UDP 64-byte (packets/s)";; rtt) name="ping round trip (µs)";; esac
    A=$(median < "$DIR/anygated-$m"); F=$(median < "$DIR/tapfwd-$m"); L=$(median < "$DIR/linux-$m")
    printf "%-30s %10s %10s %10s %12s %10s\n" "$name" "$A" "$F" "$L" "$(ratio "$A" "$F")" "$(ratio "$A" "$L")"
    if [ "${URING:-0}" = 1 ]; then
        Q=$(median < "$DIR/uring-$m")
        printf "%-30s %10s (tapfwd-uring ÷ tapfwd %s)\n" "  tapfwd-uring" "$Q" "$(ratio "$Q" "$F")"
    fi
done
printf "%-30s %10s %10s %10s\n" "CPU during TCP 1 stream (%)" "$(median < "$DIR/cpu-$DAEMON_PID")" "$(median < "$DIR/cpu-$TAPFWD_PID")" "-"
echo "== anygated after the run:"
.build/release/anygatectl --socket "$DIR/control.sock" show interfaces
