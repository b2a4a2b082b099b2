#!/usr/bin/env bash
# The cloud role's Kubernetes API source (controller.kubernetes) through the
# real daemon against tests/integration/fake_kube.py on loopback: the first
# list of every kind (1100 pods in pages of 500), watch events (ADDED, MODIFIED, DELETED) reaching
# `meshctl get`, a watch resumed from a bookmark's resourceVersion after a
# cut, 410 Gone (as a status and as an ERROR event) answered by a list whose
# missing objects are deleted, a stream cut inside an event (no half object,
# reconnected), a stream trickling a few bytes at a time, an event over the
# 16 MiB bound (dropped, the kind listed again), HTTPS with a
# self-signed CA (an unknown CA and a certificate for another name refused)
# and a bearer token (wrong token: 401 logged and retried,
# a rotated token file picked up), the counters, and the key refused on an
# edge. No root.
. "$(dirname "$0")/lib.sh"
it_need python3 curl openssl

API=$IT_NET.1:18001
TLS_API=$IT_NET.1:18443
CTL=http://$IT_NET.1:18002
FAKE=$IT_ROOT/tests/integration/fake_kube.py

cloud_conf() { # SERVER [EXTRA MEMBERS OF controller.kubernetes]
	cat >"$IT_CONF" <<EOF
{
	"role": "cloud",
	"node_name": "cloud-1",
	"data_dir": "$IT_DATA",
	"api_socket": "$IT_SOCK",
	"workers": 1,
	"fastpath": {"mode": "off"},
	"capture": {"enabled": false},
	"tunnel": {"listen": ""},
	"controller": {"kubernetes": {"server": "$1"${2:+, $2}}}
}
EOF
}

svc() { # NS NAME CLUSTER_IP PORT
	printf '{"metadata": {"name": "%s", "namespace": "%s"}, "spec": {"clusterIP": "%s", "ports": [{"name": "p", "port": %s, "targetPort": 8080}]}}' \
		"$2" "$1" "$3" "$4"
}

ctl_post() { curl -sS --max-time 5 -X POST "$CTL/$1" ${2:+--data-binary "$2"}; }
upsert() { ctl_post "upsert?kind=$1${3:+&$3}" "$2" >/dev/null || it_die "fake: upsert $1"; }
remove() { ctl_post "delete?kind=$1&ns=$2&name=$3${4:+&$4}" >/dev/null || it_die "fake: delete $1"; }

fake_start() { # [ARGS...]
	it_bg fake "$FAKE" --listen "${FAKE_LISTEN:-$API}" --control "$IT_NET.1:18002" "$@"
	FAKE_PID=$IT_LAST_PID
	it_wait_line "$IT_TMP/fake.out" '^ready' 10 || { cat "$IT_TMP/fake.err"; it_die "fake_kube did not start"; }
}

names() { ctl get "$1" -A 2>/dev/null | awk 'NR > 1 {print $1 "/" $2}' | sort | tr '\n' ' '; }
has() { grep -qw -- "$2" <<<"$(names "$1")"; }
lacks() { ! has "$@"; }
svc_ip() { ctl get services "$2" -n "$1" 2>/dev/null | awk 'NR == 2 {print $3}'; }
node_names() { ctl get nodes 2>/dev/null | awk 'NR > 1 {print $1}' | tr '\n' ' '; }
ip_is() { [ "$(svc_ip "$1" "$2")" = "$3" ]; }
# watch_from KIND RV: the fake saw a watch of KIND from resourceVersion RV
watch_from() {
	ctl_post requests | grep "\"/api/v1/$1\"" | grep '"watch": "1"' |
		grep -q "\"resourceVersion\": \"$2\""
}
logged() { grep -Eq -- "$1" "$IT_EM_LOG"; }
stat_gt() { [ "$(it_stat "$1")" -gt "$2" ]; }

