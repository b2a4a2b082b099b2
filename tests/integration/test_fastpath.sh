#!/usr/bin/env bash
# The fast path (engine/fastpath.c): connect-time balancing in the kernel for
# plain TCP services, acting on the processes of one cgroup v2 directory.
# The test makes a child cgroup of its own under /sys/fs/cgroup/unified and
# puts only its clients there (each joins it before `ip netns exec`, which
# remounts /sys without the cgroup mount); the daemons enter their network
# namespace with nsenter for the same reason. Covers, on one node (its own
# namespace, capture on as the fallback):
#   - the start logs "fastpath: on: cgroup <dir>", the programs are attached
#     there, meshctl stats says "on";
#   - bytes exact both ways (emload pingpong and bulk, a 4 MB echo with both
#     directions at once), counted by the fast path and not by the engine;
#   - the spread over three endpoints (round robin), ClientIP affinity;
#   - getpeername() on the client returns the cluster IP (IPv6 too, where
#     the namespace has it);
#   - an endpoint removed, added and changed while connections run: those
#     connections carry on, new ones follow the new set;
#   - services that stay on the engine: HTTP ports (by name or appProtocol,
#     also beside a plain port), the QPS annotation, edgemesh.io/fastpath
#     "off"; HTTP keeps per-request balancing; clients outside the cgroup
#     take capture;
#   - kill -9 leaves no program attached and a new connect takes capture;
#     fastpath.mode "off"; a start without CAP_BPF/CAP_SYS_ADMIN/
#     CAP_NET_ADMIN/CAP_PERFMON logs why it is off and serves through its
#     explicit listener;
# and on two nodes joined by a tunnel: a service whose endpoints are all on
# the other node works (the connect is handed to the engine with the
# kernel's pick) and keeps the spread; a service with endpoints on both
# nodes spreads over all three, the local one rewritten, the remote ones
# handed off. Needs root, cgroup v2 at /sys/fs/cgroup/unified, bpftool.
. "$(dirname "$0")/lib.sh"
# lib.sh turns the fast path off in every daemon (EDGEMESH_FASTPATH); here
# the configs say which daemon has it.
export EDGEMESH_FASTPATH=auto
it_need_root
it_need curl socat python3 bpftool nsenter setpriv
ulimit -n "$(ulimit -Hn)" 2>/dev/null

CGROOT=/sys/fs/cgroup/unified
[ "$(stat -f -c %T "$CGROOT" 2>/dev/null)" = cgroup2fs ] || it_skip "no cgroup v2 hierarchy at $CGROOT"
CG=$CGROOT/em-fastpath-$$
mkdir "$CG" || it_die "mkdir $CG"
FPC=$IT_ROOT/tests/integration/fastpath_client.py

# The cgroup goes before lib.sh's cleanup: its processes are the test's
# clients (nothing else is put there), killed, then the directory removed.
cg_cleanup() {
	local i
	[ -d "$CG" ] || return 0
	echo 1 >"$CG/cgroup.kill" 2>/dev/null
	for i in $(seq 100); do
		[ -s "$CG/cgroup.procs" ] || break
		sleep 0.05
	done
	rmdir "$CG" 2>/dev/null || echo "test_fastpath: could not remove $CG" >&2
}
# shellcheck disable=SC2154 # fp_rc is assigned inside the trap
trap 'fp_rc=$?; cg_cleanup; (exit $fp_rc); it_cleanup' EXIT

# incg NS CMD...: CMD in namespace NS as a member of the cgroup.
incg() {
	local ns=$1
	shift
	sh -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$CG" "$ns" "$@"
}

# incg_bg NAME NS CMD...: incg in the background, output in $IT_TMP/NAME.out
# and .err; IT_LAST_PID is the command's own pid (sh and ip netns exec exec).
incg_bg() {
	local name=$1 ns=$2
	shift 2
	sh -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$CG" "$ns" "$@" \
		>"$IT_TMP/$name.out" 2>"$IT_TMP/$name.err" &
	IT_LAST_PID=$!
	IT_PIDS+=("$IT_LAST_PID")
	IT_OUT[$IT_LAST_PID]=$IT_TMP/$name.out
}

