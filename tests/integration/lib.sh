# Helpers for the integration scripts (sourced, not run). They drive the real
# binaries of build/ (or $B): edgemesh, meshctl, embackend, emload, plus
# tests/integration/httpecho.c, compiled on demand into the test's temp dir.
#
# Every process started through it_bg / it_em_start / it_backend is killed,
# every namespace made by it_netns deleted and the temp dir removed by the
# EXIT trap, also when the script fails half-way. Every wait is bounded.
#
# Result reporting: it_ok / it_fail record one check each and the script goes
# on; it_die ends it at once; it_done exits 1 if any check failed. Exit 77
# (it_skip) means skipped, the last output line being the reason.

set -u

IT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
B=${B:-$IT_ROOT/build}
case $B in /*) ;; *) B=$IT_ROOT/$B ;; esac
EDGEMESH=$B/edgemesh
MESHCTL=$B/meshctl
EMBACKEND=$B/embackend
EMLOAD=$B/emload

# The daemons' I/O backend: EM_IO_BACKEND=epoll (or io_uring) runs every
# daemon the script starts on it (through EDGEMESH_IO_BACKEND, which
# overrides io_backend in every config); it_em_start and it_node_start
# check the daemon's log line for it.
[ -n "${EM_IO_BACKEND:-}" ] && export EDGEMESH_IO_BACKEND=$EM_IO_BACKEND

# The fast path (engine/fastpath.h) stays off in every daemon a test starts:
# with its default cgroup (the root) each daemon would rewrite the connects of
# every process on the machine, other tests' daemons' clients included. A test
# of the fast path sets EDGEMESH_FASTPATH=auto and its own cgroup.
export EDGEMESH_FASTPATH=${EDGEMESH_FASTPATH:-off}

IT_TMP=$(mktemp -d /tmp/em-it.XXXXXX)
IT_PIDS=()
declare -A IT_OUT=()
IT_NETNS_LIST=()
IT_NS=""           # namespace of it_in / it_bg; "" = the caller's
IT_SOCK=$IT_TMP/edgemesh.sock
IT_DATA=$IT_TMP/data
IT_CONF=$IT_TMP/edgemesh.json
IT_EM_PID=""
IT_EM_LOG=""
IT_EM_STARTS=0
IT_FAILS=0
IT_CHECKS=0
IT_T0=$(date +%s%N)

# A /24 of the loopback range of our own, so that parallel runs and other
# tests on the host do not collide on addresses (host loopback tests only).
IT_NET=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))

it_log() {
	local ms=$((($(date +%s%N) - IT_T0) / 1000000))
	printf '[%3d.%03d] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}

it_ok() {
	IT_CHECKS=$((IT_CHECKS + 1))
	it_log "ok   - $*"
}

it_fail() {
	IT_CHECKS=$((IT_CHECKS + 1))
	IT_FAILS=$((IT_FAILS + 1))
	it_log "FAIL - $*"
}

# it_check DESCRIPTION CMD...: one check whose outcome is CMD's status.
it_check() {
	local desc=$1
	shift
	if "$@"; then it_ok "$desc"; else it_fail "$desc"; fi
}

it_die() {
	it_fail "$*"
	exit 1
}

it_skip() {
	echo "$*"
	exit 77
}

it_need_root() {
	[ "$(id -u)" = 0 ] || it_skip "needs root (network namespaces and iptables)"
	command -v ip >/dev/null || it_skip "needs iproute2 (ip)"
	command -v iptables-save >/dev/null || it_skip "needs iptables"
}

it_need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || it_skip "needs $t"
	done
}

it_done() {
	if [ "$IT_FAILS" -gt 0 ]; then
		it_log "$IT_FAILS of $IT_CHECKS checks failed"
		exit 1
	fi
	it_log "all $IT_CHECKS checks passed"
	exit 0
}

it_dump_logs() {
	local f
	for f in "$IT_TMP"/*.log; do
		[ -e "$f" ] || continue
		echo "---- last lines of $(basename "$f")"
		tail -n 25 "$f"
	done
}

it_cleanup() {
	local rc=$? p i ns
	trap - EXIT
	# A reader that went away must not cut the cleanup short.
	trap '' PIPE HUP INT TERM
	for p in "${IT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for i in $(seq 60); do
		local alive=0
		for p in "${IT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.05
	done
	for p in "${IT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	for p in "${IT_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	for ns in "${IT_NETNS_LIST[@]}"; do ip netns del "$ns" 2>/dev/null; done
	[ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && it_dump_logs 2>/dev/null
	[ -n "${IT_KEEP_TMP:-}" ] || rm -rf "$IT_TMP"
	exit "$rc"
}
trap it_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

# it_wait SECONDS CMD...: runs CMD every 50 ms until it succeeds; status 1
# when SECONDS pass first.
it_wait() {
	local end=$(($(date +%s%N) + $1 * 1000000000)) i
	shift
	for i in $(seq 100000); do # bounded by the deadline; the count is a backstop
		"$@" && return 0
		[ "$(date +%s%N)" -lt "$end" ] || return 1
		sleep 0.05
	done
	return 1
}

# it_bridge BRIDGE_NS NS:IP...: a namespace BRIDGE_NS holding a bridge, and
# for each NS:IP a node namespace NS (lo up, the cluster-IP range routed
# locally) joined to the bridge by a veth addressed IP/24, whose name in NS
# is IT_BRIDGE_IF[NS]; returns once the bridge's ports are up. Every
# namespace is removed at exit.
declare -A IT_BRIDGE_IF
it_bridge() {
	local nsx=$1 i=0 pair ns ip
	shift
	ip netns add "$nsx" || it_die "ip netns add $nsx"
	IT_NETNS_LIST+=("$nsx")
	ip -n "$nsx" link add br0 type bridge && ip -n "$nsx" link set br0 up || it_die "bridge"
	for pair in "$@"; do
		ns=${pair%%:*} ip=${pair#*:} i=$((i + 1))
		ip netns add "$ns" || it_die "ip netns add $ns"
		IT_NETNS_LIST+=("$ns")
		ip -n "$ns" link set lo up
		ip -n "$ns" route add local 10.96.0.0/12 dev lo || it_die "local route in $ns"
		ip link add "emn$$-$i" netns "$ns" type veth peer name "emx$$-$i" netns "$nsx" ||
			it_die "veth $i"
		ip -n "$nsx" link set "emx$$-$i" master br0 up
		ip -n "$ns" addr add "$ip/24" dev "emn$$-$i" && ip -n "$ns" link set "emn$$-$i" up ||
			it_die "veth $i address"
		IT_BRIDGE_IF[$ns]=emn$$-$i
	done
	it_wait 10 _it_bridge_up "$nsx" "$i" || it_die "the bridge's ports do not come up"
}
_it_bridge_up() { # BRIDGE_NS N
	local k
	for k in $(seq "$2"); do
		ip -n "$1" -br link show "emx$$-$k" | grep -qw UP || return 1
	done
}

# it_netns NAME: a fresh network namespace with lo up and the cluster-IP ranges
# routed locally (10.96.0.0/12; fd00:10:96::/112 when IPv6 is on). Later
# it_in / it_bg run inside it.
it_netns() {
	local ns="emit-$$-$1"
	ip netns add "$ns" || it_die "ip netns add $ns"
	IT_NETNS_LIST+=("$ns")
	IT_NS=$ns
	ip netns exec "$ns" ip link set lo up || it_die "lo up in $ns"
	ip netns exec "$ns" ip route add local 10.96.0.0/12 dev lo || it_die "local route in $ns"
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 2>/dev/null
	ip netns exec "$ns" ip -6 route add local fd00:10:96::/112 dev lo 2>/dev/null || true
}

# it_capture_netns NAME: it_netns NAME for a capture test; skips when
# iptables' nat table does not work there. Sets IT_V6 (1 when IPv6 capture
# works too) and IT_CIDRS (the JSON members of capture.service_cidrs).
it_capture_netns() {
	it_netns "$1"
	it_in iptables -t nat -S >/dev/null 2>&1 || it_skip "iptables nat does not work in a network namespace"
	IT_V6=0
	if it_in ip6tables -t nat -S >/dev/null 2>&1 &&
		it_in ip -6 route show table local 2>/dev/null | grep -q 'fd00:10:96::/112'; then
		IT_V6=1
	fi
	IT_CIDRS='"10.96.0.0/12"'
	[ $IT_V6 = 1 ] && IT_CIDRS+=', "fd00:10:96::/112"'
	return 0
}

# it_veth_pair NSA NSB VA VB IPA IPB [LOCAL_CIDR]: two fresh namespaces NSA and
# NSB (removed at exit) with lo up, joined by veth VA (in NSA, address IPA/24)
# and VB (in NSB, IPB/24); with LOCAL_CIDR, that range is routed locally in
# both, as cluster IPs are. Returns once VA is up; dies on any failure.
it_veth_pair() {
	local nsa=$1 nsb=$2 va=$3 vb=$4 ipa=$5 ipb=$6 cidr=${7:-} ns
	for ns in "$nsa" "$nsb"; do
		ip netns add "$ns" || it_die "ip netns add $ns"
		IT_NETNS_LIST+=("$ns")
		ip -n "$ns" link set lo up || it_die "lo up in $ns"
		[ -z "$cidr" ] || ip -n "$ns" route add local "$cidr" dev lo ||
			it_die "local route $cidr in $ns"
	done
	ip link add "$va" netns "$nsa" type veth peer name "$vb" netns "$nsb" || it_die "veth pair"
	ip -n "$nsa" addr add "$ipa/24" dev "$va" && ip -n "$nsa" link set "$va" up &&
		ip -n "$nsb" addr add "$ipb/24" dev "$vb" && ip -n "$nsb" link set "$vb" up ||
		it_die "veth addresses"
	_veth_up() { [ "$(ip -n "$nsa" -br link show "$va" | awk '{print $2}')" = UP ]; }
	it_wait 5 _veth_up || it_die "veth link $va does not come up"
}

# it_in CMD...: runs CMD in the current namespace (IT_NS).
it_in() {
	if [ -n "$IT_NS" ]; then ip netns exec "$IT_NS" "$@"; else "$@"; fi
}

# it_bgpid OUT ERR CMD...: CMD in the background in IT_NS; IT_BGPID is the
# command's own pid (not a subshell's, so signals reach it).
it_bgpid() {
	local out=$1 err=$2
	shift 2
	if [ "$out" = "$err" ]; then
		if [ -n "$IT_NS" ]; then
			ip netns exec "$IT_NS" "$@" >"$out" 2>&1 &
		else
			"$@" >"$out" 2>&1 &
		fi
	elif [ -n "$IT_NS" ]; then
		ip netns exec "$IT_NS" "$@" >"$out" 2>"$err" &
	else
		"$@" >"$out" 2>"$err" &
	fi
	IT_BGPID=$!
}

# it_bg NAME CMD...: starts CMD in the background in IT_NS, stdout in
# $IT_TMP/NAME.out, stderr in $IT_TMP/NAME.err; the pid is in IT_LAST_PID.
# (ip netns exec execs the command, so the pid is the command's own.)
it_bg() {
	local name=$1
	shift
	it_bgpid "$IT_TMP/$name.out" "$IT_TMP/$name.err" "$@"
	IT_LAST_PID=$IT_BGPID
	IT_PIDS+=("$IT_LAST_PID")
	IT_OUT[$IT_LAST_PID]=$IT_TMP/$name.out
}

it_forget_pid() {
	local p keep=()
	for p in "${IT_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	IT_PIDS=("${keep[@]}")
}

# it_stop PID [SIGNAL [SECONDS]]: signals PID and waits (bounded) for it to
# exit; its exit status is in IT_RC (or 255 if it had to be SIGKILLed).
it_stop() {
	local pid=$1 sig=${2:-TERM} secs=${3:-10} i
	kill -"$sig" "$pid" 2>/dev/null
	IT_RC=255
	for i in $(seq $((secs * 20))); do
		kill -0 "$pid" 2>/dev/null || break
		# A zombie is dead enough: wait reaps it below.
		[ "$(ps -o stat= -p "$pid" 2>/dev/null)" = Z ] && break
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z ]; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		it_forget_pid "$pid"
		return 1
	fi
	wait "$pid" 2>/dev/null
	IT_RC=$?
	it_forget_pid "$pid"
	return 0
}

# it_wait_line FILE PATTERN [SECONDS]: waits for an extended-regex line.
it_wait_line() {
	it_wait "${3:-10}" grep -Eq -- "$2" "$1"
}

# ---- edgemesh ---------------------------------------------------------------

# it_em_config [FILE]: writes a config from these variables (JSON fragments):
#   IT_CAPTURE   default {"enabled": false}
#   IT_LISTENERS default []
#   IT_LOG_LEVEL default info
#   IT_WORKERS   default 2
#   IT_EXTRA     extra top-level members, each followed by a comma
#   IT_FASTPATH  default {"mode": "off"}: several daemons on one machine must
#                not all attach at the root cgroup and rewrite each other's
#                connects, so a test turns the fast path on itself
it_em_config() {
	local f=${1:-$IT_CONF} cap='{"enabled": false}' lis='[]' fp='{"mode": "off"}'
	[ -n "${IT_CAPTURE:-}" ] && cap=$IT_CAPTURE
	[ -n "${IT_FASTPATH:-}" ] && fp=$IT_FASTPATH
	[ -n "${IT_LISTENERS:-}" ] && lis=$IT_LISTENERS
	cat >"$f" <<EOF
{
	"role": "edge",
	"node_name": "edge-node-1",
	"data_dir": "$IT_DATA",
	"api_socket": "$IT_SOCK",
	"workers": ${IT_WORKERS:-2},
	"log_level": "${IT_LOG_LEVEL:-info}",
	${IT_EXTRA:-}
	"fastpath": $fp,
	"capture": $cap,
	"listeners": $lis,
	"tunnel": { "listen": "" }
}
EOF
}

# it_backend_check LOG: with EDGEMESH_IO_BACKEND set, dies unless the
# daemon of LOG says it runs that backend.
it_backend_check() {
	[ -z "${EDGEMESH_IO_BACKEND:-}" ] && return 0
	grep -q "io backend $EDGEMESH_IO_BACKEND" "$1" && return 0
	cat "$1"
	it_die "edgemesh does not run the $EDGEMESH_IO_BACKEND backend"
}

# it_em_start [CONFIG]: starts edgemesh in IT_NS with its log in
# $IT_TMP/edgemesh-<n>.log (IT_EM_LOG) and waits until the API socket exists
# and the log says ready. Dies with the log when it does not come up.
it_em_start() {
	local conf=${1:-$IT_CONF}
	IT_EM_STARTS=$((IT_EM_STARTS + 1))
	IT_EM_LOG=$IT_TMP/edgemesh-$IT_EM_STARTS.log
	it_bgpid "$IT_EM_LOG" "$IT_EM_LOG" "$EDGEMESH" -c "$conf"
	IT_EM_PID=$IT_BGPID
	IT_PIDS+=("$IT_EM_PID")
	local i
	for i in $(seq 200); do
		if ! kill -0 "$IT_EM_PID" 2>/dev/null; then
			cat "$IT_EM_LOG"
			it_die "edgemesh exited during start"
		fi
		[ -S "$IT_SOCK" ] && grep -q 'main: ready' "$IT_EM_LOG" &&
			{ it_backend_check "$IT_EM_LOG"; return 0; }
		sleep 0.05
	done
	cat "$IT_EM_LOG"
	it_die "edgemesh did not become ready within 10 s"
}

# it_em_stop [SIGNAL]: stops edgemesh; status in IT_RC.
it_em_stop() {
	it_stop "$IT_EM_PID" "${1:-TERM}" 15
	local r=$?
	IT_EM_PID=""
	return $r
}

it_em_alive() {
	[ -n "$IT_EM_PID" ] && kill -0 "$IT_EM_PID" 2>/dev/null
}

ctl() {
	timeout 10 "$MESHCTL" -s "$IT_SOCK" "$@"
}

# it_apply JSON: applies one object or a List given as text.
it_apply() {
	printf '%s\n' "$1" | ctl apply -f - >/dev/null || it_die "meshctl apply failed: $1"
}

# it_stat KEY: a numeric member of `meshctl stats`.
it_stat() {
	ctl stats | tr -d '\t ' | sed -n "s/^\"$1\":\([0-9]*\).*/\1/p" | head -n 1
}

