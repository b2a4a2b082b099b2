#!/usr/bin/env bash
# The admin listener (admin.listen) with the real daemon, in a namespace of
# its own:
#   - /healthz 200; /readyz 200 on a node without a cloud, 503 with the
#     reason on an edge whose cloud never answered;
#   - /metrics passes `promtool check metrics` (fetched by the Makefile from
#     Debian's prometheus package) and its counters follow the traffic: N
#     connections through a listener show as N more accepted, the QPS
#     bucket of a limited Service counts its rejections;
#   - the fast path (off here, as the suite runs it): edgemesh_fastpath_up 0,
#     its other families without labels at 0, no per port series;
#   - per Service port: every TCP port of the table listed before any
#     traffic, its counters and histogram at 0; connections, requests, responses by class (a 429
#     of an HTTP port over its QPS limit, a 502 of an endpoint that
#     refuses, counted with its connect failures), the bytes each way equal
#     to what curl sent and read, the latency histogram's count equal to
#     the upstream answers (and to the one connect of a plain TCP port);
#   - per peer: two more nodes in namespaces behind a bridge, a tunnel
#     between them (TLS, certificates of a CA made here): up, TLS, the bytes of a 100 kB echo each way, one
#     stream open while a connection is held, none after, down once the
#     peer stops;
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
 "api_socket": "$IT_TMP/$1.sock", "workers": 2,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "", "cluster_key": "$KEY"},
 "listeners": [{"listen": "127.0.0.1:18080", "service": "default/web", "port": 80},
   {"listen": "127.0.0.1:18081", "service": "default/lim", "port": 80},
   {"listen": "127.0.0.1:18082", "service": "default/hlim", "port": 80},
   {"listen": "127.0.0.1:18083", "service": "default/dead", "port": 80},
   {"listen": "127.0.0.1:18084", "service": "default/raw", "port": 80}]$2}
EOF
}
conf node-a ""
it_backend web http 127.0.0.1:8080
it_backend raw echo 127.0.0.1:7043
it_node_start node-a "$NS"
limited() { # a Service object with a QPS limit of 1, burst 1
	sed 's/"resourceVersion": "1"}/"resourceVersion": "1", "annotations": {"edgemesh.io\/qps": "1", "edgemesh.io\/qps-burst": "1"}}/'
}
# hlim's port is named "http": its limit counts requests and answers 429.
# dead's endpoint refuses connections: 502.
it_node_apply node-a "$(it_list "$(it_svc default web 10.96.0.10 80 8080)" \
	"$(it_ep_obj default web 8080 127.0.0.1@node-a)" \
	"$(limited <<<"$(it_svc default lim 10.96.0.11 80 8080)")" \
	"$(it_ep_obj default lim 8080 127.0.0.1@node-a)" \
	"$(limited <<<"$(it_svc default hlim 10.96.0.12 80 8080)" | sed 's/"name": "p"/"name": "http"/')" \
	"$(it_ep_obj default hlim 8080 127.0.0.1@node-a | sed 's/"name": "p"/"name": "http"/')" \
	"$(it_svc default dead 10.96.0.13 80 8099)" \
	"$(it_ep_obj default dead 8099 127.0.0.1@node-a)" \
	"$(it_svc default raw 10.96.0.14 80 7043)" \
	"$(it_ep_obj default raw 7043 127.0.0.1@node-a)")"

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
# Before any traffic, every TCP port of the table is there at zero.
zeros=
for v in web lim hlim dead raw; do
	l="namespace=\"default\",service=\"$v\",port=\"80\""
	zeros+="$v:$(metric "$IT_TMP/m0.txt" "edgemesh_service_connections_total{$l}")"
	zeros+=",$(metric "$IT_TMP/m0.txt" "edgemesh_service_requests_total{$l}")"
	zeros+=",$(metric "$IT_TMP/m0.txt" "edgemesh_service_upstream_latency_seconds_bucket{$l,le=\"0.0005\"}")"
	zeros+=",$(metric "$IT_TMP/m0.txt" "edgemesh_service_upstream_latency_seconds_bucket{$l,le=\"+Inf\"}")"
	zeros+=",$(metric "$IT_TMP/m0.txt" "edgemesh_service_upstream_latency_seconds_count{$l}") "
