#!/usr/bin/env bash
# More cross-node tunnel checks (flow F2), beside test_tunnel.sh. Two node
# namespaces emt-a-PID and emt-b-PID joined by a veth pair with IPv4
# (192.168.78.1/.2) and IPv6 (fd00:79::1/.2) addresses that exist only inside
# them; each runs its own edgemesh (A with capture of 10.96.0.0/12 and
# fd00:96::/112, B without). The parts, in order:
#   1. IPv6: Nodes with IPv6 InternalIPs, B's tunnel listening on
#      [fd00:79::2]:20006, services with IPv6 cluster IPs whose endpoint is on
#      B: TCP echo and HTTP from A work, A holds an IPv6 tunnel connection to
#      B's tunnel port and no connection of its own to B's backend;
#   2. the Node annotation edgemesh.io/tunnel-port: B listens on 20106 and
#      says so, A (listening on the default port itself) dials 20106; with the
#      annotation removed A drains that tunnel at once and dials 20006, where
#      nothing listens: its clients fail fast and its log names the tunnel;
#      with the annotation back, traffic recovers within seconds;
#   3. a node that is not in B's table ("stranger", a third edgemesh in A's
#      namespace, right cluster key): B refuses its tunnel and logs the name
#      and the reason, the stranger's client fails fast, A's tunnel is
#      unaffected;
#   4. manifests that disagree (A places an endpoint on B, B places it on A,
#      after a run where both place it on B and it is served): B refuses the
#      stream with an RST, the client fails fast, B's backend sees no
#      connection, A's tunnel stays up, and the refusal is logged on A or B;
#   5. two workers on each node: each of A's workers dials its own tunnel and
#      ping-pong over them has no error.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_tunnel_more: needs root (network namespaces, veth, iptables)"
it_need_root
it_need socat curl ss python3

NSA=emt-a-$$
NSB=emt-b-$$
VA=emta$$
VB=emtb$$
IPA=192.168.78.1
IPB=192.168.78.2
IP6A=fd00:79::1
IP6B=fd00:79::2
KEY=tunnel-more-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n") # >= 32 bytes
ALT_PORT=20106

for ns in $NSA $NSB; do
	ip netns add "$ns" || it_die "ip netns add $ns"
	IT_NETNS_LIST+=("$ns")
	ip -n "$ns" link set lo up || it_die "lo up in $ns"
	ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 \
		net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0 >/dev/null ||
		it_die "cannot enable IPv6 in $ns"
done
ip -n "$NSA" route add local 10.96.0.0/12 dev lo || it_die "local route in $NSA"
ip -n "$NSA" -6 route add local fd00:96::/112 dev lo || it_die "local IPv6 route in $NSA"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB" || it_die "veth pair"
ip -n "$NSA" addr add $IPA/24 dev "$VA" && ip -n "$NSB" addr add $IPB/24 dev "$VB" &&
	ip -n "$NSA" -6 addr add $IP6A/64 dev "$VA" nodad &&
	ip -n "$NSB" -6 addr add $IP6B/64 dev "$VB" nodad &&
	ip -n "$NSA" link set "$VA" up && ip -n "$NSB" link set "$VB" up ||
	it_die "veth addresses"
link_up() { [ "$(ip -n "$NSA" -br link show "$VA" | awk '{print $2}')" = UP ]; }
it_wait 5 link_up || it_die "veth link does not come up"
v6_ready() { # both IPv6 addresses present and usable (no DAD pending)
	ip -n "$NSA" -6 addr show dev "$VA" | grep -q "$IP6A/64" &&
		ip -n "$NSB" -6 addr show dev "$VB" | grep -q "$IP6B/64" &&
		! ip -n "$NSA" -6 addr show dev "$VA" | grep -q tentative &&
		! ip -n "$NSB" -6 addr show dev "$VB" | grep -q tentative
}
it_wait 5 v6_ready || it_die "IPv6 addresses on the veth pair not ready"
ip netns exec "$NSA" ip6tables -t nat -S >/dev/null 2>&1 ||
	it_skip "ip6tables nat does not work in a network namespace (IPv6 capture)"