cat >"$IT_TMP/state.json" <<EOF
{"services": [$(svc default web 10.96.0.80 80), $(svc shop cart 10.96.0.81 80)],
 "endpoints": [{"metadata": {"name": "web", "namespace": "default"},
   "subsets": [{"addresses": [{"ip": "10.0.0.11", "nodeName": "edge-1"}], "ports": [{"name": "p", "port": 8080}]}]}],
 "endpointslices": [{"metadata": {"name": "web-abc", "namespace": "default",
   "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
   "endpoints": [{"addresses": ["10.0.0.11"], "nodeName": "edge-1"}], "ports": [{"name": "p", "port": 8080}]}],
 "pods": [{"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
   "spec": {"nodeName": "edge-1"}, "status": {"phase": "Running", "podIP": "10.0.0.11"}}],
 "nodes": [{"metadata": {"name": "edge-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}]}
EOF

# -- the first list of every kind
fake_start --state "$IT_TMP/state.json" --bulk-pods 1100
list_rv=$(ctl_post rv)
cloud_conf "http://$API"
it_em_start
it_wait 10 has services shop/cart || it_fail "services were not listed ($(names services))"
it_check "list: services ($(names services))" has services default/web
it_check "list: endpoints" has endpoints default/web
it_check "list: endpointslices" has endpointslices default/web-abc
it_check "list: pods" has pods default/web-1
it_check "list: nodes ($(node_names))" grep -qw edge-1 <<<"$(node_names)"
it_check "the log names the server" logged "kubernetes: watching http://$API"
it_check "lists ask for pages of 500" bash -c "curl -sS -X POST '$CTL/requests' | grep -q '\"limit\": \"500\"'"
bulk() { [ "$(ctl get pods -n bulk 2>/dev/null | tail -n +2 | wc -l)" = 1100 ]; }
it_check "1100 pods came in 3 pages, all stored" it_wait 5 bulk
it_check "... the later pages asked with continue" \
	bash -c "curl -sS -X POST '$CTL/requests' | grep '/api/v1/pods' | grep -q '\"continue\": \"1000:'"

# -- watch events reach meshctl get
it_wait 10 watch_from services "$list_rv" ||
	it_fail "no watch of services from the list's resourceVersion $list_rv"
upsert services "$(svc default api 10.96.0.90 80)"
it_check "ADDED reaches meshctl get" it_wait 5 has services default/api
upsert services "$(svc default api 10.96.0.91 80)"
it_check "MODIFIED changes the object" it_wait 5 ip_is default api 10.96.0.91
remove services default api
it_check "DELETED removes it" it_wait 5 lacks services default/api
remove pods default web-1
it_check "DELETED of a pod" it_wait 5 lacks pods default/web-1

# -- a bookmark moves the resourceVersion the watch resumes from
ev=$(it_stat kube_events)
bm=$(ctl_post "bookmark?kind=services")
it_wait 5 stat_gt kube_events "$ev" || it_fail "the bookmark was not read"
ctl_post "cut?kind=services" >/dev/null
it_check "after a cut, services are watched again from the bookmark's resourceVersion $bm" \
	it_wait 10 watch_from services "$bm"

# -- 410 Gone as a status: a list, and what it lacks is deleted
before=$(it_stat kube_relists)
remove services shop cart silent=1
upsert services "$(svc default quiet 10.96.0.92 80)" silent=1
ctl_post "compact?as=status" >/dev/null
ctl_post "cut?kind=services" >/dev/null
if it_wait 10 lacks services shop/cart && it_wait 5 has services default/quiet; then
	it_ok "410 (status): listed again; the object gone from the list was deleted, the new one added"
else
	it_fail "after 410: $(names services)"
fi
it_check "the list after 410 is logged with its reason" logged 'services: listing again: .*410'
it_check "kube_relists counts it ($before -> $(it_stat kube_relists))" stat_gt kube_relists "$before"
it_check "objects of the other kinds stayed" has endpoints default/web

# -- 410 as an ERROR event on the reconnected stream
remove endpoints default web silent=1
ctl_post "compact?as=event" >/dev/null
ctl_post "cut?kind=endpoints" >/dev/null
it_check "410 (ERROR event): endpoints listed again, the missing one deleted" \
	it_wait 10 lacks endpoints default/web
it_check "... logged" logged 'endpoints: listing again: .*ERROR event 410'

# -- a stream cut inside an event: nothing half applied, the event comes again
errs=$(it_stat kube_errors)
ctl_post "cut?kind=services&mid=1" >/dev/null
upsert services "$(svc default half 10.96.0.93 80)"
it_check "after a cut inside an event the reconnected watch delivers it whole" \
	it_wait 10 ip_is default half 10.96.0.93
it_check "the cut is logged" logged 'services: watch: stream cut inside an event'
it_check "and counted (kube_errors $errs -> $(it_stat kube_errors))" stat_gt kube_errors "$errs"
it_check "no object was refused" [ "$(it_stat kube_refused)" = 0 ]

# -- a slow stream: events trickle three bytes at a time
ctl_post "slow?on=1" >/dev/null
upsert services "$(svc default slow1 10.96.0.94 80)"
upsert services "$(svc default slow2 10.96.0.95 80)"
it_check "events trickling a few bytes at a time arrive" it_wait 20 has services default/slow2
it_check "... both" has services default/slow1
ctl_post "slow?on=0" >/dev/null

# -- an event longer than the 16 MiB bound: dropped, the kind listed again
# (the list, a page of at most 64 MiB, brings the object)
python3 -c 'import json, sys; json.dump({"metadata": {"name": "huge", "namespace": "default",
	"annotations": {"pad": "x" * (17 << 20)}}, "spec": {"clusterIP": "10.96.0.97",
	"ports": [{"port": 80}]}}, sys.stdout)' >"$IT_TMP/huge.json"
curl -sS --max-time 20 -X POST "$CTL/upsert?kind=services" --data-binary @"$IT_TMP/huge.json" \
	>/dev/null || it_die "fake: upsert huge"
it_check "an event over 16 MiB is dropped and services are listed again" \
	it_wait 20 logged 'services: listing again: an event longer than 16777216 bytes was lost'
it_check "... the list brings it" it_wait 20 has services default/huge
remove services default huge
it_check "... and its delete event is read" it_wait 10 lacks services default/huge
it_check "the daemon is alive" it_em_alive
it_check "stats: kube_watches counted ($(it_stat kube_watches))" [ "$(it_stat kube_watches)" -ge 5 ]
it_check "stats: kube_objects counted ($(it_stat kube_objects))" [ "$(it_stat kube_objects)" -ge 6 ]
it_em_stop
it_check "edgemesh exited cleanly (status $IT_RC)" [ "$IT_RC" = 0 ]
it_stop "$FAKE_PID"

# -- HTTPS with a self-signed CA, and a bearer token
cd "$IT_TMP" || it_die "cd"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=test-ca" \
	-keyout ca.key -out ca.crt >/dev/null 2>&1 || it_die "openssl: CA"
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-api" -keyout srv.key -out srv.csr \
	>/dev/null 2>&1 || it_die "openssl: CSR"
printf 'subjectAltName=IP:%s,DNS:localhost\n' "$IT_NET.1" >srv.ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
	-extfile srv.ext -out srv.crt >/dev/null 2>&1 || it_die "openssl: server cert"
printf 'subjectAltName=DNS:other.example\n' >wrong.ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
	-extfile wrong.ext -out wrong.crt >/dev/null 2>&1 || it_die "openssl: cert for another name"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other-ca" \
	-keyout other.key -out other.crt >/dev/null 2>&1 || it_die "openssl: other CA"
cd "$IT_ROOT" || it_die "cd"
rm -rf "$IT_DATA"
FAKE_LISTEN=$TLS_API fake_start --state "$IT_TMP/state.json" --cert "$IT_TMP/srv.crt" \
	--key "$IT_TMP/srv.key" --token right-token
printf 'wrong-token\n' >"$IT_TMP/token"

# A CA that did not sign the server's certificate: refused, logged.
cloud_conf "https://$TLS_API" "\"token_file\": \"$IT_TMP/token\", \"ca_file\": \"$IT_TMP/other.crt\""
it_em_start
it_check "an unknown CA is refused and logged" it_wait 10 logged 'certificate verify failed'
it_check "... and nothing is listed" lacks services default/web
it_em_stop
it_check "edgemesh exited cleanly (status $IT_RC)" [ "$IT_RC" = 0 ]

cloud_conf "https://$TLS_API" "\"token_file\": \"$IT_TMP/token\", \"ca_file\": \"$IT_TMP/ca.crt\""
it_em_start
it_check "a wrong token: HTTP 401 logged" it_wait 10 logged 'HTTP 401 from .*Unauthorized'
n401=$(grep -c 'HTTP 401' "$IT_EM_LOG")
it_check "logged once per kind (seven), not per retry ($n401 lines)" [ "$n401" -le 7 ]
printf 'right-token\n' >"$IT_TMP/token.new" && mv "$IT_TMP/token.new" "$IT_TMP/token"
it_check "the rotated token is read at the next connection: objects listed over HTTPS" \
	it_wait 40 has services default/web
it_check "recovery is logged" logged 'services: (listing|watching) again'
it_check "the requests carry the new token" \
	bash -c "curl -sS -X POST '$CTL/requests' | tail -n 3 | grep -q 'Bearer right-token'"
upsert services "$(svc default tls 10.96.0.96 80)"
it_check "watch events over HTTPS" it_wait 5 has services default/tls
it_em_stop
it_check "edgemesh exited cleanly (status $IT_RC)" [ "$IT_RC" = 0 ]
it_stop "$FAKE_PID"

# A certificate of the right CA for another name: refused.
FAKE_LISTEN=$TLS_API fake_start --state "$IT_TMP/state.json" --cert "$IT_TMP/wrong.crt" \
	--key "$IT_TMP/srv.key" --token right-token
rm -rf "$IT_DATA"
it_em_start
it_check "a certificate for another name is refused" \
	it_wait 10 logged 'certificate verify failed: IP address mismatch'
it_check "... and nothing is listed" lacks services default/web
it_em_stop

# -- an edge with the key is refused
cloud_conf "http://$API"
sed -i 's/"role": "cloud"/"role": "edge"/' "$IT_CONF"
out=$("$EDGEMESH" -c "$IT_CONF" -t 2>&1)
it_check "an edge with controller.kubernetes.server is refused by -t ($out)" \
	grep -q 'controller.kubernetes.server: expected "" on an edge' <<<"$out"

it_done
