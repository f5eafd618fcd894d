#!/usr/bin/env bash
# End-to-end encrypted tunnels, all in one run, each between two gateways
# in namespaces with a site host behind each and an "internet" namespace
# routing between them (the same shape for every row):
#
#   anygated, plaintext GRE                 (scripts/two-sites-topology.sh)
#   anygated, plaintext GRE-in-UDP (the same UDP super-frame path ESP in UDP takes)
#   anygated, GRE over IPsec (AES-GCM-128, IKEv2, ESP in UDP 4500; PROTECT=1)
#   the same with stack.workers: 2 on both gateways (the SA in one worker's
#   replica, the other handing it what needs the SA)
#   OpenVPN 2.6, AES-256-GCM, TLS with self-signed certificates (peer fingerprints), --disable-dco
#   strongSwan 5.9.8, userspace ESP (kernel-libipsec), AES-GCM-128, tunnel mode
#   wireguard-go (Debian's build)
#
# anygated runs the release build; its two configurations are started in
# turn each round (the same daemons cannot hold a plain and a protected GRE
# tunnel to one peer). Reports TCP, 1 stream, receiver Gbit/s and the
# sender's retransmissions, medians of ROUNDS rounds of SECONDS each, and
# the ratios the issue asks about. Needs root, /dev/net/tun; installs
# openvpn, wireguard-go, wireguard-tools and strongSwan with apt-get when missing.
# Usage: Benchmarks/e2e-ipsec.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
need=""
for p in openvpn wireguard-go wireguard-tools strongswan-charon strongswan-swanctl libcharon-extra-plugins \
         libstrongswan-standard-plugins libstrongswan-extra-plugins iperf3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
[ -z "$need" ] || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null; }
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="agi$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-e2e-ipsec.XXXXXX)
BIN=.build/release
ROUTE_SITES=1
. scripts/two-sites-topology.sh
PEER_PIDS=()
cleanup() {
    for p in "${PEER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PEER_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for f in O S W; do for n in A 1 U 2 B; do ip netns del "${P}$f$n" 2>/dev/null || true; done; done
    sites_cleanup
    rm -rf "$DIR"
}
trap cleanup EXIT

# One peer network: ${P}${f}A 10.x1.0.2 ─ ${f}1 ─ ${f}U ─ ${f}2 ─ ${f}B 10.x2.0.2,
# the gateways 198.51.100.1 and 203.0.113.2 on the internet namespace.
peer_net() { # family-letter site-prefix (e.g. O 10.11)
    local f=$1 s=$2
    for n in A 1 U 2 B; do ip netns add "${P}$f$n"; ip -n "${P}$f$n" link set lo up; done
    for n in 1 U 2; do ip netns exec "${P}$f$n" sysctl -qw net.ipv4.ip_forward=1; done
    link() { # ns1 if1 addr1 ns2 if2 addr2
        ip -n "${P}$1" link add "$2" type veth peer name "$5" netns "${P}$4"
        ip -n "${P}$1" addr add "$3" dev "$2"; ip -n "${P}$1" link set "$2" up
        ip -n "${P}$4" addr add "$6" dev "$5"; ip -n "${P}$4" link set "$5" up
    }
    link "${f}A" "${P}-${f}a" "${s}1.0.2/24" "${f}1" "${P}-${f}1a" "${s}1.0.1/24"
    link "${f}1" "${P}-${f}1u" 198.51.100.1/24 "${f}U" "${P}-${f}u1" 198.51.100.254/24
    link "${f}2" "${P}-${f}2u" 203.0.113.2/24 "${f}U" "${P}-${f}u2" 203.0.113.254/24
    link "${f}2" "${P}-${f}2b" "${s}2.0.1/24" "${f}B" "${P}-${f}b" "${s}2.0.2/24"
    ip -n "${P}${f}A" route add default via "${s}1.0.1"
    ip -n "${P}${f}B" route add default via "${s}2.0.1"
    ip -n "${P}${f}1" route add default via 198.51.100.254
    ip -n "${P}${f}2" route add default via 203.0.113.254
}

# OpenVPN: TLS between two self-signed certificates, each pinned by fingerprint.
peer_net O 10.1
for side in 1 2; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/o$side.key" -out "$DIR/o$side.crt" \
        -days 2 -subj "/CN=ovpn$side" 2>/dev/null