# fp_start NAME NS [WRAPPER...]: edgemesh NAME ($IT_TMP/NAME.json, socket
# $IT_TMP/NAME.sock) in network namespace NS entered with nsenter (ip netns
# exec would hide the cgroup mount from it), optionally under WRAPPER (for
# setpriv); waits until it is ready.
fp_start() {
	local name=$1 ns=$2 i
	shift 2
	IT_EM_STARTS=$((IT_EM_STARTS + 1))
	EM_LOG[$name]=$IT_TMP/edgemesh-$name-$IT_EM_STARTS.log
	rm -f "$IT_TMP/$name.sock"
	nsenter --net="/run/netns/$ns" "$@" "$EDGEMESH" -c "$IT_TMP/$name.json" >"${EM_LOG[$name]}" 2>&1 &
	EM_PID[$name]=$!
	IT_PIDS+=("$!")
	for i in $(seq 200); do
		kill -0 "${EM_PID[$name]}" 2>/dev/null ||
			{ cat "${EM_LOG[$name]}"; it_die "edgemesh $name exited during start"; }
		[ -S "$IT_TMP/$name.sock" ] && grep -q 'main: ready' "${EM_LOG[$name]}" && return 0
		sleep 0.05
	done
	cat "${EM_LOG[$name]}"
	it_die "edgemesh $name did not become ready within 10 s"
}

# fp_conf NAME NODE FASTPATH CAPTURE [TUNNEL [LISTENERS]]: writes
# $IT_TMP/NAME.json; FASTPATH and CAPTURE are JSON objects.
fp_conf() {
	local tunnel='{"listen": ""}'
	[ -n "${5:-}" ] && tunnel=$5
	cat >"$IT_TMP/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$2",
	"data_dir": "$IT_TMP/data-$1",
	"api_socket": "$IT_TMP/$1.sock",
	"workers": 1,
	"log_level": "info",
	"fastpath": $3,
	"capture": $4,
	"listeners": ${6:-[]},
	"tunnel": $tunnel,
	"timeouts": {"connect_ms": 2000}
}
EOF
}

# st NAME EXPR: EXPR (Python, on the dict s) of NAME's `meshctl stats`;
# empty when it fails.
st() {
	timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" stats 2>/dev/null |
		python3 -c "import json, sys; s = json.load(sys.stdin); print($2)" 2>/dev/null
}
fp() { st "$1" "s['fastpath']['$2']"; }
eng() { st "$1" "s['engine']['connections_accepted']"; }
fp_svc() { # NAME NS/SVC FIELD: the fast path's counter of that service, 0 when absent
	st "$1" "sum(e['$3'] for e in s['fastpath']['services'] if e['service'] == '$2')"
}
ge() { # CMD... N: what CMD prints (fp NAME FIELD, fp_svc ...) is at least N
	local v
	v=$("${@:1:$#-1}" 2>/dev/null)
	[ -n "$v" ] && [ "$v" -ge "${!#}" ]
}
gt_fp() { # NAME FIELD N: fast path counter above N
	local v
	v=$(fp "$1" "$2")
	[ -n "$v" ] && [ "$v" -gt "$3" ]
}
eng_ge() { # NAME N
	local v
	v=$(eng "$1")
	[ -n "$v" ] && [ "$v" -ge "$2" ]
}

# attached: the programs bpftool lists on the cgroup (empty when none).
attached() { bpftool cgroup show "$CG" 2>/dev/null | grep -E 'connect|getpeername|sock_addr' || true; }
detached() { [ -z "$(attached)" ]; }

# svc NS NAME IP PORTS_JSON [EXTRA_SPEC [ANNOTATIONS_JSON]]: a Service.
svc() {
	local ann="" fam=IPv4
	[ -n "${6:-}" ] && ann=", \"annotations\": $6"
	case $3 in *:*) fam=IPv6 ;; esac
	cat <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$2", "namespace": "$1", "resourceVersion": "1"$ann},
 "spec": {"clusterIP": "$3", "clusterIPs": ["$3"], "ipFamilies": ["$fam"], "type": "ClusterIP",
  "ports": $4${5:+, $5}}}
