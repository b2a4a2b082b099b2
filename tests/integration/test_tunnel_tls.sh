#!/usr/bin/env bash
# Tunnels with tunnel.encryption "tls": a cloud and two edges in namespaces
# of their own behind a bridge, each with a node certificate of one cluster
# CA (meshctl ca init, meshctl cert issue):
#   - edge to edge (F2) and edge to cloud (F3) work, 1 MiB byte-exact;
#   - a capture of node-a's link during the traffic holds none of the
#     plaintext (and does hold the traffic);
#   - a peer with a certificate of another CA is refused in the TLS
#     handshake, a peer whose valid certificate names node-c but who says
#     it is node-b in HELLO is refused, each counted (tls_failures);
#   - a certificate of the cluster CA for node-b that expired yesterday,
#     and one valid only from tomorrow (made with openssl ca), are refused,
#     counted, and node-a's log says why;
#   - 400 connections that never finish a TLS handshake, from 8 addresses:
#     node-a holds at most 128 (each has a TLS pipe), refuses the rest at
#     once, grows by less than 24 MiB, and keeps serving;
#   - config: "tls" without a certificate is an error naming the key; a
#     certificate of another node stops the start with the file named.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_tunnel_tls: needs root (network namespaces, veth)"
it_need_root
it_need socat python3

NSX=em-tx-$$ NSC=em-tc-$$ NSA=em-ta-$$ NSB=em-tb-$$
IPC=192.168.77.1 IPA=192.168.77.2 IPB=192.168.77.3
KEY=tls-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"

# Certificates: the cluster CA and one per node; another CA for a stranger.
"$MESHCTL" ca init "$IT_TMP/ca" >/dev/null || it_die "meshctl ca init"
for n in cloud node-a node-b node-c; do
	"$MESHCTL" cert issue $n --ca "$IT_TMP/ca" --out "$IT_TMP/certs" >/dev/null ||
		it_die "meshctl cert issue $n"
done
"$MESHCTL" ca init "$IT_TMP/evil-ca" >/dev/null && \
	"$MESHCTL" cert issue node-c --ca "$IT_TMP/evil-ca" --out "$IT_TMP/evil" >/dev/null ||
	it_die "the other CA"

it_bridge "$NSX" "$NSC:$IPC" "$NSA:$IPA" "$NSB:$IPB"

tls() { # NAME
	echo "\"encryption\": \"tls\", \"tls\": {\"ca_file\": \"$IT_TMP/ca/ca.crt\",
  \"cert_file\": \"$IT_TMP/certs/$1.crt\", \"key_file\": \"$IT_TMP/certs/$1.key\"}"
}
cat >"$IT_TMP/cloud.json" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"listen": "$IPC:20006", "cluster_key": "$KEY", $(tls cloud)},
 "router": {"listen": ""}, "admin": {"listen": ""},
 "controller": {"manifests_dir": "$MDIR"}}
EOF
edge_conf() { # NAME LISTEN
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$1", "data_dir": "$IT_TMP/data-$1",
 "api_socket": "$IT_TMP/$1.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": true, "port": 15001},
 "admin": {"listen": ""},
 "tunnel": {"listen": "$2", "cluster_key": "$KEY", "reconnect_min_ms": 100,
  "reconnect_max_ms": 1000, $(tls $1)},
 "cloud": {"address": "$IPC:20006"}}
EOF
}
edge_conf node-a "$IPA:20006"
edge_conf node-b "$IPB:20006"
printf '%s\n' "$(it_list "$(it_svc default becho 10.96.0.42 7 7042)" \
	"$(it_ep_obj default becho 7042 $IPB@node-b)" \
	"$(it_svc default cecho 10.96.0.40 7 7040)" \
	"$(it_ep_obj default cecho 7040 $IPC@cloud)" \
	"$(it_node_obj node-a $IPA 20006)" "$(it_node_obj node-b $IPB 20006)")" >"$MDIR/m.json"
IT_NS=$NSB
it_backend becho echo $IPB:7042
IT_NS=$NSC
it_backend cecho echo $IPC:7040

it_node_start cloud "$NSC"
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
it_check "the nodes say their tunnels run TLS" \
	grep -q "tunnels run TLS 1.3 with the certificate of node-a" "${EM_LOG[node-a]}"
ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
synced() { ctl node-a get svc becho >/dev/null && ctl node-a get svc cecho >/dev/null; }
it_wait 15 synced || it_die "node-a did not learn the services from the cloud over TLS: $(tail -n 5 "${EM_LOG[node-a]}")"
it_ok "node-a learned the cloud's objects over its TLS tunnel"

