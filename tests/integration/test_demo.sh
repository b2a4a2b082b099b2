#!/usr/bin/env bash
# The main job (`make demo`, conf/demo.sh) in a namespace of its own: it
# ends with status 0, prints each of the four flows answered 200 by the
# expected node, and the 429 of the QPS-limited Service.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_demo: needs root (network namespace)"
it_need_root
it_need curl socat openssl
it_netns demo
NS=$IT_NS
rc=0
(cd "$IT_ROOT" && B=$B timeout 240 ip netns exec "$NS" bash conf/demo.sh) >"$IT_TMP/demo.out" 2>&1 || rc=$?
it_check "conf/demo.sh ends with status 0 (got $rc)" test "$rc" = 0
flow() { # LABEL TEXT
	grep -E "^  $1 .* -> $2" "$IT_TMP/demo.out" >/dev/null
}
it_check "F1: 200 from web-1 on edge-node-1" flow "F1 same node" "200 web-1 on edge-node-1"
it_check "F2: 200 from web-2 on edge-node-2" flow "F2 edge to edge" "200 web-2 on edge-node-2"
it_check "F3: 200 from cloud-web on cloud-node" flow "F3 edge to cloud" "200 cloud-web on cloud-node"
it_check "F4: the Router's call answered 200 by edge-node-2's app" flow "F4 cloud to edge" "200 edge-node-2's app"
it_check "the QPS-limited Service's second call gets 429" flow "QPS 1/s, 2nd call" "429 "
[ "$IT_FAILS" = 0 ] || tail -n 40 "$IT_TMP/demo.out"
it_done
