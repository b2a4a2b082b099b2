#!/usr/bin/env bash
# Server-side QPS limits (annotations edgemesh.io/qps, edgemesh.io/qps-burst)
# through explicit listeners on the host's loopback, two workers:
#   - an HTTP port past its limit answers 429 with Retry-After on the same
#     keep-alive connection, and N requests give exactly burst 200s (a rate
#     so low that no token comes back during the test);
#   - a plain TCP port past its limit resets the connection; counts exact;
#   - a new annotation value applies at once (no restart), a removed one
#     lifts the limit, SIGHUP resets no count, a bad value is ignored with a
#     warning naming the service;
#   - both workers under a flood at 10x the rate for a few seconds: what is
#     allowed stays within the limit times the time the load ran (counts, no
#     timing assertion);
#   - meshctl stats: the "qps" list per service and engine.qps_rejected.
# With root, flow F2 in two network namespaces: a request from node A to an
# HTTP service on node B is limited by B (429 from B), and a plain TCP
# service's stream is refused by B with "rate limited".
. "$(dirname "$0")/lib.sh"
it_need curl socat wrk python3

N=$IT_NET
IT_LISTENERS=$(
	cat <<EOF
[
	{ "listen": "$N.1:18080", "service": "default/web", "port": 80 },
	{ "listen": "$N.1:18007", "service": "default/echo", "port": 7 },
	{ "listen": "$N.1:18081", "service": "default/flood", "port": 80 }
]
EOF
)
IT_WORKERS=2
it_em_config
it_em_start

# cond 'SHELL CONDITION': for it_check, a condition of several tests.
cond() { eval "$1"; }

# svc_q NS NAME IP PORT TARGET PORT_NAME QPS [BURST]: a Service whose one
# port is named PORT_NAME, annotated with QPS (none when "") and BURST.
svc_q() {
	local ann=""
	[ -n "$7" ] && ann="\"edgemesh.io/qps\": \"$7\""
	[ -n "${8:-}" ] && ann+=", \"edgemesh.io/qps-burst\": \"$8\""
	cat <<EOF
{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "$2", "namespace": "$1", "resourceVersion": "1",
  "annotations": {$ann}},
 "spec": {"clusterIP": "$3", "ports": [{"name": "$6", "port": $4, "protocol": "TCP",
  "targetPort": $5}], "type": "ClusterIP"}}
EOF
}
# ep_named NS NAME PORT PORT_NAME IP: Endpoints on this node, port named.
ep_named() {
	cat <<EOF
{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "$2", "namespace": "$1"},
 "subsets": [{"addresses": [{"ip": "$5", "nodeName": "edge-node-1"}],
  "ports": [{"name": "$4", "port": $3, "protocol": "TCP"}]}]}
EOF
}

# 0.001/s: no token comes back within the test, so counts are exact.
it_apply "$(it_list \
	"$(svc_q default web 10.96.2.80 80 8080 http 0.001 3)" \
	"$(ep_named default web 8080 http $N.11)" \
	"$(svc_q default echo 10.96.2.7 7 7007 p 0.001 2)" \
	"$(ep_named default echo 7007 p $N.21)" \
	"$(svc_q default flood 10.96.2.81 80 8080 http-flood 200)" \
	"$(ep_named default flood 8080 http-flood $N.12)")"
it_backend web http $N.11:8080 $N.12:8080
it_backend echo echo $N.21:7007

# qps_of SERVICE FIELD: stats.qps[service].FIELD, empty when not listed.
qps_of() {
	ctl stats 2>/dev/null | python3 -c "
import json, sys
for e in json.load(sys.stdin).get('qps', []):
    if e['service'] == '$1':
        print(int(e['$2']) if float(e['$2']).is_integer() else e['$2'])" 2>/dev/null
}
stat_eng() { ctl stats | python3 -c "import json,sys; print(json.load(sys.stdin)['engine']['$1'])"; }
rejected_ge() { [ "$(stat_eng qps_rejected)" -ge "$1" ]; }

