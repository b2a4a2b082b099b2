#!/usr/bin/env bash
# Config and data that would hurt the node are refused, in a network
# namespace of the test's own:
#  - a tunnel.cluster_key shorter than 32 bytes or equal to the shipped
#    placeholder: refused by -t, at start and at SIGHUP (the old config keeps
#    serving); the message says how to make a key;
#  - capture.service_cidrs that capture everything (0.0.0.0/0, ::/0, /7) or
#    contain an address of the node: refused by -t and at start (no capture
#    rule installed), and at SIGHUP when the node has gained such an address;
#  - api_socket naming a regular file (here also the database itself):
#    refused by -t and at start, the file left byte for byte as it was;
#  - Endpoints / EndpointSlices with an unspecified, multicast, broadcast or
#    captured-service address: meshctl apply fails naming the object and the
#    field, and nothing is stored.
# B=DIR runs the binaries of another build (e.g. B=/tmp/em-old/build). Root.
. "$(dirname "$0")/lib.sh"
it_need_root
it_need curl cmp

it_netns guard
it_in iptables -t nat -S >/dev/null 2>&1 || it_skip "iptables nat does not work in a network namespace"

KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
SHORT=short-key-$$
PLACEHOLDER=change-me-to-a-long-random-cluster-key
N=127.0.0
CAP_OK='{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]}'

# conf FILE KEY CAPTURE [API_SOCKET]: an edge config in the test's data dir
# with tunnels on loopback and one listener to prove the daemon serves.
conf() {
	cat >"$1" <<EOF
{
	"role": "edge",
	"node_name": "edge-node-1",
	"data_dir": "$IT_DATA",
	"api_socket": "${4:-$IT_SOCK}",
	"workers": 1,
	"log_level": "info",
	"fastpath": {"mode": "off"},
	"capture": $3,
	"listeners": [{"listen": "$N.1:18080", "service": "default/web", "port": 80}],
	"tunnel": {"encryption": "none", "listen": "$N.1:20006", "cluster_key": "$2"}
}
EOF
}

# refused_t NAME FILE TEXT...: -t exits 1 and the message names FILE and
# holds every TEXT.
refused_t() {
	local name=$1 f=$2 out rc t miss=""
	shift 2
	out=$(it_in "$EDGEMESH" -c "$f" -t 2>&1)
	rc=$?
	for t in "$f" "$@"; do grep -qF -- "$t" <<<"$out" || miss+=" '$t'"; done
	if [ $rc = 1 ] && [ -z "$miss" ]; then
		it_ok "-t refuses $name: $(head -n 1 <<<"$out")"
	else
		it_fail "-t on $name: expected exit 1 naming$miss; got $rc: $out"
	fi
}

# refused_start NAME FILE TEXT...: the daemon exits 1 within 5 s with TEXT
# in its log, without having created its socket. One that stays up (an old
# build) is stopped and counted as a failure.
refused_start() {
	local name=$1 f=$2 log=$IT_TMP/start-$1.log pid t miss=""
	shift 2
	it_bgpid "$log" "$log" "$EDGEMESH" -c "$f"
	pid=$IT_BGPID
	IT_PIDS+=("$pid")
	if ! it_wait 5 eval "! kill -0 $pid 2>/dev/null || [ \"\$(ps -o stat= -p $pid)\" = Z ]"; then
		it_stop "$pid" TERM 10
		it_fail "start with $name: edgemesh is still running after 5 s"
		return
	fi
	it_stop "$pid" TERM 1
	for t in "$@"; do grep -qF -- "$t" "$log" || miss+=" '$t'"; done
	if [ "$IT_RC" = 1 ] && [ -z "$miss" ]; then
		it_ok "start refuses $name (exit 1): $(grep -F -- "$1" "$log" | head -n 1)"
	else
		it_fail "start with $name: expected exit 1 with$miss in the log; got $IT_RC: $(cat "$log")"
	fi
}

capture_rules() { it_in iptables-save -t nat 2>/dev/null | grep -c EDGEMESH; }

# ---- 1. cluster_key
conf "$IT_TMP/short.json" "$SHORT" '{"enabled": false}'
conf "$IT_TMP/placeholder.json" "$PLACEHOLDER" '{"enabled": false}'
refused_t "a short cluster_key" "$IT_TMP/short.json" "tunnel.cluster_key" \
	"at least 32 bytes" "openssl rand -hex 32"
refused_t "the placeholder cluster_key" "$IT_TMP/placeholder.json" "tunnel.cluster_key" \
	"placeholder" "openssl rand -hex 32"