# it_stat_ge KEY N: `meshctl stats` member KEY is at least N (for it_wait;
# workers publish their counters every 50 ms).
it_stat_ge() {
	local v
	v=$(it_stat "$1")
	[ "${v:-0}" -ge "$2" ]
}

# ---- manifests --------------------------------------------------------------

# it_svc NS NAME CLUSTER_IP PORT TARGET_PORT [SESSION_AFFINITY [TIMEOUT_S]]
it_svc() {
	local aff=${6:-None} cfg=""
	[ "$aff" = ClientIP ] &&
		cfg=", \"sessionAffinityConfig\": {\"clientIP\": {\"timeoutSeconds\": ${7:-10800}}}"
	local fam=IPv4
	case $3 in *:*) fam=IPv6 ;; esac
	cat <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$2", "namespace": "$1", "resourceVersion": "1"},
 "spec": {"clusterIP": "$3", "clusterIPs": ["$3"], "ipFamilies": ["$fam"],
  "ports": [{"name": "p", "port": $4, "protocol": "TCP", "targetPort": $5}],
  "type": "ClusterIP", "sessionAffinity": "$aff"$cfg}}
EOF
}

# it_ep NS NAME PORT IP...: Endpoints with every IP ready on this node.
# With no IP the object has no subsets (a service without endpoints).
it_ep() {
	local ns=$1 name=$2 port=$3 ip on=()
	shift 3
	for ip in "$@"; do
		on+=("$ip@edge-node-1")
	done
	it_ep_obj "$ns" "$name" "$port" "${on[@]}"
}

