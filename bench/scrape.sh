#!/usr/bin/env bash
# /metrics scrape time of an edge with many Services (bench/RESULTS.md).
#
#   bench/scrape.sh [-s SERVICES] [-a ACTIVE] [-n SCRAPES] [-w WORKERS] [-f] [--build DIR]
#
# In a network namespace of its own: one edgemesh (capture on, the admin
# listener on 127.0.0.1:15000), SERVICES Services (default 10,000) with one
# TCP port each and one endpoint (embackend, HTTP), and one HTTP request
# through each of the first ACTIVE of them (default all), so that their
# ports carry every counter and a latency. Then SCRAPES scrapes (default 20)
# one after the other with curl. Prints one line per scrape and a RESULT
# line: the page's bytes and samples, the Service ports it lists (must be
# SERVICES), the wall time of a scrape (median, max; and the median time to
# its first byte: the page rendered, its head sent), the daemon's CPU
# (utime + stime) per scrape, and its RSS before and after the scrapes.
# promtool (build/tools/promtool, fetched by make integration-test) checks
# the last page when it is there. SCRAPE_PERF=FILE records perf -g of the
# daemon over the scrapes into FILE. The fast path is off
# (EDGEMESH_FASTPATH=off), but with -f: the ports are plain TCP (named
# "tcp") and the fast path is on, attached to a cgroup made for the run
# with no process in it, so that every port is in its maps and on the page
# (the requests still come through capture).
# Exit status: 0 when measured, 1 when the page is wrong, 2 on a set-up error.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${EM_BUILD_DIR:-$ROOT/build}
SVCS=10000
ACTIVE=
SCRAPES=20
WORKERS=2
FAST=
while [ $# -gt 0 ]; do
	case "$1" in
	-s) SVCS=$2; shift ;;
	-a) ACTIVE=$2; shift ;;
	-n) SCRAPES=$2; shift ;;
	-w) WORKERS=$2; shift ;;
	-f) FAST=1 ;;
	--build) BUILD=$(cd "$2" && pwd); shift ;;
	*) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
	shift
done
: "${ACTIVE:=$SVCS}"
[ "$(id -u)" = 0 ] || { echo "scrape.sh: needs root (network namespace)" >&2; exit 2; }
for b in edgemesh meshctl embackend; do
	[ -x "$BUILD/$b" ] || { echo "scrape.sh: $BUILD/$b not built" >&2; exit 2; }
done
[ "$SVCS" -le 65000 ] || { echo "scrape.sh: at most 65,000 Services" >&2; exit 2; }

RUN=$(mktemp -d /tmp/emscrape.XXXXXX)
NS=emscrape$$
PIDS=()
CG=
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
		kill -KILL "$p" 2>/dev/null
	done
	ip netns del "$NS" 2>/dev/null
	if [ -n "$CG" ]; then
		rmdir "$CG" 2>/dev/null
		umount "$RUN/cg" 2>/dev/null
		# Not into a cgroup file system that is still mounted.
		mountpoint -q "$RUN/cg" && { echo "scrape.sh: $RUN/cg still mounted" >&2; return; }
	fi
	rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "scrape.sh: $*" >&2; exit 2; }
inns() { ip netns exec "$NS" "$@"; }
# started PID: the program ip netns exec (pid PID) runs, itself or its
# child, added to PIDS (a child outlives a killed ip).
started() {
	local c=
	for _ in $(seq 100); do
		c=$(pgrep -P "$1" | head -n 1)
		[ -n "$c" ] && break
		[ "$(cat "/proc/$1/comm" 2>/dev/null)" = ip ] || { c=$1; break; }
		sleep 0.02
	done
	[ -n "$c" ] || die "pid $1 started nothing"
	PIDS+=("$c")
	echo "$c"
}

ip netns add "$NS" || die "ip netns add"
ip -n "$NS" link set lo up && ip -n "$NS" route add local 10.96.0.0/12 dev lo || die "routes"

