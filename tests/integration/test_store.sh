#!/usr/bin/env bash
# The metamanager store through the real daemon and meshctl: get / apply /
# delete, malformed requests, edge autonomy across a clean stop and a kill -9,
# and a database written with the sqlite3 CLI in KubeEdge's meta schema (good
# rows served, malformed ones skipped with their key logged, other types left
# untouched, our rows readable by plain sqlite). No root.
. "$(dirname "$0")/lib.sh"
it_need curl socat sqlite3

N=$IT_NET
EX=$IT_ROOT/conf/examples
IT_LISTENERS="[{\"listen\": \"$N.1:18080\", \"service\": \"default/web\", \"port\": 80},
	{\"listen\": \"$N.1:18081\", \"service\": \"default/x\", \"port\": 80},
	{\"listen\": \"$N.1:18082\", \"service\": \"default/z\", \"port\": 80}]"
it_em_config
it_em_start

# raw_api TEXT: sends TEXT on the API socket without closing the sending side
# (shut-none), waits at most 5 s for one reply line, prints it.
raw_api() {
	local f=$IT_TMP/raw-$RANDOM pid
	printf '%s' "$1" >"$f.in"
	socat -t 5 - UNIX-CONNECT:"$IT_SOCK",shut-none <"$f.in" >"$f.out" 2>&1 &
	pid=$!
	IT_PIDS+=("$pid")
	it_wait 5 has_line "$f.out"
	it_stop "$pid" TERM 2
	head -n 1 "$f.out"
}
has_line() {
	[ "$(wc -l <"$1")" -ge 1 ]
}

# -- meshctl get / apply / delete
out=$(ctl get services 2>&1)
it_check "get services on an empty store exits 0 and lists nothing ($out)" \
	[ $? = 0 -a -z "$(grep -E '^(web|echo) ' <<<"$out")" ]
perm=$(stat -c %a "$IT_SOCK")
it_check "API socket mode is 0600 (got $perm)" [ "$perm" = 600 ]
for f in nodes services pods endpoints endpointslices; do
	out=$(ctl apply -f "$EX/$f.json" 2>&1)
	it_check "meshctl apply -f conf/examples/$f.json ($out)" [ $? = 0 ]
done
out=$(ctl get services)
it_check "get services lists web and echo" \
	[ -n "$(grep -E '^web +ClusterIP +10\.96\.0\.80' <<<"$out")" -a -n "$(grep -E '^echo ' <<<"$out")" ]
json=$(ctl get services -o json)
nsvc=$(grep -cE '"kind":[[:space:]]*"Service"' <<<"$json")
it_check "get services -o json prints a JSON array of 2 Services (got $nsvc)" \
	[ "${json:0:1}" = "[" -a "$nsvc" = 2 ]
it_check "get endpoints web shows both addresses" \
	eval '[ -n "$(ctl get endpoints web | grep -F 127.0.0.11:8080 | grep -F 127.0.0.12:8080)" ]'
it_check "get pods -A lists the 3 example pods" [ "$(ctl get pods -A | grep -c Running)" = 3 ]
it_check "get nodes lists 2 nodes" [ "$(ctl get nodes | grep -c '^edge-node-')" = 2 ]
it_check "get endpointslices lists web-abc12" eval 'ctl get endpointslices | grep -q "^web-abc12 "'

it_apply "$(it_svc other web 10.96.0.99 80 8080)"
it_check "default namespace unless -n: other/web not in get services" \
	[ "$(ctl get services | grep -c 10.96.0.99)" = 0 ]
it_check "get services -n other shows other/web" eval 'ctl get services -n other | grep -q 10.96.0.99'
it_check "get services -A shows all 3" [ "$(ctl get services -A | grep -cE '10\.96\.0\.(7|80|99) ')" = 3 ]

out=$(ctl delete service default/echo 2>&1)
it_check "delete service default/echo ($out)" [ $? = 0 ]
it_check "deleted service is gone" [ "$(ctl get services | grep -c '^echo ')" = 0 ]
out=$(ctl delete service default/echo 2>&1)
rc=$?
it_check "deleting it again fails with not found (rc $rc: $out)" [ $rc != 0 -a -n "$(grep -i 'not found' <<<"$out")" ]

# -- malformed input
printf '{"kind": "Service", ' >"$IT_TMP/bad.json"
out=$(ctl apply -f "$IT_TMP/bad.json" 2>&1)
it_check "apply of invalid JSON fails with a message (rc $?: $out)" [ -n "$out" ]
batch=$(it_list "$(it_svc default good1 10.96.0.61 80 8080)" \
	'{"kind": "Service", "metadata": {"name": "bad1", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.62", "ports": [{"port": "eighty"}]}}')
out=$(printf '%s\n' "$batch" | ctl apply -f - 2>&1)
rc=$?
it_check "a batch with a bad second object fails naming items[1] (rc $rc: $out)" \
	[ $rc != 0 -a -n "$(grep -F 'items[1]' <<<"$out")" ]
it_check "all or nothing: the batch's good object was not applied" \
	[ "$(ctl get services | grep -c '^good1 ')" = 0 ]

reply=$(raw_api $'garbage\n')
it_check "API: garbage gets an error reply ($reply)" [ -n "$(grep -F '"ok":false' <<<"$reply")" ]
reply=$(raw_api $'{"op":"fly"}\n')
it_check "API: unknown op gets an error reply ($reply)" [ -n "$(grep -F '"ok":false' <<<"$reply")" ]
reply=$(raw_api $'{"op":"get","kind":"service","namespace":7}\n')
it_check "API: wrong field type gets an error reply ($reply)" [ -n "$(grep -F '"ok":false' <<<"$reply")" ]
printf '{"op":"apply","items":[{"kind":"Serv' | timeout 5 socat -t 0 - UNIX-CONNECT:"$IT_SOCK" >/dev/null 2>&1
it_check "API: a client leaving mid-request leaves the daemon serving" \
	eval 'it_em_alive && [ -n "$(it_stat generation)" ]'
reply=$(printf '{"op":"stats"}\n' | timeout 5 socat -t 3 - UNIX-CONNECT:"$IT_SOCK" 2>&1 | head -c 200)
it_check "API: a request followed by a half-close still gets its reply ($reply)" \
	[ -n "$(grep -F '"ok":true' <<<"$reply")" ]

# -- edge autonomy: our own web service with live backends (the example
# slice for web names another port; without it Endpoints rule)
out=$(ctl delete endpointslice default/web-abc12 2>&1)
it_check "delete endpointslice default/web-abc12 ($out)" [ $? = 0 ]
it_backend web http $N.11:8080 $N.12:8080
it_apply "$(it_list "$(it_svc default web 10.96.0.80 80 8080)" "$(it_ep default web 8080 $N.11 $N.12)")"
get2() { curl -sS --max-time 5 "http://$1/" "http://$1/" 2>&1 | tr -d '.' | sort | tr '\n' ' '; }
it_check "served before the restart: $(get2 $N.1:18080)" [ "$(get2 $N.1:18080)" = "backend-0 backend-1 " ]
it_em_stop TERM
it_check "SIGTERM: exit 0 (got $IT_RC)" [ "$IT_RC" = 0 ]
it_check "SIGTERM removes the API socket" [ ! -e "$IT_SOCK" ]
it_em_start
it_log "$(grep 'loaded' "$IT_EM_LOG")"
it_check "after a restart with no cloud the services are still listed" \
	eval 'ctl get services | grep -qE "^web +ClusterIP +10\.96\.0\.80"'
it_check "after a restart with no cloud the pods are still listed" [ "$(ctl get pods -A | grep -c Running)" = 3 ]
it_check "after a restart traffic is still served: $(get2 $N.1:18080)" [ "$(get2 $N.1:18080)" = "backend-0 backend-1 " ]

# Acknowledged applies survive kill -9.
it_apply "$(it_list "$(it_svc default x 10.96.0.70 80 8080)" "$(it_ep default x 8080 $N.12)")"
it_em_stop KILL
rm -f "$IT_SOCK"
it_em_start
it_check "an acknowledged apply survives kill -9" eval 'ctl get services | grep -qE "^x +ClusterIP +10\.96\.0\.70"'
body=$(curl -sS --max-time 5 "http://$N.1:18081/" 2>&1 | tr -d '.')
it_check "and serves after it (got '$body')" [ "$body" = backend-1 ]
it_em_stop TERM

# -- a database in KubeEdge's schema, written with the sqlite3 CLI
IT_DATA=$IT_TMP/kubeedge
mkdir -p "$IT_DATA"
db=$IT_DATA/edgemesh.db
svc_x='{"metadata":{"name":"x","namespace":"default","uid":"u1","resourceVersion":"7"},"spec":{"clusterIP":"10.96.3.1","clusterIPs":["10.96.3.1"],"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}],"type":"ClusterIP","sessionAffinity":"None"},"status":{"loadBalancer":{}}}'
ep_x='{"metadata":{"name":"x","namespace":"default"},"subsets":[{"addresses":[{"ip":"'$N.11'","nodeName":"edge-node-1"}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]}'
svc_z='{"kind":"Service","apiVersion":"v1","metadata":{"name":"z","namespace":"default"},"spec":{"clusterIP":"10.96.3.2","ports":[{"port":80,"targetPort":8080,"protocol":"TCP"}]}}'
ep_z='{"kind":"Endpoints","apiVersion":"v1","metadata":{"name":"z","namespace":"default"},"subsets":[{"addresses":[{"ip":"'$N.12'"}],"ports":[{"port":8080}]}]}'
bad_type='{"metadata":{"name":"badtype","namespace":"default"},"spec":{"clusterIP":"10.96.3.3","ports":[{"port":"eighty"}]}}'
bad_json='{"metadata":{"name":"badjson",'
cm='{"metadata":{"name":"y","namespace":"default"},"data":{"k":"v"}}'
sqlite3 "$db" <<EOF || it_die "sqlite3 could not build the KubeEdge-shaped database"
CREATE TABLE meta (key TEXT PRIMARY KEY, type TEXT, value TEXT);
INSERT INTO meta VALUES ('default/service/x', 'service', '$svc_x');
INSERT INTO meta VALUES ('default/endpoints/x', 'endpoints', '$ep_x');
INSERT INTO meta VALUES ('default/service/z', 'service', '$svc_z');
INSERT INTO meta VALUES ('default/endpoints/z', 'endpoints', '$ep_z');
INSERT INTO meta VALUES ('default/service/badtype', 'service', '$bad_type');
INSERT INTO meta VALUES ('default/service/badjson', 'service', '$bad_json');
INSERT INTO meta VALUES ('default/configmap/y', 'configmap', '$cm');
INSERT INTO meta VALUES ('default/secret/s', 'secret', '{"data":{}}');
EOF
IT_SOCK=$IT_TMP/kubeedge.sock
it_em_config "$IT_TMP/kubeedge.json"
it_em_start "$IT_TMP/kubeedge.json"
it_log "$(grep 'loaded' "$IT_EM_LOG")"
it_check "malformed row default/service/badtype is skipped with a log line naming it" \
	grep -q 'default/service/badtype' "$IT_EM_LOG"
it_check "malformed row default/service/badjson is skipped with a log line naming it" \
	grep -q 'default/service/badjson' "$IT_EM_LOG"
out=$(ctl get services 2>&1)
it_check "get services works on a database that holds malformed rows (rc $?)" [ $? = 0 ]
it_log "$out"
it_check "good rows x (no kind, as edgecore stores it) and z are listed" \
	[ -n "$(grep -E '^x .*10\.96\.3\.1 ' <<<"$out")" -a -n "$(grep -E '^z .*10\.96\.3\.2 ' <<<"$out")" ]
it_check "malformed rows are not listed" [ -z "$(grep -E '^bad' <<<"$out")" ]
it_check "stats: skipped_malformed 2 (got $(it_stat skipped_malformed))" [ "$(it_stat skipped_malformed)" = 2 ]
body=$(curl -sS --max-time 5 "http://$N.1:18081/" 2>&1 | tr -d '.')
it_check "service x from the KubeEdge database is served (got '$body')" [ "$body" = backend-0 ]
body=$(curl -sS --max-time 5 "http://$N.1:18082/" 2>&1 | tr -d '.')
it_check "service z from the KubeEdge database is served (got '$body')" [ "$body" = backend-1 ]
it_apply "$(it_svc default fresh 10.96.3.4 80 8080)"
it_em_stop TERM
it_check "clean stop (got $IT_RC)" [ "$IT_RC" = 0 ]
it_check "the configmap row is untouched" [ "$(sqlite3 "$db" "SELECT type || '|' || value FROM meta WHERE key = 'default/configmap/y'")" = "configmap|$cm" ]
it_check "the secret row is untouched" [ "$(sqlite3 "$db" "SELECT count(*) FROM meta WHERE key = 'default/secret/s' AND type = 'secret'")" = 1 ]
row=$(sqlite3 "$db" "SELECT type || '|' || json_extract(value, '\$.spec.clusterIP') FROM meta WHERE key = 'default/service/fresh'")
it_check "our applied service is a KubeEdge-shaped row readable by sqlite3 ($row)" [ "$row" = "service|10.96.3.4" ]
it_check "PRAGMA integrity_check is ok" [ "$(sqlite3 "$db" 'PRAGMA integrity_check')" = ok ]
cols=$(sqlite3 "$db" "SELECT group_concat(name, ',') FROM pragma_table_info('meta')")
it_check "the meta table keeps exactly the columns key,type,value ($cols)" [ "$cols" = key,type,value ]
it_done