# ---- HTTP: 10 requests on one connection, burst 3
it_urls 10 "http://$N.1:18080/" >"$IT_TMP/urls"
curl -sS --max-time 20 -D "$IT_TMP/h1" -o /dev/null -K <(sed 's/^/url = /' "$IT_TMP/urls") \
	-w '%{http_code} %{num_connects}\n' >"$IT_TMP/codes" 2>"$IT_TMP/curl.err"
n200=$(grep -c '^200 ' "$IT_TMP/codes")
n429=$(grep -c '^429 ' "$IT_TMP/codes")
conns=$(awk '{s += $2} END {print s}' "$IT_TMP/codes")
it_check "HTTP past the limit: 3 x 200 then 7 x 429 (got $n200 / $n429)" cond '[ "$n200" = 3 ] && [ "$n429" = 7 ]'
it_check "the 429s kept the connection (connections made: $conns)" [ "$conns" = 1 ]
ra=$(grep -i '^Retry-After:' "$IT_TMP/h1" | head -n 1 | tr -dc '0-9')
it_check "429 says Retry-After in whole seconds until the next token (got '$ra', ~1000)" \
	cond '[ -n "$ra" ] && [ "$ra" -ge 900 ] && [ "$ra" -le 1000 ]'
body=$(curl -s --max-time 10 "http://$N.1:18080/")
it_check "429 body is one line naming the limit (got '$body')" grep -q 'edgemesh.io/qps' <<<"$body"
# HEAD gets the head alone: HEAD and GET pipelined, the second response
# starts right after the first head.
head_then_get() {
	python3 - "$N.1" 18080 <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
buf = b""
while buf.find(b"\r\n\r\n") < 0 or len(buf) < buf.find(b"\r\n\r\n") + 4 + 13:
    d = s.recv(65536)
    if not d:
        break
    buf += d
i = buf.find(b"\r\n\r\n") + 4
print(buf[:12].decode(), "|", buf[i:i + 12].decode(errors="replace"))
EOF
}
heads=$(head_then_get 2>&1)
it_check "429 to HEAD has no body: the pipelined GET's 429 follows its head (got '$heads')" \
	[ "$heads" = "HTTP/1.1 429 | HTTP/1.1 429" ]
it_check "stats: default/web allowed 3, rejected 10, limit 0.001, burst 3" \
	cond '[ "$(qps_of default/web allowed)" = 3 ] && [ "$(qps_of default/web rejected)" = 10 ] &&
	[ "$(qps_of default/web limit)" = 0.001 ] && [ "$(qps_of default/web burst)" = 3 ]'
if it_wait 5 rejected_ge 10; then
	it_ok "engine.qps_rejected counts the 429s"
else
	it_fail "engine.qps_rejected: $(stat_eng qps_rejected)"
fi

# ---- plain TCP: 5 connections, burst 2
ok=0
for i in 1 2 3 4 5; do
	out=$(printf 'ping %s\n' "$i" | timeout 10 socat -t 2 - TCP:$N.1:18007 2>/dev/null)
	[ "$out" = "ping $i" ] && ok=$((ok + 1))
done
it_check "TCP past the limit: 2 of 5 connections served, the others reset (got $ok)" [ "$ok" = 2 ]
it_check "stats: default/echo allowed 2, rejected 3" \
	cond '[ "$(qps_of default/echo allowed)" = 2 ] && [ "$(qps_of default/echo rejected)" = 3 ]'

# ---- SIGHUP resets nothing; a new annotation applies at once
kill -HUP "$IT_EM_PID"
it_wait_line "$IT_EM_LOG" 'config: reloaded' 10 || it_fail "no reload after SIGHUP"
it_check "SIGHUP keeps the counts (allowed $(qps_of default/web allowed))" \
	[ "$(qps_of default/web allowed)" = 3 ]
out=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$N.1:18080/")
it_check "still limited after SIGHUP (got $out)" [ "$out" = 429 ]
pid_before=$IT_EM_PID
it_apply "$(svc_q default web 10.96.2.80 80 8080 http 0.001 20)"
it_urls 20 "http://$N.1:18080/" >"$IT_TMP/urls"
curl -sS --max-time 20 -o /dev/null -K <(sed 's/^/url = /' "$IT_TMP/urls") \
	-w '%{http_code}\n' >"$IT_TMP/codes2" 2>>"$IT_TMP/curl.err"