inns "$BUILD/embackend" -m http -l 127.0.0.1:8080 -t 1 -b 16 >"$RUN/backend.log" 2>&1 &
PIDS+=($!)
started $! >/dev/null
FASTPATH=
PORTNAME=http
export EDGEMESH_FASTPATH=off
if [ -n "$FAST" ]; then
	# ip netns exec mounts a /sys of its own, without the cgroup file
	# systems: the unified hierarchy mounted again where the daemon sees it.
	mkdir "$RUN/cg" && mount -t cgroup2 none "$RUN/cg" || die "mount cgroup2"
	CG=$RUN/cg/emscrape$$
	mkdir "$CG" || die "mkdir $CG"
	FASTPATH=", \"fastpath\": {\"mode\": \"auto\", \"cgroup\": \"$CG\"}"
	PORTNAME=tcp
	EDGEMESH_FASTPATH=auto
fi
cat >"$RUN/edge.json" <<EOF
{"role": "edge", "node_name": "bench-node", "data_dir": "$RUN/data",
 "api_socket": "$RUN/api.sock", "workers": $WORKERS, "log_level": "warn",
 "fastpath": {"mode": "off"}, "tunnel": {"listen": ""},
 "capture": {"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]},
 "listeners": []$FASTPATH}
EOF
inns "$BUILD/edgemesh" -c "$RUN/edge.json" >"$RUN/edge.log" 2>&1 &
PIDS+=($!)
EM=$(started $!)
PIDS+=("$EM")
for _ in $(seq 100); do [ -S "$RUN/api.sock" ] && break; sleep 0.05; done
[ -S "$RUN/api.sock" ] || die "no API socket: $(tail -2 "$RUN/edge.log")"

# Service i: ns-(i % 50)/svc-i at 10.96.(i / 250).(i % 250 + 1), port 80
# named http, its endpoint the backend.
python3 - "$SVCS" "$PORTNAME" >"$RUN/svcs.json" <<'EOF'
import json, sys
n, pname = int(sys.argv[1]), sys.argv[2]
items = []
for i in range(n):
    ns, name, ip = "ns-%d" % (i % 50), "svc-%d" % i, "10.96.%d.%d" % (i // 250, i % 250 + 1)
    meta = {"name": name, "namespace": ns, "resourceVersion": "1"}
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                  "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                           "ports": [{"name": pname, "port": 80, "protocol": "TCP",
                                      "targetPort": 8080}]}})
    items.append({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
                  "subsets": [{"addresses": [{"ip": "127.0.0.1", "nodeName": "bench-node"}],
                               "ports": [{"name": pname, "port": 8080, "protocol": "TCP"}]}]})
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
EOF
"$BUILD/meshctl" -s "$RUN/api.sock" apply -f "$RUN/svcs.json" >"$RUN/apply.log" 2>&1 ||
	die "meshctl apply: $(tail -1 "$RUN/apply.log")"
for _ in $(seq 100); do
	inns ss -Hltn "sport = :15001" | grep -q LISTEN && break
	sleep 0.05
done
inns iptables -t nat -A OUTPUT -p tcp -d 10.96.0.0/12 -j REDIRECT --to-ports 15001 ||
	die "iptables REDIRECT"

