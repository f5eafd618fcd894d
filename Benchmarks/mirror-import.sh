#!/usr/bin/env bash
# Route import through the netlink mirror: anygated (release build) in a
# namespace mirrors a veth and imports `proto static` routes from the main
# table; `ip -batch` adds N /24 routes via one next hop. Reports how long the
# kernel took to take the batch, how long until `anygatectl show mirror`
# counts all N routes (measured from the start of the batch), and the
# daemon's resident memory before and after.
# Needs root. Usage: Benchmarks/mirror-import.sh [N ...]   (default 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "mirror-import.sh needs root"; exit 1; }
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="agm$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-mirror-bench.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    ip netns del "${P}M" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
ctl() { .build/release/anygatectl --socket "$DIR/control.sock" "$@"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "| routes | kernel took the batch | stack converged | RSS before | RSS after | RSS per route | FIB (all routes) |"
echo "|---|---|---|---|---|---|---|"
for N in "${SIZES[@]}"; do
    ip netns add "${P}M"
    ip -n "${P}M" link set lo up
    ip -n "${P}M" link add "${P}-m0" type veth peer name "${P}-m1"
    ip -n "${P}M" link set "${P}-m0" up; ip -n "${P}M" link set "${P}-m1" up
    ip -n "${P}M" addr add 192.0.2.10/24 dev "${P}-m0"
    cat > "$DIR/anygate.yaml" <<YAML
control: {socket: $DIR/control.sock}
state: {directory: $DIR/state}
interfaces:
  - name: wan0
    attach: {mirror: ${P}-m0}
mirror:
  routes: {table: main, protocols: [static]}
YAML
    awk -v n="$N" 'BEGIN { for (k = 0; k < n; k++) printf "route add %d.%d.%d.0/24 via 192.0.2.1 proto static\n", 11 + int(k / 65536), int(k / 256) % 256, k % 256 }' > "$DIR/routes.batch"
    ip netns exec "${P}M" .build/release/anygated --config "$DIR/anygate.yaml" > "$DIR/anygated.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do ctl show mirror >/dev/null 2>&1 && break; sleep 0.1; done
    before=$(rss_mb "$PID")
    t0=$(now)
    ip -n "${P}M" -batch "$DIR/routes.batch"
    t1=$(now)
    converged=""
    for _ in $(seq 2400); do
        got=$(ctl show mirror 2>/dev/null | awk '$1 ~ /^[0-9]+\/[a-z0-9]+$/ {s += $2} END {print s + 0}') || got=busy
        if [ "$got" = "$N" ]; then converged=$(now); break; fi
        sleep 0.05
    done
    after=$(rss_mb "$PID")
    fib=$(ctl show mirror 2>/dev/null | sed -n "s/^FIB .*, \(.*\) MiB/\1/p") || fib="?"
    resyncs=$(ctl show mirror 2>/dev/null | sed -n 's/.*resyncs \([0-9]*\).*/\1/p') || resyncs="?"
    if [ -z "$converged" ]; then
        echo "| $N | $(calc %.2f "$t1 - $t0") s | not converged after 120 s ($got routes) | $before MB | $after MB | - | $fib MiB |"
    else
        echo "| $N | $(calc %.2f "$t1 - $t0") s | $(calc %.2f "$converged - $t0") s | $before MB | $after MB | $(calc %.0f "($after - $before) * 1048576 / $N") B | $fib MiB |"
    fi
    echo "  (resyncs: $resyncs, including the start-up sync)"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    ip netns del "${P}M"
done
