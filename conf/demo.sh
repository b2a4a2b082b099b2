#!/usr/bin/env bash
# The main job (`make demo`): a cloud node with a copy of conf/examples as
# its manifests directory and two edge nodes configured with only the
# cloud's address and the cluster key. The edges get their tunnel
# certificates from the cloud's CA (made at its first start) and learn every
# object from the cloud, over TLS; traffic goes through a listener on edge-node-1 to backends on both
# nodes (edge-node-2's through the tunnel); the four flows, one line each
# (same node, edge to edge, edge to cloud, the cloud's Router to an edge
# app), and a 429 from a QPS-limited Service; a manifest edit reaches both
# edges; with the cloud stopped the edges keep serving; changes made
# meanwhile reach them when it returns; then a config reload, a refused
# reload, and a clean stop. Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
tmp=$(mktemp -d /tmp/edgemesh-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}" $(jobs -p); do kill "$p" 2>/dev/null || true; done
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
		{ "listen": "127.0.0.1:18007", "service": "default/echo", "port": 7 },
		{ "listen": "127.0.0.1:18081", "service": "default/f1", "port": 80 },
		{ "listen": "127.0.0.1:18082", "service": "default/f2", "port": 80 },
		{ "listen": "127.0.0.1:18083", "service": "default/f3", "port": 80 },
		{ "listen": "127.0.0.1:18084", "service": "default/limited", "port": 80 }'

CLOUD=127.0.0.3:20006
MDIR=$tmp/manifests

# write_config NODE IP LOG_LEVEL [LISTENERS]: edge NODE accepts tunnels on
# IP:20006 and learns everything from the cloud. Redials back off to 2 s at
# most (default 30 s), so that the edges are back within the demo's wait
# after the cloud's restart.
write_config() {
	cat >"$tmp/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$1",
	"data_dir": "$tmp/data-$1",
	"api_socket": "$tmp/$1.sock",
	"workers": 1,
	"log_level": "$3",
	"fastpath": { "mode": "off" },
	"capture": { "enabled": false },
	"listeners": [${4:-}],
	"tunnel": { "listen": "$2:20006", "cluster_key": "$KEY", "reconnect_max_ms": 2000 },
	"cloud": { "address": "$CLOUD" }
}
EOF
}