done
it_check "the 5 Service ports are listed before any traffic, counters and histogram at 0 ($zeros)" \
	test "$zeros" = "web:0,0,0,0,0 lim:0,0,0,0,0 hlim:0,0,0,0,0 dead:0,0,0,0,0 raw:0,0,0,0,0 "
it_check "... with no response class yet" test "$(grep -c '^edgemesh_service_responses_total{' "$IT_TMP/m0.txt")" = 0
# The suite runs with EDGEMESH_FASTPATH=off: the fast path shows off, its
# families without labels at 0, no per port family, the reason not a label.
fp=
for f in up ports publishes_total publish_seconds write_failures_total; do
	fp+="$f=$(metric "$IT_TMP/m0.txt" "edgemesh_fastpath_$f") "
done
it_check "the fast path is off on /metrics ($fp)" test "$fp" = \
	"up=0 ports=0 publishes_total=0 publish_seconds=0 write_failures_total=0 "
it_check "... without per port series" \
	test "$(grep -c '^edgemesh_fastpath_[a-z_]*{' "$IT_TMP/m0.txt")" = 0
it_check "... and the engine's count of kernel picks taken is there" \
	test "$(metric "$IT_TMP/m0.txt" edgemesh_engine_fastpath_handoffs_taken_total)" = 0
