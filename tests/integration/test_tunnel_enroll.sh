#!/usr/bin/env bash
# Certificates without hand work (tunnel.encryption "tls", no certificate
# files set): a cloud with a CA (tunnel.tls.ca_dir) and two edges that have
# only the cloud's address and the cluster key, each in a namespace behind
# a bridge.
#   - the cloud issues its own certificate; each edge enrolls over the
#     cluster key, stores its key and certificate (mode 0600) under
#     data_dir, and then talks TLS: F2 byte-exact, objects synced;
#   - a second process claiming an enrolled node's name with the cluster
#     key is refused (one enrollment per node), and its unencrypted tunnel
#     carries nothing but the certificate request;
#   - rotation: node-a's certificate replaced and SIGHUP: a 30-second
#     stream through node-a stays alive and byte-exact, and a new tunnel
#     runs on the new certificate;
#   - revocation: `meshctl cert revoke node-b` on the cloud closes node-a's
#     live tunnel to node-b, new handshakes of node-b's certificate are
#     refused; node-b without its old files enrolls again and F2 is back;
#   - renewal: node-a restarted with a certificate two thirds through its
#     lifetime (made with `openssl ca`, backdated) asks the cloud over TLS
#     for a new one, installs it, and F2 keeps working.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || it_skip "test_tunnel_enroll: needs root (network namespaces, veth)"
it_need_root
it_need socat python3

NSX=em-ex-$$ NSC=em-ec-$$ NSA=em-ea-$$ NSB=em-eb-$$ NSI=em-ei-$$
IPC=192.168.78.1 IPA=192.168.78.2 IPB=192.168.78.3 IPI=192.168.78.4
KEY=enroll-test-key-$$-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")
MDIR=$IT_TMP/manifests
mkdir -p "$MDIR"
"$MESHCTL" ca init "$IT_TMP/ca" >/dev/null || it_die "meshctl ca init"

it_bridge "$NSX" "$NSC:$IPC" "$NSA:$IPA" "$NSB:$IPB" "$NSI:$IPI"

cat >"$IT_TMP/cloud.json" <<EOF
{"role": "cloud", "node_name": "cloud", "data_dir": "$IT_TMP/data-cloud",
 "api_socket": "$IT_TMP/cloud.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": false},
 "tunnel": {"listen": "$IPC:20006", "cluster_key": "$KEY", "encryption": "tls",
  "tls": {"ca_dir": "$IT_TMP/ca", "cert_days": 30}},
 "router": {"listen": ""}, "admin": {"listen": ""},
 "controller": {"manifests_dir": "$MDIR"}}
EOF
edge_conf() { # FILE NAME LISTEN DATA CAPTURE
	cat >"$IT_TMP/$1.json" <<EOF
{"role": "edge", "node_name": "$2", "data_dir": "$4",
 "api_socket": "$IT_TMP/$1.sock", "workers": 1,
 "fastpath": {"mode": "off"}, "capture": {"enabled": $5, "port": 15001},
 "admin": {"listen": ""},
 "tunnel": {"listen": "$3", "cluster_key": "$KEY", "reconnect_min_ms": 100,
  "reconnect_max_ms": 1000, "encryption": "tls"},
 "cloud": {"address": "$IPC:20006"}}
EOF
}
edge_conf node-a node-a "$IPA:20006" "$IT_TMP/data-node-a" true
edge_conf node-b node-b "$IPB:20006" "$IT_TMP/data-node-b" true
edge_conf impostor node-a "" "$IT_TMP/data-impostor" false
printf '%s\n' "$(it_list "$(it_svc default becho 10.96.0.42 7 7042)" \
	"$(it_ep_obj default becho 7042 $IPB@node-b)" \
	"$(it_node_obj node-a $IPA 20006)" "$(it_node_obj node-b $IPB 20006)")" >"$MDIR/m.json"
IT_NS=$NSB
it_backend becho echo $IPB:7042

ctl() { timeout 10 "$MESHCTL" -s "$IT_TMP/$1.sock" "${@:2}" 2>/dev/null; }
stat_of() { # NODE GROUP KEY
	ctl "$1" stats | python3 -c "import json,sys; print(json.load(sys.stdin)['$2']['$3'])" 2>/dev/null
}

it_node_start cloud "$NSC"
it_check "the cloud issued its own certificate from its CA" \
	grep -q "issued this node's tunnel certificate" "${EM_LOG[cloud]}"
it_check "... kept mode 0600 under data_dir" \
	test "$(stat -c %a "$IT_TMP/data-cloud/tls/node.pem" 2>/dev/null)" = 600
