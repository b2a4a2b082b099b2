#!/usr/bin/env bash
# The main job for now (`make demo`): start two edge nodes' daemons on
# temporary data dirs, apply the example manifests with meshctl, list them,
# send traffic through a listener on edge-node-1 to backends on both nodes
# (edge-node-2's through the tunnel), reload the config with SIGHUP, and stop
# cleanly. Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
tmp=$(mktemp -d /tmp/edgemesh-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# A fresh cluster key, as an operator makes one (edgemesh refuses keys
# shorter than 32 bytes and the placeholder of conf/edge.json).
KEY=$(openssl rand -hex 32 2>/dev/null || od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
LISTENERS='
		{ "listen": "127.0.0.1:18080", "service": "default/web", "port": 80 },
		{ "listen": "127.0.0.1:18007", "service": "default/echo", "port": 7 }'

# write_config NODE IP LOG_LEVEL [LISTENERS]: NODE accepts tunnels on IP:20006.
write_config() {
	cat >"$tmp/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$1",
	"data_dir": "$tmp/data-$1",
	"api_socket": "$tmp/$1.sock",
	"workers": 1,
	"log_level": "$3",
	"capture": { "enabled": false },
	"listeners": [${4:-}],
	"tunnel": { "listen": "$2:20006", "cluster_key": "$KEY" }
}
EOF
}

step "two edge nodes on loopback: edge-node-1 (127.0.0.1) and edge-node-2 (127.0.0.2)"
write_config edge-node-1 127.0.0.1 info "$LISTENERS"
write_config edge-node-2 127.0.0.2 info
$B/edgemesh -c "$tmp/edge-node-1.json" -t
$B/edgemesh -c "$tmp/edge-node-2.json" -t

step "start edgemesh on both nodes"
declare -A em
for n in edge-node-1 edge-node-2; do
	$B/edgemesh -c "$tmp/$n.json" 2>"$tmp/$n.log" &
	em[$n]=$!
	pids+=("$!")
done
for n in edge-node-1 edge-node-2; do
	for _ in $(seq 100); do [ -S "$tmp/$n.sock" ] && break; sleep 0.05; done
	[ -S "$tmp/$n.sock" ] || { cat "$tmp/$n.log"; echo "edgemesh on $n did not start"; exit 1; }
done
sed 's/^/  edge-node-1 log| /' "$tmp/edge-node-1.log"

ctl() { $B/meshctl -s "$tmp/edge-node-1.sock" "$@"; }

step "apply the example manifests (conf/examples) on both nodes"
for n in edge-node-1 edge-node-2; do
	echo "  on $n:"
	for f in nodes services pods endpoints endpointslices; do
		printf '    '
		$B/meshctl -s "$tmp/$n.sock" apply -f "conf/examples/$f.json"
	done
done

step "meshctl get (edge-node-1)"
ctl get nodes
echo
ctl get services
echo
ctl get endpoints
echo
ctl get endpointslices
echo
ctl get pods -A

step "backends: web-1 127.0.0.11:8080 (edge-node-1), web-2 127.0.0.12:8080 (edge-node-2), echo 127.0.0.21:7007"
$B/embackend -m http -l 127.0.0.11:8080 -l 127.0.0.12:8080 -t 1 -b 16 >"$tmp/web.out" &
pids+=("$!")
$B/embackend -m echo -l 127.0.0.21:7007 -t 1 >"$tmp/echo.out" &
pids+=("$!")
for _ in $(seq 100); do
	grep -q ready "$tmp/web.out" 2>/dev/null && grep -q ready "$tmp/echo.out" 2>/dev/null && break
	sleep 0.05
done

step "HTTP on edge-node-1: 127.0.0.1:18080 -> default/web:80, balanced per request"
echo "  backend-0 is web-1 on this node; backend-1 is web-2, reached through the tunnel to edge-node-2"
for i in 1 2 3 4; do
	printf '  request %d -> ' "$i"
	curl -sS --max-time 5 http://127.0.0.1:18080/ | tr -d '.'
done
grep -hE "tunnel (to|from) .* up" "$tmp/edge-node-1.log" "$tmp/edge-node-2.log" | sed 's/^/  log| /'

step "raw TCP on edge-node-1: 127.0.0.1:18007 -> default/echo:7"
printf '  '
printf 'hello through the mesh\n' | socat -t 2 - TCP:127.0.0.1:18007

step "reload edge-node-1: log_level debug, then SIGHUP"
write_config edge-node-1 127.0.0.1 debug "$LISTENERS"
kill -HUP "${em[edge-node-1]}"
sleep 0.5
grep -E "reload" "$tmp/edge-node-1.log" | sed 's/^/  log| /'

step "reload with an invalid file: refused, the old config keeps serving"
echo '{ "role": "edge", "node_name": "edge-node-1", "unknown_key": 1 }' >"$tmp/edge-node-1.json"
kill -HUP "${em[edge-node-1]}"
sleep 0.5
grep -E "refused" "$tmp/edge-node-1.log" | sed 's/^/  log| /'
printf '  request after the refused reload -> '
curl -sS --max-time 5 http://127.0.0.1:18080/ | tr -d '.'
ctl stats

step "stop both nodes (SIGTERM)"
rc=0
for n in edge-node-1 edge-node-2; do
	kill -TERM "${em[$n]}"
	r=0
	wait "${em[$n]}" || r=$?
	tail -n 1 "$tmp/$n.log" | sed "s/^/  $n log| /"
	echo "  edgemesh on $n exited with status $r"
	[ "$r" -eq 0 ] || rc=$r
done
pids=("${pids[@]:2}")
[ "$rc" -eq 0 ]