refused_start short-key "$IT_TMP/short.json" "tunnel.cluster_key" "openssl rand -hex 32"
refused_start placeholder-key "$IT_TMP/placeholder.json" "tunnel.cluster_key" "placeholder"

# ---- 2. capture.service_cidrs
wide() { printf '{"enabled": true, "port": 15001, "service_cidrs": [%s]}' "$1"; }
conf "$IT_TMP/all4.json" "$KEY" "$(wide '"0.0.0.0/0"')"
conf "$IT_TMP/all6.json" "$KEY" "$(wide '"10.96.0.0/12", "::/0"')"
conf "$IT_TMP/slash7.json" "$KEY" "$(wide '"10.0.0.0/7"')"
refused_t "service_cidrs 0.0.0.0/0" "$IT_TMP/all4.json" "capture.service_cidrs[0]" "0.0.0.0/0"
refused_t "service_cidrs ::/0" "$IT_TMP/all6.json" "capture.service_cidrs[1]" "::/0"
refused_t "service_cidrs 10.0.0.0/7" "$IT_TMP/slash7.json" "capture.service_cidrs[0]" \
	"10.0.0.0/7" "/8 or longer"
it_in ip addr add 10.233.4.5/32 dev lo || it_die "address on lo"
conf "$IT_TMP/own.json" "$KEY" "$(wide '"10.233.0.0/16"')"
refused_t "service_cidrs holding a node address" "$IT_TMP/own.json" \
	"capture.service_cidrs[0]" "10.233.0.0/16 contains 10.233.4.5" "interface lo"
refused_start all4 "$IT_TMP/all4.json" "capture.service_cidrs[0]" "0.0.0.0/0"
it_check "no capture rule left behind by the refused start (got $(capture_rules))" \
	[ "$(capture_rules)" = 0 ]
refused_start own-address "$IT_TMP/own.json" "capture.service_cidrs[0]" "10.233.4.5"
it_check "no capture rule left behind by the refused start (got $(capture_rules))" \
	[ "$(capture_rules)" = 0 ]
it_in ip addr del 10.233.4.5/32 dev lo

# ---- 3. api_socket over a file that is not a socket
mkdir -p "$IT_DATA"
head -c 4096 /dev/urandom >"$IT_TMP/precious"
cp "$IT_TMP/precious" "$IT_TMP/precious.orig"
conf "$IT_TMP/sockfile.json" "$KEY" '{"enabled": false}' "$IT_TMP/precious"
refused_t "api_socket naming a regular file" "$IT_TMP/sockfile.json" "api_socket" \
	"$IT_TMP/precious" "is a regular file"
refused_start api-socket-file "$IT_TMP/sockfile.json" "$IT_TMP/precious"
it_check "the file at api_socket is still there, byte for byte" \
	cmp -s "$IT_TMP/precious" "$IT_TMP/precious.orig"

# The database itself named as the socket: made by a normal run first.
conf "$IT_CONF" "$KEY" "$CAP_OK"
it_em_start
it_apply "$(it_list "$(it_svc default keep 10.96.3.1 80 8080)")"
it_em_stop TERM
cp "$IT_DATA/edgemesh.db" "$IT_TMP/db.orig"
conf "$IT_TMP/sockdb.json" "$KEY" '{"enabled": false}' "$IT_DATA/edgemesh.db"
refused_t "api_socket naming the database" "$IT_TMP/sockdb.json" "api_socket" "is a regular file"
refused_start api-socket-db "$IT_TMP/sockdb.json" "$IT_DATA/edgemesh.db"
it_check "the database is still there, byte for byte" \
	cmp -s "$IT_DATA/edgemesh.db" "$IT_TMP/db.orig"

# ---- a running daemon: bad endpoints and bad reloads
it_em_start
it_check "the stored service survived the refused starts" \
	eval 'ctl get services keep | grep -q keep'
it_apply "$(it_list "$(it_svc default web 10.96.2.1 80 8080)" "$(it_ep default web 8080 $N.11)")"
it_backend web http $N.11:8080
get() { it_in curl -sS --max-time 5 "http://$N.1:18080/" 2>&1 | tr -d '.'; }
it_check "the listener serves (got '$(get)')" [ "$(get)" = backend-0 ]

