#!/usr/bin/env bash
# edgemesh's own upstream dials are never captured by its own rules: in a
# network namespace of the test's own, a Service's endpoint lives at
# 10.97.0.5, outside the service CIDR 10.96.0.0/16 the Endpoints object is
# applied under. The capture range is then widened to 10.96.0.0/12 (capture
# keys need a restart; the store keeps the objects on disk), which puts the
# endpoint inside it. The daemon's dial to the endpoint carries capture.mark,
# which the chain returns first, so requests still reach the backend; a
# build without the mark redirects its own dial back to its capture port and
# the client never sees the backend.
# Then the same for a tunnel dial: two namespaces joined by a veth pair, node
# B's address 10.97.0.2 inside A's captured range (A's own 10.97.0.1 is not);
# a request from A to a service whose endpoint is on B must cross the tunnel.
# Needs root.
. "$(dirname "$0")/lib.sh"
it_need_root
it_need curl

it_netns mark
it_in iptables -t nat -S >/dev/null 2>&1 || it_skip "iptables nat does not work in a network namespace"
# 10.96.0.0/12 is routed locally (it_netns), so the backend can bind 10.97.0.5.
IT_CAPTURE='{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/16"]}'
it_em_config

it_em_start
it_apply "$(it_list "$(it_svc default web 10.96.0.50 80 8080)" "$(it_ep default web 8080 10.97.0.5)")"
it_backend web http 10.97.0.5:8080
web_pid=$IT_LAST_PID

# get: one request to the cluster IP; prints the HTTP status (000: none).
get() {
	it_in curl -s -o "$IT_TMP/body" -w '%{http_code}' --max-time 5 http://10.96.0.50/ 2>/dev/null
}
served() { # requests the backend has served so far
	it_served "$web_pid" | sed -E 's/.*l0=([0-9]+).*/\1/'
}

code=$(get)
it_check "endpoint outside the service CIDRs: HTTP 200 (got $code)" [ "$code" = 200 ]
before=$(served)

# Widen the captured range over the endpoint's address.
it_em_stop TERM
IT_CAPTURE='{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]}'
it_em_config
it_em_start
it_in iptables-save -t nat | grep EDGEMESH | sed 's/^/    nat| /'
it_check "the endpoint 10.97.0.5 is now inside a captured range" \
	eval "it_in iptables-save -t nat | grep -q -- '-d 10.96.0.0/12 .*REDIRECT'"

ok=0
for i in 1 2 3 4 5; do
	code=$(get)
	[ "$code" = 200 ] && ok=$((ok + 1))
done
after=$(served)
it_check "endpoint inside the captured range: 5 of 5 requests HTTP 200 (got $ok)" [ "$ok" = 5 ]
it_check "the backend served them (served ${before:-?} -> ${after:-?})" \
	eval "[ -n '$before' ] && [ -n '$after' ] && [ \$(( ${after:-0} - ${before:-0} )) -ge 5 ]"
# A dial redirected into ourselves shows as a second accepted connection
# per request; counters are published at each worker tick (50 ms).
settled() { [ "$(it_stat connections_accepted)" -ge 5 ]; }
it_wait 5 settled
acc=$(it_stat connections_accepted)
it_check "5 connections accepted for 5 requests, none of our own (got $acc)" [ "$acc" = 5 ]
it_check "edgemesh still running" it_em_alive
it_em_stop TERM
it_check "clean exit (got $IT_RC)" [ "$IT_RC" = 0 ]

# ---- tunnel dials
NSA=emit-$$-ta
NSB=emit-$$-tb
VA=emma$$
VB=emmb$$
IPA=10.97.0.1
IPB=10.97.0.2
KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
it_veth_pair "$NSA" "$NSB" "$VA" "$VB" "$IPA" "$IPB" 10.96.0.0/16

# node_conf NODE IP CIDRS: $IT_TMP/NODE.json.
node_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$1",
	"data_dir": "$IT_TMP/data-$1",
	"api_socket": "$IT_TMP/$1.sock",
	"workers": 1,
	"fastpath": {"mode": "off"},
	"capture": {"enabled": true, "port": 15001, "service_cidrs": [$3]},
	"tunnel": {"encryption": "none", "listen": "$2:20006", "cluster_key": "$KEY", "reconnect_min_ms": 100,
		"reconnect_max_ms": 500},
	"timeouts": {"connect_ms": 2000}
}
EOF
}
MANIFESTS=$(it_list "$(it_node_obj node-a $IPA)" "$(it_node_obj node-b $IPB)" \
	"$(it_svc default far 10.96.0.60 80 8080)" "$(it_ep_obj default far 8080 127.0.0.21@node-b)")
node_conf node-a $IPA '"10.96.0.0/16"'
node_conf node-b $IPB '"10.96.0.0/16"'
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
it_node_apply node-a "$MANIFESTS"
it_node_apply node-b "$MANIFESTS"
IT_NS=$NSB
it_backend far http 127.0.0.21:8080
IT_NS=$NSA
far_get() {
	[ "$(ip netns exec "$NSA" curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
		http://10.96.0.60/ 2>/dev/null)" = 200 ]
}
it_check "node B outside A's captured range: a request crosses the tunnel" it_wait 10 far_get

# B's address joins A's captured range (a restart of A; the store keeps the
# objects).
it_node_stop node-a
node_conf node-a $IPA '"10.96.0.0/16", "10.97.0.2/32"'
it_node_start node-a "$NSA"
ip netns exec "$NSA" iptables-save -t nat | grep EDGEMESH | sed 's/^/    A nat| /'
it_check "node B inside A's captured range: a request still crosses the tunnel" it_wait 10 far_get
it_check "A logged the new tunnel to node-b up" \
	grep -q "tunnel to node-b ($IPB:20006) up" "${EM_LOG[node-a]}"
it_node_stop node-a
it_node_stop node-b
it_done