echo_via() { # NS ADDR TEXT
	[ "$(printf '%s\n' "$3" | timeout 5 ip netns exec "$1" socat -t 3 - "TCP:$2" 2>/dev/null)" = "$3" ]
}
it_check "F2 over TLS: node-a reaches node-b's backend" it_wait 10 echo_via "$NSA" 10.96.0.42:7 "edge to edge"
it_check "F3 over TLS: node-a reaches the cloud's backend" it_wait 10 echo_via "$NSA" 10.96.0.40:7 "edge to cloud"
head -c 1048576 /dev/urandom >"$IT_TMP/blob"
exact() { # ADDR
	ip netns exec "$NSA" socat -t 5 -T 20 - "TCP:$1" <"$IT_TMP/blob" >"$IT_TMP/blob.back" 2>/dev/null
	cmp -s "$IT_TMP/blob" "$IT_TMP/blob.back"
}
it_check "1 MiB edge to edge over TLS comes back byte-exact" exact 10.96.0.42:7
it_check "1 MiB edge to cloud over TLS comes back byte-exact" exact 10.96.0.40:7

# A capture of node-a's link while a marker goes both ways 200 times.
ip netns exec "$NSA" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0)); s.settimeout(0.2)
print("ready", flush=True)
got = bytearray(); end = time.time() + 8
while time.time() < end:
    try:
        got += s.recv(65536)
    except socket.timeout:
        pass
open(sys.argv[2], "wb").write(got)
print("captured", len(got), flush=True)' "${IT_BRIDGE_IF[$NSA]}" "$IT_TMP/cap.bin" >"$IT_TMP/cap.out" 2>&1 &
cap=$!
it_wait 5 grep -q ready "$IT_TMP/cap.out" || it_die "the capture did not start"
MARK=plaintext-marker-$$-xyzzy
for k in $(seq 100); do
	echo_via "$NSA" 10.96.0.42:7 "$MARK-$k" >/dev/null
	echo_via "$NSA" 10.96.0.40:7 "$MARK-$k" >/dev/null
done
wait "$cap"
it_log "$(cat "$IT_TMP/cap.out" | tail -n 1)"
capn=$(awk '/^captured/ {print $2}' "$IT_TMP/cap.out")
it_check "the capture holds the traffic ($capn bytes)" test "${capn:-0}" -gt 20000
it_check "... and none of its plaintext" sh -c "! grep -qa '$MARK' '$IT_TMP/cap.bin'"

