# Shared by scripts/demo-two-sites.sh and Benchmarks/e2e-tunnel.sh (sourced, not run).
#
# Two sites, each a host behind its own anygated gateway, the gateways'
# uplinks on an "internet" namespace U that routes only the underlay:
#
#   ns ${P}A 10.1.0.2 ─TAP─ ns ${P}G1 198.51.100.1 ─veth─ ns ${P}U ─veth─ 203.0.113.2 ns ${P}G2 ─TAP─ ns ${P}B 10.2.0.2
#
# Each gateway has tunnel gre0 (key 7, encapsulation $ENCAP, default gre;
# 172.16.0.1/30 ⇄ 172.16.0.2/30) and a default route into U. With
# ROUTE_SITES=1 each also routes the other site through the tunnel, and
# with KEEPALIVE set (e.g. "{interval: 2s, retries: 3}") the tunnel sends
# keepalives; WORKERS sets stack.workers (default 1). BACKEND=host gives the uplink to the namespace's kernel and
# the tunnel a host socket; with PROTECT=1 the tunnel is GRE over IPsec
# (IKEv2 with a generated key, AES-GCM-128, ESP in UDP 4500). Uses $P, $DIR and $BIN; daemon PIDs go to SITES_PIDS.
#
# DUAL_STACK=1 (with ROUTE_SITES=1) makes everything dual-stack:
# the sites are also 2001:db8:1::/64 and 2001:db8:2::/64 (hosts ::2), the
# internet also routes 2001:db8:ff01::/64 ⇄ 2001:db8:ff02::/64 (gateways ::1
# and ::2), and a second tunnel gre6 (key 6, 172.16.6.1/30 ⇄ 172.16.6.2/30)
# runs over the IPv6 underlay (encapsulation $ENCAP6, default gre). IPv6
# site traffic then goes inside gre0 (over IPv4) and IPv4 site traffic
# inside gre6 (over IPv6).
#
# Hooks for longer runs (Benchmarks/soak.sh): PROTECT_EXTRA adds lines to
# the protection block (e.g. "      rekey: 30s"), EXTRA_YAML_1 top-level
# keys to gw1's config, and a function sites_pre_start, when defined, runs
# after the namespaces exist and before the daemons start.

SITES_PIDS=()

sites_cleanup() {
    for p in "${SITES_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${SITES_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    for n in A G1 U G2 B; do ip netns del "${P}$n" 2>/dev/null || true; done
    rm -rf "$DIR"
}

