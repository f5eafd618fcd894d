#!/usr/bin/env bash
# A long run of everything at once, watching the daemons for a crash, for
# memory that keeps growing and for the packet ledger breaking.
#
# Two sites joined by GRE over IPsec (scripts/two-sites-topology.sh,
# PROTECT=1: IKEv2, AES-GCM-128, ESP in UDP 4500), and for MINUTES:
#   * TCP streams from site A to site B (iperf3, 2 streams, 200 Mbit/s, restarted when they end);
#   * UDP from thousands of source addresses and ports (raw socket in A, 10.1.0.0/24 and
#     10.1.128.0/17 behind A as sources, random ports, 4000 packets/s) to site B;
#   * route churn on gw1: adds and deletes through the control socket (anygatectl's
#     protocol, ~200 changes/s) and through the host's kernel table, which the netlink
#     mirror imports (~200 changes/s on a mirrored spare veth);
#   * a reload every 20 s (control on gw1, SIGHUP on gw2);
#   * child SA rekeys every 30 s and IKE SA rekeys every 90 s;
#   * every 60 s, in turn, site A's TAP deleted (the daemon makes it again; it is moved
#     back and addressed as an operator would) or gw2's uplink veth deleted and recreated.
# Each second: each daemon's RSS and CPU time, the ledger, forwarded packets.
# Fails on a crash, on RSS growing more than 10 % after the first minute
# (mean of the last minute against the mean of the second), or on a ledger
# that does not balance. Samples go to OUT (default soak-samples.csv).
# Needs root and /dev/net/tun. Usage: Benchmarks/soak.sh MINUTES [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
OUT=${2:-soak-samples.csv}
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
command -v iperf3 >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null; }
echo "==> building (release)"
swift build -c release --product anygated >/dev/null
swift build -c release --product anygatectl >/dev/null
P="sk$(printf '%04x' $((RANDOM % 65536)))"
DIR=$(mktemp -d /tmp/anygate-soak.XXXXXX)
BIN=.build/release
ROUTE_SITES=1
PROTECT=1
KEEPALIVE="{interval: 2s, retries: 5}"
PROTECT_EXTRA="      rekey: 30s
      ike-rekey: 90s"
EXTRA_YAML_1="mirror:
  routes:
    table: main
    protocols: [static]"
sites_pre_start() {
    # A spare host interface on gw1 (a veth pair, both ends in gw1's namespace), mirrored
    # into the stack: the kernel routes through it are the mirror's churn.
    ip -n "${P}G1" link add "${P}-dm" type veth peer name "${P}-dp"
    ip -n "${P}G1" addr add 10.250.0.1/24 dev "${P}-dm"
    ip -n "${P}G1" link set "${P}-dp" up
    ip -n "${P}G1" link set "${P}-dm" up
    sed -i "s|^interfaces:|interfaces:\n  - name: dm0\n    attach: {mirror: ${P}-dm}|" "$DIR/gw1.yaml"
}
. scripts/two-sites-topology.sh
JOBS=()
cleanup() {
    for p in "${JOBS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${JOBS[@]}"; do wait "$p" 2>/dev/null || true; done
    sites_cleanup
}
trap cleanup EXIT
echo "==> two sites, GRE over IPsec, in namespaces ${P}*"
sites_start
G1=${SITES_PIDS[0]}; G2=${SITES_PIDS[1]}
for _ in $(seq 150); do ip netns exec "${P}A" ping -c 1 -W 1 10.2.0.2 >/dev/null 2>&1 && break; sleep 0.2; done
ip netns exec "${P}A" ping -c 1 -W 1 10.2.0.2 >/dev/null || { echo "the tunnel did not come up"; tail -20 "$DIR"/gw*.log; exit 1; }
END=$(( $(date +%s) + MINUTES * 60 ))

# Traffic: TCP streams, and UDP from many sources.
ip netns exec "${P}B" iperf3 -s -D --logfile "$DIR/iperf-s.log"
( while [ "$(date +%s)" -lt "$END" ]; do
      ip netns exec "${P}A" iperf3 -c 10.2.0.2 -P 2 -b 100M -t 30 >>"$DIR/iperf-c.log" 2>&1 || sleep 1
  done ) & JOBS+=($!)