# em_conf NAME NODE LISTEN CAPTURE [LISTENERS]: writes $IT_TMP/NAME.json.
em_conf() {
	cat >"$IT_TMP/$1.json" <<EOF
{
	"role": "edge",
	"node_name": "$2",
	"data_dir": "$IT_TMP/data-$1",
	"api_socket": "$IT_TMP/$1.sock",
	"workers": 1,
	"log_level": "info",
	"fastpath": {"mode": "off"},
	"capture": $4,
	"listeners": ${5:-[]},
	"tunnel": {"encryption": "none", "listen": "$3", "cluster_key": "$KEY", "keepalive_ms": 2000,
		"dead_after_ms": 10000, "reconnect_min_ms": 100, "reconnect_max_ms": 1000},
	"timeouts": {"connect_ms": 2000, "shutdown_ms": 500}
}
EOF
}

ina() { ip netns exec "$NSA" "$@"; }
inb() { ip netns exec "$NSB" "$@"; }

# echo_at ADDR: one line echoed through ADDR ("TCP:ip:port" or "TCP6:[ip]:port") from A.
echo_at() {
	[ "$(printf 'across the tunnel\n' | timeout 5 ip netns exec "$NSA" socat -t 3 - "$1" 2>/dev/null)" = "across the tunnel" ]
}

# A one-shot client: connects to HOST PORT, sends a line, half-closes and
# reads until the far side is done or 5 s pass; prints what it saw: "reset",
# "eof", "refused", "data N", "timeout" or "error ...", then a line with the
# milliseconds from its connect to that outcome (measured by the client, so
# that the start-up of the client on a loaded machine does not count).
PROBE='
import errno, socket, sys, time
t0 = time.monotonic()
def done():
    print(int((time.monotonic() - t0) * 1000))
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"x\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    print("data %d" % len(got) if got else "eof")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    # A reset that came before the half-close leaves the socket unconnected.
    gone = (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE)
    print("reset" if e.errno in gone else "error %s" % e)
done()
'

# fail_fast HOST PORT: a client of A gets no data and is done within 2 s
# (FAST_MS says how long it took, FAST_OUT what it saw).
fail_fast() {
	local out
	out=$(timeout 10 ip netns exec "$NSA" python3 -c "$PROBE" "$1" "$2" 2>&1 | tail -n 2)
	FAST_OUT=$(head -n 1 <<<"$out")
	FAST_MS=$(tail -n 1 <<<"$out")
	[[ "$FAST_MS" =~ ^[0-9]+$ ]] || FAST_MS=99999
	case $FAST_OUT in reset | eof | refused) [ "$FAST_MS" -lt 2000 ] ;; *) false ;; esac
}

# fail_fast_n N HOST PORT: N clients in a row, each once the one before is
# done; FAIL_BAD counts slow or answered ones, FAIL_SEEN lists what they saw.
fail_fast_n() {
	local i
	FAIL_BAD=0 FAIL_WORST=0 FAIL_SEEN=""
	for i in $(seq "$1"); do
		fail_fast "$2" "$3" || FAIL_BAD=$((FAIL_BAD + 1))
		FAIL_SEEN+="${FAIL_SEEN:+,}$FAST_OUT"
		[ "$FAST_MS" -gt "$FAIL_WORST" ] && FAIL_WORST=$FAST_MS
	done
	[ "$FAIL_BAD" = 0 ]
}

# socks NS: every TCP socket of NS but listeners, "STATE LOCAL PEER" per line.
socks() { ip netns exec "$1" ss -Htan 2>/dev/null | awk '$1 != "LISTEN" {print $1, $4, $5}'; }

# new_lines FILE FROM: the lines of FILE after line FROM.
new_lines() { tail -n +"$(($2 + 1))" "$1"; }

