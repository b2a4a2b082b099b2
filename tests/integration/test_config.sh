#!/usr/bin/env bash
# Configuration: `edgemesh -t` on the shipped files and on bad ones (exit 1,
# the message names the file and the key), and SIGHUP reloads: a valid
# changed file is applied (a listener moves to another service), an invalid
# one or one that changes a restart-only key is refused while the old config
# keeps serving, and live connections carry on through reloads. No root.
. "$(dirname "$0")/lib.sh"
it_need curl

# -- edgemesh -t: the shipped files are refused for their placeholder key
# alone; with a real key in its place they pass.
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
for f in conf/edge.json conf/cloud.json; do
	out=$("$EDGEMESH" -c "$IT_ROOT/$f" -t 2>&1)
	rc=$?
	it_check "edgemesh -c $f -t refuses the placeholder key (got $rc: $out)" \
		[ $rc = 1 -a -n "$(grep -F 'tunnel.cluster_key: the placeholder key' <<<"$out")" ]
	sed "s/change-me-to-a-long-random-cluster-key/$key/" "$IT_ROOT/$f" >"$IT_TMP/${f#conf/}"
	out=$("$EDGEMESH" -c "$IT_TMP/${f#conf/}" -t 2>&1)
	rc=$?
	it_check "$f with a real key: -t exits 0 (got $rc: $out)" [ $rc = 0 ]
done

# bad_case NAME EXPECTED_TEXT JSON: -t must exit 1, and the message must name
# the file and contain EXPECTED_TEXT (the key path).
bad_case() {
	local f=$IT_TMP/bad-$1.json out rc
	printf '%s\n' "$3" >"$f"
	out=$("$EDGEMESH" -c "$f" -t 2>&1)
	rc=$?
	if [ $rc = 1 ] && grep -qF -- "$f" <<<"$out" && grep -qF -- "$2" <<<"$out"; then
		it_ok "-t refuses $1: $(head -n 1 <<<"$out")"
	else
		it_fail "-t on $1: expected exit 1 and a message naming $f and '$2'; got $rc: $out"
	fi
}
base='"role": "edge", "node_name": "edge-node-1", "tunnel": {"listen": ""}'
bad_case port-range "capture.port" "{$base, \"capture\": {\"port\": 70000}}"
bad_case port-string "capture.port" "{$base, \"capture\": {\"port\": \"15001\"}}"
bad_case workers-type "workers" "{$base, \"workers\": \"2\"}"
bad_case role "role" '{"role": "fog", "node_name": "edge-node-1", "tunnel": {"listen": ""}}'
bad_case no-node-name "node_name" '{"role": "edge", "tunnel": {"listen": ""}}'
bad_case log-level "log_level" "{$base, \"log_level\": \"loud\"}"
bad_case listener-service "listeners[0].service" \
	"{$base, \"listeners\": [{\"listen\": \"127.0.0.1:1\", \"service\": \"noslash\", \"port\": 80}]}"
bad_case listener-addr "listeners[1].listen" \
	"{$base, \"listeners\": [{\"listen\": \"127.0.0.1:1\", \"service\": \"a/b\", \"port\": 80}, {\"listen\": \"nohost\", \"service\": \"a/b\", \"port\": 80}]}"
bad_case cidr "capture.service_cidrs" "{$base, \"capture\": {\"service_cidrs\": [\"10.96.0.0/99\"]}}"
bad_case timeout "timeouts.connect_ms" "{$base, \"timeouts\": {\"connect_ms\": 0}}"
bad_case unknown-top "bogus" "{$base, \"bogus\": 1}"
bad_case unknown-nested "capture.bogus" "{$base, \"capture\": {\"bogus\": true}}"
bad_case duplicate "workers" "{$base, \"workers\": 1, \"workers\": 2}"
bad_case syntax ":3:" $'{\n"role": "edge",\n"node_name": }'
out=$("$EDGEMESH" -c "$IT_TMP/missing.json" -t 2>&1)
rc=$?
it_check "-t on a missing file exits 1 naming it (got $rc: $out)" \
	[ $rc = 1 -a -n "$(grep -F "$IT_TMP/missing.json" <<<"$out")" ]