acc0=$(metric "$IT_TMP/m0.txt" edgemesh_engine_connections_accepted_total)
it_check "the counters are there (connections accepted: $acc0)" test -n "$acc0"
ok=0 sent=0 read=0
for i in $(seq 20); do
	# status, bytes of the request, of the response head, of its body
	set -- $(ip netns exec "$NS" curl -s -m 5 -o /dev/null \
		-w '%{http_code} %{size_request} %{size_header} %{size_download}' http://127.0.0.1:18080/)
	[ "${1:-}" = 200 ] && ok=$((ok + 1))
	sent=$((sent + ${2:-0})) read=$((read + ${3:-0} + ${4:-0}))
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

# Per Service port.
hl=$(ip netns exec "$NS" curl -s -m 5 -o /dev/null -o /dev/null -w '%{http_code} ' $(it_urls 2 http://127.0.0.1:18082/) 2>/dev/null)
it_check "an HTTP port over its QPS limit: 200 then 429 on one connection ($hl)" test "$hl" = "200 429 "
it_check "an endpoint that refuses: 502" test "$(code http://127.0.0.1:18083/)" = 502
# Bytes that are not HTTP: relayed as they come, 12345 each way.
raw=$(ip netns exec "$NS" python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 18084)); s.settimeout(5)
d = b"\x00" * 12345; s.sendall(d); got = b""
while len(got) < len(d):
    b = s.recv(65536)
    if not b: break
    got += b
print(len(got))' 2>&1)
it_check "12345 bytes echoed through a plain TCP port ($raw)" test "$raw" = 12345
svc() { # FILE FAMILY SERVICE [EXTRA LABELS]: the sample of SERVICE's port 80
	metric "$1" "edgemesh_service_$2{namespace=\"default\",service=\"$3\",port=\"80\"${4:-}}"
}
per_svc() {
	get $A/metrics >"$IT_TMP/m3.txt"
	[ "$(svc "$IT_TMP/m3.txt" sent_bytes_total web)" = "$read" ] &&
		[ "$(svc "$IT_TMP/m3.txt" responses_total dead ',code="5xx"')" = 1 ]
}
it_wait 5 per_svc
m3=$IT_TMP/m3.txt
it_log "web: $(grep -c 'service="web"' "$m3") samples; curl sent $sent bytes and read $read"
it_check "web: 20 connections, 20 requests, 20 answered 2xx" test \
	"$(svc "$m3" connections_total web) $(svc "$m3" requests_total web) $(svc "$m3" responses_total web ',code="2xx"')" = "20 20 20"
it_check "web: the bytes received are those curl sent ($sent)" test "$(svc "$m3" received_bytes_total web)" = "$sent"
it_check "web: the bytes sent are those curl read ($read)" test "$(svc "$m3" sent_bytes_total web)" = "$read"
it_check "web: 20 latencies observed, all in +Inf and in count, a positive sum" test \
	"$(svc "$m3" upstream_latency_seconds_count web) $(svc "$m3" upstream_latency_seconds_bucket web ',le="+Inf"')" = "20 20" -a \
	"$(svc "$m3" upstream_latency_seconds_sum web | tr -d '0.')" != ""
it_check "web: no connect failure, no QPS rejection, no 4xx or 5xx" test \
	"$(svc "$m3" upstream_connect_failures_total web) $(svc "$m3" qps_rejected_total web) $(grep -c 'service="web".*code="[45]xx"' "$m3")" = "0 0 0"
it_check "hlim: 2 requests on 1 connection, one 2xx, one 4xx (the 429), 1 QPS rejection, 1 latency" test \
	"$(svc "$m3" connections_total hlim) $(svc "$m3" requests_total hlim) $(svc "$m3" responses_total hlim ',code="2xx"') $(svc "$m3" responses_total hlim ',code="4xx"') $(svc "$m3" qps_rejected_total hlim) $(svc "$m3" upstream_latency_seconds_count hlim)" = "1 2 1 1 1 1"
it_check "dead: a 5xx, at least one connect failure, no latency" test \
	"$(svc "$m3" responses_total dead ',code="5xx"') $(svc "$m3" upstream_connect_failures_total dead | sed 's/^[1-9][0-9]*$/n/') $(svc "$m3" upstream_latency_seconds_count dead)" = "1 n 0"
# curl speaks HTTP: served in HTTP mode, the limit of a port not named
# http counting connections.
it_check "lim: 2 connections (HTTP requests), 1 refused over the limit, 1 latency" test \
	"$(svc "$m3" connections_total lim) $(svc "$m3" requests_total lim) $(svc "$m3" qps_rejected_total lim) $(svc "$m3" upstream_latency_seconds_count lim)" = "2 2 1 1"
it_check "raw (relayed bytes): 1 connection, 12345 bytes each way, its connect time observed, no request" test \
	"$(svc "$m3" connections_total raw) $(svc "$m3" received_bytes_total raw) $(svc "$m3" sent_bytes_total raw) $(svc "$m3" upstream_latency_seconds_count raw) $(svc "$m3" requests_total raw)" = "1 12345 12345 1 0"
it_check "... and the page passes promtool" sh -c "'$PROMTOOL' check metrics <'$m3' >/dev/null 2>&1"

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

# Per peer: node-p reaches an echo Service on node-q through a tunnel.
NSX=em-admx-$$ NSP=em-admp-$$ NSQ=em-admq-$$ IPP=192.168.79.2 IPQ=192.168.79.3
it_bridge "$NSX" "$NSP:$IPP" "$NSQ:$IPQ"
"$MESHCTL" ca init "$IT_TMP/ca" >/dev/null || it_die "meshctl ca init"
for n in node-p node-q; do
	"$MESHCTL" cert issue $n --ca "$IT_TMP/ca" --out "$IT_TMP/certs" >/dev/null ||
		it_die "meshctl cert issue $n"
done
peer_conf() { # NAME IP
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
 "api_socket": "$IT_TMP/$1.sock", "workers": 2,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "tls", "tls": {"ca_file": "$IT_TMP/ca/ca.crt",
   "cert_file": "$IT_TMP/certs/$1.crt", "key_file": "$IT_TMP/certs/$1.key"},
  "listen": "$2:20006", "cluster_key": "$KEY", "reconnect_min_ms": 100,
  "reconnect_max_ms": 1000},
 "listeners": [{"listen": "127.0.0.1:18090", "service": "default/qecho", "port": 7}]}
EOF
}
peer_conf node-p $IPP
peer_conf node-q $IPQ
IT_NS=$NSQ
it_backend qecho echo $IPQ:7042
objs=$(it_list "$(it_svc default qecho 10.96.0.50 7 7042)" "$(it_ep_obj default qecho 7042 $IPQ@node-q)" \
	"$(it_node_obj node-p $IPP 20006)" "$(it_node_obj node-q $IPQ 20006)")