# Strangers at node-a's tunnel port.
fails() { ctl node-a stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnel"]["tls_failures"])'; }
f0=$(fails)
peer() { # NAME CADIR CERTDIR CERTNAME
	ip netns exec "$NSB" python3 "$IT_ROOT/tests/integration/starve_peer.py" tlspeer \
		"$IPA" 20006 "$KEY" "$1" "$IT_TMP/$2/ca.crt" "$IT_TMP/$3/$4.crt" "$IT_TMP/$3/$4.key" node-a 2>&1 | tail -n 1
}
got=$(peer node-c evil-ca evil node-c)
it_check "a certificate of another CA is refused ($got)" sh -c "case '$got' in tls_refused*|refused*) true ;; *) false ;; esac"
got=$(peer node-b ca certs node-c)
it_check "node-c's certificate saying it is node-b is refused ($got)" sh -c "case '$got' in tls_refused*|refused*) true ;; *) false ;; esac"
got=$(peer node-c ca certs node-c)
it_log "node-c, a node of the CA that is no Node of the table, as itself: $got"
f1=$(fails)
it_check "node-a counts the two TLS refusals ($f0 -> $f1)" test $((f1 - f0)) -ge 2
it_check "node-a says why it refused node-c" \
	grep -q "node-b" "${EM_LOG[node-a]}"
it_check "F2 still works after the strangers" echo_via "$NSA" 10.96.0.42:7 "still here"

# Certificates of the cluster CA for node-b outside their validity: made
# with the openssl CLI (meshctl issues only valid ones), with the same
# extensions as meshctl's and node-b's own key.
dated() { # NAME STARTDATE ENDDATE (YYYYMMDDHHMMSSZ)
	local d=$IT_TMP/dated-$1
	mkdir -p "$d"
	: >"$d/index.txt"
	echo 1000 >"$d/serial"
	cat >"$d/ca.cnf" <<EOF
[ca]
default_ca = dated
[dated]
database = $d/index.txt
serial = $d/serial
new_certs_dir = $d
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
[node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:node-b
EOF
	openssl req -new -key "$IT_TMP/certs/node-b.key" -subj /CN=node-b -out "$d/node-b.csr" 2>/dev/null &&
		openssl ca -batch -notext -config "$d/ca.cnf" -extensions node \
			-cert "$IT_TMP/ca/ca.crt" -keyfile "$IT_TMP/ca/ca.key" \
			-startdate "$2" -enddate "$3" -in "$d/node-b.csr" -out "$d/node-b.crt" >"$d/ca.log" 2>&1 &&
		cp "$IT_TMP/certs/node-b.key" "$d/node-b.key" && cp "$IT_TMP/ca/ca.crt" "$d/ca.crt"
}
day() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
dated expired "$(day '-30 days')" "$(day '-1 day')" ||
	it_die "openssl ca (expired): $(tail -n 2 "$IT_TMP/dated-expired/ca.log")"
dated future "$(day '+1 day')" "$(day '+30 days')" ||
	it_die "openssl ca (not yet valid): $(tail -n 2 "$IT_TMP/dated-future/ca.log")"
it_check "the expired certificate is signed by the cluster CA and past notAfter" sh -c \
	"openssl verify -no_check_time -CAfile '$IT_TMP/ca/ca.crt' '$IT_TMP/dated-expired/node-b.crt' &&
	 ! openssl x509 -checkend 0 -noout -in '$IT_TMP/dated-expired/node-b.crt'"
# A refused handshake is counted at the worker's next tick, and logged at
# most once a second per worker: each check polls, and a log line held back
# by the rate limit is asked for again by one more refused handshake.
# refused_more BEFORE: tls_failures went past BEFORE.
refused_more() { [ $(($(fails) - $1)) -ge 1 ]; }
# logged_refusal NAME DIR TEXT: node-a's log has TEXT, else one more try.
logged_refusal() {
	grep -q "$3" "${EM_LOG[node-a]}" && return 0
	peer "$1" "$2" "$2" "$1" >/dev/null
	return 1
}
fe0=$(fails)
got=$(peer node-b dated-expired dated-expired node-b)
it_check "an expired certificate of the cluster CA is refused ($got)" \
	sh -c "case '$got' in tls_refused*|refused*) true ;; *) false ;; esac"
it_wait 5 refused_more "$fe0"
it_check "... counted in tls_failures ($fe0 -> $(fails))" refused_more "$fe0"
it_wait 10 logged_refusal node-b dated-expired "certificate has expired"
it_check "... and node-a's log says the certificate has expired" \
	grep -q "certificate has expired" "${EM_LOG[node-a]}"
fe1=$(fails)
got=$(peer node-b dated-future dated-future node-b)
it_check "a certificate of the cluster CA not valid yet is refused ($got)" \
	sh -c "case '$got' in tls_refused*|refused*) true ;; *) false ;; esac"
it_wait 5 refused_more "$fe1"
it_check "... counted in tls_failures ($fe1 -> $(fails))" refused_more "$fe1"
it_wait 10 logged_refusal node-b dated-future "certificate is not yet valid"
it_check "... and node-a's log says the certificate is not yet valid" \
	grep -q "certificate is not yet valid" "${EM_LOG[node-a]}"
it_check "F2 still works after the dated certificates" echo_via "$NSA" 10.96.0.42:7 "still here"

# Strangers that never finish a TLS handshake.
pending() { ctl node-a stats | python3 -c 'import json,sys; t=json.load(sys.stdin)["tunnel"]; print(t["handshakes_pending"], t["handshakes_refused"])'; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/${EM_PID[node-a]}/status"; }
r0=$(rss)
ref0=$(pending | cut -d' ' -f2)
ulimit -n 4096 2>/dev/null
it_bg tlsflood ip netns exec "$NSA" python3 "$IT_ROOT/tests/integration/tunnel_flood.py" \
	"$IPA" 20006 400 127.0.1 50 </dev/null
opened() { grep -q '^open ' "$IT_TMP/tlsflood.out"; }
it_wait 30 opened || it_fail "the flood did not open its connections: $(cat "$IT_TMP/tlsflood.err")"
capped() { set -- $(pending); [ "${1:-999}" -le 128 ] && [ $((${2:-0} - ref0)) -ge 272 ]; }
it_check "400 silent TLS connections: at most 128 held, the rest refused at once ($(pending))" \
	it_wait 10 capped
r1=$(rss)
it_check "... node-a grew by less than 24 MiB ($r0 -> $r1 KiB)" test $((r1 - r0)) -lt $((24 << 10))
it_check "... and still serves edge to edge" echo_via "$NSA" 10.96.0.42:7 "during the flood"
it_stop "$IT_LAST_PID" TERM 5
it_forget_pid "$IT_LAST_PID"

# Config errors.
sed 's/"cert_file": "[^"]*",//' "$IT_TMP/node-b.json" >"$IT_TMP/bad1.json"
out=$("$EDGEMESH" -t -c "$IT_TMP/bad1.json" 2>&1)
it_check "tls without a certificate: an error naming tunnel.tls.cert_file" \
	sh -c "printf '%s' \"\$1\" | grep -q 'tunnel.tls.cert_file'" _ "$out"
sed "s|certs/node-b.crt|certs/node-c.crt|; s|certs/node-b.key|certs/node-c.key|; s|$IPB:20006|$IPB:20007|; s|node-b.sock|bad2.sock|; s|data-node-b|data-bad2|" \
	"$IT_TMP/node-b.json" >"$IT_TMP/bad2.json"
sed -i 's/"port": 15001/"port": 15002/' "$IT_TMP/bad2.json"
if ip netns exec "$NSB" timeout 10 "$EDGEMESH" -c "$IT_TMP/bad2.json" >"$IT_TMP/bad2.log" 2>&1; then
	it_fail "a daemon started with another node's certificate"
else
	it_check "another node's certificate stops the start, naming the file ($(grep -m1 'tunnel.tls' "$IT_TMP/bad2.log" | cut -c1-160))" \
		grep -q "node-c.crt" "$IT_TMP/bad2.log"
fi

for n in node-a node-b cloud; do
	it_node_stop $n
	it_check "$n stopped cleanly" sh -c "! grep -q 'Sanitizer' '${EM_LOG[$n]}'"
done
it_done
