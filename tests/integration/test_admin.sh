#!/usr/bin/env bash
# The admin listener (admin.listen) with the real daemon, in a namespace of
# its own:
#   - /healthz 200; /readyz 200 on a node without a cloud, 503 with the
#     reason on an edge whose cloud never answered;
#   - /metrics passes `promtool check metrics` (fetched by the Makefile from
#     Debian's prometheus package) and its counters follow the traffic: N
#     connections through a listener show as N more accepted, the QPS
#     bucket of a limited Service counts its rejections;
#   - other paths 404, other methods 405, a malformed line 400, an endless
#     head 431, each with a one-line reason; a client that never sends a
#     byte does not keep the others waiting and is closed;
#   - the default address taken by another process: a warning and the
#     daemon serves; an address named in the file and taken: no start, and
#     the error names admin.listen.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_admin: needs root (network namespace)"
it_need_root
it_need curl python3 socat
PROMTOOL=$IT_ROOT/build/tools/promtool
[ -x "$PROMTOOL" ] || it_die "no $PROMTOOL: make integration-test fetches it"

NS=em-adm-$$
ip netns add "$NS" || it_die "ip netns add $NS"
IT_NETNS_LIST+=("$NS")
ip -n "$NS" link set lo up
ip -n "$NS" route add local 10.96.0.0/12 dev lo || it_die "local route"
IT_NS=$NS

KEY=admin-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
conf() { # NAME EXTRA
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
 "api_socket": "$IT_TMP/$1.sock", "workers": 2, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "", "cluster_key": "$KEY"},
 "listeners": [{"listen": "127.0.0.1:18080", "service": "default/web", "port": 80},
   {"listen": "127.0.0.1:18081", "service": "default/lim", "port": 80}]$2}
EOF
}
conf node-a ""
it_backend web http 127.0.0.1:8080
it_node_start node-a "$NS"
it_node_apply node-a "$(it_list "$(it_svc default web 10.96.0.10 80 8080)" \
	"$(it_ep_obj default web 8080 127.0.0.1@node-a)" \
	"$(sed 's/"resourceVersion": "1"}/"resourceVersion": "1", "annotations": {"edgemesh.io\/qps": "1", "edgemesh.io\/qps-burst": "1"}}/' \
		<<<"$(it_svc default lim 10.96.0.11 80 8080)")" \
	"$(it_ep_obj default lim 8080 127.0.0.1@node-a)")"

A=http://127.0.0.1:15000
get() { ip netns exec "$NS" curl -s -m 5 "$@" 2>/dev/null; }
code() { ip netns exec "$NS" curl -s -m 5 -o /dev/null -w '%{http_code}' "$@" 2>/dev/null; }
it_check "/healthz answers 200 ok" test "$(get $A/healthz)" = ok
it_check "/readyz: a node without a cloud is ready" test "$(get $A/readyz)" = ready

get $A/metrics >"$IT_TMP/m0.txt"
if "$PROMTOOL" check metrics <"$IT_TMP/m0.txt" >"$IT_TMP/promtool.out" 2>&1; then
	it_ok "/metrics passes promtool check metrics ($(wc -l <"$IT_TMP/m0.txt") lines)"
else
	it_fail "promtool check metrics: $(head -n 5 "$IT_TMP/promtool.out")"
fi
metric() { # FILE NAME: the value of the unlabelled sample NAME, or of "NAME{LABELS}"
	awk -v n="$2" '$1 == n {print $2; exit}' "$1"
}
acc0=$(metric "$IT_TMP/m0.txt" edgemesh_engine_connections_accepted_total)
it_check "the counters are there (connections accepted: $acc0)" test -n "$acc0"
ok=0
for i in $(seq 20); do
	[ "$(code http://127.0.0.1:18080/)" = 200 ] && ok=$((ok + 1))
