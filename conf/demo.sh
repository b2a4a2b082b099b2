#!/usr/bin/env bash
# The main job (`make demo`): a cloud node with a copy of conf/examples as
# its manifests directory and two edge nodes configured with only the
# cloud's address and the cluster key. The edges learn every object from the
# cloud; traffic goes through a listener on edge-node-1 to backends on both
# nodes (edge-node-2's through the tunnel); a manifest edit reaches both
# edges; with the cloud stopped the edges keep serving; changes made
# meanwhile reach them when it returns; then a config reload, a refused
# reload, and a clean stop. Everything stays on loopback.
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

CLOUD=127.0.0.3:20006
MDIR=$tmp/manifests

# write_config NODE IP LOG_LEVEL [LISTENERS]: edge NODE accepts tunnels on
# IP:20006 and learns everything from the cloud.
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
	"tunnel": { "listen": "$2:20006", "cluster_key": "$KEY" },
	"cloud": { "address": "$CLOUD" }
}
EOF
}

step "a cloud node (127.0.0.3) with a copy of conf/examples as its manifests directory"
mkdir -p "$MDIR"
cp conf/examples/*.json "$MDIR/"
cat >"$tmp/cloud.json" <<EOF
{
	"role": "cloud",
	"node_name": "cloud-node",
	"data_dir": "$tmp/data-cloud",
	"api_socket": "$tmp/cloud.sock",
	"workers": 1,
	"capture": { "enabled": false },
	"tunnel": { "listen": "$CLOUD", "cluster_key": "$KEY" },
	"controller": { "manifests_dir": "$MDIR" }
}
EOF
$B/edgemesh -c "$tmp/cloud.json" -t

declare -A em
# start NODE: runs edgemesh for NODE and waits until it is ready.
start() {
	$B/edgemesh -c "$tmp/$1.json" 2>>"$tmp/$1.log" &
	em[$1]=$!
	pids+=("$!")
	for _ in $(seq 100); do grep -q "main: ready" "$tmp/$1.log" 2>/dev/null && return 0; sleep 0.05; done
	cat "$tmp/$1.log"
	echo "edgemesh on $1 did not start"
	exit 1
}
start cloud
sed 's/^/  cloud log| /' "$tmp/cloud.log"

step "two edge nodes on loopback, edge-node-1 (127.0.0.1) and edge-node-2 (127.0.0.2), configured with only cloud.address and the cluster key"
write_config edge-node-1 127.0.0.1 info "$LISTENERS"
write_config edge-node-2 127.0.0.2 info
for n in edge-node-1 edge-node-2; do
	$B/edgemesh -c "$tmp/$n.json" -t
	start $n
done

ctl() { $B/meshctl -s "$tmp/edge-node-1.sock" "$@"; }
# until_ok SECONDS CMD...: polls CMD every 50 ms.
until_ok() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.05
	done
}
has() { $B/meshctl -s "$tmp/$1.sock" get "$2" "$3" >/dev/null 2>&1; }
lacks() { ! has "$@"; }

step "the edges learn the objects from the cloud (no meshctl apply on them)"
for n in edge-node-1 edge-node-2; do
	until_ok 10 has $n services web || { tail "$tmp/$n.log"; exit 1; }
	grep -hE "control: " "$tmp/$n.log" | sed "s/^/  $n log| /"
done
echo
echo "  on the cloud: meshctl get nodes (the Node manifests win over the registrations)"
$B/meshctl -s "$tmp/cloud.sock" get nodes | sed 's/^/    /'

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

step "edit the manifests on the cloud: a new service default/api reaches both edges"
cat >"$tmp/api.json" <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "api", "namespace": "default"},
 "spec": {"clusterIP": "10.96.0.90", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}
EOF
mv "$tmp/api.json" "$MDIR/api.json"
for n in edge-node-1 edge-node-2; do
	until_ok 10 has $n services api || exit 1
	printf '  %s: ' "$n"
	$B/meshctl -s "$tmp/$n.sock" get services api | tail -n 1
done

step "stop the cloud: both edges keep serving (same node and through the tunnel)"
kill -TERM "${em[cloud]}"
wait "${em[cloud]}" || true
for i in 1 2; do
	printf '  request %d -> ' "$i"
	curl -sS --max-time 5 http://127.0.0.1:18080/ | tr -d '.'
done
until_ok 10 sh -c "$B/meshctl -s '$tmp/edge-node-1.sock' get nodes | grep -q disconnected"
ctl get nodes | tail -n 1 | sed 's/^/  /'

step "while the cloud is down, remove api.json; start the cloud again: the edges converge"
rm "$MDIR/api.json"
start cloud
for n in edge-node-1 edge-node-2; do
	until_ok 15 lacks $n services api || { tail "$tmp/$n.log"; exit 1; }
	echo "  $n: default/api is gone"
	grep -hE "control: (snapshot|in sync)" "$tmp/$n.log" | tail -n 2 | sed "s/^/  $n log| /"
done
ctl get nodes | tail -n 1 | sed 's/^/  /'

step "reload edge-node-1: log_level debug, then SIGHUP"
write_config edge-node-1 127.0.0.1 debug "$LISTENERS"
kill -HUP "${em[edge-node-1]}"
sleep 0.5
grep -E "reload" "$tmp/edge-node-1.log" | sed 's/^/  log| /'

step "reload with an invalid file: refused, the old config keeps serving"
echo '{ "role": "edge", "node_name": "edge-node-1", "unknown_key": 1 }' >"$tmp/edge-node-1.json"
kill -HUP "${em[edge-node-1]}"
sleep 0.5
grep -E "reload refused" "$tmp/edge-node-1.log" | sed 's/^/  log| /'
printf '  request after the refused reload -> '
curl -sS --max-time 5 http://127.0.0.1:18080/ | tr -d '.'
ctl stats

step "stop the three nodes (SIGTERM)"
rc=0
for n in edge-node-1 edge-node-2 cloud; do
	kill -TERM "${em[$n]}"
	r=0
	wait "${em[$n]}" || r=$?
	tail -n 1 "$tmp/$n.log" | sed "s/^/  $n log| /"
	echo "  edgemesh on $n exited with status $r"
	[ "$r" -eq 0 ] || rc=$r
done
pids=()
[ "$rc" -eq 0 ]