ip -n "${P}A" route add 10.1.128.0/17 dev "${P}-t1" 2>/dev/null || true
cat > "$DIR/udp.py" <<'PY'
import random, socket, struct, sys, time
end = float(sys.argv[1]); rate = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton("10.2.0.2")
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
while time.time() < end:
    t0 = time.time()
    for _ in range(rate // 10):
        src = struct.pack("!I", random.choice([0x0A010003 + random.randrange(250), 0x0A018000 + random.randrange(1 << 15)]))
        payload = b"soak" * 8
        udp = struct.pack("!HHHH", random.randrange(1024, 65536), 9, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        try: s.sendto(ip + udp, ("10.2.0.2", 0))
        except OSError: time.sleep(0.01)
    time.sleep(max(0, 0.1 - (time.time() - t0)))
PY
ip netns exec "${P}A" python3 "$DIR/udp.py" "$END" 4000 & JOBS+=($!)

# Route churn through the control socket.
cat > "$DIR/routes.py" <<'PY'
import json, socket, sys, time
path, end, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def ask(r):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5)
    try:
        s.connect(path); s.sendall((json.dumps(r) + "\n").encode()); s.recv(65536)
    except OSError: pass
    finally: s.close()
i = 0
while time.time() < end:
    t0 = time.time()
    for _ in range(rate // 20):
        p = f"10.200.{i % 256}.0/24"
        ask({"verb": "route-add", "prefix": p, "via": "172.16.0.2"}); ask({"verb": "route-del", "prefix": p})
        i += 1
    time.sleep(max(0, 0.1 - (time.time() - t0)))
print(2 * i)
PY
python3 "$DIR/routes.py" "$DIR/gw1.sock" "$END" 200 > "$DIR/routes.count" & JOBS+=($!)
# Route churn through the kernel table the mirror imports.
( i=0; while [ "$(date +%s)" -lt "$END" ]; do
      { for k in $(seq 20); do n=$(( (i + k) % 250 ))
            echo "route add 10.201.$n.0/24 via 10.250.0.2 dev ${P}-dm proto static"; echo "route del 10.201.$n.0/24"; done; } |
          ip -n "${P}G1" -batch - 2>/dev/null || true
      i=$(( i + 20 )); echo $(( 2 * i )) > "$DIR/kernel-routes.count"; sleep 0.1
  done ) & JOBS+=($!)

# Reloads; the TAP and the veth deleted and made again.
( n=0; while [ "$(date +%s)" -lt "$END" ]; do
      sleep 20; n=$((n + 1))
      $CTL1 reload >/dev/null 2>&1 || echo "reload failed" >>"$DIR/events.log"
      kill -HUP "$G2"
      if [ $((n % 3)) = 0 ]; then
          if [ $((n % 6)) = 0 ]; then
              echo "$(date +%s) veth ${P}-g2u deleted and recreated" >>"$DIR/events.log"
              ip -n "${P}G2" link del "${P}-g2u"; sleep 1
              ip -n "${P}G2" link add "${P}-g2u" type veth peer name "${P}-u2" netns "${P}U"
              ip -n "${P}U" addr add 203.0.113.254/24 dev "${P}-u2"; ip -n "${P}U" link set "${P}-u2" up
              ip -n "${P}G2" link set "${P}-g2u" up
          else
              echo "$(date +%s) TAP ${P}-t1 deleted" >>"$DIR/events.log"
              ip -n "${P}A" link del "${P}-t1"
              for _ in $(seq 100); do ip -n "${P}G1" link show "${P}-t1" >/dev/null 2>&1 && break; sleep 0.1; done
              ip -n "${P}G1" link set "${P}-t1" netns "${P}A" && ip -n "${P}A" addr add 10.1.0.2/24 dev "${P}-t1" &&
                  ip -n "${P}A" link set "${P}-t1" up && ip -n "${P}A" route add default via 10.1.0.1 &&
                  ip -n "${P}A" route add 10.1.128.0/17 dev "${P}-t1" || echo "$(date +%s) TAP not back" >>"$DIR/events.log"
          fi
      fi
  done ) & JOBS+=($!)

# Samples: each second, each daemon's RSS (kB), CPU time (s) and ledger.
hz=$(getconf CLK_TCK)
echo "seconds,rss1_kb,cpu1_s,rss2_kb,cpu2_s,balanced1,balanced2,forwarded1,forwarded2,buffers1,buffers2" > "$OUT"
START=$(date +%s)
echo "==> running $MINUTES minute(s); samples in $OUT"
while [ "$(date +%s)" -lt "$END" ]; do
    row="$(( $(date +%s) - START ))"
    for pid in "$G1" "$G2"; do
        [ -d "/proc/$pid" ] || { echo "FAILED: anygated $pid is gone"; tail -30 "$DIR"/gw*.log; exit 1; }
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        cpu=$(awk -v hz="$hz" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat")
        row="$row,$rss,$cpu"
    done
    for s in 1 2; do
        ip netns exec "${P}G$s" "$BIN/anygatectl" --socket "$DIR/gw$s.sock" --json show stats > "$DIR/stats$s.json" 2>/dev/null || echo '{}' > "$DIR/stats$s.json"
    done
    row="$row,$(python3 - "$DIR/stats1.json" "$DIR/stats2.json" <<'PY'
import json, sys
v = []
for f in sys.argv[1:]:
    try: d = json.load(open(f))
    except Exception: d = {}
    v.append(d)
b = [str(d.get("ledger", {}).get("balanced", "na")).lower() for d in v]
fw = [str(d.get("counters", {}).get("ipForwarded", "na")) for d in v]
bu = [str(d.get("poolBuffersInUse", "na")) for d in v]
print(",".join(b + fw + bu))
PY
)"
    echo "$row" >> "$OUT"
    sleep 1
done
echo "==> done; judging"
sleep 2
echo "route changes: $(cat "$DIR/routes.count" 2>/dev/null || echo ?) through the control socket, $(cat "$DIR/kernel-routes.count" 2>/dev/null || echo ?) in the kernel table (mirrored), in $((MINUTES * 60)) s"
echo "iperf3 runs: $(grep -c 'iperf Done' "$DIR/iperf-c.log" 2>/dev/null || echo 0) completed, $(grep -c 'error' "$DIR/iperf-c.log" 2>/dev/null || echo 0) ended by an error (a deleted TAP or veth)"
python3 - "$OUT" "$DIR/events.log" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def col(name, lo, hi=None):
    return [float(r[name]) for r in rows if lo <= int(r["seconds"]) and (hi is None or int(r["seconds"]) < hi)]
ok = True
end = int(rows[-1]["seconds"])
for g in ("1", "2"):
    second = col("rss%s_kb" % g, 60, 120) or col("rss%s_kb" % g, 0)
    last = col("rss%s_kb" % g, max(60, end - 60))
    growth = statistics.mean(last) / statistics.mean(second) - 1
    cpu = float(rows[-1]["cpu%s_s" % g]) - float(rows[0]["cpu%s_s" % g])
    unbalanced = sum(1 for r in rows if r["balanced" + g] == "false")
    unknown = sum(1 for r in rows if r["balanced" + g] not in ("true", "false"))
    print(f"gw{g}: RSS {statistics.mean(second)/1024:.1f} MiB (second minute) -> {statistics.mean(last)/1024:.1f} MiB (last minute), "
          f"growth {growth*100:+.1f} %, peak {max(col('rss%s_kb' % g, 0))/1024:.1f} MiB; CPU {cpu:.0f} s in {end} s; "
          f"ledger unbalanced in {unbalanced} of {len(rows)} samples ({unknown} unanswered)")
    if growth > 0.10: ok = False; print(f"FAILED: gw{g} RSS grew by more than 10 %")
    if unbalanced: ok = False; print(f"FAILED: gw{g} ledger did not balance")
try: print("events:", open(sys.argv[2]).read().strip().replace("\n", "; "))
except OSError: pass
sys.exit(0 if ok else 1)
PY
rc=$?
grep -h "retr\|receiver" "$DIR/iperf-c.log" | grep receiver | tail -3 || true
echo "forwarded on gw1: $(tail -1 "$OUT" | cut -d, -f8) packets"
exit $rc
