#!/usr/bin/env bash
# The Router over TLS (router.tls) with real daemons: a cloud node (2
# workers) and an edge, node-b, each in a namespace of its own, joined by a
# veth pair (192.168.76.0/24, nowhere else); node-b dials the cloud and has
# no listener. A self-signed certificate is made with the openssl CLI.
#   - config: only one of router.tls.cert_file / key_file, an unreadable
#     file, a key that does not match the certificate, TLS on an edge: each
#     refused by `edgemesh -t`, the message naming the file and the key;
#   - curl --cacert through the TLS Router reaches node-b's loopback app
#     (200, the right body), several requests on one connection (one
#     handshake), 1 MiB byte-exact, the Router's own 404 page;
#   - plain HTTP to the TLS port is not served (no HTTP status), counted as
#     a failed handshake;
#   - a client that connects and never sends a byte is dropped after
#     router.tls.handshake_ms (1000 here), counted;
#   - past router.tls.max_connections (6 here) a new connection is closed
#     at once;
#   - a reload changing router.tls.cert_file is refused (restart-only);
#   - SIGTERM with a keep-alive TLS connection open: the daemon stops
#     promptly and cleanly (a sanitizer build reports leaks in its log).
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_router_tls: needs root (network namespaces, veth)"
it_need_root
it_need openssl curl python3

NSC=em-tc-$$ NSB=em-tb-$$
IPC=192.168.76.1 IPB=192.168.76.2
KEY=router-tls-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"

# -- certificates: the Router's (for its address), and a second key
mkcert() { # NAME SUBJECT_ALT_NAME
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$IT_TMP/$1.key" -out "$IT_TMP/$1.crt" -subj "/CN=edgemesh-router" \
		-addext "subjectAltName=$2" >/dev/null 2>&1 || it_die "openssl req ($1)"
}
mkcert router "IP:$IPC"
mkcert other "DNS:other.example"

# cloud_conf FILE TLS_MEMBERS: the cloud's config with router.tls TLS_MEMBERS.
cloud_conf() {
	cat >"$1" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 2,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "$IPC:20006", "cluster_key": "$KEY", "keepalive_ms": 1000,
  "dead_after_ms": 3000},
 "router": {"listen": "$IPC:9443", "timeout_ms": 1500, "tls": {$2}},
 "timeouts": {"shutdown_ms": 1000},
 "controller": {"manifests_dir": "$MDIR"}}
EOF
}

# -- config errors: exit 1, the message names the file and the key
bad_case() { # NAME EXPECTED_TEXT TLS_MEMBERS
	local f=$IT_TMP/bad-$1.json out rc
	cloud_conf "$f" "$3"
	out=$("$EDGEMESH" -c "$f" -t 2>&1)
	rc=$?
	if [ $rc = 1 ] && grep -qF -- "$f" <<<"$out" && grep -qF -- "$2" <<<"$out"; then
		it_ok "-t refuses $1: $(head -n 1 <<<"$out")"
	else
		it_fail "-t on $1: expected exit 1 and a message naming $f and '$2'; got $rc: $out"
	fi
}
bad_case cert-only "router.tls.key_file: expected" "\"cert_file\": \"$IT_TMP/router.crt\""
bad_case key-only "router.tls.cert_file: expected" "\"key_file\": \"$IT_TMP/router.key\""
bad_case cert-unreadable "router.tls.cert_file: cannot read $IT_TMP/nope.crt" \
	"\"cert_file\": \"$IT_TMP/nope.crt\", \"key_file\": \"$IT_TMP/router.key\""
bad_case key-unreadable "router.tls.key_file: cannot read $IT_TMP/nope.key" \
	"\"cert_file\": \"$IT_TMP/router.crt\", \"key_file\": \"$IT_TMP/nope.key\""
bad_case key-mismatch "router.tls.key_file: the key in $IT_TMP/other.key does not match" \
	"\"cert_file\": \"$IT_TMP/router.crt\", \"key_file\": \"$IT_TMP/other.key\""
bad_case not-a-cert "router.tls.cert_file: $IT_TMP/router.key holds no PEM certificate" \
	"\"cert_file\": \"$IT_TMP/router.key\", \"key_file\": \"$IT_TMP/router.key\""
f=$IT_TMP/bad-edge.json
cat >"$f" <<EOF
{"role": "edge", "node_name": "node-b", "tunnel": {"listen": ""},
 "router": {"tls": {"cert_file": "$IT_TMP/router.crt", "key_file": "$IT_TMP/router.key"}}}
EOF
out=$("$EDGEMESH" -c "$f" -t 2>&1)
it_check "-t refuses router.tls on an edge: $out" \
	grep -qF "$f: router.tls.cert_file: expected \"\" on an edge" <<<"$out"