# ---- 1. IPv6 tunnel ----------------------------------------------------------
CAP_A="{\"enabled\": true, \"port\": 15001, \"service_cidrs\": [\"10.96.0.0/12\", \"fd00:96::/112\"]}"
em_conf node-a node-a "[$IP6A]:20006" "$CAP_A"
em_conf node-b node-b "[$IP6B]:20006" '{"enabled": false}'
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
PIDA=${EM_PID[node-a]}

IT_NS=$NSB
it_backend echo-b echo "[$IP6B]:7007" "$IPB:7007"
it_backend web-b http "[$IP6B]:8080"
it_backend split-b echo 127.0.0.31:7009
split_pid=$IT_LAST_PID

M6=$(it_list "$(it_node_obj node-a $IP6A)" "$(it_node_obj node-b $IP6B)" \
	"$(it_svc default echo6 fd00:96::7 7 7007)" "$(it_ep_obj default echo6 7007 $IP6B@node-b)" \
	"$(it_svc default web6 fd00:96::80 80 8080)" "$(it_ep_obj default web6 8080 $IP6B@node-b)")
it_node_apply node-a "$M6"
it_node_apply node-b "$M6"

if it_wait 10 echo_at "TCP6:[fd00:96::7]:7"; then
	it_ok "IPv6: TCP echo from A through [fd00:96::7]:7 reaches B's backend"
else
	it_fail "IPv6: no TCP echo through [fd00:96::7]:7 within 10 s; A: $(grep tunnel "${EM_LOG[node-a]}" | tail -n 3)"
fi
body=$(ina curl -sS -g --max-time 5 "http://[fd00:96::80]/" 2>&1 | tr -d '.')
it_check "IPv6: HTTP from A through [fd00:96::80]:80 answered by B's backend (got '$body')" \
	[ "$body" = backend-0 ]
it_check "IPv6: A logged the tunnel to node-b ([$IP6B]:20006) up" \
	grep -qF "tunnel to node-b ([$IP6B]:20006) up" "${EM_LOG[node-a]}"
it_check "IPv6: B logged the tunnel from node-a ([$IP6A]:port) up" \
	grep -qE "tunnel from node-a \(\[$IP6A\]:[0-9]+\) up" "${EM_LOG[node-b]}"

# A client holds a connection while the sockets of both sides are looked at.
IT_NS=$NSA
it_httpecho_build
it_bg hold6 "$HTTPECHO" hold -a "[fd00:96::7]:7" -T 10
hold_pid=$IT_LAST_PID
b_served() { socks "$NSB" | grep -qE "^ESTAB \[$IP6B\]:[0-9]+ \[$IP6B\]:7007$"; }
if it_wait_line "$IT_TMP/hold6.out" '^connected' 5 && it_wait 3 b_served; then
	sa=$(socks "$NSA")
	tun=$(grep -E "^ESTAB \[$IP6A\]:[0-9]+ \[$IP6B\]:20006$" <<<"$sa" | head -n 1)
	direct=$(grep -E "\[$IP6B\]:(7007|8080)$" <<<"$sa" | head -n 3 | tr '\n' ';')
	it_check "IPv6: A holds an established tunnel connection to B's tunnel port ('$tun')" [ -n "$tun" ]
	it_check "IPv6: A has no connection of its own to B's backend ports 7007/8080${direct:+ (found: $direct)}" \
		[ -z "$direct" ]
	it_ok "IPv6: B's edgemesh holds the connection to its backend [$IP6B]:7007 for A's client"
else
	it_fail "IPv6: held client not connected or B not connected to its backend; A: $(socks "$NSA" | tr '\n' ';') B: $(socks "$NSB" | tr '\n' ';')"
fi
it_stop "$hold_pid" TERM 5

