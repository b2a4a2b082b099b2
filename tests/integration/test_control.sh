#!/usr/bin/env bash
# The control plane with real daemons: a cloud node and two edges, each in a
# namespace of its own, joined through a bridge in a fourth namespace
# (192.168.79.0/24, nowhere else). The cloud reads a manifests directory; the
# edges have only cloud.address and the cluster key, and no Node manifests
# exist: the edges find each other through the Nodes their registrations make.
#   - both edges converge on the manifests' services; the cloud lists both
#     edges connected, each edge reports its link to the cloud;
#   - F2 across the registration-made Nodes: A reaches B's backend;
#   - a manifest edit reaches both edges;
#   - the cloud stopped: F2 still works, also after A restarts (autonomy);
#   - changes made while the cloud was down (a service removed, one added)
#     reach the edges when it returns: nothing stale stays;
#   - an edge changed while it was down catches up on restart;
#   - an edge with a wrong cluster key is refused and never listed.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_control: needs root (network namespaces, veth, iptables)"
it_need_root
it_need socat python3

NSX=em-x-$$ NSC=em-c-$$ NSA=em-a-$$ NSB=em-b-$$
IPC=192.168.79.1 IPA=192.168.79.2 IPB=192.168.79.3
KEY=control-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"

it_bridge "$NSX" "$NSC:$IPC" "$NSA:$IPA" "$NSB:$IPB"

cat >"$IT_TMP/cloud.json" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"encryption": "none", "listen": "$IPC:20006", "cluster_key": "$KEY"},
 "controller": {"manifests_dir": "$MDIR"}}
EOF
# edge_conf NAME IP KEY
edge_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
 "api_socket": "$IT_TMP/$1.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": true, "port": 15001},
 "tunnel": {"encryption": "none", "listen": "$2:20006", "cluster_key": "$3", "keepalive_ms": 1000,
  "dead_after_ms": 3000, "reconnect_min_ms": 100, "reconnect_max_ms": 1000},
 "cloud": {"address": "$IPC:20006"},
 "timeouts": {"connect_ms": 2000}}
EOF
}
edge_conf node-a $IPA "$KEY"
edge_conf node-b $IPB "$KEY"

# manifest FILE JSON: written next to the directory, then moved in (as an
# editor or kubectl-style tool would), so the watcher sees it whole.
manifest() {
	printf '%s\n' "$2" >"$IT_TMP/.m.tmp" && mv "$IT_TMP/.m.tmp" "$MDIR/$1"
}
manifest echo.json "$(it_list "$(it_svc default echo 10.96.0.7 7 7007)" \
	"$(it_ep_obj default echo 7007 $IPB@node-b)")"
manifest old.json "$(it_svc default old 10.96.0.30 80 80)"