done
it_check "20 requests through a listener ($ok answered 200)" test "$ok" = 20
grow() {
	get $A/metrics >"$IT_TMP/m1.txt"
	[ "$(metric "$IT_TMP/m1.txt" edgemesh_engine_connections_accepted_total)" = $((acc0 + 20)) ]
}
it_check "... and /metrics counts exactly 20 more connections accepted" it_wait 5 grow
c1=$(code http://127.0.0.1:18081/) c2=$(code http://127.0.0.1:18081/)
rejected() {
	get $A/metrics >"$IT_TMP/m2.txt"
	[ "$(metric "$IT_TMP/m2.txt" 'edgemesh_qps_rejected_total{service="default/lim"}')" -ge 1 ] 2>/dev/null
}
it_check "a QPS-limited Service's rejection shows per Service (two connections in a second: $c1, then $c2, reset)" it_wait 5 rejected
it_check "... and the page still passes promtool" sh -c "'$PROMTOOL' check metrics <'$IT_TMP/m2.txt' >/dev/null 2>&1"

it_check "an unknown path: 404 with a reason" \
	test "$(get -w ' %{http_code}' $A/nope | tr -d '\n')" = "no such page (expected /metrics, /healthz or /readyz) 404"
it_check "POST: 405" test "$(code -X POST $A/metrics)" = 405
raw() { printf "$1" | ip netns exec "$NS" socat -t 3 - TCP:127.0.0.1:15000 2>/dev/null | head -n 1 | tr -d '\r'; }
it_check "a malformed request line: 400" test "$(raw 'HELLO\r\n\r\n')" = "HTTP/1.1 400 Bad Request"
long=$(python3 -c 'print("GET / HTTP/1.1\\r\\nX-A: " + "a" * 9000, end="")')
it_check "a head over 8 KiB: 431" test "$(raw "$long")" = "HTTP/1.1 431 Request Header Fields Too Large"
# A client that connects and says nothing: the others are served meanwhile.
ip netns exec "$NS" python3 -c '
import socket, time
s = socket.create_connection(("127.0.0.1", 15000)); s.settimeout(10)
t = time.time()
try:
    d = s.recv(1)
except OSError:
    d = b"x"
print("closed_after %.1f %s" % (time.time() - t, "eof" if d == b"" else "other"))' >"$IT_TMP/silent.out" &
silent=$!
it_check "a silent client does not hold up /healthz" test "$(get $A/healthz)" = ok
wait "$silent"
it_log "silent client: $(cat "$IT_TMP/silent.out")"
it_check "... and is closed within the idle time (5 s)" \
	grep -Eq '^closed_after [4-6]\.[0-9] eof' "$IT_TMP/silent.out"

# An edge whose cloud never answers is not ready.
conf node-b ', "cloud": {"address": "127.0.0.9:20006"}, "admin": {"listen": "127.0.0.1:15010"}'
it_node_start node-b "$NS"
got=$(get -w ' %{http_code}' http://127.0.0.1:15010/readyz | tr -d '\n')
it_check "/readyz of an edge never in sync with its cloud: 503 with the reason ($got)" \
	test "$got" = "not ready: never in sync with the cloud 503"
it_node_stop node-b
it_forget_pid "${EM_PID[node-b]}"

# node-a holds the default 127.0.0.1:15000: a second daemon with the default
# goes on without it; one that names it in its file does not start.
conf node-c ""
sed -i 's/18080/18090/; s/18081/18091/' "$IT_TMP/node-c.json"
it_node_start node-c "$NS"
it_check "the default admin address in use: a warning, and the daemon runs" \
	grep -q "admin.listen 127.0.0.1:15000 (the default): Address already in use; going on without it" \
	"${EM_LOG[node-c]}"
it_node_stop node-c
it_forget_pid "${EM_PID[node-c]}"
conf node-d ', "admin": {"listen": "127.0.0.1:15000"}'
sed -i 's/18080/18092/; s/18081/18093/' "$IT_TMP/node-d.json"
if ip netns exec "$NS" timeout 10 "$EDGEMESH" -c "$IT_TMP/node-d.json" >"$IT_TMP/node-d.log" 2>&1; then
	it_fail "a daemon started with admin.listen on an address in use"
else
	it_check "admin.listen named and in use: no start, the error names the key" \
		grep -q "admin.listen 127.0.0.1:15000: Address already in use" "$IT_TMP/node-d.log"
fi

it_node_stop node-a
it_check "node-a stopped cleanly" sh -c "! grep -q 'Sanitizer' '${EM_LOG[node-a]}'"
it_done