# ---- 2. the tunnel-port annotation -------------------------------------------
# B restarts listening on 20106 and announces it; A's own listener stays on
# the default port 20006, so only the annotation can send A to 20106.
it_node_stop node-b
em_conf node-b node-b "$IPB:$ALT_PORT" '{"enabled": false}'
svc4="$(it_svc default echo 10.96.0.7 7 7007)"
ep4="$(it_ep_obj default echo 7007 $IPB@node-b)"
M4=$(it_list "$(it_node_obj node-a $IPA)" "$(it_node_obj node-b $IPB $ALT_PORT)" "$svc4" "$ep4")
it_node_apply node-a "$M4"
it_node_start node-b "$NSB"
it_node_apply node-b "$M4"
ECHO4=TCP:10.96.0.7:7
if it_wait 10 echo_at "$ECHO4"; then
	it_ok "annotation: TCP echo from A to B's service through a tunnel to port $ALT_PORT"
else
	it_fail "annotation: no echo through $ECHO4 within 10 s; A: $(grep tunnel "${EM_LOG[node-a]}" | tail -n 3)"
fi
it_check "annotation: A logged the tunnel to node-b ($IPB:$ALT_PORT) up" \
	grep -qF "tunnel to node-b ($IPB:$ALT_PORT) up" "${EM_LOG[node-a]}"
listens_alt_only() {
	local l
	l=$(inb ss -Htln | awk '{print $4}')
	grep -qx "$IPB:$ALT_PORT" <<<"$l" && ! grep -q ':20006$' <<<"$l"
}
it_check "annotation: B's tunnel listens on $IPB:$ALT_PORT and nothing listens on 20006" listens_alt_only
to_alt_only() {
	grep -qE "^ESTAB $IPA:[0-9]+ $IPB:$ALT_PORT\$" <<<"$1" && ! grep -qF "$IPB:20006" <<<"$1"
}
sa=$(socks "$NSA")
it_check "annotation: A's tunnel connection goes to $IPB:$ALT_PORT, none to :20006 ($(grep -F "$IPB:" <<<"$sa" | tr '\n' ';'))" \
	to_alt_only "$sa"

# Annotation removed: A must dial the default port. The established tunnel
# drains (A notices the Node changed) and new streams go to 20006, where
# nothing listens; B is restarted too (still on 20106), so that no old
# connection is left at all.
loga=$(wc -l <"${EM_LOG[node-a]}")
it_node_apply node-a "$(it_node_obj node-b $IPB)"
nodes=$(timeout 10 "$MESHCTL" -s "$IT_TMP/node-a.sock" get nodes 2>&1 | grep node-b | tr -s ' ')
it_log "A's Node node-b without the annotation: $nodes"
moved() { new_lines "${EM_LOG[node-a]}" "$loga" | grep -qF "node node-b moved from $IPB:$ALT_PORT to $IPB:20006"; }
it_wait 3 moved
it_check "annotation removed: A drains the tunnel to port $ALT_PORT at once ('$(new_lines "${EM_LOG[node-a]}" "$loga" | grep -F moved | head -n 1 | cut -c1-150)')" moved
if echo_at "$ECHO4"; then kept=yes; else kept=no; fi
it_check "annotation removed: a new connection no longer uses the old tunnel (answered: $kept)" [ "$kept" = no ]
it_node_stop node-b
it_node_start node-b "$NSB"
# No connection to the old port is left on A's side before the clients come
# (B's stop closed it; a TIME-WAIT holds no tunnel).
old_conn() { socks "$NSA" | grep -v '^TIME-WAIT' | grep -qF " $IPB:$ALT_PORT"; }
it_wait 5 eval '! old_conn' || it_fail "A still holds a connection to $IPB:$ALT_PORT: $(socks "$NSA" | tr '\n' ';')"
if fail_fast_n 5 10.96.0.7 7; then
	it_ok "no annotation: 5 clients of A fail fast (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
else
	it_fail "no annotation: $FAIL_BAD of 5 clients of A slow or answered (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