it_node_start node-a "$NSA"
it_node_start node-b "$NSB"
installed() { grep -q "installed the tunnel certificate from the cloud" "${EM_LOG[$1]}"; }
it_wait 15 installed node-a || it_die "node-a did not enroll: $(tail -n 8 "${EM_LOG[node-a]}")"
it_wait 15 installed node-b || it_die "node-b did not enroll: $(tail -n 8 "${EM_LOG[node-b]}")"
it_ok "both edges enrolled with the cluster key only"
for n in node-a node-b; do
	it_check "$n keeps its key and certificate mode 0600" \
		test "$(stat -c %a "$IT_TMP/data-$n/tls/node.pem" 2>/dev/null)" = 600
	it_check "$n has the cluster CA" \
		cmp -s "$IT_TMP/data-$n/tls/ca.crt" "$IT_TMP/ca/ca.crt"
done
signed=$(stat_of cloud control certificates_signed)
it_check "the cloud counts two signed certificates ($signed)" test "${signed:-0}" = 2
synced() { ctl node-a get svc becho >/dev/null; }
it_wait 15 synced || it_die "node-a did not sync over TLS: $(tail -n 5 "${EM_LOG[node-a]}")"
it_ok "node-a synced the cloud's objects after enrolling"

echo_via() { # NS ADDR TEXT
	[ "$(printf '%s\n' "$3" | timeout 5 ip netns exec "$1" socat -t 3 - "TCP:$2" 2>/dev/null)" = "$3" ]
}
it_check "F2 over TLS after enrollment" it_wait 15 echo_via "$NSA" 10.96.0.42:7 "enrolled"
head -c 1048576 /dev/urandom >"$IT_TMP/blob"
exact() {
	ip netns exec "$NSA" socat -t 5 -T 20 - "TCP:10.96.0.42:7" <"$IT_TMP/blob" >"$IT_TMP/blob.back" 2>/dev/null
	cmp -s "$IT_TMP/blob" "$IT_TMP/blob.back"
}
it_check "1 MiB node-a to node-b byte-exact" exact
it_check "node-a's tunnels run TLS" grep -q "certificate installed: the unencrypted tunnel" "${EM_LOG[node-a]}"

# ---- a second node-a with the cluster key ------------------------------------
it_node_start impostor "$NSI"
refused() { grep -q "was issued a certificate already" "${EM_LOG[impostor]}"; }
it_check "a second enrollment of node-a is refused" it_wait 10 refused
it_check "... and the cloud logs it" grep -q "enrollment of node-a .* refused" "${EM_LOG[cloud]}"
it_check "... the impostor has no certificate" test ! -e "$IT_TMP/data-impostor/tls/node.pem"
it_node_stop impostor
# The unencrypted tunnel carries the certificate request only: an
# authenticated plaintext peer's streams are all reset.
got=$(ip netns exec "$NSI" timeout 30 python3 "$IT_ROOT/tests/integration/starve_peer.py" names \
	"$IPC" 20006 "$KEY" "${EM_PID[cloud]}" 20 2>&1 | tail -n 1)
it_check "streams on an unencrypted tunnel are refused ($got)" \
	sh -c "case '$got' in 'names resets=20 '*) true ;; *) false ;; esac"
it_check "... as not encrypted" grep -q "tunnel not encrypted" "${EM_LOG[cloud]}"

# ---- rotation: new certificate files and SIGHUP during a 30-second stream ----
t0=$(date +%s)
ip netns exec "$NSA" python3 - 10.96.0.42 7 30 >"$IT_TMP/long.out" 2>&1 <<'PYEOF' &
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
sent = got = 0
h_sent, h_got = bytearray(), bytearray()
print("started", flush=True)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    chunk = os.urandom(2000)
    s.sendall(chunk)
    h_sent += chunk
    while len(h_got) < len(h_sent):
        h_got += s.recv(65536)
    time.sleep(0.05)
print("ok" if h_got == h_sent else "mismatch", len(h_sent), flush=True)
PYEOF
long=$!
it_wait 20 grep -q started "$IT_TMP/long.out" || it_die "the long stream did not start"
old_serial=$(openssl x509 -noout -serial -in "$IT_TMP/data-node-a/tls/node.pem" | cut -d= -f2)
"$MESHCTL" cert issue node-a --ca "$IT_TMP/ca" --out "$IT_TMP/rot" --days 30 >/dev/null || it_die "cert issue"
cat "$IT_TMP/rot/node-a.crt" "$IT_TMP/rot/node-a.key" >"$IT_TMP/rot/node.pem"
install -m 0600 "$IT_TMP/rot/node.pem" "$IT_TMP/data-node-a/tls/node.pem"
kill -HUP "${EM_PID[node-a]}"
it_check "node-a reloaded its certificate on SIGHUP" \
	it_wait 10 grep -q "tunnel certificate reloaded" "${EM_LOG[node-a]}"
wait "$long"
it_check "the 30-second stream lived through the rotation, byte-exact ($(tail -n 1 "$IT_TMP/long.out"))" \
	grep -q "^ok" "$IT_TMP/long.out"
