#!/usr/bin/env bash
# One connection or stream must not starve the others. In a namespace of its
# own (emit-PID-starve):
#   a. 64 clients per worker push bytes to a backend that never reads, and 64
#      per worker never read what a source backend sends: an unrelated HTTP
#      request must still be answered at once. The script prints its worst
#      wait; the check is only that every request is answered before idle_ms
#      (when the stalled connections would be closed anyway).
#   b. a tunnel peer speaking the handshake with the cluster key sends 8192
#      one-byte DATA frames on one stream to an endpoint whose connect never
#      completes, then opens an unrelated stream to an echo service, while an
#      unrelated HTTP client asks a listener whose service has no endpoint;
#      the stream must get its echo, the client its 503 page (not a reset),
#      and a stream of 20000 one-byte frames to a slow local reader must
#      arrive intact. Resets and edgemesh's RSS are printed.
# B=DIR runs the binaries of another build (e.g. B=/tmp/em-old/build).
. "$(dirname "$0")/lib.sh"
it_need_root
it_need python3
PEER=$IT_ROOT/tests/integration/starve_peer.py
IDLE_MS=10000

it_netns starve
it_log "namespace $IT_NS, binaries of $B"

# ---- a. stalled connections ---------------------------------------------------
IT_LISTENERS='[{"listen": "127.0.0.1:18001", "service": "default/sink", "port": 80},
	{"listen": "127.0.0.1:18002", "service": "default/web", "port": 80},
	{"listen": "127.0.0.1:18003", "service": "default/src", "port": 80}]'
# Small kernel buffers on the stalled streams (sockets.*): the engine's
# buffer ring fills the same way, but the 128 stalled streams do not park
# hundreds of MiB in the host's TCP memory, which is shared with everything
# else on the host and, past net.ipv4.tcp_mem, starves every socket.
IT_EXTRA="\"timeouts\": {\"idle_ms\": $IDLE_MS, \"sniff_ms\": 50},
	\"sockets\": {\"client_sndbuf\": 65536, \"client_rcvbuf\": 65536,
		\"upstream_sndbuf\": 65536, \"upstream_rcvbuf\": 65536},"
IT_WORKERS=2
it_em_config
it_em_start
it_apply "$(it_list "$(it_svc default sink 10.96.0.21 80 19001)" "$(it_ep default sink 19001 127.0.0.1)" \
	"$(it_svc default web 10.96.0.22 80 19002)" "$(it_ep default web 19002 127.0.0.1)" \
	"$(it_svc default src 10.96.0.23 80 19003)" "$(it_ep default src 19003 127.0.0.1)")"

it_bg sink python3 "$PEER" sink 19001
it_wait_line "$IT_TMP/sink.out" '^ready' 10 || it_die "sink backend did not start"
it_bg source python3 "$PEER" source 19003
it_wait_line "$IT_TMP/source.out" '^ready' 10 || it_die "source backend did not start"
it_backend web http 127.0.0.1:19002

probe() { # $1 = label
	it_in python3 "$PEER" probe 18002 20 $((IDLE_MS / 1000 - 1)) >"$IT_TMP/probe-$1.out" 2>&1
	sed 's/^/    /' "$IT_TMP/probe-$1.out"
}
probe_ok() { grep -q 'failed=0$' "$IT_TMP/probe-$1.out"; }

probe idle
it_check "unrelated requests answered with nothing stalled" probe_ok idle

N=$((64 * IT_WORKERS))
it_bg pushers python3 "$PEER" stall 18001 $N push
it_wait_line "$IT_TMP/pushers.out" '^stalled' 40 || it_die "pushing clients did not stall"
it_bg readers python3 "$PEER" stall 18003 $N idle
it_wait_line "$IT_TMP/readers.out" '^stalled' 40 || it_die "non-reading clients did not stall"
it_log "$N clients push to a backend that never reads, $N never read a source"
t0=$(date +%s%N)
probe stalled
it_log "worst wait of an unrelated request while $((2 * N)) connections stall: $(sed -n 's/.*worst_ms=\([0-9]*\).*/\1/p' "$IT_TMP/probe-stalled.out") ms (target < 100 ms)"
it_check "every unrelated request answered before idle_ms ($IDLE_MS ms) while clients stall" probe_ok stalled
it_check "the stalled connections were still open after the probe (not closed by idle_ms)" \
	test $((($(date +%s%N) - t0) / 1000000)) -lt "$IDLE_MS"
it_log "edgemesh RSS with stalled clients: $(awk '/VmRSS/ {print $2, $3}' /proc/"$IT_EM_PID"/status)"
it_check "edgemesh still running" it_em_alive
it_em_stop
for p in "${IT_PIDS[@]}"; do kill "$p" 2>/dev/null; done

# ---- b. tiny DATA frames from a tunnel peer ---------------------------------------
KEY=starve-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n") # >= 32 bytes
# 10.254.0.2 is routed but every packet to it is dropped: a connect to it
# stays in flight (connect_ms is 30 s), and the stream's bytes stay queued.
it_in ip route add 10.254.0.0/24 dev lo || it_die "route to the dropped address"
it_in iptables -A OUTPUT -d 10.254.0.2 -j DROP || it_die "iptables DROP in $IT_NS"
cat >"$IT_CONF" <<EOF
{
	"role": "edge",
	"node_name": "edge-node-1",
	"data_dir": "$IT_DATA",
	"api_socket": "$IT_SOCK",
	"workers": 1,
	"log_level": "info",
	"fastpath": {"mode": "off"},
	"capture": {"enabled": false},
	"listeners": [{"listen": "127.0.0.1:18005", "service": "default/noep", "port": 80}],
	"tunnel": {"encryption": "none", "listen": "127.0.0.1:20006", "cluster_key": "$KEY"},
	"timeouts": {"connect_ms": 30000}
}
EOF
rm -f "$IT_SOCK"
it_em_start
it_apply "$(it_list "$(it_node_obj edge-node-1 127.0.0.1 20006)" "$(it_node_obj fake-peer 127.0.0.2)" \
	"$(it_svc default stuck 10.96.0.31 80 80)" "$(it_ep default stuck 80 10.254.0.2)" \
	"$(it_svc default echo 10.96.0.32 7 19007)" "$(it_ep default echo 19007 127.0.0.1)" \
	"$(it_svc default slow 10.96.0.33 80 19008)" "$(it_ep default slow 19008 127.0.0.1)" \
	"$(it_svc default noep 10.96.0.34 80 80)" "$(it_ep default noep 80)")"
it_backend echo echo 127.0.0.1:19007

it_in timeout 120 python3 "$PEER" tunnel 20006 "$KEY" "$IT_EM_PID" 18005 19008 8192 \
	>"$IT_TMP/tunnel.out" 2>&1
sed 's/^/    /' "$IT_TMP/tunnel.out"
has() { grep -q -- "$1" "$IT_TMP/tunnel.out"; }
it_check "an unrelated stream gets its echo while a stream queues 8192 tiny frames" has '^unrelated_stream ok'
it_check "an unrelated HTTP client gets its 503 page, not a reset" has '^unrelated_http HTTP/1.1 503'
it_check "20000 one-byte frames reach a slow local reader intact" has '^slow_stream ok 20000'
it_check "the flooding stream itself is not reset" has '^flood_rst none'
it_check "the tunnel stays up" has 'goaway none'
it_log "resets sent by edgemesh: $(it_stat resets_sent)"
it_check "edgemesh still running" it_em_alive
it_done
