#!/usr/bin/env bash
# Traffic through the cloud with real daemons: a cloud node (2 workers) and
# two edges, each in a namespace of its own, joined through a bridge in a
# fourth (192.168.78.0/24, nowhere else). node-b has no tunnel listener, so
# nobody can dial it: it is reached only over its own tunnel to the cloud.
#   - F3: an app on node-a reaches a Service served on the cloud node, raw
#     TCP and HTTP, over node-a's tunnel to the cloud;
#   - cloud -> edge: a cloud listener reaches node-b's backend over the
#     tunnel node-b dialled (from either cloud worker, whichever accepted it);
#   - relay: node-a reaches node-b's backend through the cloud, byte-exact for
#     1 MiB each way, counted per pair in the cloud's stats;
#   - a node nobody can reach: the cloud refuses the relay, node-a's client
#     is closed, the refusal counted;
#   - backpressure: a backend on node-b that never reads does not grow the
#     cloud's memory past its windows while node-a keeps writing;
#   - a reset passes through the relay: node-a's client aborts a relayed
#     stream and node-b's backend, which keeps writing, sees its connection
#     end at once (the cloud does not read and drop its bytes until a
#     timeout); the cloud counts it; so does a cloud client's reset of a
#     stream to node-b, from either cloud worker, and a reset by node-b's
#     backend reaches the cloud's clients as a reset;
#   - F4, the Router: /<node>/<namespace>/<path> on the cloud's router.listen
#     reaches node-b's loopback app (KubeEdge's servicebus) with the target
#     path, or an endpoint of a Service there; 404 without a rule, 503 for an
#     edge not connected, 504 when the edge is too slow; counts on the Rule
#     exact after N calls, failures with their reasons;
#   - the cloud restarting: Router calls fail fast (503) until node-b is
#     back, then succeed.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_cloud_traffic: needs root (network namespaces, veth, iptables)"
it_need_root
it_need socat python3 curl

NSX=em-x-$$ NSC=em-c-$$ NSA=em-a-$$ NSB=em-b-$$
IPC=192.168.78.1 IPA=192.168.78.2 IPB=192.168.78.3
KEY=cloud-traffic-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"

it_bridge "$NSX" "$NSC:$IPC" "$NSA:$IPA" "$NSB:$IPB"

cat >"$IT_TMP/cloud.json" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 2,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "$IPC:20006", "cluster_key": "$KEY", "keepalive_ms": 1000,
  "dead_after_ms": 3000},
 "router": {"listen": "$IPC:9443", "timeout_ms": 1500},
 "listeners": [{"listen": "127.0.0.1:18007", "service": "default/becho", "port": 7},
  {"listen": "127.0.0.1:18019", "service": "default/bsrc", "port": 19},
  {"listen": "127.0.0.1:18021", "service": "default/brst", "port": 21}],
 "controller": {"manifests_dir": "$MDIR"}}
EOF
# edge_conf NAME LISTEN WORKERS
edge_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
 "api_socket": "$IT_TMP/$1.sock", "workers": $3,
 "fastpath": {"mode": "off"}, "capture": {"enabled": true, "port": 15001},
 "tunnel": {"encryption": "none", "listen": "$2", "cluster_key": "$KEY", "keepalive_ms": 1000,
  "dead_after_ms": 3000, "reconnect_min_ms": 100, "reconnect_max_ms": 1000},
 "cloud": {"address": "$IPC:20006"},
 "timeouts": {"connect_ms": 2000}}
EOF
}
edge_conf node-a "$IPA:20006" 1
edge_conf node-b "" 2

manifest() {
	printf '%s\n' "$2" >"$IT_TMP/.m.tmp" && mv "$IT_TMP/.m.tmp" "$MDIR/$1"
}
# Served on the cloud node (F3), raw and HTTP; on node-b (relay, cloud ->
# edge); on node-x, a node that never connects (refused relay).
manifest cloud.json "$(it_list "$(it_svc default cecho 10.96.0.40 7 7040)" \
	"$(it_ep_obj default cecho 7040 $IPC@cloud)" \
	"$(it_svc default chttp 10.96.0.41 80 8041)" \
	"$(it_ep_obj default chttp 8041 $IPC@cloud)")"
