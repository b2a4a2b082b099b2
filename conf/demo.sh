#!/usr/bin/env bash
# The main job for now (`make demo`): start the daemon on a temporary data
# dir, apply the example manifests with meshctl, list them, send traffic
# through a listener to the example backends, reload the config with SIGHUP,
# and stop cleanly. Everything stays on loopback.
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

write_config() { # $1 = log level
	cat >"$tmp/edge.json" <<EOF
{
	"role": "edge",
	"node_name": "edge-node-1",
	"data_dir": "$tmp/data",
	"api_socket": "$tmp/edgemesh.sock",
	"workers": 1,
	"log_level": "$1",
	"capture": { "enabled": false },
	"listeners": [
		{ "listen": "127.0.0.1:18080", "service": "default/web", "port": 80 },
		{ "listen": "127.0.0.1:18007", "service": "default/echo", "port": 7 }
	],
	"tunnel": { "listen": "" }
}
EOF
}

step "check the configuration (edgemesh -t)"
write_config info
$B/edgemesh -c "$tmp/edge.json" -t

step "start edgemesh"
$B/edgemesh -c "$tmp/edge.json" 2>"$tmp/edgemesh.log" &
em=$!
pids+=("$em")
for _ in $(seq 100); do [ -S "$tmp/edgemesh.sock" ] && break; sleep 0.05; done
[ -S "$tmp/edgemesh.sock" ] || { cat "$tmp/edgemesh.log"; echo "edgemesh did not start"; exit 1; }
sed 's/^/  log| /' "$tmp/edgemesh.log"

ctl() { $B/meshctl -s "$tmp/edgemesh.sock" "$@"; }

step "apply the example manifests (conf/examples)"
for f in nodes services pods endpoints endpointslices; do
	ctl apply -f "conf/examples/$f.json"
done

step "meshctl get"
ctl get nodes
echo
ctl get services
echo
ctl get endpoints
echo
ctl get endpointslices
echo
ctl get pods -A

step "backends: web on 127.0.0.11:8080 and 127.0.0.12:8080, echo on 127.0.0.21:7007"
$B/embackend -m http -l 127.0.0.11:8080 -l 127.0.0.12:8080 -t 1 -b 16 >"$tmp/web.out" &
pids+=("$!")
$B/embackend -m echo -l 127.0.0.21:7007 -t 1 >"$tmp/echo.out" &
pids+=("$!")
for _ in $(seq 100); do
	grep -q ready "$tmp/web.out" 2>/dev/null && grep -q ready "$tmp/echo.out" 2>/dev/null && break
	sleep 0.05
done

step "HTTP through edgemesh: 127.0.0.1:18080 -> default/web:80, balanced per request"
for i in 1 2 3 4; do
	printf '  request %d -> ' "$i"
	curl -sS --max-time 5 http://127.0.0.1:18080/ | tr -d '.'
done

step "raw TCP through edgemesh: 127.0.0.1:18007 -> default/echo:7"
printf '  '
printf 'hello through the mesh\n' | socat -t 2 - TCP:127.0.0.1:18007

step "reload: log_level debug, then SIGHUP"
write_config debug
kill -HUP "$em"
sleep 0.5
grep -E "reload" "$tmp/edgemesh.log" | sed 's/^/  log| /'

step "reload with an invalid file: refused, the old config keeps serving"
echo '{ "role": "edge", "node_name": "edge-node-1", "unknown_key": 1 }' >"$tmp/edge.json"
kill -HUP "$em"
sleep 0.5
grep -E "refused" "$tmp/edgemesh.log" | sed 's/^/  log| /'
ctl stats

step "stop (SIGTERM)"
kill -TERM "$em"
rc=0
wait "$em" || rc=$?
pids=("${pids[@]:1}")
tail -n 2 "$tmp/edgemesh.log" | sed 's/^/  log| /'
echo "edgemesh exited with status $rc"
[ "$rc" -eq 0 ]
