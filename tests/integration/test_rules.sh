#!/usr/bin/env bash
# KubeEdge's Router objects (rules.kubeedge.io RuleEndpoint and Rule) in the
# cloud's store through the real daemon: a manifests directory's YAML read at
# start, `meshctl apply/get/delete` of both kinds (names, short names, -n,
# -o json with the Router's row and counters), a Rule naming a missing
# RuleEndpoint stored but not active (said by `get rules`) until the
# endpoint comes, typo'd objects refused by apply with the object, field and
# what was expected (nothing lost), a typo'd manifest logged (its objects
# stay), ids kept across a restart, and both kinds read from the Kubernetes
# API (tests/integration/fake_kube.py). No root.
. "$(dirname "$0")/lib.sh"
it_need python3 curl

MD=$IT_TMP/manifests
mkdir -p "$MD"
API=$IT_NET.1:18101
CTL=http://$IT_NET.1:18102
FAKE=$IT_ROOT/tests/integration/fake_kube.py

cloud_conf() { # CONTROLLER MEMBERS
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
	"controller": {$1}
}
EOF
}

re_obj() { # NS NAME TYPE PROPERTIES-JSON
	printf '{"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {"name": "%s", "namespace": "%s"}, "spec": {"ruleEndpointType": "%s", "properties": %s}}' \
		"$2" "$1" "$3" "$4"
}
rule_obj() { # NS NAME SOURCE SOURCE-RESOURCE TARGET TARGET-RESOURCE
	printf '{"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": "%s", "namespace": "%s"}, "spec": {"source": "%s", "sourceResource": %s, "target": "%s", "targetResource": %s}}' \
		"$2" "$1" "$3" "$4" "$5" "$6"
}

names() { ctl get "$1" -A 2>/dev/null | awk 'NR > 1 && NF > 1 && $1 != "rule" {print $1 "/" $2}' | sort | tr '\n' ' '; }
has() { grep -qw -- "$2" <<<"$(names "$1")"; }
lacks() { ! has "$@"; }
# active NS NAME: the ACTIVE column of `get rules`
active() { ctl get rules "$2" -n "$1" 2>/dev/null | awk -v n="$2" '$1 == n {print $NF}'; }
# apply_err JSON: meshctl apply's error, which must fail
apply_err() {
	local out
	if out=$(printf '%s\n' "$1" | ctl apply -f - 2>&1); then
		echo "ACCEPTED"
	else
		echo "$out"
	fi
}
apply_del() { ctl delete "$@" >/dev/null 2>&1 && echo deleted || echo failed; }
json_of() { ctl get "$1" "$3" -n "$2" -o json 2>/dev/null; }
field() { # KIND NS NAME PYTHON-EXPR-ON-o
	json_of "$1" "$2" "$3" | python3 -c "import json,sys; o=json.load(sys.stdin)[0]; print($4)"
}

# -- start: a manifests directory with KubeEdge's YAML
cat >"$MD/router.yaml" <<'EOF'
apiVersion: rules.kubeedge.io/v1
kind: RuleEndpoint
metadata: {name: my-rest, namespace: default}
spec:
  ruleEndpointType: rest
  properties: {}
---
apiVersion: rules.kubeedge.io/v1
kind: RuleEndpoint
metadata: {name: my-servicebus, namespace: default}
spec:
  ruleEndpointType: servicebus
  properties: {service_port: "9000"}
---
apiVersion: rules.kubeedge.io/v1
kind: Rule
metadata: {name: my-rule, namespace: default}
spec:
  source: my-rest
  sourceResource: {path: /a}
  target: my-servicebus
  targetResource: {path: /b}
EOF
cloud_conf "\"manifests_dir\": \"$MD\""
it_em_start
re_rows() { ctl get re "$@" | awk 'NR > 1 {print $1 ":" $2 ":" $3}' | tr '\n' ' '; }
it_check "start: both RuleEndpoints ($(re_rows))" \
	[ "$(re_rows)" = "my-rest:rest:<none> my-servicebus:servicebus:9000 " ]