it_node_start node-p "$NSP"
it_node_start node-q "$NSQ"
it_node_apply node-p "$objs"
it_node_apply node-q "$objs"
# Holds one connection through node-p's listener, 100 kB echoed, until
# $IT_TMP/release exists; prints "echoed N" once the bytes came back.
ip netns exec "$NSP" python3 -c '
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", 18090)); s.settimeout(10)
data = os.urandom(100000); s.sendall(data); got = b""
while len(got) < len(data):
    d = s.recv(65536)
    if not d: break
    got += d
print("echoed %d %s" % (len(got), "same" if got == data else "differ"), flush=True)
while not os.path.exists(sys.argv[1]): time.sleep(0.05)
s.close()' "$IT_TMP/release" >"$IT_TMP/hold.out" 2>&1 &
hold=$!
it_wait 10 grep -q '^echoed' "$IT_TMP/hold.out"
it_check "100 kB echoed from node-q through the tunnel ($(cat "$IT_TMP/hold.out"))" grep -q '^echoed 100000 same' "$IT_TMP/hold.out"
P=http://127.0.0.1:15000
pget() { ip netns exec "$1" curl -s -m 5 $P/metrics 2>/dev/null; }
peer() { # FILE FAMILY PEER
	metric "$1" "edgemesh_peer_$2{peer=\"$3\"}"
}
held() {
	pget "$NSP" >"$IT_TMP/p1.txt"
	[ "$(peer "$IT_TMP/p1.txt" streams node-q)" = 1 ]
}
it_check "node-p: one stream open to node-q while the connection is held" it_wait 5 held
p1=$IT_TMP/p1.txt
it_log "node-p: $(grep '^edgemesh_peer_' "$p1" | tr '\n' ' ')"
it_check "node-p: node-q up, TLS" test \
	"$(peer "$p1" up node-q) $(peer "$p1" tls node-q) $(peer "$p1" tunnels_up node-q | sed 's/^[1-9]$/n/')" = "1 1 n"
it_check "node-p: at least the 100 kB each way with node-q" test \
	"$(peer "$p1" sent_bytes_total node-q)" -ge 100000 -a "$(peer "$p1" received_bytes_total node-q)" -ge 100000
pget "$NSQ" >"$IT_TMP/q1.txt"
it_check "node-q sees node-p: up, at least the 100 kB each way" test \
	"$(peer "$IT_TMP/q1.txt" up node-p)" = 1 -a "$(peer "$IT_TMP/q1.txt" received_bytes_total node-p)" -ge 100000 -a \
	"$(peer "$IT_TMP/q1.txt" sent_bytes_total node-p)" -ge 100000
it_check "... and both pages pass promtool" sh -c \
	"'$PROMTOOL' check metrics <'$p1' >/dev/null 2>&1 && '$PROMTOOL' check metrics <'$IT_TMP/q1.txt' >/dev/null 2>&1"
touch "$IT_TMP/release"
wait "$hold"
closed() {
	pget "$NSP" >"$IT_TMP/p2.txt"
	[ "$(peer "$IT_TMP/p2.txt" streams node-q)" = 0 ]
}
it_check "node-p: no stream open once the connection closed" it_wait 5 closed
it_node_stop node-q
it_forget_pid "${EM_PID[node-q]}"
down() {
	pget "$NSP" >"$IT_TMP/p3.txt"
	[ "$(peer "$IT_TMP/p3.txt" up node-q)" = 0 ]
}
it_check "node-p: node-q down once it stopped, its bytes kept" it_wait 10 down
it_check "... and no longer said to run TLS" test "$(peer "$IT_TMP/p3.txt" tls node-q)" = 0
it_check "... the bytes sent to it did not go back" test \
	"$(peer "$IT_TMP/p3.txt" sent_bytes_total node-q)" -ge "$(peer "$p1" sent_bytes_total node-q)"
it_node_stop node-p
it_done