sites_config() { # side lan-address underlay-address remote tunnel-address tunnel-peer underlay-gateway uplink other-site
    {
        cat <<YAML
control: {socket: $DIR/gw$1.sock}
state: {directory: $DIR/state$1}
log: {level: warning}
stack: {workers: ${WORKERS:-1}}
interfaces:
  - name: lan0
    attach: {tap: ${P}-t$1}
    addresses: [$2]
YAML
        local o=$((3 - $1))
        [ "${DUAL_STACK:-0}" = 1 ] && echo "    ipv6: {addresses: [\"2001:db8:$1::1/64\"], router-advertisements: {interval: 30s}}"
        if [ "${BACKEND:-stack}" = stack ]; then
            cat <<YAML
  - name: wan0
    attach: {packet: $8}
    addresses: [$3/24]
YAML
            [ "${DUAL_STACK:-0}" = 1 ] && echo "    ipv6: {addresses: [\"2001:db8:ff0$1::$1/64\"]}"
        fi
        cat <<YAML
tunnels:
  - name: gre0
    encapsulation: ${ENCAP:-gre}
    backend: ${BACKEND:-stack}
    local: $3
    remote: $4
    key: 7
    mss-clamp: auto
    addresses: [$5]
YAML
        [ -n "${KEEPALIVE:-}" ] && echo "    keepalive: $KEEPALIVE"
        # PROTECT=1: GRE over IPsec (AES-GCM-128, ESP in UDP 4500); gw1 initiates.
        if [ "${PROTECT:-0}" = 1 ]; then
            [ -f "$DIR/psk" ] || { head -c 24 /dev/urandom | base64 > "$DIR/psk"; chmod 600 "$DIR/psk"; }
            cat <<YAML
    protection:
      local-id: gw$1.example
      remote-id: gw$o.example
      psk-file: $DIR/psk
      esp-proposals: [aes128gcm16]
      start: $([ "$1" = 1 ] && echo initiate || echo respond)
YAML
            if [ -n "${PROTECT_EXTRA:-}" ]; then printf '%s\n' "$PROTECT_EXTRA"; fi
        fi
        [ "${DUAL_STACK:-0}" = 1 ] && cat <<YAML
    ipv6: {addresses: ["fd00:16::$1/64"]}
  - name: gre6
    encapsulation: ${ENCAP6:-gre}
    backend: ${BACKEND:-stack}
    local: "2001:db8:ff0$1::$1"
    remote: "2001:db8:ff0$o::$o"
    key: 6
    mss-clamp: auto
    addresses: [172.16.6.$1/30]
    ipv6: {addresses: ["fd00:66::$1/64"]}
YAML
        local routes=""
        [ "${BACKEND:-stack}" = stack ] && routes="$routes  - {to: 0.0.0.0/0, via: $7}
"
        if [ "${DUAL_STACK:-0}" = 1 ]; then
            routes="$routes  - {to: $9, via: 172.16.6.$o}
  - {to: \"2001:db8:$o::/48\", interface: gre0}
"
            [ "${BACKEND:-stack}" = stack ] && routes="$routes  - {to: \"::/0\", via: \"2001:db8:ff0$1::fe\", interface: wan0}
"
        elif [ "${ROUTE_SITES:-0}" = 1 ]; then
            routes="$routes  - {to: $9, via: $6}
"
        fi
        [ -n "$routes" ] && printf "routes:\n%s" "$routes"
        if [ "$1" = 1 ] && [ -n "${EXTRA_YAML_1:-}" ]; then printf '%s\n' "$EXTRA_YAML_1"; fi
        true
    } > "$DIR/gw$1.yaml"
}

sites_start() {
    for n in A G1 U G2 B; do ip netns add "${P}$n"; ip -n "${P}$n" link set lo up; done
    ip netns exec "${P}U" sysctl -qw net.ipv4.ip_forward=1
    ip -n "${P}G1" link add "${P}-g1u" type veth peer name "${P}-u1" netns "${P}U"
    ip -n "${P}G2" link add "${P}-g2u" type veth peer name "${P}-u2" netns "${P}U"
    local x
    for x in "G1 ${P}-g1u" "U ${P}-u1" "U ${P}-u2" "G2 ${P}-g2u"; do
        set -- $x
        # UNDERLAY_OFFLOADS=off: the underlay veths without GSO/GRO/checksum offload.
        if [ "${UNDERLAY_OFFLOADS:-on}" = off ]; then
            ip netns exec "${P}$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
        fi
        ip -n "${P}$1" link set "$2" up
    done
    ip -n "${P}U" addr add 198.51.100.254/24 dev "${P}-u1"
    ip -n "${P}U" addr add 203.0.113.254/24 dev "${P}-u2"
    if [ "${DUAL_STACK:-0}" = 1 ]; then
        ip netns exec "${P}U" sysctl -qw net.ipv6.conf.all.forwarding=1
        ip -n "${P}U" addr add 2001:db8:ff01::fe/64 dev "${P}-u1" nodad
        ip -n "${P}U" addr add 2001:db8:ff02::fe/64 dev "${P}-u2" nodad
    fi
    if [ "${BACKEND:-stack}" = host ]; then
        ip -n "${P}G1" addr add 198.51.100.1/24 dev "${P}-g1u"; ip -n "${P}G1" route add default via 198.51.100.254
        ip -n "${P}G2" addr add 203.0.113.2/24 dev "${P}-g2u"; ip -n "${P}G2" route add default via 203.0.113.254
        if [ "${DUAL_STACK:-0}" = 1 ]; then
            ip -n "${P}G1" addr add 2001:db8:ff01::1/64 dev "${P}-g1u" nodad; ip -n "${P}G1" -6 route add default via 2001:db8:ff01::fe
            ip -n "${P}G2" addr add 2001:db8:ff02::2/64 dev "${P}-g2u" nodad; ip -n "${P}G2" -6 route add default via 2001:db8:ff02::fe
        fi
    fi
    sites_config 1 10.1.0.1/24 198.51.100.1 203.0.113.2 172.16.0.1/30 172.16.0.2 198.51.100.254 "${P}-g1u" 10.2.0.0/16
    sites_config 2 10.2.0.1/24 203.0.113.2 198.51.100.1 172.16.0.2/30 172.16.0.1 203.0.113.254 "${P}-g2u" 10.1.0.0/16
    if declare -F sites_pre_start >/dev/null; then sites_pre_start; fi
    local side
    for side in 1 2; do
        ip netns exec "${P}G$side" "$BIN/anygated" --config "$DIR/gw$side.yaml" 2>"$DIR/gw$side.log" &
        SITES_PIDS+=($!)
        for _ in $(seq 100); do [ -S "$DIR/gw$side.sock" ] && break; sleep 0.1; done
        [ -S "$DIR/gw$side.sock" ] || { echo "gateway $side did not start:"; cat "$DIR/gw$side.log"; return 1; }
    done
    ip -n "${P}G1" link set "${P}-t1" netns "${P}A"; ip -n "${P}G2" link set "${P}-t2" netns "${P}B"
    ip -n "${P}A" addr add 10.1.0.2/24 dev "${P}-t1"; ip -n "${P}A" link set "${P}-t1" up; ip -n "${P}A" route add default via 10.1.0.1
    ip -n "${P}B" addr add 10.2.0.2/24 dev "${P}-t2"; ip -n "${P}B" link set "${P}-t2" up; ip -n "${P}B" route add default via 10.2.0.1
    if [ "${DUAL_STACK:-0}" = 1 ]; then
        ip -n "${P}A" addr add 2001:db8:1::2/64 dev "${P}-t1" nodad; ip -n "${P}A" -6 route add default via 2001:db8:1::1
        ip -n "${P}B" addr add 2001:db8:2::2/64 dev "${P}-t2" nodad; ip -n "${P}B" -6 route add default via 2001:db8:2::1
    fi
    CTL1="$BIN/anygatectl --socket $DIR/gw1.sock"
    CTL2="$BIN/anygatectl --socket $DIR/gw2.sock"
}