EOF
}
# ep_named PORT_NAME NS NAME PORT IP...: it_ep with its port named PORT_NAME,
# as the Service's port is named.
ep_named() {
	local pn=$1
	shift
	it_ep "$@" | sed "s/\"name\": \"p\", \"port\"/\"name\": \"$pn\", \"port\"/"
}
port() { # NAME PORT TARGET [APP_PROTOCOL]
	local ap=""
	[ -n "${4:-}" ] && ap=", \"appProtocol\": \"$4\""
	echo "{\"name\": \"$1\", \"port\": $2, \"protocol\": \"TCP\", \"targetPort\": $3$ap}"
}

# served_n PID: the per-listener counts of an embackend, space-separated.
served_n() {
	it_served "$1" | sed -E 's/^served //; s/ ?bad=[0-9]+//; s/l[0-9]+=//g'
}

# delta BEFORE AFTER: the element-wise difference of two served_n lines.
delta() {
	local a b i d=()
	read -ra a <<<"$1"
	read -ra b <<<"$2"
	for i in "${!b[@]}"; do d+=($((b[i] - ${a[i]:-0}))); done
	echo "${d[*]}"
}

# spread_of OUT: c0 c1 c2, the connections each of backend-0..2 got, from
# the first line of fastpath_client.py spread's output OUT.
spread_of() {
	local counts
	counts=$(head -n 1 <<<"$1")
	read -r c0 c1 c2 <<<"$(for i in 0 1 2; do sed -nE "s/.*backend-$i=([0-9]+).*/\1/p" <<<"$counts"; done | tr '\n' ' ')"
}

# round_robin_30 OUT TEXT: an ok line TEXT (its %s the spread) when the 30
# connections of OUT reached the three endpoints within one of each other.
round_robin_30() {
	spread_of "$1"
	if [ -n "$c2" ] && [ $((c0 + c1 + c2)) = 30 ] && it_within_one "$c0" "$c1" "$c2"; then
		it_ok "${2//%s/$c0/$c1/$c2}"
	else
		it_fail "${2//%s/?}: $(echo $1)"
	fi
}

# emload_ok FILE: RESULT with requests (or bulk bytes) and no error.
emload_ok() {
	local r
	r=$(grep '^RESULT' "$1" | tail -n 1)
	[[ $r =~ errors=0( |$) ]] || return 1
	[[ $r =~ ops=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ] && return 0
	[[ $r =~ gb_all=([0-9.]+) ]] && awk -v g="${BASH_REMATCH[1]}" 'BEGIN {exit !(g > 0)}'
}

# =========================================================== one node
it_capture_netns fp
NS1=$IT_NS
CAP='{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]}'
fp_conf one edge-node-1 "{\"mode\": \"auto\", \"cgroup\": \"$CG\"}" "$CAP"
fp_start one "$NS1"
LOG1=${EM_LOG[one]}

line=$(grep -m1 'fastpath: ' "$LOG1")
it_log "start: $line"
if ! grep -q "fastpath: on: cgroup $CG" "$LOG1"; then
	# Without the kernel's or the privileges' consent the rest cannot run.
	grep -q 'fastpath: off: ' "$LOG1" && it_skip "the fast path is off here: ${line#*fastpath: }"
	it_die "no 'fastpath: on: cgroup $CG' line in the log"
fi
it_ok "the start logs 'fastpath: on: cgroup $CG'"
it_check "meshctl stats: fastpath state on, cgroup $CG" \
	[ "$(fp one state) $(fp one cgroup)" = "on $CG" ]
attached | sed 's/^/    bpftool| /'
it_check "programs attached to the cgroup: connect4 and getpeername4" \
	eval "attached | grep -q connect4 && attached | grep -q getpeername4"

# ---- services and backends
objs=(
	# plain TCP: fast path
	"$(svc default echo 10.96.0.7 "[$(port p 7 7007)]")"
	"$(it_ep default echo 7007 127.0.0.21 127.0.0.22 127.0.0.23)"
	"$(svc default src 10.96.0.8 "[$(port p 9 7009)]")" "$(it_ep default src 7009 127.0.0.21)"
	"$(svc default spread 10.96.0.90 "[$(port p 80 8080)]")"
	"$(it_ep default spread 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(svc default sticky 10.96.0.91 "[$(port p 80 8080)]" \
		'"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}')"
	"$(it_ep default sticky 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	# the engine's
	"$(svc default web 10.96.0.80 "[$(port http 80 8080)]")"
	"$(ep_named http default web 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(svc default app 10.96.0.81 "[$(port web 80 8080 http)]")"
	"$(ep_named web default app 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(svc default dual 10.96.0.82 "[$(port p 7 7007), $(port grpc 81 8080)]")"
	"$(it_ep default dual 7007 127.0.0.21)"
	"$(svc default limited 10.96.0.83 "[$(port p 80 8080)]" "" '{"edgemesh.io/qps": "1000"}')"
	"$(it_ep default limited 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(svc default offsvc 10.96.0.84 "[$(port p 80 8080)]" "" '{"edgemesh.io/fastpath": "off"}')"
	"$(it_ep default offsvc 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
)
pub0=$(fp one publishes)
IT_SOCK=$IT_TMP/one.sock
it_apply "$(it_list "${objs[@]}")"
it_wait 10 gt_fp one publishes "${pub0:-0}" || it_fail "no snapshot publish after the apply"
it_log "fastpath after the apply: ports=$(fp one ports) publishes=$(fp one publishes) publish_us=$(fp one publish_us)"
it_check "publish_us reported" [ -n "$(fp one publish_us)" ]
ports4() { [ "$(fp one ports)" = 4 ]; }
it_wait 5 ports4
it_check "the maps hold the 4 plain TCP ports (echo, src, spread, sticky), none of the 5 kept on the engine ($(fp one ports))" ports4