# it_list OBJECT...: a kubectl List of the given objects.
it_list() {
	local o sep="" items=""
	for o in "$@"; do
		items+="$sep$o"
		sep=","
	done
	printf '{"apiVersion": "v1", "kind": "List", "items": [%s]}\n' "$items"
}

# ---- backends and clients ---------------------------------------------------

# it_backend NAME MODE ADDR...: embackend in IT_NS, waits for "ready";
# IT_LAST_PID is its pid.
it_backend() {
	local name=$1 mode=$2 a args=()
	shift 2
	for a in "$@"; do args+=(-l "$a"); done
	it_bg "$name" "$EMBACKEND" -m "$mode" "${args[@]}" -t 1 -b 16
	it_wait_line "$IT_TMP/$name.out" '^ready' 10 ||
		{ cat "$IT_TMP/$name.err"; it_die "embackend $name did not start"; }
}

# it_served PID: prints embackend's next "served ..." line (SIGUSR1).
it_served() {
	local f=${IT_OUT[$1]:-} before
	[ -n "$f" ] || return 1
	before=$(grep -c '^served' "$f")
	kill -USR1 "$1" || return 1
	it_wait 5 it_more_lines "$f" '^served' "$before" || return 1
	grep '^served' "$f" | tail -n 1
}

it_more_lines() {
	[ "$(grep -c -- "$2" "$1")" -gt "$3" ]
}