# The bucket of 3 was empty; as a bucket of 20 it is empty too (same fill).
n200=$(grep -c '^200' "$IT_TMP/codes2")
it_check "a bigger burst applies at once, the bucket as empty as it was (200s: $n200)" [ "$n200" = 0 ]
it_apply "$(svc_q default web 10.96.2.80 80 8080 http 1000 20)"
# Still as empty as it was, now refilling at 1000/s: 20 in a row pass once
# 20 ms went by (polled, no fixed wait).
all20() {
	curl -sS --max-time 20 -o /dev/null -K <(sed 's/^/url = /' "$IT_TMP/urls") \
		-w '%{http_code}\n' >"$IT_TMP/codes3" 2>>"$IT_TMP/curl.err"
	[ "$(grep -c '^200' "$IT_TMP/codes3")" = 20 ]
}
it_check "a higher rate applies at once: 20 requests in a row served" it_wait 5 all20
it_check "stats: limit 1000, burst 20, counts kept (allowed $(qps_of default/web allowed))" \
	cond '[ "$(qps_of default/web limit)" = 1000 ] && [ "$(qps_of default/web burst)" = 20 ] &&
	[ "$(qps_of default/web allowed)" -ge 23 ]'
it_apply "$(svc_q default echo 10.96.2.7 7 7007 p "")"
ok=0
for i in 1 2 3; do
	out=$(printf 'again %s\n' "$i" | timeout 10 socat -t 2 - TCP:$N.1:18007 2>/dev/null)
	[ "$out" = "again $i" ] && ok=$((ok + 1))
done
it_check "annotation removed: no limit ($ok of 3 served), default/echo leaves stats" \
	cond '[ "$ok" = 3 ] && [ -z "$(qps_of default/echo allowed)" ]'
it_check "no restart meanwhile" cond '[ "$IT_EM_PID" = "$pid_before" ] && it_em_alive'

# A bad value: ignored, the service served, a warning naming it.
it_apply "$(svc_q default echo 10.96.2.7 7 7007 p fast)"
it_check "a bad value is warned about with the service and the annotation" \
	grep -q 'service default/echo: annotation edgemesh.io/qps: expected a positive number.*"fast"' "$IT_EM_LOG"
out=$(printf 'bad\n' | timeout 10 socat -t 2 - TCP:$N.1:18007 2>/dev/null)
it_check "a bad value sets no limit (got '$out')" [ "$out" = bad ]

# ---- both workers under 10x the rate: 200/s, burst 20
a0=$(qps_of default/flood allowed)
t0=$(date +%s%N)
wrk -t 2 -c 16 -d 3s "http://$N.1:18081/" >"$IT_TMP/wrk.out" 2>&1
t1=$(date +%s%N)
a1=$(qps_of default/flood allowed)
r1=$(qps_of default/flood rejected)
allowed=$((a1 - a0))
ms=$(((t1 - t0) / 1000000))
reqs=$(sed -nE 's/^ +([0-9]+) requests in.*/\1/p' "$IT_TMP/wrk.out")
it_log "flood: $reqs requests in ${ms} ms, allowed $allowed, rejected $r1"
it_check "the flood ran at 10x the rate or more ($reqs requests in $ms ms)" \
	[ "${reqs:-0}" -ge $((ms * 200 * 10 / 1000 / 2)) ]
# At most burst + rate x the time the load ran (+ 5%); at least half of it.
max=$((20 + ms * 200 / 1000 * 105 / 100))
min=$((ms * 200 / 1000 / 2))
it_check "allowed within the limit over ${ms} ms: $min <= $allowed <= $max" \
	cond '[ "$allowed" -le "$max" ] && [ "$allowed" -ge "$min" ]'