fi
line=$(new_lines "${EM_LOG[node-a]}" "$loga" | grep -F "tunnel to node-b ($IPB:20006)" | head -n 1)
it_check "no annotation: A's log names the tunnel to the default port ('$(cut -c1-150 <<<"$line")')" [ -n "$line" ]
alt_up_again() { new_lines "${EM_LOG[node-a]}" "$loga" | grep -qF "tunnel to node-b ($IPB:$ALT_PORT) up"; }
it_check "no annotation: A did not bring a tunnel to port $ALT_PORT up again" eval '! alt_up_again'

it_node_apply node-a "$(it_node_obj node-b $IPB $ALT_PORT)"
t0=$(date +%s%N)
if it_wait 5 echo_at "$ECHO4"; then
	it_ok "annotation back: traffic recovers after $((($(date +%s%N) - t0) / 1000000)) ms"
else
	it_fail "annotation back: no echo within 5 s; A: $(grep tunnel "${EM_LOG[node-a]}" | tail -n 3)"
fi

# ---- 3. a node B does not know -----------------------------------------------
# A third edgemesh in A's namespace named "stranger", with the right key, an
# explicit listener instead of capture and no tunnel listener of its own.
em_conf stranger stranger "" '{"enabled": false}' \
	'[{"listen": "127.0.0.1:9007", "service": "default/echo", "port": 7}]'
it_node_start stranger "$NSA"
it_node_apply stranger "$(it_list "$(it_node_obj node-b $IPB $ALT_PORT)" "$svc4" "$ep4")"
logb=$(wc -l <"${EM_LOG[node-b]}")
loga=$(wc -l <"${EM_LOG[node-a]}")
# (meshctl apply returns once the stranger's table is live; it dials B only
# when its first client comes.)
if fail_fast_n 3 127.0.0.1 9007; then
	it_ok "unknown node: the stranger's clients fail fast (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
else
	it_fail "unknown node: $FAIL_BAD of 3 stranger clients slow or answered (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
fi
refused() {
	new_lines "${EM_LOG[node-b]}" "$logb" | grep -E "tunnel from stranger \($IPA:[0-9]+\).*(unknown_node|unknown node)" | head -n 1
}
it_wait 3 eval '[ -n "$(refused)" ]'
line=$(refused)
it_check "unknown node: B refused the tunnel and logged the name and the reason ('$(cut -c1-150 <<<"$line")')" \
	[ -n "$line" ]
it_check "unknown node: B never brought a tunnel from the stranger up" \
	eval "! grep -q 'tunnel from stranger.* up' '${EM_LOG[node-b]}'"
it_check "unknown node: the stranger logged the refusal" \
	grep -qE "tunnel to node-b .*(unknown_node|unknown node)" "${EM_LOG[stranger]}"
a_closed=$(new_lines "${EM_LOG[node-a]}" "$loga" | grep -F "tunnel to node-b" | head -n 1)
it_check "unknown node: A's own tunnel stayed up${a_closed:+ ($a_closed)} and carries traffic" \
	eval '[ -z "$a_closed" ] && echo_at "$ECHO4"'
it_node_stop stranger

# ---- 4. manifests that disagree ----------------------------------------------
# default/split 10.96.0.9:7 has one endpoint, 127.0.0.31:7009, where a backend
# listens in B's namespace. First both tables place it on node-b (the stream
# is served: A's route goes through B); then B's places it on node-a while
# A's still says node-b: B has no local endpoint for A's streams any more and
# must refuse them.
split_on() { it_list "$(it_svc default split 10.96.0.9 7 7009)" "$(it_ep_obj default split 7009 127.0.0.31@"$1")"; }
served_l0() { it_served "$split_pid" | sed -nE 's/.*l0=([0-9]+).*/\1/p'; }
generation() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" stats | tr -d '\t ,' | sed -n 's/^"generation":\([0-9]*\)$/\1/p'; }
it_node_apply node-a "$(split_on node-b)"
it_node_apply node-b "$(split_on node-b)"
if it_wait 5 echo_at TCP:10.96.0.9:7; then
	it_ok "manifests agree: echo through 10.96.0.9:7 served by B's endpoint 127.0.0.31:7009"