cloud_conf "$IT_TMP/cloud.json" "\"cert_file\": \"$IT_TMP/router.crt\",
  \"key_file\": \"$IT_TMP/router.key\", \"handshake_ms\": 1000, \"max_connections\": 6"
out=$("$EDGEMESH" -c "$IT_TMP/cloud.json" -t 2>&1)
it_check "-t accepts the cloud's config with router.tls ($out)" [ $? = 0 ]

# -- the nodes
it_veth_pair "$NSC" "$NSB" "emtc$$" "emtb$$" "$IPC" "$IPB"
cat >"$IT_TMP/node-b.json" <<EOF
{"role": "edge", "node_name": "node-b", "data_dir": "$IT_TMP/data-node-b",
 "api_socket": "$IT_TMP/node-b.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "", "cluster_key": "$KEY", "keepalive_ms": 1000,
  "dead_after_ms": 3000, "reconnect_min_ms": 100, "reconnect_max_ms": 1000},
 "cloud": {"address": "$IPC:20006"}}
EOF
it_list "$(it_rule_ep rest rest '{}')" \
	"$(it_rule_ep sb-app servicebus '{"service_port": "9000"}')" \
	"$(it_rule r-api rest '{"path": "/api"}' sb-app '{"path": "/edge"}')" >"$MDIR/rules.json"

# node-b's app: "node-b PATH" for any path; /edge/big: 1 MiB of a fixed
# pattern; a POST: "LENGTH SHA256" of its body.
IT_NS=$NSB
it_bg bapp python3 -c '
import hashlib, http.server, socketserver, threading
BIG = bytes(range(256)) * 4096
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = BIG if self.path == "/edge/big" else ("node-b %s\n" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = ("%d %s\n" % (len(data), hashlib.sha256(data).hexdigest())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
s = S(("127.0.0.1", 9000), H)
print("ready", flush=True)
s.serve_forever()
'
it_wait_line "$IT_TMP/bapp.out" '^ready' 10 || it_die "node-b's app did not start"
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)' >"$IT_TMP/big.want"

it_node_start cloud "$NSC"
it_node_start node-b "$NSB"
it_check "the cloud logs the Router's HTTPS listener" \
	grep -q "Router: HTTPS on $IPC:9443" "${EM_LOG[cloud]}"
ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
connected() { ctl cloud get nodes | grep -E "^node-b .* connected " >/dev/null; }
it_wait 10 connected || it_die "node-b is not connected to the cloud"
tls_stat() {
	ctl cloud stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["router"][sys.argv[1]])' "$1"
}

R=https://$IPC:9443
incloud() { ip netns exec "$NSC" "$@"; }
# call PATH: "BODY CODE" of a GET through the TLS Router.
call() {
	incloud curl -s -m 5 --cacert "$IT_TMP/router.crt" -w ' %{http_code}' "$R$1" 2>/dev/null |
		tr -d '\n'
}
routed() { [ "$(call /node-b/default/api/hello?x=1)" = "node-b /edge/hello?x=1 200" ]; }
if it_wait 10 routed; then
	it_ok "curl --cacert through the TLS Router reaches node-b's app (/edge/hello?x=1, 200)"
else
	it_fail "TLS Router: got '$(call /node-b/default/api/hello?x=1)': $(tail -n 5 "${EM_LOG[cloud]}")"
fi
got=$(incloud curl -s -m 5 --cacert "$IT_TMP/router.crt" -o /dev/null \
	-w '%{http_version} %{ssl_verify_result}' "$R/node-b/default/api/v" 2>/dev/null)
it_check "... HTTP/1.1 over a verified certificate ($got)" test "$got" = "1.1 0"
got=$(incloud curl -s -m 5 --cacert "$IT_TMP/router.crt" --tls-max 1.2 -w ' %{http_code}' \
	"$R/node-b/default/api/v12" 2>/dev/null | tr -d '\n')
it_check "... and over TLS 1.2 ($got)" test "$got" = "node-b /edge/v12 200"
got=$(incloud curl -s -m 5 --cacert "$IT_TMP/router.crt" --tls-max 1.1 \
	-w '%{http_code}' "$R/node-b/default/api/v11" 2>/dev/null)
it_check "... but not TLS 1.1 (got ${got:-nothing})" test "${got:-000}" = 000

# Several requests on one keep-alive connection: one connect, one handshake.
hs0=$(tls_stat tls_handshakes)
ka_args=()
for i in $(seq 8); do ka_args+=(-o /dev/null "$R/node-b/default/api/ka$i"); done
incloud curl -s -m 10 --cacert "$IT_TMP/router.crt" -w '%{http_code} %{num_connects}\n' \
	"${ka_args[@]}" >"$IT_TMP/ka.out" 2>/dev/null
