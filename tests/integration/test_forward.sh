#!/usr/bin/env bash
# Transparent capture (flow F1) in a network namespace of the test's own:
# edgemesh installs its EDGEMESH nat chain there, clients connect to cluster
# IPs (10.96.0.0/12 routed locally on lo), backends listen on the namespace's
# 127.0.0.x. Covers raw TCP echo, HTTP keep-alive round robin, ClientIP
# affinity, 10 MB and chunked bodies both ways, Upgrade, 503, endpoint churn
# and SIGHUP under load, kill -9 (clients see EOF/reset, a restart re-installs
# the rules once), a clean exit removing every rule, and IPv6 when the
# kernel's ip6tables nat works. Needs root.
. "$(dirname "$0")/lib.sh"
it_need_root
it_need curl socat wrk sha256sum

it_capture_netns fwd
v6=$IT_V6 cidrs=$IT_CIDRS
IT_CAPTURE="{\"enabled\": true, \"port\": 15001, \"service_cidrs\": [$cidrs], \"exclude_ports\": [22]}"
it_em_config

nat_rules() { it_in iptables-save -t nat 2>/dev/null; it_in ip6tables-save -t nat 2>/dev/null; }
jumps() { # $1 = OUTPUT|PREROUTING, $2 = iptables-save|ip6tables-save
	it_in "$2" -t nat 2>/dev/null | grep -cE "^-A $1 .*-j EDGEMESH( |$)"
}
rules_once() { # exactly one jump per hook and one chain, per family in use
	local s fams=(iptables-save)
	[ $v6 = 1 ] && fams+=(ip6tables-save)
	for s in "${fams[@]}"; do
		[ "$(jumps OUTPUT "$s")" = 1 ] && [ "$(jumps PREROUTING "$s")" = 1 ] &&
			[ "$(it_in "$s" -t nat | grep -c '^:EDGEMESH ')" = 1 ] || return 1
	done
}

it_em_start
it_log "edgemesh up in netns $IT_NS (IPv6 capture: $v6)"
it_in iptables-save -t nat | grep EDGEMESH | sed 's/^/    nat| /'
it_check "rules installed: one EDGEMESH jump in OUTPUT and in PREROUTING" rules_once

# ---- services and backends
objs=(
	"$(it_svc default echo 10.96.0.7 7 7007)" "$(it_ep default echo 7007 127.0.0.21)"
	"$(it_svc default web 10.96.0.80 80 8080)" "$(it_ep default web 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(it_svc default sticky 10.96.0.81 80 8080 ClientIP 600)"
	"$(it_ep default sticky 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(it_svc default hecho 10.96.0.82 80 8080)" "$(it_ep default hecho 8080 127.0.0.31)"
	"$(it_svc default empty 10.96.0.83 80 8080)" "$(it_ep default empty 8080)"
	"$(it_svc default churn 10.96.0.84 80 8080)" "$(it_ep default churn 8080 127.0.0.11 127.0.0.12 127.0.0.13)"
	"$(it_svc default echo2 10.96.0.85 7 7007)" "$(it_ep default echo2 7007 127.0.0.21 127.0.0.22)"
)
[ $v6 = 1 ] && objs+=("$(it_svc default echo6 fd00:10:96::7 7 7007)" "$(it_ep default echo6 7007 ::1)")
it_apply "$(it_list "${objs[@]}")"

it_backend web http 127.0.0.11:8080 127.0.0.12:8080 127.0.0.13:8080
web_pid=$IT_LAST_PID
if [ $v6 = 1 ]; then
	it_backend echo echo 127.0.0.21:7007 127.0.0.22:7007 [::1]:7007
else
	it_backend echo echo 127.0.0.21:7007 127.0.0.22:7007
fi
it_httpecho hecho 127.0.0.31:8080

c_curl() { it_in curl -sS --max-time 20 "$@"; }

