#!/usr/bin/env bash
# Forwarding through explicit listeners on the host's loopback (no capture, no
# root): raw TCP echo, HTTP keep-alive round robin over 3 endpoints, 503 when
# a service has no endpoint or does not exist, reset for raw TCP without
# endpoints. Addresses live in a random 127.x.y.0/24 of the test's own.
. "$(dirname "$0")/lib.sh"
it_need curl socat

N=$IT_NET
IT_LISTENERS=$(
	cat <<EOF
[
	{ "listen": "$N.1:18080", "service": "default/web", "port": 80 },
	{ "listen": "$N.1:18007", "service": "default/echo", "port": 7 },
	{ "listen": "$N.1:18081", "service": "default/empty", "port": 80 },
	{ "listen": "$N.1:18082", "service": "default/nosuch", "port": 80 },
	{ "listen": "$N.1:18008", "service": "default/empty", "port": 80 },
	{ "listen": "$N.1:18009", "service": "default/bulk", "port": 9 }
]
EOF
)
it_em_config
it_em_start
it_log "edgemesh up, listeners on $N.1"

it_apply "$(it_list \
	"$(it_svc default web 10.96.1.80 80 8080)" \
	"$(it_ep default web 8080 $N.11 $N.12 $N.13)" \
	"$(it_svc default echo 10.96.1.7 7 7007)" \
	"$(it_ep default echo 7007 $N.21)" \
	"$(it_svc default empty 10.96.1.81 80 8080)" \
	"$(it_ep default empty 8080)")"

it_backend web http $N.11:8080 $N.12:8080 $N.13:8080
web_pid=$IT_LAST_PID
it_backend echo echo $N.21:7007

# -- raw TCP echo
out=$(printf 'hello through the mesh\n' | timeout 10 socat -t 3 - TCP:$N.1:18007 2>&1)
it_check "raw TCP echo through a listener (got '$out')" [ "$out" = "hello through the mesh" ]

res=$(timeout 20 "$EMLOAD" -m pingpong -a $N.1:18007 -c 8 -d 2 -s 512 -t 1 2>"$IT_TMP/emload.err" | tail -n 1)
it_log "emload: $res"
if [[ $res =~ ops=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 100 ] && [[ $res =~ errors=0( |$) ]]; then
	it_ok "emload pingpong through the listener: every response equals its request"
else
	it_fail "emload pingpong through the listener: $res $(cat "$IT_TMP/emload.err")"
fi

# Messages larger than any one buffer: 256 KiB each way, several in flight.
res=$(timeout 20 "$EMLOAD" -m pingpong -a $N.1:18007 -c 2 -d 1 -s 262144 -t 1 2>"$IT_TMP/emload2.err" | tail -n 1)
it_log "emload 256 KiB: $res"
if [[ $res =~ ops=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 10 ] && [[ $res =~ errors=0( |$) ]]; then
	it_ok "256 KiB ping-pong messages through the listener arrive intact"
else
	it_fail "256 KiB ping-pong messages through the listener: $res $(cat "$IT_TMP/emload2.err")"
fi

it_apply "$(it_list "$(it_svc default bulk 10.96.1.9 9 9009)" "$(it_ep default bulk 9009 $N.22)")"
it_backend source source $N.22:9009
res=$(timeout 20 "$EMLOAD" -m bulk -a $N.1:18009 -c 2 -d 1 -t 1 2>"$IT_TMP/bulk.err" | tail -n 1)
it_log "emload bulk: $res"
if [[ $res =~ gbps=([0-9.]+) ]] && [ "${BASH_REMATCH[1]}" != 0.000 ] && [[ $res =~ errors=0( |$) ]]; then
	it_ok "bulk download (2 streams, 1 s) through the listener: every byte checked"
else
	it_fail "bulk download through the listener: $res $(cat "$IT_TMP/bulk.err")"
fi

# -- HTTP round robin: 30 requests on one keep-alive connection
it_urls 30 "http://$N.1:18080/" | sed 's/^/url = /' >"$IT_TMP/urls"
timeout 20 curl -sS --max-time 15 -K "$IT_TMP/urls" -w '%{num_connects}\n' >"$IT_TMP/rr.out" 2>"$IT_TMP/rr.err"
conns=$(grep -cE '^[0-9]+$' "$IT_TMP/rr.out")
newconns=$(grep -E '^[0-9]+$' "$IT_TMP/rr.out" | awk "{s+=\$1} END {print s+0}")
counts=$(it_count_backends "$IT_TMP/rr.out")
it_log "round robin: $counts(requests answered: $conns, client connections: $newconns)"
read -r c0 c1 c2 <<<"$(for i in 0 1 2; do grep -c "^backend-$i\.*$" "$IT_TMP/rr.out"; done | tr '\n' ' ')"
if [ "$((c0 + c1 + c2))" = 30 ] && it_within_one "$c0" "$c1" "$c2"; then
	it_ok "30 keep-alive requests balanced round robin over 3 endpoints ($c0/$c1/$c2)"
else
	it_fail "30 keep-alive requests balanced round robin over 3 endpoints ($c0/$c1/$c2): $(cat "$IT_TMP/rr.err")"
fi
served=$(it_served "$web_pid")
it_check "backends' own counts agree: $served" [ "$served" = "served l0=$c0 l1=$c1 l2=$c2 bad=0" ]

# -- no endpoints, no service
code=$(curl -sS --max-time 10 -o "$IT_TMP/503.body" -w '%{http_code}' http://$N.1:18081/ 2>&1)
it_check "service without endpoints -> 503 (got $code: $(head -c 200 "$IT_TMP/503.body"))" [ "$code" = 503 ]
code=$(curl -sS --max-time 10 -o "$IT_TMP/503b.body" -w '%{http_code}' http://$N.1:18082/ 2>&1)
it_check "unknown service -> 503 (got $code: $(head -c 200 "$IT_TMP/503b.body"))" [ "$code" = 503 ]
it_check "503 body is a one-line reason" [ "$(wc -l <"$IT_TMP/503.body")" -le 1 -a -s "$IT_TMP/503.body" ]

t0=$(date +%s%N)
out=$(printf 'raw bytes\n' | timeout 10 socat -t 5 - TCP:$N.1:18008 2>&1)
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
it_check "raw TCP without endpoints is closed at once, no data (${ms} ms, rc $rc, '$out')" \
	[ "$ms" -lt 3000 -a "$(printf '%s' "$out" | grep -vc 'Connection reset')" = 0 ]

# -- endpoints appear: the same listener now serves
it_apply "$(it_ep default empty 8080 $N.12)"
body=$(curl -sS --max-time 10 http://$N.1:18081/ | tr -d '.')
it_check "endpoints added later serve at once (got '$body')" [ "$body" = backend-1 ]

# -- an endpoint on another node, no cluster key (tunnels not configured):
# dialed directly, as on a flat pod network
it_apply '{"apiVersion": "v1", "kind": "Endpoints",
 "metadata": {"name": "empty", "namespace": "default", "resourceVersion": "2"},
 "subsets": [{"addresses": [{"ip": "'$N.13'", "nodeName": "edge-node-9"}],
 "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}]}]}'
body=$(curl -sS --max-time 10 http://$N.1:18081/ | tr -d '.')
it_check "without a cluster key an endpoint on another node is dialed directly (got '$body')" \
	[ "$body" = backend-2 ]

it_check "edgemesh still running" it_em_alive
it_em_stop TERM
it_check "SIGTERM: clean exit status 0 (got $IT_RC)" [ "$IT_RC" = 0 ]
it_done