# it_httpecho_build: compiles the HTTP echo peer (once per test run).
it_httpecho_build() {
	HTTPECHO=$IT_TMP/httpecho
	[ -x "$HTTPECHO" ] && return 0
	cc -O2 -Wall -Wextra -pthread -o "$HTTPECHO" "$IT_ROOT/tests/integration/httpecho.c" ||
		it_die "cannot build tests/integration/httpecho.c"
}

# it_httpecho NAME ADDR...: HTTP echo server (see httpecho.c) in IT_NS.
it_httpecho() {
	local name=$1 a args=()
	shift
	it_httpecho_build
	for a in "$@"; do args+=(-l "$a"); done
	it_bg "$name" "$HTTPECHO" serve "${args[@]}"
	it_wait_line "$IT_TMP/$name.out" '^ready' 10 ||
		{ cat "$IT_TMP/$name.err"; it_die "httpecho $name did not start"; }
}

# it_count_backends FILE: "backend-0=N backend-1=N ..." from response bodies.
it_count_backends() {
	tr -d '.' <"$1" | grep -E '^backend-[0-9]+$' | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' '
}

# it_within_one COUNT...: all counts differ by at most 1.
it_within_one() {
	local min=999999999 max=0 c
	for c in "$@"; do
		[ "$c" -lt "$min" ] && min=$c
		[ "$c" -gt "$max" ] && max=$c
	done
	[ $((max - min)) -le 1 ]
}