done
fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
ovpn() { # side local remote tun-local tun-remote other-site role
    local o=$((3 - $1))
    ip netns exec "${P}O$1" openvpn --dev tun0 --proto udp --local "$2" --remote "$3" --port 1194 --lport 1194 \
        --ifconfig "$4" "$5" --route "$6" 255.255.0.0 --"$7" --cert "$DIR/o$1.crt" --key "$DIR/o$1.key" --dh none \
        --peer-fingerprint "$(fp "$DIR/o$o.crt")" --data-ciphers AES-256-GCM --cipher AES-256-GCM --disable-dco \
        --verb 1 --log "$DIR/openvpn-$1.log" &
    PEER_PIDS+=($!)
}
ovpn 1 198.51.100.1 203.0.113.2 172.17.0.1 172.17.0.2 10.12.0.0 tls-server
ovpn 2 203.0.113.2 198.51.100.1 172.17.0.2 172.17.0.1 10.11.0.0 tls-client

# strongSwan with userspace ESP in each gateway, a private /run each.
peer_net S 10.3
charon() { # side local remote local-ts remote-ts
    mkdir -p "$DIR/s$1/run" "$DIR/s$1/etc/x509"
    cat > "$DIR/s$1/strongswan.conf" <<CONF
charon {
  load_modular = no
  load = random nonce kdf aes sha1 sha2 hmac gcm curve25519 openssl kernel-libipsec kernel-netlink socket-default vici updown
  plugins { vici { socket = unix://$DIR/s$1/run/vici.sock } }
  install_routes = yes
}
CONF
    cat > "$DIR/s$1/etc/swanctl.conf" <<CONF
connections { c { local_addrs = $2
  remote_addrs = $3
  version = 2
  proposals = aes128gcm16-prfsha256-curve25519
  mobike = no
  local { auth = psk
    id = s$1 }
  remote { auth = psk
    id = s$((3 - $1)) }
  children { net { local_ts = $4
    remote_ts = $5
    esp_proposals = aes128gcm16 } } } }
secrets { ike { id-1 = s1
  id-2 = s2
  secret = "e2e-strongswan-key" } }
CONF
    ip netns exec "${P}S$1" sh -c "mount --bind $DIR/s$1/run /run && exec env STRONGSWAN_CONF=$DIR/s$1/strongswan.conf /usr/lib/ipsec/charon" \
        >"$DIR/charon$1.log" 2>&1 &
    PEER_PIDS+=($!)
    for _ in $(seq 100); do [ -S "$DIR/s$1/run/vici.sock" ] && break; sleep 0.1; done
    ip netns exec "${P}S$1" swanctl --load-all --file "$DIR/s$1/etc/swanctl.conf" --uri "unix://$DIR/s$1/run/vici.sock" >/dev/null 2>&1
}
charon 1 198.51.100.1 203.0.113.2 10.31.0.0/16 10.32.0.0/16
charon 2 203.0.113.2 198.51.100.1 10.32.0.0/16 10.31.0.0/16
ip netns exec "${P}S1" swanctl --initiate --child net --uri "unix://$DIR/s1/run/vici.sock" >/dev/null 2>&1 || true

# wireguard-go in each gateway, a private /run each.
peer_net W 10.4
( umask 077; for side in 1 2; do wg genkey > "$DIR/w$side.key"; wg pubkey < "$DIR/w$side.key" > "$DIR/w$side.pub"; done )
for side in 1 2; do
    mkdir -p "$DIR/w$side/run"
    ip netns exec "${P}W$side" sh -c "mount --bind $DIR/w$side/run /run && exec wireguard-go -f wg0" >"$DIR/wg$side.log" 2>&1 &
    PEER_PIDS+=($!)
done
wgset() { # side local-tunnel remote-endpoint remote-site
    local o=$((3 - $1))
    for _ in $(seq 50); do [ -S "$DIR/w$1/run/wireguard/wg0.sock" ] && break; sleep 0.1; done
    ip netns exec "${P}W$1" sh -c "mount --bind $DIR/w$1/run /run && wg set wg0 private-key $DIR/w$1.key listen-port 51820 \
        peer \$(cat $DIR/w$o.pub) endpoint $3:51820 allowed-ips 172.18.0.0/24,$4"
    ip -n "${P}W$1" addr add "$2/24" dev wg0
    ip -n "${P}W$1" link set wg0 up
    ip -n "${P}W$1" route add "$4" dev wg0
}
wgset 1 172.18.0.1 203.0.113.2 10.42.0.0/16
wgset 2 172.18.0.2 198.51.100.1 10.41.0.0/16

# TCP, 1 stream: "Gbit/s retransmissions".
tcp() { # from-ns to-ns address
    ip netns exec "${P}$2" iperf3 -s -D -1 -p 5301 >/dev/null 2>&1 || true; sleep 0.3
    ip netns exec "${P}$1" iperf3 -c "$3" -p 5301 -t "$SECS" -f m 2>&1 | awk '
        /sender/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") retr = $(i+1) }
        /receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") rate = $(i-1) / 1000 }
        END { printf "%.3f %d", rate, retr }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
reach() { for _ in $(seq 100); do ip netns exec "${P}$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }

anygated_round() { # protect [encapsulation [workers]] → "Gbit/s retr" (in a subshell: its own DIR, which sites_cleanup removes)
    local DIR="$DIR/sites"
    mkdir -p "$DIR"
    PROTECT=$1 ENCAP=${2:-gre} WORKERS=${3:-1} sites_start >/dev/null
    if [ "$1" = 1 ]; then
        for _ in $(seq 100); do "$BIN/anygatectl" --socket "$DIR/gw1.sock" show sas 2>/dev/null | grep -q established && break; sleep 0.2; done
    fi
    reach A 10.2.0.2 || { echo "anygated (protect=$1): no path" >&2; }
    tcp A B 10.2.0.2
    sites_cleanup
    SITES_PIDS=()
}

names=(gre gre-in-udp ipsec ipsec-2-workers openvpn strongswan wireguard)
for n in "${names[@]}"; do : > "$DIR/$n-t"; : > "$DIR/$n-r"; done
reach OA 10.12.0.2 || echo "openvpn: no path yet" >&2
reach SA 10.32.0.2 || echo "strongswan: no path yet" >&2
reach WA 10.42.0.2 || echo "wireguard-go: no path yet" >&2
record() { echo "${2% *}" >> "$DIR/$1-t"; echo "${2#* }" >> "$DIR/$1-r"; }
echo "== ${SECS}s per measurement, median of ${ROUNDS} rounds; $(nproc) cores; $(uname -r); $(date -u +%FT%TZ)"
for r in $(seq "$ROUNDS"); do
    record gre "$(anygated_round 0)"
    record gre-in-udp "$(anygated_round 0 gre-in-udp)"
    record ipsec "$(anygated_round 1)"
    record ipsec-2-workers "$(anygated_round 1 gre 2)"
    record openvpn "$(tcp OA OB 10.12.0.2)"
    record strongswan "$(tcp SA SB 10.32.0.2)"
    record wireguard "$(tcp WA WB 10.42.0.2)"
    echo "   round $r:$(for n in "${names[@]}"; do printf " %s %s (%s retr);" "$n" "$(tail -1 "$DIR/$n-t")" "$(tail -1 "$DIR/$n-r")"; done)"
done
printf "%-44s %12s %14s\n" "TCP, 1 stream (median)" "Gbit/s" "retransmits"
declare -A T
for n in "${names[@]}"; do
    T[$n]=$(median < "$DIR/$n-t")
    printf "%-44s %12s %14s\n" "$n" "${T[$n]}" "$(median < "$DIR/$n-r")"
done
echo "GRE over IPsec ÷ plaintext GRE (goal ≥ 0.7):     $(ratio "${T[ipsec]}" "${T[gre]}")"
echo "GRE over IPsec ÷ plaintext GRE-in-UDP:           $(ratio "${T[ipsec]}" "${T[gre-in-udp]}")"
echo "GRE over IPsec ÷ OpenVPN AES-256-GCM (goal ≥ 5): $(ratio "${T[ipsec]}" "${T[openvpn]}")"
echo "GRE over IPsec ÷ strongSwan userspace (goal ≥ 1): $(ratio "${T[ipsec]}" "${T[strongswan]}")"
echo "GRE over IPsec ÷ wireguard-go (goal ≥ 1.5):      $(ratio "${T[ipsec]}" "${T[wireguard]}")"
echo "GRE over IPsec, 2 workers ÷ 1 worker:             $(ratio "${T[ipsec-2-workers]}" "${T[ipsec]}")"