IT_NS=$NS1
# echo listeners: l0-l3 = .21-.24 on 7007, l4/l5 = .21/.22 on 7017
it_backend eb echo 127.0.0.21:7007 127.0.0.22:7007 127.0.0.23:7007 127.0.0.24:7007 \
	127.0.0.21:7017 127.0.0.22:7017
EB=$IT_LAST_PID
it_backend src source 127.0.0.21:7009
it_backend hb http 127.0.0.11:8080 127.0.0.12:8080 127.0.0.13:8080
HB=$IT_LAST_PID

# ---- bytes exact, on the fast path, not through the engine
f0=$(fp one connections) e0=$(eng one)
incg "$NS1" timeout 30 "$EMLOAD" -m pingpong -a 10.96.0.7:7 -c 6 -s 1000 -d 1 -t 1 \
	>"$IT_TMP/pp.out" 2>"$IT_TMP/pp.err"
it_log "pingpong: $(tail -n 1 "$IT_TMP/pp.out")"
it_check "emload pingpong through 10.96.0.7:7: every response equals its request" emload_ok "$IT_TMP/pp.out"
incg "$NS1" timeout 30 "$EMLOAD" -m pingpong -a 10.96.0.7:7 -c 2 -s 200000 -d 1 -t 1 \
	>"$IT_TMP/pp2.out" 2>"$IT_TMP/pp2.err"
it_check "emload pingpong with 200 kB messages intact" emload_ok "$IT_TMP/pp2.out"
incg "$NS1" timeout 30 "$EMLOAD" -m bulk -a 10.96.0.8:9 -c 2 -d 1 -w 0.2 \
	>"$IT_TMP/bulk.out" 2>"$IT_TMP/bulk.err"
it_log "bulk: $(tail -n 1 "$IT_TMP/bulk.out")"
it_check "emload bulk through 10.96.0.8:9: every byte checked" emload_ok "$IT_TMP/bulk.out"
out=$(incg "$NS1" timeout 60 python3 "$FPC" both 10.96.0.7 7 4000000 2>&1)
it_check "4 MB sent and echoed at the same time, intact ($out)" [ $? = 0 ]
# 6 + 2 + 2 + 1 connections: counted by the kernel side.
it_wait 5 ge fp one connections $((f0 + 11))
f1=$(fp one connections)
it_check "fastpath.connections rose by 11 ($f0 -> $f1)" [ "$((f1 - f0))" = 11 ]
it_check "default/echo's own counter counts its 9 connections ($(fp_svc one default/echo connections))" \
	ge fp_svc one default/echo connections 9