it_node_start cloud "$NSC"
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
IT_NS=$NSB
it_backend echo-b echo $IPB:7007

ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
has_svc() { ctl "$1" get svc "$2" >/dev/null; }
svc_ip() { ctl "$1" get svc "$2" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["spec"]["clusterIP"])' 2>/dev/null; }
node_ip() { ctl "$1" get nodes "$2" -o json | python3 -c 'import json,sys
n=json.load(sys.stdin)[0]
print([a["address"] for a in n["status"]["addresses"] if a["type"]=="InternalIP"][0])' 2>/dev/null; }
both() { "$@" node-a && "$@" node-b; }
echo_once() {
	[ "$(printf 'via the cloud'"'"'s nodes\n' | timeout 5 ip netns exec "$NSA" socat -t 3 - TCP:10.96.0.7:7 2>/dev/null)" = "via the cloud's nodes" ]
}

# -- convergence from the cloud alone
synced() { has_svc "$1" echo && has_svc "$1" old && [ "$(node_ip "$1" node-a)" = $IPA ] &&
	[ "$(node_ip "$1" node-b)" = $IPB ]; }
if it_wait 15 both synced; then
	it_ok "both edges learned the services and each other's Node from the cloud"
else
	it_die "edges did not converge: $(ctl node-a get svc -A) / $(tail -n 5 "${EM_LOG[node-a]}")"
fi
connected() { ctl cloud get nodes | grep -E "^$1 .* connected " >/dev/null; }
it_check "the cloud lists node-a connected" it_wait 5 connected node-a
it_check "the cloud lists node-b connected" it_wait 5 connected node-b
it_check "node-a reports its link to the cloud" \
	sh -c "timeout 10 '$MESHCTL' -s '$IT_TMP/node-a.sock' get nodes | grep -q 'cloud $IPC:20006: connected'"
it_check "the registration Nodes carry the tunnel port" \
	sh -c "timeout 10 '$MESHCTL' -s '$IT_TMP/cloud.sock' get nodes | grep -qE '^node-b +$IPB +20006 '"

# -- F2 through the Nodes the registrations made
if it_wait 10 echo_once; then
	it_ok "F2: A reaches B's backend through the cluster IP, Nodes from registration"
else
	it_fail "F2 across registration-made Nodes: $(tail -n 5 "${EM_LOG[node-a]}")"
fi

# -- a manifest edit reaches both edges
manifest old.json "$(it_svc default old 10.96.0.31 80 80)"
edited() { [ "$(svc_ip "$1" old)" = 10.96.0.31 ]; }
it_check "a manifest edit reaches both edges" it_wait 10 both edited

# -- the cloud goes away: the edges keep serving, also across a restart
it_node_stop cloud
gone() { ctl node-a get nodes | grep -q "cloud $IPC:20006: disconnected"; }
it_check "node-a notices the cloud is gone" it_wait 10 gone
it_check "F2 still works with the cloud down" it_wait 10 echo_once
it_node_stop node-a
it_node_start node-a "$NSA"
it_check "F2 works after node-a restarted with the cloud down (from its store)" \
	it_wait 10 echo_once

# -- changes made while the cloud was down reach the edges when it returns
rm -f "$MDIR/old.json"
manifest new.json "$(it_svc default new 10.96.0.32 80 80)"
it_node_start cloud "$NSC"
caught_up() { has_svc "$1" new && ! has_svc "$1" old; }
it_check "after the cloud's return both edges have the new service and not the removed one" \
	it_wait 15 both caught_up
it_check "the cloud sent snapshots after its restart" \
	grep -q "sending a snapshot" "${EM_LOG[cloud]}"

# -- an edge down while things changed catches up from its generation
it_node_stop node-b
manifest new.json "$(it_svc default new 10.96.0.33 80 80)"
it_node_start node-b "$NSB"
b_new() { [ "$(svc_ip node-b new)" = 10.96.0.33 ]; }
it_check "node-b, restarted after a change, caught up" it_wait 15 b_new
it_check "... from its generation, not a snapshot" \
	grep -q "edge node-b ([0-9.]*) registered at generation" "${EM_LOG[cloud]}"
it_check "F2 still works" it_wait 10 echo_once

# -- a wrong cluster key is refused
edge_conf node-x $IPA "wrong-key-$$-0123456789abcdef0123456789abcdef"
sed -i "s/\"listen\": \"$IPA:20006\"/\"listen\": \"$IPA:20016\"/" "$IT_TMP/node-x.json"
it_node_start node-x "$NSA"
refused() { grep -q "handshake refused" "${EM_LOG[cloud]}"; }
it_check "the cloud refuses an edge with a wrong cluster key" it_wait 10 refused
it_check "... and never lists it" sh -c "! timeout 10 '$MESHCTL' -s '$IT_TMP/cloud.sock' get nodes | grep -q node-x"
it_check "the cloud counts both registered edges" \
	sh -c "timeout 10 '$MESHCTL' -s '$IT_TMP/cloud.sock' stats | grep -q '\"edges_connected\":[[:space:]]*2'"

it_done