# ---- 4. endpoint addresses
ep_obj() { # KIND NAME IP ADDRESS_TYPE: the bad IP second in Endpoints
	if [ "$1" = Endpoints ]; then
		printf '{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "%s", "namespace": "default"}, "subsets": [{"addresses": [{"ip": "127.0.0.12"}, {"ip": "%s"}], "ports": [{"port": 8080}]}]}' "$2" "$3"
	else
		printf '{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "%s", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "%s", "endpoints": [{"addresses": ["%s"]}], "ports": [{"port": 8080}]}' "$2" "$4" "$3"
	fi
}
# bad_ep KIND NAME IP FIELD REASON [ADDRESS_TYPE]
bad_ep() {
	local out rc obj kind=$1 name=$2 stored
	obj=$(ep_obj "$kind" "$name" "$3" "${6:-IPv4}")
	out=$(printf '%s\n' "$(it_list "$(it_svc default "$name" 10.96.9.9 80 8080)" "$obj")" |
		ctl apply -f - 2>&1)
	rc=$?
	if [ $rc != 0 ] && grep -qF "$kind default/$name" <<<"$out" &&
		grep -qF "$4" <<<"$out" && grep -qF "$5" <<<"$out"; then
		it_ok "apply refuses $kind with $3: $out"
	else
		it_fail "apply of $kind with $3: expected failure naming '$kind default/$name', '$4', '$5'; got $rc: $out"
	fi
	case $kind in Endpoints) stored=endpoints ;; *) stored=endpointslices ;; esac
	out="$(ctl get "$stored" "$name" -o json 2>&1) / $(ctl get services "$name" -o json 2>&1)"
	if [ "$(grep -o 'not found' <<<"$out" | wc -l)" = 2 ]; then
		it_ok "nothing of the refused batch is stored: $out"
	else
		it_fail "the refused batch left objects behind: $out"
	fi
}
bad_ep Endpoints loop 10.96.2.1 "subsets[0].addresses[1].ip" "inside capture.service_cidrs 10.96.0.0/12"
bad_ep Endpoints zero 0.0.0.0 "subsets[0].addresses[1].ip" "unspecified"
bad_ep Endpoints mcast 224.0.0.1 "subsets[0].addresses[1].ip" "multicast"
bad_ep Endpoints bcast 255.255.255.255 "subsets[0].addresses[1].ip" "broadcast"
bad_ep EndpointSlice zero6 "::" "endpoints[0].addresses[0]" "unspecified" IPv6
bad_ep EndpointSlice loop-slice 10.111.0.1 "endpoints[0].addresses[0]" "capture.service_cidrs" IPv4
it_check "the listener still serves after the refused applies" [ "$(get)" = backend-0 ]

# ---- reloads: each refused, the running config keeps serving
reload_refused() { # NAME FILE-TO-INSTALL LOG-TEXT
	local before
	before=$(it_stat reload_failures)
	cp "$2" "$IT_CONF"
	kill -HUP "$IT_EM_PID"
	if it_wait 5 eval '[ "$(it_stat reload_failures)" -gt "$before" ]' &&
		grep -F "reload refused" "$IT_EM_LOG" | grep -qF -- "$3"; then
		it_ok "SIGHUP with $1 is refused: $(grep -F "reload refused" "$IT_EM_LOG" | tail -n 1)"
	else
		it_fail "SIGHUP with $1: expected a refusal naming '$3'; log: $(grep -F config: "$IT_EM_LOG" | tail -n 2)"
	fi
	it_check "after the refused reload ($1): still serving" [ "$(get)" = backend-0 ]
	it_check "after the refused reload ($1): reloads 0 (got $(it_stat reloads))" \
		[ "$(it_stat reloads)" = 0 ]
}
conf "$IT_TMP/good.json" "$KEY" "$CAP_OK"
conf "$IT_TMP/run-short.json" "$SHORT" "$CAP_OK"
conf "$IT_TMP/run-placeholder.json" "$PLACEHOLDER" "$CAP_OK"
reload_refused "a short key" "$IT_TMP/run-short.json" "tunnel.cluster_key"
reload_refused "the placeholder key" "$IT_TMP/run-placeholder.json" "tunnel.cluster_key"
# The node gains an address inside its captured range; the unchanged file
# is refused at the next reload rather than applied as safe.
it_in ip addr add 10.100.7.7/32 dev lo || it_die "address on lo"
reload_refused "a node address inside service_cidrs" "$IT_TMP/good.json" \
	"10.96.0.0/12 contains 10.100.7.7"
it_in ip addr del 10.100.7.7/32 dev lo
cp "$IT_TMP/good.json" "$IT_CONF"
kill -HUP "$IT_EM_PID"
it_check "the good file is applied again once the address is gone" \
	it_wait 5 eval '[ "$(it_stat reloads)" = 1 ]'

it_check "edgemesh still running" it_em_alive
it_em_stop TERM
it_check "SIGTERM: exit status 0 (got $IT_RC)" [ "$IT_RC" = 0 ]
it_check "no capture rule left after the exit" [ "$(capture_rules)" = 0 ]
it_done
