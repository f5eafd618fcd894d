#!/usr/bin/env bash
# End-to-end: the stack's own TCP (scripts/netns-topology.sh: host A ─TAP─
# anygated ─TAP─ host B, with the bandwidth-test responder on 10.1.0.1:5201).
#
# (a) Churn: a Linux client in A opens and closes connections as fast as it
#     goes (Benchmarks/churn.c: ask for 1 byte, read to EOF — the server
#     closes first and holds TIME-WAIT — close) for SECONDS, against the
#     stack with VTW on, with VTW off, and against a Linux listener (churn.c
#     as server in a namespace L on a veth from A). Reports connections a
#     second, the server's CPU time per 1000 connections (the daemon's
#     utime+stime from /proc; for Linux, the whole namespace's softirq and
#     the server process cannot be split out, so its row gives the rate only),
#     TIME-WAIT connections at the end and the memory each takes.
# (b) Bulk: the stack sends to a Linux reader in A for SECONDS (download
#     mode), beside iperf3 from A to B forwarded by the same daemon.
#     Churn runs twice: from one client address (its ephemeral ports come
#     back within TIME-WAIT and reopen four-tuples under RFC 6191, so about
#     14 000 TIME-WAITs are held), and from SOURCES addresses (default 16),
#     so that every connection's TIME-WAIT is held to its end.
# Medians of ROUNDS rounds. Usage: [SOURCES=N] Benchmarks/e2e-tcp.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
SOURCES=${SOURCES:-16}   # client addresses for the second churn
[ "$(id -u)" = 0 ] || { echo "e2e-tcp.sh needs root"; exit 1; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
. scripts/netns-topology.sh
P="agc$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-tcp.XXXXXX)
trap ns_cleanup EXIT
cc -O2 -o "$DIR/churn" Benchmarks/churn.c
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
metric() { ip netns exec "${P}A" curl -sS -m 5 http://10.1.0.1:9100/metrics | awk -v m="$1" 'index($0, m " ") == 1 { print $2 }'; }
TICK=$(getconf CLK_TCK)
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; $(nproc) cores; $(uname -r); $(date -u +%FT%TZ)"
export EXTRA_YAML='services: {bandwidth-test: {listen: "stack:10.1.0.1:5201"}}
metrics: {listen: "stack:10.1.0.1:9100"}'
stop_daemon() {
    kill -TERM "$DAEMON_PID"; for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    for n in A B R; do ip netns del "${P}$n" 2>/dev/null || true; done
    rm -f "$DIR/control.sock"
}
# Rounds of churn against the running daemon; extra arguments go to the
# client (FROM COUNT: spread over several source addresses).
churn_rounds() {
    local label=$1; shift
    : > "$DIR/rate" ; : > "$DIR/cpu"; : > "$DIR/tw"; : > "$DIR/mem"
    for r in $(seq "$ROUNDS"); do
        sleep 11   # the last round's TIME-WAIT (local class: 10 s) is over
        c0=$(cpu_ticks "$DAEMON_PID"); m0=$(rss_kib "$DAEMON_PID")
        read -r done failed < <(ip netns exec "${P}A" "$DIR/churn" client 10.1.0.1 5201 "$SECS" "$@")
        c1=$(cpu_ticks "$DAEMON_PID"); m1=$(rss_kib "$DAEMON_PID")
        tw=$(( $(metric 'anygate_tcp_time_wait{as="vestige"}') + $(metric 'anygate_tcp_time_wait{as="connection"}') ))
        awk -v d="$done" -v s="$SECS" 'BEGIN { printf "%.0f\n", d / s }' >> "$DIR/rate"
        awk -v c=$((c1 - c0)) -v t="$TICK" -v d="$done" 'BEGIN { printf "%.1f\n", c * 1000 / t / (d / 1000) }' >> "$DIR/cpu"
        echo "$tw" >> "$DIR/tw"
        awk -v m=$((m1 - m0)) -v tw="$tw" 'BEGIN { if (tw > 0) printf "%.0f\n", m * 1024 / tw; else print 0 }' >> "$DIR/mem"
        [ "$failed" = 0 ] || echo "   (round $r: $failed failed connections)"
    done
    echo "$label: $(median < "$DIR/rate") connections/s, $(median < "$DIR/cpu") ms CPU per 1000 connections, $(median < "$DIR/tw") in TIME-WAIT at the end, RSS growth $(median < "$DIR/mem") B per TIME-WAIT connection"
}
for vtw in true false; do
    export STACK_EXTRA="tcp: {vtw: $vtw, max-connections: 400000, time-wait: {max: 400000}}"
    ns_start .build/release/anygated
    ip netns exec "${P}A" ping -c 1 -W 2 10.1.0.1 >/dev/null
    for i in $(seq 0 $((SOURCES - 1))); do ip -n "${P}A" addr add "10.1.0.$((100 + i))/24" dev "${P}-ta"; done
    churn_rounds "churn against the stack, vtw: $vtw, one client address"
    churn_rounds "churn against the stack, vtw: $vtw, $SOURCES client addresses" 10.1.0.100 "$SOURCES"
    if [ "$vtw" = true ]; then
        # (b) Bulk: the stack sends for SECS seconds to a reader in A.
        : > "$DIR/bulk"; : > "$DIR/fwd"
        for r in $(seq "$ROUNDS"); do
            ip netns exec "${P}A" python3 - "$SECS" >> "$DIR/bulk" <<'PY'
import socket, sys, time
secs = float(sys.argv[1])
s = socket.create_connection(("10.1.0.1", 5201))
s.sendall(b"anygate-bandwidth-test 1 download 0\n")
buf = bytearray(1 << 20); got = 0; t0 = time.monotonic()
while time.monotonic() - t0 < secs:
    n = s.recv_into(buf)
    if not n: break
    got += n
print("%.3f" % (got * 8 / (time.monotonic() - t0) / 1e9))
PY
            ip netns exec "${P}B" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
            ip netns exec "${P}A" iperf3 -c 10.2.0.2 -p 5301 -t "$SECS" -f m 2>&1 \
                | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") { printf "%.3f\n", $(i-1) / 1000 } }' >> "$DIR/fwd"
        done
        echo "bulk: stack → Linux over the TAP $(median < "$DIR/bulk") Gbit/s; iperf3 A → B forwarded by the same daemon $(median < "$DIR/fwd") Gbit/s"
        echo "vestige table: $(metric 'anygate_tcp_vestige_operations_total{op="kill"}') evicted, $(metric 'anygate_tcp_vestiges_reopened_total') four-tuples reopened (RFC 6191)"
    fi
    stop_daemon
done
# The same churn against Linux: a listener in L, on a veth from A.
ip netns add "${P}A"; ip netns add "${P}L"
ip -n "${P}A" link set lo up; ip -n "${P}L" link set lo up
ip -n "${P}A" link add "${P}-la" type veth peer name "${P}-ll" netns "${P}L"
ip -n "${P}A" addr add 10.9.0.1/24 dev "${P}-la"; ip -n "${P}L" addr add 10.9.0.2/24 dev "${P}-ll"
ip -n "${P}A" link set "${P}-la" up; ip -n "${P}L" link set "${P}-ll" up
ip netns exec "${P}L" "$DIR/churn" server 10.9.0.2 5201 & SERVER=$!
sleep 0.5
for i in $(seq 0 $((SOURCES - 1))); do ip -n "${P}A" addr add "10.9.0.$((100 + i))/24" dev "${P}-la"; done
linux_rounds() {
    local label=$1; shift
    : > "$DIR/rate"; : > "$DIR/tw"
    for r in $(seq "$ROUNDS"); do
        sleep 2
        read -r done failed < <(ip netns exec "${P}A" "$DIR/churn" client 10.9.0.2 5201 "$SECS" "$@")
        awk -v d="$done" -v s="$SECS" 'BEGIN { printf "%.0f\n", d / s }' >> "$DIR/rate"
        ip netns exec "${P}L" ss -tan state time-wait | tail -n +2 | wc -l >> "$DIR/tw"
    done
    echo "$label: $(median < "$DIR/rate") connections/s, $(median < "$DIR/tw") in TIME-WAIT at the end (Linux TIME-WAIT: 60 s)"
}
linux_rounds "churn against Linux, one client address"
linux_rounds "churn against Linux, $SOURCES client addresses" 10.9.0.100 "$SOURCES"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
TWSIZE=$(awk '$1 == "tw_sock_TCP" { print $4 }' /proc/slabinfo 2>/dev/null || echo "?")
echo "Linux tw_sock_TCP object: $TWSIZE B"
ip netns del "${P}L"