# One request per active Service, 16 at a time.
t0=$(date +%s.%N)
ok=$(inns python3 - "$ACTIVE" <<'EOF'
import socket, sys
from concurrent.futures import ThreadPoolExecutor
def one(i):
    ip = "10.96.%d.%d" % (i // 250, i % 250 + 1)
    try:
        s = socket.create_connection((ip, 80), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
        s.close()
        return got.startswith(b"HTTP/1.1 200")
    except OSError:
        return False
with ThreadPoolExecutor(16) as ex:
    print(sum(ex.map(one, range(int(sys.argv[1])))))
EOF
)
echo "scrape.sh: $SVCS Services, ${ok:-0} of $ACTIVE requests answered 200 in $(echo "$(date +%s.%N) - $t0" | bc) s"

ticks() { awk '{print $14 + $15}' "/proc/$EM/stat"; }
minflt() { awk '{print $10}' "/proc/$EM/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$EM/status"; }
HZ=$(getconf CLK_TCK)
rss0=$(rss)
c0=$(ticks)
: >"$RUN/times"
: >"$RUN/ttfb"
# SCRAPE_PERF=FILE: perf record -g of the daemon over the scrapes.
if [ -n "${SCRAPE_PERF:-}" ]; then
	perf record -q -g -p "$EM" -o "$SCRAPE_PERF" 2>"$RUN/perf.log" &
	PERF=$!
	PIDS+=("$PERF")
	sleep 0.5
fi
for i in $(seq "$SCRAPES"); do
	f0=$(minflt)
	# The page goes to /dev/null but for the last scrape (checked).
	out=/dev/null
	[ "$i" = "$SCRAPES" ] && out=$RUN/page.txt
	t=$(inns curl -s -m 10 -o "$out" -w '%{http_code} %{time_total} %{size_download} %{time_starttransfer}' \
		http://127.0.0.1:15000/metrics)
	echo "scrape $i: $t (page faults $(($(minflt) - f0)))"
	set -- $t
	[ "$1" = 200 ] || { echo "scrape.sh: scrape $i answered $1" >&2; exit 1; }
	echo "$2" >>"$RUN/times"
	echo "$4" >>"$RUN/ttfb"
done
c1=$(ticks)
[ -n "${SCRAPE_PERF:-}" ] && kill -INT "$PERF" && wait "$PERF"
rss1=$(rss)
ports=$(grep -c '^edgemesh_service_connections_total{' "$RUN/page.txt")
busy=$(grep '^edgemesh_service_connections_total{' "$RUN/page.txt" | grep -vc ' 0$')
fports=$(grep -c '^edgemesh_fastpath_connections_total{' "$RUN/page.txt")
rc=0
[ "$ports" = "$SVCS" ] || { echo "scrape.sh: the page lists $ports Service ports, not $SVCS" >&2; rc=1; }
if [ -n "$FAST" ] && { [ "$fports" != "$SVCS" ] || ! grep -q '^edgemesh_fastpath_up 1$' "$RUN/page.txt"; }; then
	echo "scrape.sh: the fast path is not on, or the page lists $fports of its ports, not $SVCS" >&2
	rc=1
fi
PROMTOOL=$ROOT/build/tools/promtool
if [ -x "$PROMTOOL" ]; then
	if "$PROMTOOL" check metrics <"$RUN/page.txt" >"$RUN/promtool.out" 2>&1; then
		prom=passes
	else
		prom=FAILS
		rc=1
		head -3 "$RUN/promtool.out" >&2
	fi
else
	prom="not run (no $PROMTOOL)"
fi
ttfb=$(sort -g "$RUN/ttfb" | awk '{t[NR] = $1} END {printf "%.1f", t[int((NR + 1) / 2)] * 1000}')
sort -g "$RUN/times" | awk -v n="$SCRAPES" -v cpu=$((c1 - c0)) -v hz="$HZ" \
	-v bytes="$(stat -c %s "$RUN/page.txt")" -v lines="$(grep -vc '^#' "$RUN/page.txt")" \
	-v ports="$ports" -v fports="$fports" -v busy="$busy" -v r0="$rss0" -v r1="$rss1" -v prom="$prom" -v ttfb="$ttfb" \
	'{t[NR] = $1} END {
		med = (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
		printf "RESULT bytes=%d samples=%d ports=%d fastpath_ports=%d ports_with_traffic=%d scrape_ms_median=%.1f scrape_ms_max=%.1f first_byte_ms_median=%s cpu_ms_per_scrape=%.1f rss_kib_before=%d rss_kib_after=%d promtool=%s\n",
			bytes, lines, ports, fports, busy, med * 1000, t[n] * 1000, ttfb, cpu * 1000 / hz / n, r0, r1, prom
	}'
exit $rc