it_check "start: the Rule, active" [ "$(active default my-rule)" = yes ]
hdr=$(ctl get rules | head -n 1)
it_check "get rules has the columns NAME SOURCE TARGET PATH TARGET-PATH SUCCESS FAIL ACTIVE" \
	[ "$(echo $hdr)" = "NAME SOURCE TARGET PATH TARGET-PATH SUCCESS FAIL ACTIVE" ]
it_check "get rules shows the paths" grep -Eq '^my-rule +my-rest +my-servicebus +/a +/b +0 +0 +yes' <<<"$(ctl get rules)"

# -- -o json: the Router's row and the status counters
id=$(field rules default my-rule 'o["router"]["id"]')
it_check "the Rule's row has an id ($id)" [ ${#id} -eq 36 ]
it_check "the row has every field of KubeEdge's Rule" [ "$(field rules default my-rule \
	'all(k in o["router"] for k in ("id","name","project_id","domain_id","source","source_resource","target","target_resource","in_use","is_deleted","created_at","updated_at","success_messages","fail_messages","errors"))')" = True ]
it_check "and of its Endpoint" [ "$(field ruleendpoints default my-servicebus \
	'all(k in o["router"] for k in ("id","type","name","project_id","is_shared","properties","created_at","updated_at"))')" = True ]
it_check "status counters start at 0" [ "$(field rules default my-rule \
	'(o["status"]["successMessages"], o["status"]["failMessages"], o["status"]["errors"])')" = "(0, 0, [])" ]

# -- meshctl apply: a Rule before its endpoint is stored, not active
it_apply "$(rule_obj shop r1 rest '{"path": "/shop"}' edge '{"path": "/", "service": "shop/web", "port": "80"}')"
it_check "a Rule naming a missing RuleEndpoint is stored" has rules shop/r1
it_check "... not active" [ "$(active shop r1)" = no ]
it_check "... and get says why" grep -q 'rule shop/r1 is not active: spec.source: ruleendpoint shop/rest not found' <<<"$(ctl get rules -n shop)"
it_apply "$(re_obj shop rest rest '{}')"
it_apply "$(re_obj shop edge servicebus '{}')"
it_check "its endpoints applied: active" [ "$(active shop r1)" = yes ]
it_check "the Service target is shown" grep -q 'edge (shop/web:80)' <<<"$(ctl get rules -n shop)"
it_check "get ruleendpoints -n shop" [ "$(names ruleendpoints)" = "default/my-rest default/my-servicebus shop/edge shop/rest " ]

# -- typo'd objects: refused with object, field and expectation; nothing lost
before=$(json_of rules shop r1 | python3 -c 'import json,sys; o=json.load(sys.stdin)[0]; print(o["spec"], o["router"]["id"])')
e=$(apply_err "$(re_obj shop edge eventbus '{}')")
it_check "eventbus refused: $e" grep -q 'RuleEndpoint shop/edge: spec.ruleEndpointType: "eventbus" is not supported' <<<"$e"
e=$(apply_err "$(re_obj shop edge servicebus '{"service_port": 9000}')")
it_check "a number in properties refused: $e" grep -q 'spec.properties.service_port: expected string, got number' <<<"$e"
e=$(apply_err "$(rule_obj shop r1 rest '{"path": "/shop"}' edge '{"path": "/", "service": "shop/web", "port": 80}')")
it_check "a number in targetResource refused: $e" grep -q 'Rule shop/r1: spec.targetResource.port: expected string, got number' <<<"$e"
e=$(apply_err "$(rule_obj shop r1 rest '{"path": "shop"}' edge '{"path": "/"}')")
it_check "a path without / refused: $e" grep -q 'spec.sourceResource.path: expected a path starting with "/"' <<<"$e"
e=$(apply_err "$(rule_obj shop r2 edge '{"path": "/x"}' rest '{}')")
it_check "servicebus -> rest refused: $e" grep -q 'Rule shop/r2: spec: servicebus -> rest (edge -> rest) is not supported' <<<"$e"
e=$(apply_err "$(rule_obj shop r1 rest '{}' edge '{"path": "/"}')")
it_check "a rest source without a path refused: $e" grep -q 'spec.sourceResource.path: missing' <<<"$e"
e=$(apply_err "$(rule_obj shop r3 rest '{"path": "/x"}' edge '{"path": "/"}')")
it_check "a servicebus target without a service refused: $e" grep -q 'spec.targetResource: no edge service' <<<"$e"
e=$(apply_err '{"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": "r1", "namespace": "shop"}, "spec": {"source": "rest", "sourceResource": {"path": "/shop"}, "targt": "edge", "targetResource": {}}}')
it_check "a misspelt field refused: $e" grep -q 'spec.target: missing' <<<"$e"
after=$(json_of rules shop r1 | python3 -c 'import json,sys; o=json.load(sys.stdin)[0]; print(o["spec"], o["router"]["id"])')
it_check "the refused applies lost nothing" [ "$before" = "$after" ]
it_check "no refused Rule was stored" [ "$(ctl get rules -n shop | awk 'NR > 1 && NF > 3 {print $1}' | tr '\n' ' ')" = "r1 " ]
it_check "the endpoint is still servicebus" [ "$(re_rows edge -n shop)" = "edge:servicebus:<none> " ]

# -- a typo'd manifest: logged, its objects stay
lines=$(wc -l <"$IT_EM_LOG")
sed -i 's/ruleEndpointType: servicebus/ruleEndpointType: eventbus/' "$MD/router.yaml"
logged() { tail -n +"$((lines + 1))" "$IT_EM_LOG" | grep -q 'router.yaml.*eventbus.*not supported'; }
if it_wait 5 logged; then
	it_ok "a typo'd manifest is logged: $(tail -n +"$((lines + 1))" "$IT_EM_LOG" | grep -m1 'router.yaml' | cut -c1-200)"
else
	it_fail "no log line for the typo'd manifest: $(tail -n +"$((lines + 1))" "$IT_EM_LOG" | head -n 5)"
fi
it_check "its objects stay" [ "$(active default my-rule)" = yes ]

# -- delete, by name and short name
ctl delete re shop/edge >/dev/null || it_fail "delete re shop/edge"
it_check "deleting the endpoint leaves the Rule, not active" [ "$(active shop r1)" = no ]
ctl delete rules r1 -n shop >/dev/null || it_fail "delete rules r1 -n shop"
it_check "the Rule is gone" lacks rules shop/r1
it_check "deleting what is not there fails" [ "$(apply_del rule shop/r1)" = failed ]

# -- a restart keeps the objects and their ids
it_em_stop
it_em_start
it_check "after a restart: the Rule keeps its id" [ "$(field rules default my-rule 'o["router"]["id"]')" = "$id" ]
it_check "after a restart: still active" [ "$(active default my-rule)" = yes ]
it_em_stop

# -- the Kubernetes API source
rm -f "$MD"/*
it_bg fake "$FAKE" --listen "$API" --control "$IT_NET.1:18102"
it_wait_line "$IT_TMP/fake.out" '^ready' 10 || { cat "$IT_TMP/fake.err"; it_die "fake_kube did not start"; }
upsert() { curl -sS --max-time 5 -X POST "$CTL/upsert?kind=$1" --data-binary "$2" >/dev/null || it_die "fake: upsert $1"; }
upsert ruleendpoints "$(re_obj kube rest rest '{}')"
upsert ruleendpoints "$(re_obj kube edge servicebus '{"service_port": "8080"}')"
cloud_conf "\"kubernetes\": {\"server\": \"http://$API\"}"
it_em_start
if it_wait 10 has ruleendpoints kube/edge; then
	it_ok "RuleEndpoints listed from the Kubernetes API"
else
	it_fail "no RuleEndpoints from the Kubernetes API ($(names ruleendpoints))"
fi
upsert rules "$(rule_obj kube kr rest '{"path": "/k"}' edge '{"path": "/"}')"
if it_wait 10 has rules kube/kr; then
	it_ok "a Rule watched from the Kubernetes API"
else
	it_fail "no Rule from the Kubernetes API ($(names rules))"
fi
it_check "... active" [ "$(active kube kr)" = yes ]
curl -sS --max-time 5 -X POST "$CTL/delete?kind=rules&ns=kube&name=kr" >/dev/null
it_check "a Rule deleted in the Kubernetes API goes" it_wait 10 lacks rules kube/kr
it_check "the fake saw the rules.kubeedge.io paths" \
	bash -c "curl -sS -X POST '$CTL/requests' | grep -q '/apis/rules.kubeedge.io/v1/rules'"

it_done