# A marker through the engine: once the engine counted it, it would have
# counted the fast path's connections too, had they passed through it.
out=$(ip netns exec "$NS1" timeout 10 python3 "$FPC" peer 10.96.0.7 7 1 2>&1)
it_check "a client outside the cgroup is served through capture ($out)" [ "$out" = 10.96.0.7:7 ]
it_wait 5 eng_ge one $((e0 + 1))
e1=$(eng one)
it_check "the engine accepted only the client outside the cgroup ($e0 -> $e1)" [ "$((e1 - e0))" = 1 ]
it_check "and the fast path did not count it" [ "$(fp one connections)" = "$f1" ]

# ---- IPv6 (connect6, getpeername6), where the namespace has it
if [ "$IT_V6" = 1 ]; then
	it_backend eb6 echo '[::1]:7008'
	p0=$(fp one publishes)
	it_apply "$(it_list "$(svc default echo6 fd00:10:96::7 "[$(port p 7 7008)]")" \
		"$(it_ep default echo6 7008 ::1)")"
	it_wait 10 gt_fp one publishes "$p0" || it_fail "no publish after the IPv6 Service"
	out=$(incg "$NS1" timeout 10 python3 "$FPC" peer fd00:10:96::7 7 2 2>&1)
	it_check "IPv6: served, getpeername returns the cluster IP ($(echo $out))" \
		[ "$(echo $out)" = "fd00:10:96::7:7 fd00:10:96::7:7" ]
	it_check "IPv6: both on the fast path" [ "$(fp_svc one default/echo6 connections)" = 2 ]
else
	it_log "IPv6 not checked: no IPv6 capture in the namespace"
fi

# ---- getpeername and the spread
out=$(incg "$NS1" timeout 10 python3 "$FPC" peer 10.96.0.7 7 3 2>&1)
it_check "getpeername on the client returns the cluster IP ($(echo $out))" \
	[ "$(echo $out)" = "10.96.0.7:7 10.96.0.7:7 10.96.0.7:7" ]
out=$(incg "$NS1" timeout 30 python3 "$FPC" spread 10.96.0.90 80 30 2>&1)
it_log "spread: $(echo $out)"
round_robin_30 "$out" "30 connections round robin over three endpoints (%s)"
it_check "every one of them saw the cluster IP as its peer" grep -qx 'peer_ok=30' <<<"$out"
it_check "default/spread counted 30 connections" \
	[ "$(fp_svc one default/spread connections)" = 30 ]
n=$(incg "$NS1" timeout 30 python3 "$FPC" spread 10.96.0.91 80 12 2>&1 | head -n 1 | wc -w)
it_check "ClientIP affinity: 12 connections reach one endpoint ($n distinct)" [ "$n" = 1 ]

# ---- the balancer of a reload reaches the maps
pol() { # NS/SVC: that service's policy in the maps
	st one "[e['policy'] for e in s['fastpath']['services'] if e['service'] == '$1'][0]"
}
it_check "default/spread is round robin in the kernel, default/sticky ClientIP ($(pol default/spread), $(pol default/sticky))" \
	[ "$(pol default/spread) $(pol default/sticky)" = "round_robin client_ip" ]
sed -i 's/"log_level": "info",/"log_level": "info", "balancer": "random",/' "$IT_TMP/one.json"
kill -HUP "${EM_PID[one]}"
policy_is() { [ "$(pol default/spread)" = "$1" ]; }
it_wait 10 policy_is random
it_check "a SIGHUP with balancer random: the maps say random ($(pol default/spread))" policy_is random
out=$(incg "$NS1" timeout 60 python3 "$FPC" spread 10.96.0.90 80 60 2>&1)
spread_of "$out"
# Uniform picks leave one of three endpoints without any of 60 connections
# with a chance of 3 x (2/3)^60, about 1e-10.
if [ -n "$c2" ] && [ $((c0 + c1 + c2)) = 60 ] && [ "$c0" -gt 0 ] && [ "$c1" -gt 0 ] && [ "$c2" -gt 0 ]; then
	it_ok "60 connections picked at random reach all three endpoints ($c0/$c1/$c2)"
else
	it_fail "60 connections at random: $out"
fi
sed -i 's/"log_level": "info", "balancer": "random",/"log_level": "info",/' "$IT_TMP/one.json"
kill -HUP "${EM_PID[one]}"
it_wait 10 policy_is round_robin
it_check "a SIGHUP back to round robin reaches the maps ($(pol default/spread))" policy_is round_robin