it_check "... and took its 30 seconds ($(($(date +%s) - t0)) s)" test $(($(date +%s) - t0)) -ge 28
# A new tunnel: node-b restarts, node-a dials it again with the new certificate.
it_node_stop node-b
it_node_start node-b "$NSB"
it_check "F2 on a new tunnel after the rotation" it_wait 15 echo_via "$NSA" 10.96.0.42:7 "rotated"
new_serial=$(openssl x509 -noout -serial -in "$IT_TMP/rot/node-a.crt" | cut -d= -f2)
it_check "node-a's certificate changed ($old_serial -> $new_serial)" test "$old_serial" != "$new_serial"

# ---- revocation ----------------------------------------------------------------
# node-a's live tunnel to node-b ends: closed by node-a once the revocation
# reaches it ("its certificate it was revoked"), or first by node-b, whose
# own tunnels go when the cloud drops it; which one wins is a race.
n_closed() { grep -cE "tunnel (to|from) node-b .*closed: " "${EM_LOG[node-a]}"; }
c0=$(n_closed)
ctl cloud cert revoke node-b >/dev/null || it_die "meshctl cert revoke failed"
closed() { [ "$(n_closed)" -gt "$c0" ]; }
it_check "node-a's live tunnel to node-b ends after the revocation" it_wait 10 closed
it_check "the cloud counts the revocation" test "$(stat_of cloud control revocations)" = 1
it_check "node-a learned it from the cloud" it_wait 10 sh -c "[ \"\$(timeout 10 '$MESHCTL' -s '$IT_TMP/node-a.sock' stats | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"control\"][\"revocations\"])')\" = 1 ]"
nope() { ! echo_via "$NSA" 10.96.0.42:7 "revoked"; }
it_check "F2 to node-b fails while its certificate is revoked" nope
it_check "... refused in the handshake" it_wait 10 grep -q "revoked (meshctl cert revoke)" "${EM_LOG[node-a]}"
it_node_stop node-b
rm -f "$IT_TMP/data-node-b/tls/node.pem"
it_node_start node-b "$NSB"
it_check "node-b enrolls again after the revocation" it_wait 15 installed node-b
it_check "F2 is back with node-b's new certificate" it_wait 20 echo_via "$NSA" 10.96.0.42:7 "re-enrolled"

# ---- renewal -----------------------------------------------------------------
mkdir -p "$IT_TMP/oca/new"
: >"$IT_TMP/oca/index.txt"
cat >"$IT_TMP/oca/ca.cnf" <<EOF
[ca]
default_ca = c
[c]
dir = $IT_TMP/oca
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $IT_TMP/ca/ca.crt
private_key = $IT_TMP/ca/ca.key
default_md = sha256
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
[ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
EOF
echo 01 >"$IT_TMP/oca/serial"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node-a \
	-addext subjectAltName=DNS:node-a -keyout "$IT_TMP/oca/old.key" -out "$IT_TMP/oca/old.csr" 2>/dev/null ||
	it_die "openssl req"
openssl ca -batch -config "$IT_TMP/oca/ca.cnf" -extensions ext -notext \
	-startdate "$(date -u -d '-20 days' +%Y%m%d%H%M%SZ)" -enddate "$(date -u -d '+10 days' +%Y%m%d%H%M%SZ)" \
	-in "$IT_TMP/oca/old.csr" -out "$IT_TMP/oca/old.crt" >/dev/null 2>"$IT_TMP/oca/err" ||
	it_die "openssl ca: $(cat "$IT_TMP/oca/err")"
it_node_stop node-a
cat "$IT_TMP/oca/old.crt" "$IT_TMP/oca/old.key" >"$IT_TMP/data-node-a/tls/node.pem"
chmod 600 "$IT_TMP/data-node-a/tls/node.pem"
it_node_start node-a "$NSA"
it_check "node-a starts on its old certificate" grep -q "tunnels run TLS 1.3 with the certificate of node-a" "${EM_LOG[node-a]}"
it_check "node-a asks for a renewal" it_wait 15 grep -q "asked the cloud for a certificate (renewal)" "${EM_LOG[node-a]}"
it_check "the cloud signs it over the TLS tunnel" it_wait 10 grep -q "signed a certificate for node-a (renewal over its TLS tunnel)" "${EM_LOG[cloud]}"
it_check "node-a installs the renewed certificate" it_wait 10 installed node-a
nb_old=$(date -d "$(openssl x509 -noout -startdate -in "$IT_TMP/oca/old.crt" | cut -d= -f2)" +%s)
nb_new=$(date -d "$(openssl x509 -noout -startdate -in "$IT_TMP/data-node-a/tls/node.pem" | cut -d= -f2)" +%s)
it_check "... issued now, not 20 days ago ($nb_old -> $nb_new)" test $((nb_new - nb_old)) -gt $((19 * 86400))
it_check "F2 works after the renewal" it_wait 15 echo_via "$NSA" 10.96.0.42:7 "renewed"

for n in node-a node-b cloud; do
	it_node_stop $n
	it_check "$n stopped cleanly" sh -c "! grep -q 'Sanitizer\|runtime error' ${EM_LOG[$n]}"
done
it_done