codes=$(awk '{print $1}' "$IT_TMP/ka.out" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
conns=$(awk '{s += $2} END {print s + 0}' "$IT_TMP/ka.out")
it_check "8 requests on one TLS connection: all 200 ($codes), $conns connect(s)" \
	test "$codes" = " 8 200;" -a "$conns" = 1
hs1=$(tls_stat tls_handshakes)
it_check "... one handshake for the 8 ($hs0 -> $hs1)" test $((hs1 - hs0)) = 1

incloud curl -s -m 10 --cacert "$IT_TMP/router.crt" -o "$IT_TMP/big.got" \
	"$R/node-b/default/api/big" 2>/dev/null
it_check "1 MiB through the TLS Router comes back byte-exact" \
	cmp -s "$IT_TMP/big.want" "$IT_TMP/big.got"
# Backpressure both ways: a 4 MiB upload, and a client that reads the
# 1 MiB answer slowly (at most 64 KiB every 5 ms) with 8 requests pipelined.
head -c 4194304 /dev/urandom >"$IT_TMP/up"
want="4194304 $(sha256sum "$IT_TMP/up" | cut -d' ' -f1)"
got=$(incloud curl -s -m 20 --cacert "$IT_TMP/router.crt" --data-binary "@$IT_TMP/up" \
	-H 'Content-Type: application/octet-stream' "$R/node-b/default/api/up" 2>/dev/null)
it_check "a 4 MiB upload through the TLS Router reaches node-b whole ($got)" test "$got" = "$want"
slow=$(incloud python3 -c '
import hashlib, socket, ssl, time
ctx = ssl.create_default_context(cafile="'$IT_TMP/router.crt'")
s = ctx.wrap_socket(socket.create_connection(("'$IPC'", 9443), timeout=20),
                    server_hostname="'$IPC'")
s.sendall(b"GET /node-b/default/api/big HTTP/1.1\r\nHost: x\r\n\r\n" * 8)
buf = b""
want = (bytes(range(256)) * 4096)
for i in range(8):
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
        time.sleep(0.005)
    head, buf = buf.split(b"\r\n\r\n", 1)
    while len(buf) < len(want):
        buf += s.recv(65536)
        time.sleep(0.005)
    body, buf = buf[:len(want)], buf[len(want):]
    if body != want or not head.startswith(b"HTTP/1.1 200"):
        print("bad answer", i); break
else:
    print("8 exact")' 2>&1)
it_check "8 pipelined 1 MiB answers to a slow TLS reader arrive byte-exact ($slow)" \
	test "$slow" = "8 exact"
# close_notify both ways: "Connection: close" ends with the Router's
# close_notify (not a bare FIN); a client's close_notify gets one back.
notify=$(incloud python3 -c '
import socket, ssl
ctx = ssl.create_default_context(cafile="'$IT_TMP/router.crt'")
def conn():
    return ctx.wrap_socket(socket.create_connection(("'$IPC'", 9443), timeout=10),
                           server_hostname="'$IPC'", suppress_ragged_eofs=False)
out = []
s = conn()
s.sendall(b"GET /node-b/default/api/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
buf = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    out.append("server-notify" if b"node-b /edge/c" in buf else "no-answer")
except ssl.SSLEOFError:
    out.append("bare-eof")
s = conn()
s.sendall(b"GET /node-b/default/api/d HTTP/1.1\r\nHost: x\r\n\r\n")
buf = b""
while b"node-b /edge/d" not in buf:
    buf += s.recv(4096)
try:
    s.unwrap()
    out.append("client-notify-answered")
except (ssl.SSLError, OSError) as e:
    out.append("unwrap-failed:" + e.__class__.__name__)
print(" ".join(out))' 2>&1)
it_check "close_notify both ways ($notify)" \
	test "$notify" = "server-notify client-notify-answered"
got=$(call /node-b/default/nope)
it_check "the Router's own pages over TLS: 404 without a rule ($got)" \
	test "$got" = "no rule for this path (expected /<node>/<namespace>/<path>) 404"

# -- plain HTTP to the TLS port: not served
f0=$(tls_stat tls_handshake_failures)
got=$(incloud curl -s -m 5 -w '%{http_code}' "http://$IPC:9443/node-b/default/api/plain" 2>/dev/null)
it_check "plain HTTP to the TLS port gets no HTTP answer (status ${got:-none})" \
	test "${got:-000}" = 000
failed() { [ "$(tls_stat tls_handshake_failures)" -gt "$f0" ]; }
it_check "... counted as a failed handshake" it_wait 5 failed

# -- a client that connects and sends nothing is dropped after handshake_ms
t0=$(tls_stat tls_handshake_timeouts)
silent_ms=$(incloud python3 -c '
import socket, time
s = socket.create_connection(("'$IPC'", 9443), timeout=10)
t = time.monotonic()
try:
    d = s.recv(1)
except OSError:
    d = b""
print(int((time.monotonic() - t) * 1000) if d == b"" else -1)' 2>&1)
it_check "a silent client is dropped after the handshake timeout (1000 ms): ${silent_ms} ms" \
	test "${silent_ms:--1}" -ge 900 -a "${silent_ms:--1}" -le 3000
timed_out() { [ "$(tls_stat tls_handshake_timeouts)" -gt "$t0" ]; }
it_check "... counted as a handshake timeout" it_wait 5 timed_out

# -- the cap: 6 silent connections held, a 7th closed at once (the front
# takes them from one listen queue, in order)
drained() { [ "$(tls_stat tls_connections)" = 0 ]; }
it_wait 5 drained || it_fail "TLS connections left before the cap test: $(tls_stat tls_connections)"
r0=$(tls_stat tls_refused)
cap_out=$(incloud python3 -c '
import socket, time
held = [socket.create_connection(("'$IPC'", 9443), timeout=5) for _ in range(6)]
s = socket.create_connection(("'$IPC'", 9443), timeout=5)
t = time.monotonic()
try:
    d = s.recv(1)
except OSError:
    d = b""
print(int((time.monotonic() - t) * 1000) if d == b"" else -1)' 2>&1)
it_check "past max_connections (6) a 7th connection is closed at once (${cap_out} ms)" \
	test "${cap_out:--1}" -ge 0 -a "${cap_out:--1}" -lt 500
refused() { [ "$(tls_stat tls_refused)" -gt "$r0" ]; }
it_check "... counted as refused" it_wait 5 refused
it_check "the held connections are gone after the handshake timeout" it_wait 5 drained
it_check "... and calls go through again" it_wait 5 routed

# -- reloads: router.tls is restart-only
cp "$IT_TMP/cloud.json" "$IT_TMP/cloud.json.orig"
sed -i "s|$IT_TMP/router.crt|$IT_TMP/other.crt|; s|$IT_TMP/router.key|$IT_TMP/other.key|" \
	"$IT_TMP/cloud.json"
kill -HUP "${EM_PID[cloud]}"
it_check "a reload that changes router.tls.cert_file is refused as restart-only" \
	it_wait 5 grep -q 'router.tls.cert_file changed, which needs a restart' "${EM_LOG[cloud]}"
it_check "... and the running certificate still serves" routed
cp "$IT_TMP/cloud.json.orig" "$IT_TMP/cloud.json"

# -- SIGTERM with a keep-alive TLS connection open
incloud python3 -c '
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile="'$IT_TMP/router.crt'")
s = ctx.wrap_socket(socket.create_connection(("'$IPC'", 9443), timeout=10),
                    server_hostname="'$IPC'")
s.sendall(b"GET /node-b/default/api/held HTTP/1.1\r\nHost: x\r\n\r\n")
buf = b""
while b"node-b /edge/held" not in buf:
    buf += s.recv(4096)
print("answered", flush=True)
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
except (ssl.SSLError, OSError) as e:
    pass
print("closed", flush=True)
' >"$IT_TMP/held.out" 2>&1 &
held_pid=$!
it_wait 5 grep -q '^answered' "$IT_TMP/held.out" || it_fail "the held connection got no answer: $(cat "$IT_TMP/held.out")"
# ... and one more still in its handshake (silent) when the stop comes.
incloud python3 -c '
import socket
s = socket.create_connection(("'$IPC'", 9443), timeout=10)
print("connected", flush=True)
s.recv(1)' >"$IT_TMP/silent.out" 2>&1 &
silent_pid=$!
it_wait 5 grep -q '^connected' "$IT_TMP/silent.out" || it_fail "the silent client did not connect"
ts=$(date +%s%N)
it_node_stop cloud
stop_ms=$((($(date +%s%N) - ts) / 1000000))
it_check "SIGTERM with a TLS keep-alive connection open: the cloud exits 0 in ${stop_ms} ms" \
	test "$IT_RC" = 0 -a "$stop_ms" -lt 5000
it_check "... and the client sees its connection end" it_wait 5 grep -q '^closed' "$IT_TMP/held.out"
wait "$held_pid" "$silent_pid" 2>/dev/null
it_node_stop node-b
for n in cloud node-b; do
	it_check "$n stopped cleanly" sh -c "! grep -q 'Sanitizer' '${EM_LOG[$n]}'"
done

it_done