# served_counts PID: "l0 l1 l2" request counts of an http embackend.
served_counts() {
	local s
	s=$(it_served "$1") || return 1
	sed -E 's/.*l0=([0-9]+) l1=([0-9]+) l2=([0-9]+).*/\1 \2 \3/' <<<"$s"
}

# wrk_ok FILE: wrk's summary shows requests and no error of any kind.
wrk_ok() {
	grep -qE '^ +[0-9]+ requests in' "$1" && ! grep -qE 'Non-2xx|Socket errors' "$1"
}

# ---- raw TCP echo through a cluster IP
out=$(printf 'hello cluster ip\n' | it_in timeout 10 socat -t 3 - TCP:10.96.0.7:7 2>&1)
it_check "raw TCP echo through 10.96.0.7:7 (got '$out')" [ "$out" = "hello cluster ip" ]
res=$(it_in timeout 20 "$EMLOAD" -m pingpong -a 10.96.0.7:7 -c 8 -d 2 -s 1000 -t 1 2>"$IT_TMP/pp.err" | tail -n 1)
it_log "emload: $res"
if [[ $res =~ ops=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 100 ] && [[ $res =~ errors=0( |$) ]]; then
	it_ok "emload pingpong through the cluster IP: every response equals its request"
else
	it_fail "emload pingpong through the cluster IP: $res $(cat "$IT_TMP/pp.err")"
fi

# ---- HTTP keep-alive round robin: 30 requests on one connection
before=$(served_counts "$web_pid")
it_urls 30 "http://10.96.0.80/" | sed 's/^/url = /' >"$IT_TMP/urls"
c_curl -K "$IT_TMP/urls" -w '%{num_connects}\n' >"$IT_TMP/rr.out" 2>"$IT_TMP/rr.err"
read -r c0 c1 c2 <<<"$(for i in 0 1 2; do grep -c "^backend-$i\.*$" "$IT_TMP/rr.out"; done | tr '\n' ' ')"
nconn=$(grep -E '^[0-9]+$' "$IT_TMP/rr.out" | awk '{s += $1} END {print s + 0}')
it_log "round robin: $c0/$c1/$c2 over $nconn client connection(s)"
if [ $((c0 + c1 + c2)) = 30 ] && it_within_one "$c0" "$c1" "$c2" && [ "$nconn" = 1 ]; then
	it_ok "30 requests on one keep-alive connection balanced round robin over 3 endpoints ($c0/$c1/$c2)"
else
	it_fail "round robin over 3 endpoints: $c0/$c1/$c2, $nconn connections; $(cat "$IT_TMP/rr.err")"
fi
after=$(served_counts "$web_pid")
read -r b0 b1 b2 <<<"$before"
read -r a0 a1 a2 <<<"$after"
it_check "the backends counted the same ($((a0 - b0))/$((a1 - b1))/$((a2 - b2)))" \
	[ "$((a0 - b0)) $((a1 - b1)) $((a2 - b2))" = "$c0 $c1 $c2" ]

# ---- ClientIP affinity: one client (source address) stays on one endpoint
# across connections; without affinity the same pattern spreads.
aff_run() { # $1 = cluster IP, $2 = client source address
	local i
	for i in $(seq 12); do
		c_curl --interface "$2" "http://$1/" 2>&1 | tr -d '.'
	done | sort | uniq -c | wc -l
}
n5=$(aff_run 10.96.0.81 127.0.0.5)
n6=$(aff_run 10.96.0.81 127.0.0.6)
it_check "ClientIP affinity: 12 connections from 127.0.0.5 all reach one endpoint ($n5 distinct)" [ "$n5" = 1 ]
it_check "ClientIP affinity: 12 connections from 127.0.0.6 all reach one endpoint ($n6 distinct)" [ "$n6" = 1 ]
nn=$(aff_run 10.96.0.80 127.0.0.5)
it_check "without affinity the same client's connections spread ($nn distinct endpoints)" [ "$nn" -gt 1 ]

# ---- bodies: 10 MB each way with Content-Length, chunked both ways
head -c $((10 * 1024 * 1024)) /dev/urandom >"$IT_TMP/big.bin"
want=$(sha256sum <"$IT_TMP/big.bin" | cut -d' ' -f1)
got=$(c_curl --data-binary @"$IT_TMP/big.bin" -H 'Content-Type: application/octet-stream' \
	-D "$IT_TMP/cl.hdr" http://10.96.0.82/upload | sha256sum | cut -d' ' -f1)
it_check "10 MB body up and back (Content-Length) intact" [ "$got" = "$want" ]
got=$(c_curl --data-binary @"$IT_TMP/big.bin" -H 'Transfer-Encoding: chunked' \
	-D "$IT_TMP/ch.hdr" http://10.96.0.82/chunked | sha256sum | cut -d' ' -f1)
it_check "10 MB chunked request body, echoed as a chunked response, intact" [ "$got" = "$want" ]
it_check "the response really was chunked" grep -qi '^transfer-encoding: chunked' "$IT_TMP/ch.hdr"
# Idle trim: the 10 MB transfers read into at least the ring's floor of
# receive buffers (1 MiB, engine/bufring.h); once no buffer has been taken
# for 3 s their pages go back (pooled connections stay).
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$IT_EM_PID/status"; }
r0=$(rss_kb)
trimmed() { [ "$(rss_kb)" -le $((r0 - 1024)) ]; }
it_wait 6 trimmed
it_check "idle for 3 s after the transfers: receive buffers given back (RSS $r0 -> $(rss_kb) kB)" trimmed
# Small chunked bodies, three on one connection, then a plain GET on it.
printf 'a\nbb\nccc\n' >"$IT_TMP/small.txt"
c_curl -H 'Transfer-Encoding: chunked' --data-binary @"$IT_TMP/small.txt" http://10.96.0.82/1 \
	--next -H 'Transfer-Encoding: chunked' --data-binary @"$IT_TMP/small.txt" http://10.96.0.82/2 \
	--next -H 'Transfer-Encoding: chunked' --data-binary @"$IT_TMP/small.txt" http://10.96.0.82/3 \
	--next -w 'get=%{http_code} conns=%{num_connects}\n' http://10.96.0.82/4 >"$IT_TMP/small.out" 2>&1
it_check "three chunked requests and a GET on one connection come back intact" \
	[ "$(cat "$IT_TMP/small.out")" = "$(cat "$IT_TMP/small.txt" "$IT_TMP/small.txt" "$IT_TMP/small.txt"; echo 'get=200 conns=0')" ]

# ---- Upgrade: 101, then raw bytes both ways
HTTPECHO=$IT_TMP/httpecho
out=$(it_in timeout 30 "$HTTPECHO" upgrade -a 10.96.0.82:80 -n 4000000 2>&1)
it_check "Upgrade: 101 then 4 MB of raw bytes echoed ($out)" [ $? = 0 ]

# ---- no endpoints, no service
code=$(c_curl -o "$IT_TMP/503.body" -w '%{http_code}' http://10.96.0.83/ 2>&1)
it_check "service without endpoints -> 503 ($code: $(head -c 100 "$IT_TMP/503.body"))" [ "$code" = 503 ]
code=$(c_curl -o "$IT_TMP/503b.body" -w '%{http_code}' http://10.96.0.99/ 2>&1)
it_check "cluster IP of no service -> 503 ($code: $(head -c 100 "$IT_TMP/503b.body"))" [ "$code" = 503 ]
t0=$(date +%s%N)
out=$(printf 'raw\n' | it_in timeout 10 socat -t 5 - TCP:10.96.0.83:80 2>&1)
ms=$((($(date +%s%N) - t0) / 1000000))
it_check "raw TCP to a service without endpoints is closed at once ($ms ms, '$out')" \
	[ "$ms" -lt 3000 -a "$(printf '%s' "$out" | grep -vc 'Connection reset')" = 0 ]

# ---- IPv6
if [ $v6 = 1 ]; then
	out=$(printf 'hello v6\n' | it_in timeout 10 socat -t 3 - TCP6:[fd00:10:96::7]:7 2>&1)
	it_check "IPv6: raw TCP echo through [fd00:10:96::7]:7 (got '$out')" [ "$out" = "hello v6" ]
else
	it_log "IPv6 part skipped: ip6tables nat or the local IPv6 route is unavailable"
fi

# ---- endpoints removed and added while a load runs: zero failed requests
# An apply is live when meshctl returns; the next change waits until the
# engine has had more requests of the HTTP load through, so that every set
# carries traffic however fast or slow the machine is. The loads run at a
# lower priority: they would otherwise take both cores from these checks.
LOAD_N=0 # requests seen at the last look
load_past() { # N: the engine's request count has reached N
	local v
	v=$(it_stat http_requests)
	LOAD_N=${v:-0}
	[ "$LOAD_N" -ge "$1" ]
}
load_moved() { # 20 more HTTP requests than at the last look
	it_wait 5 load_past $((LOAD_N + 20))
}
ep_churn() { # $1 = service, $2 = port, then sets of IPs separated by ","
	local svc=$1 port=$2 set
	shift 2
	for set in "$@"; do
		it_apply "$(it_ep default "$svc" "$port" ${set//,/ })"
		load_moved || it_fail "no HTTP request got through after $svc's endpoints became $set"
	done
}
# both_loads_connected ACCEPTED REQUESTS: the 8 + 8 connections of both loads
# were accepted and HTTP requests flow.
both_loads_connected() {
	it_stat_ge connections_accepted $(($1 + 16)) && it_stat_ge http_requests $(($2 + 1))
}
# wrk runs until the churn is over (SIGINT: it stops and prints its summary).
acc0=$(it_stat connections_accepted) req0=$(it_stat http_requests)
it_bg wrk_churn nice -n 10 wrk -t 1 -c 8 -d 60 --timeout 5s http://10.96.0.84/
wrk_pid=$IT_LAST_PID
it_bg pp_churn nice -n 10 "$EMLOAD" -m pingpong -a 10.96.0.85:7 -c 8 -d 4 -s 200 -t 1
pp_pid=$IT_LAST_PID
it_wait 5 both_loads_connected "$acc0" "$req0" || it_fail "the churn loads did not connect"
load_past 0
ep_churn churn 8080 127.0.0.11,127.0.0.12 127.0.0.12 127.0.0.12,127.0.0.13 127.0.0.13,127.0.0.11 \
	127.0.0.11 127.0.0.11,127.0.0.12,127.0.0.13 127.0.0.13 127.0.0.11,127.0.0.12,127.0.0.13
ep_churn echo2 7007 127.0.0.22 127.0.0.21 127.0.0.21,127.0.0.22
it_check "wrk ran through the whole churn" kill -0 "$wrk_pid"
it_stop "$wrk_pid" INT 15
sed 's/^/    wrk| /' "$IT_TMP/wrk_churn.out"
it_check "HTTP load while endpoints are removed and added: zero failed requests" wrk_ok "$IT_TMP/wrk_churn.out"
it_stop "$pp_pid" 0 15
res=$(tail -n 1 "$IT_TMP/pp_churn.out")
it_check "raw TCP load while endpoints change: zero errors ($res $(head -c 200 "$IT_TMP/pp_churn.err"))" \
	eval '[ "$IT_RC" = 0 ] && [[ $res =~ errors=0( |$) ]]'
# Endpoints in the final set all serve again, the removed ones no longer.
it_apply "$(it_ep default churn 8080 127.0.0.13)"
body=$(c_curl http://10.96.0.84/ http://10.96.0.84/ http://10.96.0.84/ | tr -d '.' | sort -u | tr '\n' ' ')
it_check "after the churn only the current endpoint serves ($body)" [ "$body" = "backend-2 " ]

# ---- SIGHUP under load: zero failed requests
reloads_ge() { [ "$(grep -c reloaded "$IT_EM_LOG")" -ge "$1" ]; }
acc0=$(it_stat connections_accepted) req0=$(it_stat http_requests)
it_bg wrk_hup nice -n 10 wrk -t 1 -c 8 -d 60 --timeout 5s http://10.96.0.80/
wrk_pid=$IT_LAST_PID
nrel=$(grep -c 'reloaded' "$IT_EM_LOG")
wrk_up() { it_stat_ge connections_accepted $((acc0 + 8)) && it_stat_ge http_requests $((req0 + 1)); }
it_wait 5 wrk_up || it_fail "the SIGHUP load did not connect"
load_past 0
# Each reload is sent once the previous one is done and the load has had
# requests through the reloaded process.
for i in 1 2 3 4 5; do
	kill -HUP "$IT_EM_PID"
	it_wait 5 reloads_ge $((nrel + i)) || it_fail "reload $i not logged"
	load_moved || it_fail "no HTTP request got through after reload $i"
done
it_check "wrk ran through the 5 reloads" kill -0 "$wrk_pid"
it_stop "$wrk_pid" INT 15
sed 's/^/    wrk| /' "$IT_TMP/wrk_hup.out"
it_check "HTTP load across 5 SIGHUP reloads: zero failed requests" wrk_ok "$IT_TMP/wrk_hup.out"
it_check "the 5 reloads were applied" reloads_ge $((nrel + 5))

# ---- kill -9: a connected client sees EOF or a reset quickly, not a hang
it_bg hold "$HTTPECHO" hold -a 10.96.0.7:7 -T 10
hold_pid=$IT_LAST_PID
it_wait_line "$IT_TMP/hold.out" '^connected' 10 || it_fail "hold client did not connect: $(cat "$IT_TMP/hold.err")"
t0=$(date +%s%N)
kill -KILL "$IT_EM_PID"
it_stop "$hold_pid" 0 12
ms=$((($(date +%s%N) - t0) / 1000000))
it_check "kill -9: the connected client saw '$(tail -n 1 "$IT_TMP/hold.out")' after $ms ms" \
	eval '[ "$IT_RC" = 0 ] && [ "$ms" -lt 3000 ]'
it_em_stop TERM # reaps it
it_check "kill -9 leaves the rules behind (as a crash would)" eval 'nat_rules | grep -q EDGEMESH'
t0=$(date +%s%N)
it_in curl -sS --max-time 5 -o /dev/null http://10.96.0.80/ 2>/dev/null
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
it_check "meanwhile a new client is refused at once, not left hanging (curl rc $rc, $ms ms)" \
	[ "$rc" = 7 -a "$ms" -lt 3000 ]

# ---- restart after kill -9: rules re-installed exactly once, traffic flows
rm -f "$IT_SOCK"
it_em_start
it_in iptables-save -t nat | grep EDGEMESH | sed 's/^/    nat| /'
it_check "restart after kill -9: exactly one EDGEMESH jump in OUTPUT and PREROUTING, one chain" rules_once
out=$(printf 'after restart\n' | it_in timeout 10 socat -t 3 - TCP:10.96.0.7:7 2>&1)
it_check "restart after kill -9: traffic flows again (got '$out')" [ "$out" = "after restart" ]
# A second restart (clean) must not add copies either.
it_em_stop TERM
it_em_start
it_check "restart after a clean stop: still exactly one jump per hook" rules_once

# ---- clean exit
it_em_stop TERM
it_check "SIGTERM: exit status 0 (got $IT_RC)" [ "$IT_RC" = 0 ]
left=$(nat_rules | grep EDGEMESH)
it_check "a clean exit leaves no EDGEMESH rules${left:+ (left: $left)}" [ -z "$left" ]
it_done