grep -q 'unknown key' <<<"$("$EDGEMESH" -c "$IT_TMP/bad-unknown-top.json" -t 2>&1)"
it_check "an unknown key is called an unknown key" [ $? = 0 ]

# -- SIGHUP
N=$IT_NET
listeners() { # $1 = service behind the HTTP listener
	IT_LISTENERS="[{\"listen\": \"$N.1:18080\", \"service\": \"default/$1\", \"port\": 80},
		{\"listen\": \"$N.1:18007\", \"service\": \"default/echo\", \"port\": 7}]"
}
listeners a
it_em_config
it_em_start
it_apply "$(it_list \
	"$(it_svc default a 10.96.2.1 80 8080)" "$(it_ep default a 8080 $N.11)" \
	"$(it_svc default b 10.96.2.2 80 8080)" "$(it_ep default b 8080 $N.12)" \
	"$(it_svc default c 10.96.2.3 80 8080)" "$(it_ep default c 8080 $N.13)" \
	"$(it_svc default echo 10.96.2.7 7 7007)" "$(it_ep default echo 7007 $N.21)")"
it_backend web http $N.11:8080 $N.12:8080 $N.13:8080
it_backend echo echo $N.21:7007

get() { curl -sS --max-time 5 "http://$N.1:18080/" 2>&1 | tr -d '.'; }
it_check "before reload the listener serves service a" [ "$(get)" = backend-0 ]

# A keep-alive load across every reload below: none of them may break it.
it_bg load "$EMLOAD" -m pingpong -a $N.1:18007 -c 4 -d 4 -s 256 -t 1
load_pid=$IT_LAST_PID

listeners b
IT_LOG_LEVEL=debug it_em_config
kill -HUP "$IT_EM_PID"
it_check "valid changed file: log says reloaded" it_wait_line "$IT_EM_LOG" 'reloaded' 5
it_check "meshctl stats: reloads 1 (got $(it_stat reloads))" [ "$(it_stat reloads)" = 1 ]
it_check "the reload is applied: the listener now serves service b" it_wait 5 eval '[ "$(get)" = backend-1 ]'
serving=$(get)
it_check "serving before the invalid reload (got '$serving')" [ "${serving#backend-}" != "$serving" ]

good=$(cat "$IT_CONF")
printf '%s\n' "${good%\}}, \"unknown_key\": 1}" >"$IT_CONF"
kill -HUP "$IT_EM_PID"
it_check "invalid file: log says refused" it_wait_line "$IT_EM_LOG" 'refused.*unknown_key' 5
grep -E 'refused' "$IT_EM_LOG" | sed 's/^/    log| /'
it_check "meshctl stats: reloads still 1, reload_failures 1" \
	[ "$(it_stat reloads)/$(it_stat reload_failures)" = 1/1 ]
it_check "the old config keeps serving through the listener" [ "$(get)" = "$serving" ]

printf '%s\n' "$good" | sed 's/"workers": [0-9]*/"workers": 1/' >"$IT_CONF"
kill -HUP "$IT_EM_PID"
it_check "a change of a restart-only key (workers) is refused naming it" \
	it_wait_line "$IT_EM_LOG" 'refused.*workers' 5
it_check "still serving after the refused restart-key change" [ "$(get)" = "$serving" ]

listeners c
it_em_config
kill -HUP "$IT_EM_PID"
it_check "a valid file after refused ones is applied (listener moves to service c)" \
	it_wait 5 eval '[ "$(get)" = backend-2 ]'
it_check "meshctl stats: reloads 2, reload_failures 2" \
	[ "$(it_stat reloads)/$(it_stat reload_failures)" = 2/2 ]

it_stop "$load_pid" 0 15 # signal 0: only waits for its own end after 4 s
res=$(tail -n 1 "$IT_TMP/load.out")
it_log "load across the reloads: $res"
if [ "$IT_RC" = 0 ] && [[ $res =~ errors=0( |$) ]] && [[ $res =~ ops=[1-9] ]]; then
	it_ok "a keep-alive raw TCP load carried on through 4 reloads with no error"
else
	it_fail "load across reloads: rc $IT_RC, $res $(cat "$IT_TMP/load.err")"
fi

it_check "edgemesh still running" it_em_alive
it_em_stop TERM
it_check "SIGTERM: exit status 0 (got $IT_RC)" [ "$IT_RC" = 0 ]
it_done
