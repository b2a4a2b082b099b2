#!/usr/bin/env bash
# Capture rules outlive a crashed daemon and are cleaned up: in a network
# namespace of the test's own, edgemesh is killed with SIGKILL (its rules stay),
# a new start replaces them with exactly one set, and after a second SIGKILL
# `edgemesh -c FILE --remove-capture` removes the chain and its jumps (both
# families when the kernel's ip6tables nat works) while leaving everyone
# else's nat rules alone; a second run finds nothing and exits 0, also with
# no daemon and no rules at all. Needs root.
. "$(dirname "$0")/lib.sh"
it_need_root

it_capture_netns guard
v6=$IT_V6 cidrs=$IT_CIDRS
fams=(iptables-save)
[ $v6 = 1 ] && fams+=(ip6tables-save)
IT_CAPTURE="{\"enabled\": true, \"port\": 15001, \"service_cidrs\": [$cidrs]}"
it_em_config

# Somebody else's nat rules, which no start or removal may touch.
it_in iptables -t nat -N OTHER
it_in iptables -t nat -A OTHER -p tcp --dport 9 -j RETURN
it_in iptables -t nat -A OUTPUT -p udp -j OTHER
foreign_before=$(it_in iptables-save -t nat | grep -v '^[#*]\|^COMMIT' | grep -v EDGEMESH | sed 's/\[[0-9:]*\]//')

# count FAMILY-TOOL WHAT: how many EDGEMESH jumps in OUTPUT / PREROUTING, or
# chain declarations (WHAT = chain), rules inside the chain (WHAT = rules).
count() {
	local out
	out=$(it_in "$1" -t nat 2>/dev/null)
	case $2 in
	chain) grep -c '^:EDGEMESH ' <<<"$out" ;;
	rules) grep -c '^-A EDGEMESH ' <<<"$out" ;;
	*) grep -cE "^-A $2 .*-j EDGEMESH( |\$)" <<<"$out" ;;
	esac
}
# one_set: exactly one chain and one jump per hook in each family in use.
one_set() {
	local s
	for s in "${fams[@]}"; do
		[ "$(count "$s" chain)" = 1 ] && [ "$(count "$s" OUTPUT)" = 1 ] &&
			[ "$(count "$s" PREROUTING)" = 1 ] && [ "$(count "$s" rules)" -ge 1 ] || return 1
	done
}
# mark_first: the chain's first rule returns the daemon's own (marked) dials.
mark_first() {
	local s
	for s in "${fams[@]}"; do
		[ "$(it_in "$s" -t nat | grep -m1 '^-A EDGEMESH ')" = \
			"-A EDGEMESH -m mark --mark 0x1e4d -j RETURN" ] || return 1
	done
}
# none_left: no chain, no jump, no rule of ours in either family.
none_left() {
	local s
	for s in iptables-save ip6tables-save; do
		it_in "$s" -t nat 2>/dev/null | grep -q EDGEMESH && return 1
	done
	return 0
}
foreign_kept() {
	[ "$(it_in iptables-save -t nat | grep -v '^[#*]\|^COMMIT' | grep -v EDGEMESH | sed 's/\[[0-9:]*\]//')" = "$foreign_before" ]
}
show() {
	local s
	for s in "${fams[@]}"; do
		it_in "$s" -t nat | grep EDGEMESH | sed "s/^/    $s| /"
	done
}

it_em_start
it_check "first start: one chain and one jump per hook (IPv6: $v6)" one_set
it_check "the chain's first rule returns capture.mark (default 0x1e4d)" mark_first
it_em_stop KILL
it_check "after kill -9 the rules are still there" one_set

it_em_start
show
it_check "start after kill -9: exactly one set, no duplicate jumps" one_set
it_check "other nat rules untouched by the starts" foreign_kept
it_em_stop KILL
it_check "after the second kill -9 the rules are still there" one_set

# --remove-capture with no daemon running.
it_in "$EDGEMESH" -c "$IT_CONF" --remove-capture >"$IT_TMP/rm1.out" 2>&1
rc=$?
sed 's/^/    rm1| /' "$IT_TMP/rm1.out"
it_check "--remove-capture exits 0 (got $rc)" [ "$rc" = 0 ]
it_check "--remove-capture left no EDGEMESH chain, jump or rule" none_left
it_check "--remove-capture left the other nat rules alone" foreign_kept

it_in "$EDGEMESH" -c "$IT_CONF" --remove-capture >"$IT_TMP/rm2.out" 2>&1
rc=$?
sed 's/^/    rm2| /' "$IT_TMP/rm2.out"
it_check "second --remove-capture exits 0 (got $rc)" [ "$rc" = 0 ]
it_check "second --remove-capture says there is nothing to remove" grep -q 'nothing to remove' "$IT_TMP/rm2.out"
it_check "still nothing left and the other rules kept" eval 'none_left && foreign_kept'

# A config that no longer loads still gets the rules removed (the unit's
# ExecStopPost runs whatever file is there), and says what is wrong with it.
it_em_start
it_check "third start: one set again" one_set
it_em_stop KILL
printf '{"role": "edge", "capture": {"port": 0}}\n' >"$IT_TMP/broken.json"
it_in "$EDGEMESH" -c "$IT_TMP/broken.json" --remove-capture >"$IT_TMP/rm3.out" 2>&1
rc=$?
sed 's/^/    rm3| /' "$IT_TMP/rm3.out"
it_check "broken config: exit 1 (got $rc), the file and key named" \
	eval "[ $rc = 1 ] && grep -q 'broken.json: capture.port' '$IT_TMP/rm3.out'"
it_check "broken config: the rules are removed anyway" none_left

# A clean stop removes the rules itself; the unit's ExecStopPost then finds
# nothing.
it_em_start
it_em_stop TERM
it_check "clean stop: exit 0 (got $IT_RC) and nothing left" eval "[ $IT_RC = 0 ] && none_left"
it_in "$EDGEMESH" -c "$IT_CONF" --remove-capture >"$IT_TMP/rm4.out" 2>&1
it_check "--remove-capture after a clean stop: exit 0, nothing to remove" \
	eval "[ $? = 0 ] && grep -q 'nothing to remove' '$IT_TMP/rm4.out'"
it_done