# it_urls N URL: URL repeated N times (curl fetches them on one connection).
it_urls() {
	local i
	for i in $(seq "$1"); do printf '%s\n' "$2"; done
}

# ---- several named daemons (the multi-node tests) ----------------------------
# A daemon NAME runs with $IT_TMP/NAME.json and API socket $IT_TMP/NAME.sock;
# its pid is EM_PID[NAME], its log EM_LOG[NAME] (a new file per start).
declare -A EM_PID=() EM_LOG=()

# it_node_start NAME NS: starts edgemesh NAME in namespace NS; waits (10 s at
# most) until it is ready.
it_node_start() {
	local name=$1 i
	IT_NS=$2
	IT_EM_STARTS=$((IT_EM_STARTS + 1))
	EM_LOG[$name]=$IT_TMP/edgemesh-$name-$IT_EM_STARTS.log
	it_bgpid "${EM_LOG[$name]}" "${EM_LOG[$name]}" "$EDGEMESH" -c "$IT_TMP/$name.json"
	EM_PID[$name]=$IT_BGPID
	IT_PIDS+=("$IT_BGPID")
	for i in $(seq 200); do
		kill -0 "${EM_PID[$name]}" 2>/dev/null ||
			{ cat "${EM_LOG[$name]}"; it_die "edgemesh $name exited during start"; }
		[ -S "$IT_TMP/$name.sock" ] && grep -q 'main: ready' "${EM_LOG[$name]}" &&
			{ it_backend_check "${EM_LOG[$name]}"; return 0; }
		sleep 0.05
	done
	cat "${EM_LOG[$name]}"
	it_die "edgemesh $name did not become ready within 10 s"
}

