# Shared by scripts/demo-namespaces.sh and Benchmarks/e2e.sh (sourced, not run).
#
# Builds, with the per-run prefix $P:
#   ns ${P}A  host A: ${P}-ta 10.1.0.2/24 (TAP to anygated)
#   ns ${P}B  host B: ${P}-tb 10.2.0.2/24 (TAP to anygated)
#   ns ${P}R  anygated, attached to both TAPs
# and writes the daemon's config to $DIR/anygate.yaml ($WORKERS workers, default 1;
# TWINS=1: a host twin of each interface, tw-lan0 and tw-lan1, in ${P}R;
# STACK_EXTRA: more keys of stack:, EXTRA_YAML: more top-level keys).
# With one worker the links are dual-stack: A 2001:db8:1::2/64, B 2001:db8:2::2/64,
# the gateway ::1 on each (IPv6 is not yet there with several workers).

ns_cleanup() {
    if [ -n "${DAEMON_PID:-}" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    for n in A B R L; do ip netns del "${P}$n" 2>/dev/null || true; done
    rm -rf "$DIR"
}

ns_config() {
    local v6a="" v6b=""
    if [ "${WORKERS:-1}" = 1 ]; then
        v6a="    ipv6: {addresses: [2001:db8:1::1/64]}"
        v6b="    ipv6: {addresses: [2001:db8:2::1/64]}"
    fi
    cat > "$DIR/anygate.yaml" <<YAML
control: {socket: $DIR/control.sock}
state: {directory: $DIR/state}
log: {level: warning}
stack: {workers: ${WORKERS:-1}${STACK_EXTRA:+, $STACK_EXTRA}}
${TWINS:+host-twins: all}
${EXTRA_YAML:-}
interfaces:
  - name: lan0
    attach: {tap: ${P}-ta}
    addresses: [10.1.0.1/24]
$v6a
  - name: lan1
    attach: {tap: ${P}-tb}
    addresses: [10.2.0.1/24]
$v6b
YAML
}

# Starts anygated ($1 = binary) in ${P}R and moves its TAPs to the hosts.
ns_start() {
    local bin=$1
    for n in A B R; do ip netns add "${P}$n"; ip -n "${P}$n" link set lo up; done
    ns_config
    ip netns exec "${P}R" "$bin" --config "$DIR/anygate.yaml" 2>"$DIR/anygated.log" &
    DAEMON_PID=$!
    for _ in $(seq 100); do [ -S "$DIR/control.sock" ] && break; sleep 0.1; done
    [ -S "$DIR/control.sock" ] || { echo "anygated did not start:"; cat "$DIR/anygated.log"; return 1; }
    ip -n "${P}R" link set "${P}-ta" netns "${P}A"
    ip -n "${P}A" addr add 10.1.0.2/24 dev "${P}-ta"
    ip -n "${P}A" link set "${P}-ta" up
    ip -n "${P}A" route add default via 10.1.0.1
    ip -n "${P}R" link set "${P}-tb" netns "${P}B"
    ip -n "${P}B" addr add 10.2.0.2/24 dev "${P}-tb"
    ip -n "${P}B" link set "${P}-tb" up
    ip -n "${P}B" route add 10.1.0.0/16 via 10.2.0.1
    if [ "${WORKERS:-1}" = 1 ]; then
        for h in A B; do ip netns exec "${P}$h" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; done
        ip -n "${P}A" addr add 2001:db8:1::2/64 dev "${P}-ta" nodad
        ip -n "${P}A" -6 route add default via 2001:db8:1::1
        ip -n "${P}B" addr add 2001:db8:2::2/64 dev "${P}-tb" nodad
        ip -n "${P}B" -6 route add 2001:db8:1::/48 via 2001:db8:2::1
    fi
}
