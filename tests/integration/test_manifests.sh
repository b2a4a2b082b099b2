#!/usr/bin/env bash
# The cloud role's manifests directory (controller.manifests_dir) through the
# real daemon: files read at start (JSON and YAML), a file added, edited (an
# object dropped from it is deleted), moved in over an old version, made
# invalid (logged with file and line, nothing changes), removed (its
# objects go), changes made while the daemon was down caught up at the next
# start, the controller's counters, and the key refused on an edge. No root.
. "$(dirname "$0")/lib.sh"

MD=$IT_TMP/manifests
mkdir -p "$MD"
cloud_conf() {
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
	"controller": {"manifests_dir": "$MD"}
}
EOF
}

names() { ctl get "$1" -A 2>/dev/null | awk 'NR > 1 {print $1 "/" $2}' | sort | tr '\n' ' '; }
has() { grep -qw -- "$2" <<<"$(names "$1")"; }
lacks() { ! has "$@"; }

# -- start: a YAML file with two documents and a JSON List are both read
cat >"$MD/web.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: 10.96.0.80
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: default}
subsets:
- addresses: [{ip: 10.0.0.11, nodeName: edge-1}]
  ports: [{name: http, port: 8080, protocol: TCP}]
EOF
it_list "$(it_svc shop cart 10.96.0.81 80 8081)" >"$MD/shop.json"
cloud_conf
it_em_start
it_check "start: the YAML file's Service is served (services: $(names services))" has services default/web
it_check "start: its Endpoints too (endpoints: $(names endpoints))" has endpoints default/web
it_check "start: the JSON List's Service too" has services shop/cart
it_check "start: the log counts 2 files" grep -q 'watching .*: 2 manifest file(s), 3 object(s)' "$IT_EM_LOG"

# -- a new file is applied
it_svc default api 10.96.0.82 80 8082 >"$MD/api.json"
if it_wait 5 has services default/api; then
	it_ok "a new file's Service appears"
else
	it_fail "a new file's Service did not appear ($(names services))"
fi

# -- a file written again as it was changes nothing: a file written after it
# is the only new change in the log (inotify reports them in order)
before=$(it_stat changelog_entries)
cp "$MD/api.json" "$IT_TMP/api.copy" && cat "$IT_TMP/api.copy" >"$MD/api.json"
it_svc default mark 10.96.0.89 80 8089 >"$MD/mark.json"
it_wait 5 has services default/mark || it_fail "mark.json was not applied"
after=$(it_stat changelog_entries)
it_check "rewriting a file unchanged logs no change ($before -> $after entries)" \
	[ "$after" = $((before + 1)) ]
rm -f "$MD/mark.json"
it_wait 5 lacks services default/mark || it_fail "mark.json's Service stayed"

# -- an edit that drops an object deletes it, and keeps the others
sed -i '/^---$/,$d' "$MD/web.yaml"
if it_wait 5 lacks endpoints default/web; then
	it_ok "an object dropped from its file is deleted"
else
	it_fail "the dropped Endpoints stayed ($(names endpoints))"
fi
it_check "the file's other object stays" has services default/web

# -- an invalid file changes nothing and is logged with file and line
lines=$(wc -l <"$IT_EM_LOG")
printf 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n' >>"$MD/web.yaml"
logged() { tail -n +"$((lines + 1))" "$IT_EM_LOG" | grep -q "web.yaml:[0-9]*: .*nothing changed"; }
if it_wait 5 logged; then
	it_ok "an invalid file is logged with its file and line: $(tail -n +"$((lines + 1))" "$IT_EM_LOG" | grep -m1 'web.yaml:' | cut -c1-160)"
else
	it_fail "no log line for the invalid file"
fi
it_check "the invalid file's objects stay" has services default/web

# -- moved in over the old version (as editors save): applied as a diff
it_svc default web2 10.96.0.83 80 8083 >"$IT_TMP/web.json.new"
rm -f "$MD/web.yaml"
mv "$IT_TMP/web.json.new" "$MD/web.json"
if it_wait 5 has services default/web2 && it_wait 5 lacks services default/web; then
	it_ok "removing web.yaml deleted its Service; web.json moved in was applied"
else
	it_fail "after the swap: $(names services)"
fi

# -- a removed file deletes its objects; other files' objects stay
rm -f "$MD/shop.json"
if it_wait 5 lacks services shop/cart; then
	it_ok "a removed file's objects are deleted"
else
	it_fail "shop/cart stayed after its file was removed"
fi
it_check "the other files' objects stay (services: $(names services))" has services default/api
it_check "the daemon is still alive" it_em_alive
it_check "stats: the controller counts 2 files and 2 objects" \
	[ "$(it_stat manifest_files)" = 2 -a "$(it_stat manifest_objects)" = 2 ]
it_check "stats: the refused load is counted ($(it_stat manifest_load_failures))" \
	[ "$(it_stat manifest_load_failures)" -ge 1 ]
# Every change went to the change log edges will be sent from: 3 inserts at
# start, api's insert, mark's insert and delete, web.yaml's edit (an update
# and a delete), its removal (a delete), web.json's insert and shop.json's
# delete.
it_check "stats: the change log holds the 11 changes ($(it_stat changelog_entries))" \
	[ "$(it_stat changelog_entries)" = 11 ]
it_em_stop

# -- while stopped, a file is removed and another edited: the next start
# deletes what they no longer give (the state file remembers who gave what)
rm -f "$MD/api.json"
it_svc default web3 10.96.0.84 80 8084 >"$MD/web.json"
it_em_start
it_check "after a restart, the removed file's Service is gone ($(names services))" \
	lacks services default/api
it_check "after a restart, the Service dropped from the edited file is gone" lacks services default/web2
it_check "after a restart, the edited file's new Service is there" has services default/web3
it_em_stop

# -- the key belongs to the cloud role
sed -i 's/"role": "cloud"/"role": "edge"/' "$IT_CONF"
out=$("$EDGEMESH" -c "$IT_CONF" -t 2>&1)
it_check "an edge with controller.manifests_dir is refused by -t ($out)" \
	grep -q 'controller.manifests_dir: expected "" on an edge' <<<"$out"

it_done