step "a cloud node (127.0.0.3) with a copy of conf/examples as its manifests directory"
mkdir -p "$MDIR"
cp conf/examples/*.json "$MDIR/"
# One Service per flow, each with one endpoint: F1 on edge-node-1, F2 on
# edge-node-2, F3 on the cloud node; and one limited to 1 request a second.
flow_svc() { # NAME IP ENDPOINT NODE [ANNOTATIONS]
	local ann=""
	[ -z "${5:-}" ] || ann=", \"annotations\": $5"
	cat <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$1", "namespace": "default"$ann},
 "spec": {"clusterIP": "$2", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}},
{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "$1", "namespace": "default"},
 "subsets": [{"addresses": [{"ip": "$3", "nodeName": "$4"}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}
EOF
}
cat >"$MDIR/flows.json" <<EOF
{"apiVersion": "v1", "kind": "List", "items": [
$(flow_svc f1 10.96.0.81 127.0.0.11 edge-node-1),
$(flow_svc f2 10.96.0.82 127.0.0.12 edge-node-2),
$(flow_svc f3 10.96.0.83 127.0.0.31 cloud-node),
$(flow_svc limited 10.96.0.84 127.0.0.11 edge-node-1 '{"edgemesh.io/qps": "1", "edgemesh.io/qps-burst": "1"}')
]}
EOF
cat >"$tmp/cloud.json" <<EOF
{
	"role": "cloud",
	"node_name": "cloud-node",
	"data_dir": "$tmp/data-cloud",
	"api_socket": "$tmp/cloud.sock",
	"workers": 1,
	"fastpath": { "mode": "off" },
	"capture": { "enabled": false },
	"tunnel": { "listen": "$CLOUD", "cluster_key": "$KEY", "tls": { "ca_dir": "$tmp/ca" } },
	"router": { "listen": "127.0.0.3:9443" },
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

step "the edges enroll (their tunnel certificates come from the cloud's CA) and learn the objects from the cloud (no meshctl apply on them)"
for n in edge-node-1 edge-node-2; do
	until_ok 15 has $n services web || { tail "$tmp/$n.log"; exit 1; }
	grep -hE "control: |certs: |tunnel: .*(certificate|TLS)" "$tmp/$n.log" | sed "s/^/  $n log| /"
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

step "backends: web-1 127.0.0.11:8080 (edge-node-1), web-2 127.0.0.12:8080 (edge-node-2), cloud-web 127.0.0.31:8080 (cloud-node), edge-node-2's app 127.0.0.1:9000, echo 127.0.0.21:7007"
$B/embackend -m http -l 127.0.0.11:8080 -l 127.0.0.12:8080 -l 127.0.0.31:8080 \
	-l 127.0.0.1:9000 -t 1 -b 16 >"$tmp/web.out" &
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

step "the four flows, and a QPS limit"
declare -A who=([backend-0]="web-1 on edge-node-1 (127.0.0.11:8080)"
	[backend-1]="web-2 on edge-node-2 (127.0.0.12:8080)"
	[backend-2]="cloud-web on cloud-node (127.0.0.31:8080)"
	[backend-3]="edge-node-2's app (its 127.0.0.1:9000)")
# flow LABEL WHAT URL: one request, one line: what answered and how fast.
flow() {
	local out code ms b
	out=$(curl -sS --max-time 5 -o "$tmp/body" -w '%{http_code} %{time_total}' "$3" 2>&1) || true
	code=${out%% *}
	ms=$(awk -v t="${out#* }" 'BEGIN { printf "%.1f", t * 1000 }')
	b=$(grep -o 'backend-[0-9]*' "$tmp/body" 2>/dev/null | head -n 1) || true
	local desc=""
	[ -z "$b" ] || desc=${who[$b]:-}
	[ -n "$desc" ] || desc=$(head -c 60 "$tmp/body" | tr -d '\n')
	printf '  %-18s %-40s -> %s %s, %s ms\n' "$1" "$2" "$code" "$desc" "$ms"
}
# The objects of flows.json reach the edges in the background: wait for
# them on both edges, and until each path answers from its backend.
for n in edge-node-1 edge-node-2; do
	for o in f1 f2 f3 limited; do
		until_ok 10 has $n endpoints $o || { echo "  $n never got default/$o"; exit 1; }
	done
done
answers() { curl -s --max-time 2 "$1" 2>/dev/null | grep -q "$2"; }
until_ok 10 answers http://127.0.0.1:18081/ backend-0 || true
until_ok 10 answers http://127.0.0.1:18082/ backend-1 || true
until_ok 10 answers http://127.0.0.1:18083/ backend-2 || true
until_ok 10 answers http://127.0.0.3:9443/edge-node-2/default/a/x backend-3 || true
flow "F1 same node" "edge-node-1 app -> default/f1" http://127.0.0.1:18081/
flow "F2 edge to edge" "edge-node-1 app -> default/f2" http://127.0.0.1:18082/
flow "F3 edge to cloud" "edge-node-1 app -> default/f3" http://127.0.0.1:18083/
flow "F4 cloud to edge" "Router GET /edge-node-2/default/a/hello" http://127.0.0.3:9443/edge-node-2/default/a/hello
flow "QPS 1/s, 1st call" "edge-node-1 app -> default/limited" http://127.0.0.1:18084/
flow "QPS 1/s, 2nd call" "edge-node-1 app -> default/limited" http://127.0.0.1:18084/
echo "  the Rule on the cloud:"
$B/meshctl -s "$tmp/cloud.sock" get rules | sed 's/^/    /'

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
until_ok 10 grep -q "config: reloaded" "$tmp/edge-node-1.log"
grep -E "reload" "$tmp/edge-node-1.log" | sed 's/^/  log| /'

step "reload with an invalid file: refused, the old config keeps serving"
echo '{ "role": "edge", "node_name": "edge-node-1", "unknown_key": 1 }' >"$tmp/edge-node-1.json"
kill -HUP "${em[edge-node-1]}"
until_ok 10 grep -q "reload refused" "$tmp/edge-node-1.log"
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
[ "$rc" -eq 0 ]