manifest b.json "$(it_list "$(it_svc default becho 10.96.0.42 7 7042)" \
	"$(it_ep_obj default becho 7042 $IPB@node-b)" \
	"$(it_svc default bsink 10.96.0.43 9 7043)" \
	"$(it_ep_obj default bsink 7043 $IPB@node-b)" \
	"$(it_svc default bsrc 10.96.0.46 19 7046)" \
	"$(it_ep_obj default bsrc 7046 $IPB@node-b)" \
	"$(it_svc default brst 10.96.0.47 21 7047)" \
	"$(it_ep_obj default brst 7047 $IPB@node-b)")"
# The Router: an app on node-b's loopback (servicebus service_port), and a
# Service of node-b's.
manifest rules.json "$(it_list "$(it_rule_ep rest rest '{}')" \
	"$(it_rule_ep sb-app servicebus '{"service_port": "9000"}')" \
	"$(it_rule_ep sb-svc servicebus '{}')" \
	"$(it_rule r-api rest '{"path": "/api"}' sb-app '{"path": "/edge"}')" \
	"$(it_rule r-svc rest '{"path": "/svc"}' sb-svc '{"path": "/", "service": "default/bweb", "port": "80"}')" \
	"$(it_svc default bweb 10.96.0.45 80 8045)" \
	"$(it_ep_obj default bweb 8045 $IPB@node-b)")"
manifest x.json "$(it_list "$(it_svc default xecho 10.96.0.44 7 7044)" \
	"$(it_ep_obj default xecho 7044 192.168.78.9@node-x)" \
	"$(it_node_obj node-x 192.168.78.9)")"

IT_NS=$NSC
it_backend cecho echo $IPC:7040
it_backend chttp http $IPC:8041
IT_NS=$NSB
it_backend becho echo $IPB:7042
# A backend that accepts and never reads.
it_bg bsink python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.bind(("'$IPB'", 7043)); s.listen(8); print("ready", flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
'
it_wait_line "$IT_TMP/bsink.out" '^ready' 10 || it_die "the never-reading backend did not start"
# A backend that writes until its connection ends, then says how.
it_bg bsrc python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("'$IPB'", 7046)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); n = 0
    try:
        while True:
            n += c.send(b"y" * 16384)
    except OSError as e:
        print("ended after %d bytes: %s" % (n, e.__class__.__name__), flush=True)
    c.close()
'
it_wait_line "$IT_TMP/bsrc.out" '^ready' 10 || it_die "the writing backend did not start"
# A backend that says hello and resets the connection.
it_bg brst python3 -c '
import socket, struct
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("'$IPB'", 7047)); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello\n")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
'
it_wait_line "$IT_TMP/brst.out" '^ready' 10 || it_die "the resetting backend did not start"
# node-b's HTTP app: answers "node-b PORT PATH"; /edge/slow never in time,
# /edge/boom with 500.
it_bg bapp python3 -c '
import http.server, socketserver, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/edge/slow"):
            time.sleep(4)
        code = 500 if self.path.startswith("/edge/boom") else 200
        body = ("node-b %d %s\n" % (self.server.server_address[1], self.path)).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
servers = [S(("127.0.0.1", 9000), H), S(("'$IPB'", 8045), H)]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'
it_wait_line "$IT_TMP/bapp.out" '^ready' 10 || it_die "node-b's HTTP app did not start"

it_node_start cloud "$NSC"
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"

ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
has_svc() { ctl "$1" get svc "$2" >/dev/null; }
synced() { has_svc "$1" cecho && has_svc "$1" becho && has_svc "$1" xecho; }
both() { "$@" node-a && "$@" node-b; }
it_wait 15 both synced || it_die "edges did not converge: $(tail -n 5 "${EM_LOG[node-a]}")"
connected() { ctl cloud get nodes | grep -E "^$1 .* connected " >/dev/null; }
it_wait 10 connected node-a || it_die "node-a is not connected to the cloud"
it_wait 10 connected node-b || it_die "node-b is not connected to the cloud"
it_check "node-b, without a tunnel listener, is marked for relaying" \
	sh -c "timeout 10 '$MESHCTL' -s '$IT_TMP/node-a.sock' get nodes node-b -o json | grep -q '\"edgemesh.io/relay\":[[:space:]]*\"true\"'"