else
	it_fail "manifests agree: no echo through 10.96.0.9:7 within 5 s"
fi
n0=$(served_l0)
gen0=$(generation node-b)
it_node_apply node-b "$(split_on node-a)"
newer() { [ "$(generation node-b)" -gt "$gen0" ]; }
it_wait 3 newer || it_fail "B's table generation did not move past $gen0 after the apply"
loga=$(wc -l <"${EM_LOG[node-a]}")
logb=$(wc -l <"${EM_LOG[node-b]}")
if fail_fast_n 3 10.96.0.9 7; then
	it_ok "disagreeing manifests: A's clients fail fast (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
else
	it_fail "disagreeing manifests: $FAIL_BAD of 3 clients slow or answered (worst $FAIL_WORST ms, saw $FAIL_SEEN)"
fi
it_check "disagreeing manifests: every client saw a reset ($FAIL_SEEN)" [ "$FAIL_SEEN" = reset,reset,reset ]
n1=$(served_l0)
it_check "disagreeing manifests: B's backend 127.0.0.31:7009 got no new connection ($n0 -> $n1)" \
	[ -n "$n1" -a "$n1" = "$n0" ]
it_check "disagreeing manifests: A's tunnel to B stays up (echo still works)" echo_at "$ECHO4"
# The refusal is an RST with REFUSED, "not a local endpoint of that service
# here" (engine/tunnel.c, serve_open); an operator needs to see it in a log.
logged() {
	{ new_lines "${EM_LOG[node-a]}" "$loga"; new_lines "${EM_LOG[node-b]}" "$logb"; } |
		grep -iE 'not a local endpoint|(stream|split).*refused|refused.*(stream|split)' | head -n 1
}
it_wait 2 eval '[ -n "$(logged)" ]'
line=$(logged)
if [ -n "$line" ]; then
	it_ok "disagreeing manifests: the refused stream is logged ('$(cut -c1-150 <<<"$line")')"
else
	it_fail "disagreeing manifests: the refused stream (RST REFUSED 'not a local endpoint of that service here') is logged neither on A nor on B; new lines: A: $(new_lines "${EM_LOG[node-a]}" "$loga" | tr '\n' ';' | cut -c1-300) B: $(new_lines "${EM_LOG[node-b]}" "$logb" | tr '\n' ';' | cut -c1-300)"
fi

it_check "A is still alive" kill -0 "$PIDA"

# ---- 5. two workers on each node ------------------------------------------------
# Each worker of A dials its own tunnel to B once it has a client for B; B
# accepts them on whichever of its workers SO_REUSEPORT picks.
for n in node-a node-b; do
	sed -i 's/"workers": 1,/"workers": 2,/' "$IT_TMP/$n.json"
	it_node_stop $n
done
it_node_start node-b "$NSB"
it_node_start node-a "$NSA"
it_wait 10 echo_at "$ECHO4" || it_fail "two workers: no echo through $ECHO4 within 10 s"
res=$(ina timeout 30 "$EMLOAD" -m pingpong -a "${ECHO4#TCP:}" -c 32 -d 1 -s 100 -t 1 2>&1 | tail -n 1)
it_check "two workers: 32 connections of ping-pong across the tunnels, no error ($res)" \
	eval '[[ $res =~ errors=0( |$) ]] && [[ $res =~ ops=[1-9] ]]'
ups=$(grep -c "tunnel to node-b .* up" "${EM_LOG[node-a]}")
workers=$(grep -o "worker [0-9]*: tunnel to node-b .* up" "${EM_LOG[node-a]}" | cut -d: -f1 | sort -u | wc -l)
it_check "two workers: each of A's workers dialed its own tunnel to B ($ups up, from $workers workers)" \
	[ "$workers" = 2 ]
it_done
