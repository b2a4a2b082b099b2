#!/usr/bin/env bash
# The cloud dials no edge, so an edge's tunnel that runs out of stream ids on
# the cloud's side cannot be replaced by the cloud: the cloud drains it
# (GOAWAY) while EM_TUNNEL_ID_RESERVE ids are left, and the edge dials a new
# one at once. A cloud (1 worker) whose first accepted tunnel starts a few
# ids short of the end (EDGEMESH_TEST_TUNNEL_FIRST_ID, a test-only hook)
# reaches node-b, which has no listener, over a cloud listener: each of 60
# connections is served (retried once if it fell in the swap), over a second
# tunnel node-b dialled, and the cloud says why in its log. An edge that
# opens streams to 20,000 made-up node names gets each refused and makes the
# cloud keep nothing for them.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_cloud_ids: needs root (network namespaces, veth)"
it_need_root
it_need socat

NSC=em-ic-$$ NSB=em-ib-$$
IPC=192.168.79.1 IPB=192.168.79.2
KEY=cloud-ids-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"
for ns in "$NSC" "$NSB"; do
	ip netns add "$ns" || it_die "ip netns add $ns"
	IT_NETNS_LIST+=("$ns")
	ip -n "$ns" link set lo up
	ip -n "$ns" route add local 10.96.0.0/12 dev lo || it_die "local route in $ns"
done
ip link add "emi$$-c" netns "$NSC" type veth peer name "emi$$-b" netns "$NSB" || it_die "veth"
ip -n "$NSC" addr add "$IPC/24" dev "emi$$-c" && ip -n "$NSC" link set "emi$$-c" up || it_die "veth c"
ip -n "$NSB" addr add "$IPB/24" dev "emi$$-b" && ip -n "$NSB" link set "emi$$-b" up || it_die "veth b"

cat >"$IT_TMP/cloud.json" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "$IPC:20006", "cluster_key": "$KEY"},
 "router": {"listen": "127.0.0.1:9443"},
 "listeners": [{"listen": "127.0.0.1:18007", "service": "default/becho", "port": 7}],
 "controller": {"manifests_dir": "$MDIR"}}
EOF
cat >"$IT_TMP/node-b.json" <<EOF
{"role": "edge", "node_name": "node-b", "data_dir": "$IT_TMP/data-node-b",
 "api_socket": "$IT_TMP/node-b.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "", "cluster_key": "$KEY", "reconnect_min_ms": 100,
  "reconnect_max_ms": 1000},
 "cloud": {"address": "$IPC:20006"}}
EOF
printf '%s\n' "$(it_list "$(it_svc default becho 10.96.0.42 7 7042)" \
	"$(it_ep_obj default becho 7042 $IPB@node-b)")" >"$MDIR/b.json"
IT_NS=$NSB
it_backend becho echo $IPB:7042

# The first tunnel the cloud accepts has 40 ids left: under the reserve.
LEFT=40
EDGEMESH_TEST_TUNNEL_FIRST_ID=$((4294967293 - 2 * (LEFT - 1))) it_node_start cloud "$NSC"
it_node_start node-b "$NSB"
ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
connected() { ctl cloud get nodes | grep -E "^node-b .* connected " >/dev/null; }
it_wait 15 connected || it_die "node-b is not connected to the cloud"
it_wait 10 sh -c "ip netns exec $NSB true && timeout 5 '$MESHCTL' -s '$IT_TMP/node-b.sock' get svc becho >/dev/null 2>&1" ||
	it_die "node-b did not learn default/becho"

once() { # TEXT: echoed through the cloud listener to node-b
	[ "$(printf '%s\n' "$1" | timeout 5 ip netns exec "$NSC" socat -t 3 - TCP:127.0.0.1:18007 2>/dev/null)" = "$1" ]
}
# More connections than the first tunnel had ids for; one that fails while
# node-b dials again is tried again.
ok=0 first=0
for i in $(seq 60); do
	if once "call $i"; then
		first=$((first + 1)) ok=$((ok + 1))
	elif it_wait 5 once "call $i again"; then
		ok=$((ok + 1))
	fi
done
it_log "served at the first try: $first of 60"
it_check "60 connections from the cloud reach node-b, each within 5 s ($ok served)" test "$ok" = 60
it_check "the cloud drained the tunnel that ran low on stream ids" \
	grep -q "stream ids left, draining it so that the node dials a new one" "${EM_LOG[cloud]}"
dialed=$(ctl node-b stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["tunnels_dialed"])')
it_check "node-b dialled a new tunnel to the cloud ($dialed dialled)" test "${dialed:-0}" -ge 2
it_check "the last calls go over the new tunnel at once" once "after the drain"

# An edge that knows the key opens 20,000 streams to node names nobody has:
# each is refused, and the cloud keeps no peer or relay pair for them.
out=$(ip netns exec "$NSC" python3 "$IT_ROOT/tests/integration/starve_peer.py" names \
	"$IPC" 20006 "$KEY" "${EM_PID[cloud]}" 20000 2>&1 | tail -n 1)
it_log "$out"
resets=$(printf '%s' "$out" | sed -n 's/.*resets=\([0-9]*\).*/\1/p')
before=$(printf '%s' "$out" | sed -n 's/.*before=\([0-9]*\).*/\1/p')
after=$(printf '%s' "$out" | sed -n 's/.*after=\([0-9]*\).*/\1/p')
it_check "20000 streams to made-up nodes are all refused ($resets)" test "${resets:-0}" = 20000
it_check "... and the cloud's memory grew less than 4 MiB ($before -> $after KiB)" \
	test $((${after:-999999999} - ${before:-0})) -lt 4096
pairs=$(ctl cloud stats | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("relay", [])))')
it_check "... and no relay pair is kept for them ($pairs pairs)" test "${pairs:-1}" -lt 10
it_check "the cloud still reaches node-b" once "after the spray"

for n in node-b cloud; do
	it_node_stop $n
	it_check "$n stopped cleanly" sh -c "! grep -q 'Sanitizer' '${EM_LOG[$n]}'"
done
it_done