# ---- endpoint churn under running connections
incg_bg churn "$NS1" "$EMLOAD" -m pingpong -a 10.96.0.7:7 -c 6 -s 1000 -d 12 -t 1
CH=$IT_LAST_PID
it_wait 5 eval '[ "$(ip netns exec "$NS1" ss -Htn state established "sport = :7007" | wc -l)" -ge 6 ]' ||
	it_fail "the churn load did not connect"
# apply_eps IP... PORT: the echo Service's endpoints; waits for the publish.
apply_eps() {
	local p0 port=${!#}
	p0=$(fp one publishes)
	it_apply "$(it_ep default echo "$port" "${@:1:$#-1}")"
	it_wait 10 gt_fp one publishes "$p0" || it_fail "no publish after the endpoint change"
}
# step WHAT N EXPECT: N new connections; EXPECT is a test on the deltas
# d0..d5 of the echo listeners.
step() {
	local b a d0 d1 d2 d3 d4 d5 out
	b=$(served_n "$EB")
	out=$(incg "$NS1" timeout 30 python3 "$FPC" peer 10.96.0.7 7 "$2" 2>&1 >/dev/null)
	a=$(served_n "$EB")
	read -r d0 d1 d2 d3 d4 d5 <<<"$(delta "$b" "$a")"
	if [ -z "$out" ] && eval "$3"; then
		it_ok "$1: $2 new connections went to $d0/$d1/$d2/$d3 on 7007, $d4/$d5 on 7017"
	else
		it_fail "$1: $d0/$d1/$d2/$d3 on 7007, $d4/$d5 on 7017 $out"
	fi
}
step "three endpoints" 6 '[ $d0 -ge 1 ] && [ $d1 -ge 1 ] && [ $d2 -ge 1 ] && [ $((d0 + d1 + d2)) = 6 ]'
apply_eps 127.0.0.21 127.0.0.22 7007
step "127.0.0.23 removed" 6 '[ $d0 -ge 1 ] && [ $d1 -ge 1 ] && [ $((d0 + d1)) = 6 ] && [ $d2 = 0 ]'
apply_eps 127.0.0.21 127.0.0.22 127.0.0.24 7007
step "127.0.0.24 added" 9 '[ $d3 -ge 1 ] && [ $d2 = 0 ] && [ $((d0 + d1 + d3)) = 9 ]'
apply_eps 127.0.0.21 127.0.0.22 7017
step "the endpoints' port changed to 7017" 6 \
	'[ $d4 -ge 1 ] && [ $d5 -ge 1 ] && [ $((d4 + d5)) = 6 ] && [ $((d0 + d1 + d2 + d3)) = 0 ]'
it_check "the long connections ran through every change" kill -0 "$CH"
it_wait 20 eval '! kill -0 '"$CH"' 2>/dev/null'
it_log "churn load: $(tail -n 1 "$IT_TMP/churn.out")"
it_check "the 6 connections made before the changes carried on without an error" emload_ok "$IT_TMP/churn.out"
apply_eps 127.0.0.21 127.0.0.22 127.0.0.23 7007

# ---- services that stay on the engine
f0=$(fp one connections) e0=$(eng one)
hb0=$(served_n "$HB")
it_urls 30 "http://10.96.0.80/" | sed 's/^/url = /' >"$IT_TMP/web.urls"
incg "$NS1" timeout 30 curl -sS --max-time 20 -K "$IT_TMP/web.urls" >"$IT_TMP/web.out" 2>"$IT_TMP/web.err"
counts=$(it_count_backends "$IT_TMP/web.out")
it_check "port named http: 30 requests on one connection balanced per request ($counts)" \
	[ "$counts" = "backend-0=10 backend-1=10 backend-2=10 " ]
it_urls 30 "http://10.96.0.81/" | sed 's/^/url = /' >"$IT_TMP/app.urls"
incg "$NS1" timeout 30 curl -sS --max-time 20 -K "$IT_TMP/app.urls" >"$IT_TMP/app.out" 2>"$IT_TMP/app.err"
counts=$(it_count_backends "$IT_TMP/app.out")
it_check "appProtocol http: balanced per request too ($counts)" \
	[ "$counts" = "backend-0=10 backend-1=10 backend-2=10 " ]
out=$(incg "$NS1" timeout 10 python3 "$FPC" peer 10.96.0.82 7 1 2>&1)
it_check "a plain port beside a grpc port: served ($out)" [ "$out" = 10.96.0.82:7 ]
out=$(incg "$NS1" timeout 10 python3 "$FPC" spread 10.96.0.83 80 2 2>&1)
it_check "edgemesh.io/qps: served ($(echo $out))" grep -q 'peer_ok=2' <<<"$out"
out=$(incg "$NS1" timeout 10 python3 "$FPC" spread 10.96.0.84 80 2 2>&1)
it_check "edgemesh.io/fastpath off: served ($(echo $out))" grep -q 'peer_ok=2' <<<"$out"
it_wait 5 eng_ge one $((e0 + 7))
e1=$(eng one)
it_check "the engine accepted each of those 7 connections ($e0 -> $e1)" [ "$((e1 - e0))" = 7 ]
it_check "the fast path counted none of them" [ "$(fp one connections)" = "$f0" ]

# ---- kill -9: nothing stays attached, the next connect takes capture
it_check "programs attached before kill -9" eval '[ -n "$(attached)" ]'
eb0=$(served_n "$EB")
it_stop "${EM_PID[one]}" KILL 5 2>/dev/null # no "Killed" from bash
it_wait 10 detached
it_check "kill -9: bpftool cgroup show $CG lists no program" detached
out=$(incg "$NS1" timeout 10 python3 "$FPC" peer 10.96.0.7 7 1 2>&1)
eb1=$(served_n "$EB")
it_check "a connect after kill -9 is redirected to the dead capture port, not to an endpoint ($(tail -n 1 <<<"$out"))" \
	eval '[ "$eb0" = "$eb1" ] && grep -q "refused" <<<"$out"'

# ---- fastpath.mode "off"
fp_conf one edge-node-1 "{\"mode\": \"off\", \"cgroup\": \"$CG\"}" "$CAP"
fp_start one "$NS1"
it_check "mode off: the start logs 'fastpath: off: off in the config'" \
	grep -q 'fastpath: off: off in the config' "${EM_LOG[one]}"
it_check "mode off: meshctl stats says off" [ "$(fp one state)" = off ]
it_check "mode off: no program attached" detached
e0=$(eng one)
out=$(incg "$NS1" timeout 10 python3 "$FPC" peer 10.96.0.7 7 2 2>&1)
it_check "mode off: clients in the cgroup are served ($(echo $out))" [ "$(echo $out)" = "10.96.0.7:7 10.96.0.7:7" ]
it_wait 5 eng_ge one $((e0 + 2))
it_check "mode off: through the engine ($e0 -> $(eng one))" [ "$(($(eng one) - e0))" = 2 ]
it_node_stop one

# ---- no privileges: capture off (it needs CAP_NET_ADMIN too), a listener
fp_conf one edge-node-1 "{\"mode\": \"auto\", \"cgroup\": \"$CG\"}" '{"enabled": false}' "" \
	'[{"listen": "127.0.0.1:17007", "service": "default/echo", "port": 7}]'
fp_start one "$NS1" setpriv --inh-caps=-all --bounding-set=-bpf,-sys_admin,-net_admin,-perfmon --
line=$(grep -m1 'fastpath: ' "${EM_LOG[one]}")
it_log "unprivileged start: $line"
it_check "unprivileged: the start logs 'fastpath: off: <reason>'" \
	grep -qE 'fastpath: off: .+' <<<"$line"
it_check "unprivileged: meshctl stats says off with a reason ($(fp one reason))" \
	eval '[ "$(fp one state)" = off ] && [ -n "$(fp one reason)" ]'
it_check "unprivileged: no program attached" detached
out=$(printf 'still served\n' | ip netns exec "$NS1" timeout 10 socat -t 3 - TCP:127.0.0.1:17007 2>&1)
it_check "unprivileged: the explicit listener serves ($out)" [ "$out" = "still served" ]
it_node_stop one

# =========================================================== two nodes
NSA=em-fpa-$$
NSB=em-fpb-$$
IPA=192.168.78.1
IPB=192.168.78.2
KEY=fastpath-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
it_veth_pair "$NSA" "$NSB" "emfa$$" "emfb$$" "$IPA" "$IPB" 10.96.0.0/12
tun() { echo "{\"encryption\": \"none\", \"listen\": \"$1:20006\", \"cluster_key\": \"$KEY\", \"reconnect_min_ms\": 100, \"reconnect_max_ms\": 1000}"; }
fp_conf node-a node-a "{\"mode\": \"auto\", \"cgroup\": \"$CG\"}" \
	'{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]}' "$(tun $IPA)"
fp_conf node-b node-b '{"mode": "off"}' '{"enabled": false}' "$(tun $IPB)"
fp_start node-a "$NSA"
fp_start node-b "$NSB"
it_check "node A: fastpath on" grep -q "fastpath: on: cgroup $CG" "${EM_LOG[node-a]}"
MANIFESTS=$(it_list \
	"$(it_node_obj node-a $IPA)" "$(it_node_obj node-b $IPB)" \
	"$(svc default far 10.96.0.90 "[$(port p 80 8080)]")" \
	"$(it_ep_obj default far 8080 127.0.0.21@node-b 127.0.0.22@node-b 127.0.0.23@node-b)" \
	"$(svc default mix 10.96.0.91 "[$(port p 80 8081)]")" \
	"$(it_ep_obj default mix 8081 127.0.0.11@node-a 127.0.0.12@node-b 127.0.0.13@node-b)")
pa0=$(fp node-a publishes)
it_node_apply node-a "$MANIFESTS"
it_node_apply node-b "$MANIFESTS"
it_wait 10 gt_fp node-a publishes "${pa0:-0}" || it_fail "node A: no publish after the apply"
IT_NS=$NSB
it_backend far-b http 127.0.0.21:8080 127.0.0.22:8080 127.0.0.23:8080
# l0 is a placeholder so that B's endpoints answer backend-1 and backend-2.
it_backend mix-b http 127.0.0.10:8081 127.0.0.12:8081 127.0.0.13:8081
IT_NS=$NSA
it_backend mix-a http 127.0.0.11:8081
tunnel_up() { incg "$NSA" timeout 5 python3 "$FPC" spread 10.96.0.90 80 1 >/dev/null 2>&1; }
it_wait 15 tunnel_up || it_fail "no answer from node B through the tunnel"

f0=$(fp node-a connections) h0=$(fp node-a handoffs) e0=$(eng node-a)
out=$(incg "$NSA" timeout 60 python3 "$FPC" spread 10.96.0.90 80 30 2>&1)
it_log "far: $(echo $out)"
round_robin_30 "$out" "only remote endpoints: 30 connections through the tunnel, spread %s"
it_check "they saw the cluster IP as their peer" grep -qx 'peer_ok=30' <<<"$out"
it_wait 5 ge fp node-a handoffs $((h0 + 30))
it_check "node A handed all 30 to the engine (handoffs $h0 -> $(fp node-a handoffs))" \
	[ "$(($(fp node-a handoffs) - h0))" = 30 ]
it_wait 5 eng_ge node-a $((e0 + 30))
it_check "node A's engine accepted the 30 ($e0 -> $(eng node-a))" [ "$(($(eng node-a) - e0))" = 30 ]

h0=$(fp node-a handoffs) e0=$(eng node-a) m0=$(fp_svc node-a default/mix connections)
out=$(incg "$NSA" timeout 60 python3 "$FPC" spread 10.96.0.91 80 30 2>&1)
it_log "mix: $(echo $out)"
round_robin_30 "$out" "one local and two remote endpoints: spread %s (A's own is backend-0)"
it_wait 5 eng_ge node-a $((e0 + c1 + c2))
it_check "the remote picks ($((c1 + c2))) were handed off, the local ones ($c0) not" \
	eval '[ "$(($(fp node-a handoffs) - h0))" = $((c1 + c2)) ] && [ "$(($(eng node-a) - e0))" = $((c1 + c2)) ]'
it_node_stop node-a
it_node_stop node-b
it_wait 10 detached
it_check "node A stopped: no program left on the cgroup" detached

it_done