# echo_via NS ADDR TEXT: TEXT came back through ADDR from namespace NS.
echo_via() {
	[ "$(printf '%s\n' "$3" | timeout 5 ip netns exec "$1" socat -t 3 - "TCP:$2" 2>/dev/null)" = "$3" ]
}

# -- F3: edge -> cloud
if it_wait 10 echo_via "$NSA" 10.96.0.40:7 "to the cloud"; then
	it_ok "F3: node-a reaches a raw TCP service served on the cloud node"
else
	it_fail "F3 raw TCP: $(tail -n 5 "${EM_LOG[node-a]}")"
fi
f3_http() {
	local n
	n=$(ip netns exec "$NSA" curl -s -o /dev/null -w '%{http_code}\n' \
		$(it_urls 20 http://10.96.0.41/f3) 2>/dev/null | grep -c '^200$')
	[ "$n" = 20 ]
}
it_check "F3: 20 HTTP requests on one connection from node-a all get 200 from the cloud" \
	it_wait 10 f3_http

# -- cloud -> edge over the tunnel node-b dialled (both cloud workers)
cloud_to_b() {
	local k
	for k in $(seq 12); do
		echo_via "$NSC" 127.0.0.1:18007 "cloud to b $k" || return 1
	done
}
it_check "cloud -> edge: 12 connections from the cloud reach node-b, which has no listener" \
	it_wait 10 cloud_to_b
# node-b's one tunnel is on one cloud worker: the other hands its streams over.
handed=$(ctl cloud stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["streams_handed_to_worker"])')
it_check "... the cloud worker without node-b's tunnel handed its streams over ($handed)" \
	test "${handed:-0}" -ge 1

# -- relay: node-a -> cloud -> node-b
if it_wait 10 echo_via "$NSA" 10.96.0.42:7 "through the cloud"; then
	it_ok "relay: node-a reaches node-b's backend through the cloud"
else
	it_fail "relay: $(tail -n 5 "${EM_LOG[node-a]}") / $(tail -n 5 "${EM_LOG[cloud]}")"
fi
head -c 1048576 /dev/urandom >"$IT_TMP/blob"
relay_exact() {
	ip netns exec "$NSA" socat -t 5 -T 20 - TCP:10.96.0.42:7 <"$IT_TMP/blob" \
		>"$IT_TMP/blob.back" 2>/dev/null
	cmp -s "$IT_TMP/blob" "$IT_TMP/blob.back"
}
it_check "relay: 1 MiB echoed through the cloud comes back byte-exact" relay_exact
pair_stat() {
	ctl cloud stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
p = [r for r in s.get("relay", []) if r["from"] == "node-a" and r["to"] == sys.argv[1]]
print(int(p[0][sys.argv[2]]) if p else 0)' "$1" "$2"
}
streams=$(pair_stat node-b streams)
it_check "the cloud counts the relayed streams of the pair node-a -> node-b ($streams)" \
	test "$streams" -ge 2
bytes=$(pair_stat node-b bytes_from_to)
it_check "... and at least 1 MiB from node-a to node-b ($bytes bytes)" test "$bytes" -ge 1048576

# -- a node that never connected: the relay is refused
if ! echo_via "$NSA" 10.96.0.44:7 "nobody"; then
	it_ok "a service on a node connected nowhere gets no answer"
else
	it_fail "a service on an unconnected node answered"
fi
refused=$(pair_stat node-x refused)
it_check "the cloud counts the refused relay to node-x ($refused)" test "$refused" -ge 1

# -- backpressure: node-b's backend never reads; the cloud holds no more
# than the windows and socketpair buffers of the stream.
rss() { awk '/^VmRSS/ {print $2}' "/proc/${EM_PID[cloud]}/status"; }
rss0=$(rss)
ip netns exec "$NSA" python3 -c '
import socket, sys, time
s = socket.create_connection(("10.96.0.43", 9), timeout=5)
s.settimeout(1); sent = 0; chunk = b"x" * 65536; end = time.time() + 8
while time.time() < end and sent < (512 << 20):
    try: sent += s.send(chunk)
    except socket.timeout: pass
print(sent)' >"$IT_TMP/sent" 2>"$IT_TMP/sent.err"
sent=$(cat "$IT_TMP/sent")
rss1=$(rss)
it_log "stalled relay: node-a wrote $sent bytes; cloud RSS ${rss0} -> ${rss1} KiB"
it_check "a never-reading backend stops node-a's writer (wrote $sent bytes, under 64 MiB)" \
	test "${sent:-999999999}" -lt $((64 << 20))
it_check "the cloud's memory grew less than 48 MiB (${rss0} -> ${rss1} KiB)" \
	test $((rss1 - rss0)) -lt $((48 << 10))
it_check "the cloud is alive after the stalled relay" kill -0 "${EM_PID[cloud]}"

# -- a reset through the relay: node-a's client reads a little and aborts
# (RST); node-b's backend keeps writing until its connection ends.
ip netns exec "$NSA" python3 -c '
import socket, struct
s = socket.create_connection(("10.96.0.46", 19), timeout=5)
got = 0
while got < 65536:
    got += len(s.recv(65536))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print(got)' >"$IT_TMP/rst.out" 2>&1
it_log "reset through the relay: node-a read $(cat "$IT_TMP/rst.out") bytes, then aborted"
it_check "a reset on node-a ends node-b's backend connection through the relay" \
	it_wait 10 grep -q '^ended after' "$IT_TMP/bsrc.out"
passed=$(ctl cloud stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["relay_resets_passed"])')
it_check "... and the cloud counts the reset it passed on ($passed)" test "${passed:-0}" -ge 1
# From the cloud itself, 4 connections (over both workers: the one without
# node-b's tunnel hands its streams over through a socketpair).
ended0=$(grep -c '^ended after' "$IT_TMP/bsrc.out")
ip netns exec "$NSC" python3 -c '
import socket, struct
for i in range(4):
    s = socket.create_connection(("127.0.0.1", 18019), timeout=5)
    got = 0
    while got < 65536:
        got += len(s.recv(65536))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()' >"$IT_TMP/rst2.out" 2>&1
four_ended() { [ $(($(grep -c '^ended after' "$IT_TMP/bsrc.out") - ended0)) -ge 4 ]; }
it_check "4 resets of cloud clients end node-b's backend connections ($(cat "$IT_TMP/rst2.out"))" \
	it_wait 10 four_ended
# The other way: node-b's backend resets; each of 6 cloud clients (both
# workers) is reset too, not closed as if the backend had finished.
resets=$(ip netns exec "$NSC" python3 -c '
import socket
n = 0
for i in range(6):
    s = socket.create_connection(("127.0.0.1", 18021), timeout=5)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        n += 1
    s.close()
print(n)' 2>&1)
it_check "a backend's reset on node-b reaches each of 6 cloud clients as a reset ($resets)" \
	test "$resets" = 6

# -- F4: the Router
R=http://$IPC:9443
# call PATH: prints "CODE BODY" of a GET through the Router, from the cloud's namespace.
call() {
	ip netns exec "$NSC" curl -s -m 5 -w ' %{http_code}' "$R$1" 2>/dev/null | tr -d '\n'
}
rule_count() { # RULE FIELD
	ctl cloud get rules "$1" -o json | python3 -c '
import json, sys
o = json.load(sys.stdin)
o = o[0] if isinstance(o, list) else o
print(o.get("status", {}).get(sys.argv[1], 0))' "$2" 2>/dev/null
}
routed() { [ "$(call /node-b/default/api/hello?x=1)" = "node-b 9000 /edge/hello?x=1 200" ]; }
if it_wait 10 routed; then
	it_ok "F4: the Router sends /node-b/default/api/hello?x=1 to node-b's app as /edge/hello?x=1"
else
	it_fail "F4: got '$(call /node-b/default/api/hello?x=1)': $(tail -n 5 "${EM_LOG[cloud]}")"
fi
it_check "F4: a Rule naming a Service reaches its endpoint on node-b with the target path" \
	test "$(call /node-b/default/svc/a/b)" = "node-b 8045 /a/b 200"
# The counts reach the stored row at most once a second: the first call's
# is in before the next ten start.
first_counted() { [ "$(rule_count r-api successMessages)" = 1 ]; }
it_wait 5 first_counted || it_fail "the first Router call was not counted on r-api"
ok0=$(rule_count r-api successMessages)
opened() { ctl cloud stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["streams_opened"])'; }
o0=$(opened)
n_ok=0
for i in $(seq 10); do
	[ "$(call /node-b/default/api/n$i)" = "node-b 9000 /edge/n$i 200" ] && n_ok=$((n_ok + 1))
done
it_check "F4: 10 more calls all answered by node-b's app ($n_ok)" test "$n_ok" = 10
o1=$(opened)
it_check "... over streams kept between calls: at most one new per cloud worker ($o0 -> $o1)" \
	test $((o1 - o0)) -le 2
counted() { [ "$(rule_count r-api successMessages)" = $((ok0 + 10)) ]; }
it_check "the Rule counts exactly 10 more successes ($ok0 -> $(rule_count r-api successMessages))" \
	it_wait 5 counted
page() { ip netns exec "$NSC" curl -s -m 5 -w ' %{http_code}' "$R$1" 2>/dev/null | tr -d '\n'; }
got=$(page /node-b/default/nope)
it_check "no rule for the path: 404 with a reason ($got)" \
	test "$got" = "no rule for this path (expected /<node>/<namespace>/<path>) 404"
got=$(page /node-zz/default/api/x)
it_check "an edge not connected: 503 with a reason ($got)" \
	test "$got" = "edge not connected to the cloud 503"
got=$(page /node-b/default/api/slow)
it_check "an edge too slow (router.timeout_ms 1500): 504 with a reason ($got)" \
	test "$got" = "edge did not answer in time 504"
it_check "a 500 from the edge's app comes back as it is" \
	test "$(call /node-b/default/api/boom)" = "node-b 9000 /edge/boom 500"
fails() { [ "$(rule_count r-api failMessages)" -ge 3 ]; }
it_check "the Rule counts the three failures (not connected, timeout, 500)" it_wait 5 fails
reasons=$(ctl cloud get rules r-api -o json)
for why in "edge not connected" "edge did not answer in time" "the edge answered 500"; do
	it_check "the Rule's errors keep \"$why\"" sh -c "printf '%s' '$reasons' | grep -q '$why'"
done

# -- the cloud restarting: calls fail fast until node-b is back
it_node_stop cloud
it_node_start cloud "$NSC"
t0=$(date +%s%N)
codes=""
while :; do
	c=$(call /node-b/default/api/back)
	codes="$codes ${c##* }"
	[ "$c" = "node-b 9000 /edge/back 200" ] && break
	[ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 15000 ] && break
	sleep 0.1
done
it_log "Router calls while node-b reconnected: $codes"
it_check "after the cloud's restart Router calls succeed again once node-b is back" \
	test "$c" = "node-b 9000 /edge/back 200"
it_check "... and the calls before that failed fast with 503 (no hang, no other error)" \
	sh -c "! printf '%s' '$codes' | tr ' ' '\n' | grep -v '^$' | grep -qv '^\(503\|200\)$'"

# A clean stop of each daemon (a sanitizer build reports what it leaked).
for n in node-a node-b cloud; do
	it_node_stop $n
	it_check "$n stopped cleanly" sh -c "! grep -q 'Sanitizer' '${EM_LOG[$n]}'"
done

it_done