it_check "every flood request counted once (allowed + rejected = $((allowed + r1)), wrk: $reqs)" \
	[ $((allowed + r1)) -ge "${reqs:-0}" ]

it_em_stop || it_fail "edgemesh did not stop cleanly"

# ---- F2: the node that serves applies the limit
if [ "$(id -u)" != 0 ]; then
	it_log "F2 part skipped: needs root (network namespaces)"
	it_done
fi
NSA=em-qa-$$
NSB=em-qb-$$
IPA=192.168.78.1
IPB=192.168.78.2
KEY=qps-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
it_veth_pair "$NSA" "$NSB" qa$$ qb$$ $IPA $IPB 10.96.0.0/12
em_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{
	"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
	"api_socket": "$IT_TMP/$1.sock", "workers": 2, "log_level": "info",
	"fastpath": {"mode": "off"},
	"capture": {"enabled": true, "port": 15001},
	"tunnel": {"encryption": "none", "listen": "$2:20006", "cluster_key": "$KEY", "keepalive_ms": 1000,
		"dead_after_ms": 3000, "reconnect_min_ms": 100, "reconnect_max_ms": 1000}
}
EOF
}
ep_b() {
	cat <<EOF
{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "$1", "namespace": "default"},
 "subsets": [{"addresses": [{"ip": "$IPB", "nodeName": "node-b"}],
  "ports": [{"name": "$3", "port": $2, "protocol": "TCP"}]}]}
EOF
}
M=$(it_list "$(it_node_obj node-a $IPA)" "$(it_node_obj node-b $IPB)" \
	"$(svc_q default hweb 10.96.0.80 80 8080 http 0.001 3)" "$(ep_b hweb 8080 http)" \
	"$(svc_q default tcp 10.96.0.7 7 7007 p 0.001 2)" "$(ep_b tcp 7007 p)")
em_conf node-a $IPA
em_conf node-b $IPB
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
it_node_apply node-a "$M"
it_node_apply node-b "$M"
IT_NS=$NSB
it_backend hweb-b http $IPB:8080
it_backend tcp-b echo $IPB:7007
IT_NS=$NSA
ina() { ip netns exec "$NSA" "$@"; }
qps_on() { # NODE SERVICE FIELD
	timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" stats 2>/dev/null | python3 -c "
import json, sys
for e in json.load(sys.stdin).get('qps', []):
    if e['service'] == '$2':
        print(int(e['$3']))" 2>/dev/null
}
it_urls 8 "http://10.96.0.80/" >"$IT_TMP/urls"
ina curl -sS --max-time 20 -o /dev/null -K <(sed 's/^/url = /' "$IT_TMP/urls") \
	-w '%{http_code}\n' >"$IT_TMP/f2codes" 2>"$IT_TMP/f2curl.err"
n200=$(grep -c '^200' "$IT_TMP/f2codes")
n429=$(grep -c '^429' "$IT_TMP/f2codes")
it_check "F2 HTTP: B limits A's requests (200: $n200, 429: $n429; want 3 and 5)" \
	cond '[ "$n200" = 3 ] && [ "$n429" = 5 ]'
it_check "F2 HTTP: counted on B (allowed $(qps_on node-b default/hweb allowed)), not on A" \
	cond '[ "$(qps_on node-b default/hweb allowed)" = 3 ] &&
	[ "$(qps_on node-b default/hweb rejected)" = 5 ] &&
	[ "$(qps_on node-a default/hweb allowed)" = 0 ]'
ok=0
for i in 1 2 3 4; do
	out=$(printf 'f2 %s\n' "$i" | timeout 10 ip netns exec "$NSA" socat -t 2 - TCP:10.96.0.7:7 2>/dev/null)
	[ "$out" = "f2 $i" ] && ok=$((ok + 1))
done
it_check "F2 TCP: B refuses streams past the limit (served $ok of 4, want 2)" [ "$ok" = 2 ]
it_check "F2 TCP: A logs B's reason" grep -q 'refused a stream to default/tcp: refused: rate limited' "${EM_LOG[node-a]}"
it_node_stop node-a
it_node_stop node-b
it_done