it_node_stop() {
	it_stop "${EM_PID[$1]}" TERM 10 || it_log "edgemesh $1 had to be killed"
}

# it_node_apply NAME JSON: meshctl apply on NAME's API socket.
it_node_apply() {
	printf '%s\n' "$2" | timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" apply -f - >/dev/null ||
		it_die "meshctl apply on $1 failed: $2"
}

# it_node_obj NAME IP [TUNNEL_PORT]: a Node with that InternalIP, annotated
# with edgemesh.io/tunnel-port when a port is given.
it_node_obj() {
	local ann=""
	[ -n "${3:-}" ] && ann=", \"annotations\": {\"edgemesh.io/tunnel-port\": \"$3\"}"
	cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$1", "resourceVersion": "1"$ann},
 "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "$2"}]}}
EOF
}

# it_ep_obj NS NAME PORT IP@NODE...: Endpoints with one port named "p"; with
# no address, no subsets.
it_ep_obj() {
	local ns=$1 name=$2 port=$3 a addrs="" sep="" subsets="[]"
	shift 3
	for a in "$@"; do
		addrs+="$sep{\"ip\": \"${a%@*}\", \"nodeName\": \"${a#*@}\"}"
		sep=", "
	done
	[ $# -gt 0 ] &&
		subsets="[{\"addresses\": [$addrs], \"ports\": [{\"name\": \"p\", \"port\": $port, \"protocol\": \"TCP\"}]}]"
	cat <<EOF
{"apiVersion": "v1", "kind": "Endpoints",
 "metadata": {"name": "$name", "namespace": "$ns", "resourceVersion": "1"},
 "subsets": $subsets}
EOF
}

# it_rule_ep NAME TYPE PROPERTIES / it_rule NAME SOURCE SOURCE_RESOURCE
# TARGET TARGET_RESOURCE: KubeEdge Router objects (rules.kubeedge.io/v1) in
# namespace default; PROPERTIES and the resources are JSON objects.
it_rule_ep() {
	echo "{\"apiVersion\": \"rules.kubeedge.io/v1\", \"kind\": \"RuleEndpoint\",
	 \"metadata\": {\"name\": \"$1\", \"namespace\": \"default\"},
	 \"spec\": {\"ruleEndpointType\": \"$2\", \"properties\": $3}}"
}
it_rule() {
	echo "{\"apiVersion\": \"rules.kubeedge.io/v1\", \"kind\": \"Rule\",
	 \"metadata\": {\"name\": \"$1\", \"namespace\": \"default\"},
	 \"spec\": {\"source\": \"$2\", \"sourceResource\": $3, \"target\": \"$4\",
	  \"targetResource\": $5}}"
}
