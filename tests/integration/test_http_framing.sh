#!/usr/bin/env bash
# HTTP framing at the edges of an exchange, through the plain HTTP path and
# through a tunnel. Two node namespaces em-fa-PID and em-fb-PID joined by a
# veth pair (192.168.78.1/.2 inside them only), each with its own edgemesh;
# node-a has listeners for a service whose endpoint is on node-a, one whose
# endpoint is on node-b (reached through the tunnel), and one without
# endpoints. The backends (framing.py) log every request line they parse.
#   - an upstream answers 401 before reading an upload whose rest holds a
#     request line: the rest is never forwarded as a request, neither with a
#     small Content-Length remainder (the connection stays usable), a 1 MiB
#     one (the client is closed without a reset), nor a chunked body; a
#     client that asked for a 100 and got the 401 instead is closed after it;
#   - a 6 MiB upload written at once gets its 401, or the proxy's own 503,
#     whole and then a clean EOF, not a reset; so does a malformed request
#     after a good one on a kept connection get its 400;
#   - "100 Continue" + 200, "103" + "103" + 200, and "100" + a 200 with a
#     30000-byte body, each written by the backend at once, all arrive.
. "$(dirname "$0")/lib.sh"
it_need_root
it_need python3

NSA=em-fa-$$
NSB=em-fb-$$
VA=efa$$
VB=efb$$
IPA=192.168.78.1
IPB=192.168.78.2
KEY=framing-test-key-$$-0123456789abcdef0123456789abcdef
PY=$IT_ROOT/tests/integration/framing.py
LOGA=$IT_TMP/requests-a.log
LOGB=$IT_TMP/requests-b.log

it_veth_pair "$NSA" "$NSB" "$VA" "$VB" "$IPA" "$IPB"

# em_conf NODE IP LISTENERS
em_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$1",
	"data_dir": "$IT_TMP/data-$1",
	"api_socket": "$IT_TMP/$1.sock",
	"workers": 1,
	"log_level": "info",
	"fastpath": {"mode": "off"},
	"listeners": $3,
	"tunnel": {"encryption": "none", "listen": "$2:20007", "cluster_key": "$KEY"},
	"timeouts": {"connect_ms": 2000}
}
EOF
}
em_conf node-a $IPA '[
		{"listen": "127.0.0.1:18080", "service": "default/local", "port": 80},
		{"listen": "127.0.0.1:18081", "service": "default/remote", "port": 80},
		{"listen": "127.0.0.1:18082", "service": "default/empty", "port": 80}]'
em_conf node-b $IPB '[]'

MANIFESTS=$(it_list \
	"$(it_node_obj node-a $IPA)" "$(it_node_obj node-b $IPB)" \
	"$(it_svc default local 10.96.0.80 80 8080)" \
	"$(it_ep_obj default local 8080 127.0.0.11@node-a)" \
	"$(it_svc default remote 10.96.0.81 80 8081)" \
	"$(it_ep_obj default remote 8081 $IPB@node-b)" \
	"$(it_svc default empty 10.96.0.82 80 8082)" \
	"$(it_ep_obj default empty 8082)")

it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
it_node_apply node-a "$MANIFESTS"
it_node_apply node-b "$MANIFESTS"

IT_NS=$NSA
it_bg back-a python3 "$PY" backend 127.0.0.11 8080 "$LOGA"
it_wait_line "$IT_TMP/back-a.out" '^ready' 10 || it_die "backend on node-a did not start"
IT_NS=$NSB
it_bg back-b python3 "$PY" backend $IPB 8081 "$LOGB"
it_wait_line "$IT_TMP/back-b.out" '^ready' 10 || it_die "backend on node-b did not start"
IT_NS=$NSA

client() { # PORT CASE TAG
	timeout 30 ip netns exec "$NSA" python3 "$PY" client 127.0.0.1 "$@" 2>"$IT_TMP/client.err"
}

# check DESCRIPTION PORT CASE TAG
check() {
	local desc=$1
	shift
	if client "$@"; then
		it_ok "$desc"
	else
		it_fail "$desc: $(head -c 400 "$IT_TMP/client.err")"
	fi
}

# Sockets node-a has open (clients, upstreams, stream ends), as last published.
active_a() {
	timeout 10 "$MESHCTL" -s "$IT_TMP/node-a.sock" stats | tr -d '\t ' |
		sed -n 's/^"connections_active":\([0-9]*\).*/\1/p' | head -n 1
}
settled() { local n; n=$(active_a); [ -n "$n" ] && [ "$n" -le "$1" ]; }

# upload_check DESCRIPTION PORT CASE TAG: the case, then node-a must be back
# to the sockets it had before within 10 s: the proxy read the whole upload
# and saw the client's FIN.
upload_check() {
	local before
	it_wait 5 test -n "$(active_a)"
	before=$(active_a)
	check "$@"
	if it_wait 10 settled "$before"; then
		it_ok "${4}: node-a closed the client once it had read the upload ($before sockets)"
	else
		it_fail "${4}: node-a still holds the client's socket: $(active_a) open, $before before"
	fi
}

remote_up() { client 18081 get probe; }
it_wait 15 remote_up || it_log "the tunnel path does not answer yet: $(cat "$IT_TMP/client.err")"

for path in plain tunnel; do
	port=18080
	[ $path = tunnel ] && port=18081
	check "$path: 401 before the body, small rest holding a request line: dropped, keep-alive goes on" \
		$port small-cl "$path-small"
	check "$path: 401 before the body, 1 MiB rest: clean close after the 401, rest dropped" \
		$port large-cl "$path-large"
	check "$path: 401 before a chunked body, rest holding a request line: dropped, keep-alive goes on" \
		$port chunked "$path-chunked"
	check "$path: 401 without a 100 to 'Expect: 100-continue': the connection ends after the 401" \
		$port expect "$path-expect"
	check "$path: a malformed request after a good one on a kept connection: the 400 page, then EOF" \
		$port bad-second "$path-bad"
	upload_check "$path: 6 MiB upload written at once: the 401 whole, then EOF, no reset" \
		$port upload "$path-upload"
	check "$path: 100 Continue and 200 in one read both arrive" $port continue "$path-continue"
	check "$path: 103, 103 and 200 in one read all arrive" $port hints "$path-hints"
	check "$path: 100 Continue and a 200 with a 30000-byte body in one read" \
		$port continue-big "$path-big"
done
upload_check "the proxy's own 503 to a 6 MiB upload written at once: whole, then EOF, no reset" \
	18082 errpage err

smuggled=$(cat "$LOGA" "$LOGB" | grep -c smuggled)
it_check "no backend ever parsed a request line from a request body ($smuggled did)" \
	[ "$smuggled" = 0 ]
it_check "node-a's backend served the plain path's follow-up requests" \
	grep -q '^GET /after-plain-small ' "$LOGA"
it_check "node-b's backend served the tunnel path's follow-up requests" \
	grep -q '^GET /after-tunnel-small ' "$LOGB"

for n in node-a node-b; do
	it_check "edgemesh $n still runs" kill -0 "${EM_PID[$n]}"
done
it_node_stop node-a
it_node_stop node-b
it_done
