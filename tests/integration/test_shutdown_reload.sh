#!/usr/bin/env bash
# Shutdown never reads a config that a reload freed: the AddressSanitizer
# build of edgemesh (build-asan/, or $A) runs with capture on in a network
# namespace of the test's own and gets SIGHUP and SIGTERM at once, several
# times. The reload publishes a new config and frees the old one while the
# main thread removes the capture rules and starts the drain; every run must
# exit 0 with an ASan-clean log and leave no rule behind. Needs root.
. "$(dirname "$0")/lib.sh"
it_need_root
A=${A:-$IT_ROOT/build-asan}
case $A in /*) ;; *) A=$IT_ROOT/$A ;; esac
[ -x "$A/edgemesh" ] || it_skip "needs the ASan build ($A/edgemesh; make asan)"
EDGEMESH=$A/edgemesh
RUNS=${RUNS:-6}

it_capture_netns rld
v6=$IT_V6 cidrs=$IT_CIDRS
IT_CAPTURE="{\"enabled\": true, \"port\": 15001, \"service_cidrs\": [$cidrs], \"exclude_cidrs\": [\"10.100.0.0/16\"]}"
IT_WORKERS=1
it_em_config
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66
export LSAN_OPTIONS=suppressions=$IT_ROOT/tests/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1

asan_clean() { ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$1"; }
no_rules() { ! it_in iptables-save -t nat | grep -q EDGEMESH; }

clean=0 exited=0 reloaded=0
for run in $(seq "$RUNS"); do
	it_em_start
	# Both pending at once: sigwaitinfo takes SIGHUP (the lower number) first,
	# then SIGTERM, so the reload and the shutdown overlap.
	kill -HUP "$IT_EM_PID"
	kill -TERM "$IT_EM_PID"
	it_em_stop TERM
	rc=$IT_RC
	[ "$rc" = 0 ] && exited=$((exited + 1))
	if asan_clean "$IT_EM_LOG"; then
		clean=$((clean + 1))
	else
		it_log "run $run: sanitizer report in $IT_EM_LOG:"
		grep -A12 -m1 -E 'ERROR: |runtime error:' "$IT_EM_LOG" | sed 's/^/    /'
	fi
	grep -q 'config: reloaded' "$IT_EM_LOG" && reloaded=$((reloaded + 1))
	it_log "run $run: exit $rc"
	no_rules || it_in "$EDGEMESH" -c "$IT_CONF" --remove-capture >/dev/null 2>&1 ||
		it_in iptables -t nat -F EDGEMESH 2>/dev/null
done
it_check "$RUNS of $RUNS runs exited 0 (got $exited)" [ "$exited" = "$RUNS" ]
it_check "$RUNS of $RUNS logs free of sanitizer reports (got $clean)" [ "$clean" = "$RUNS" ]
it_check "the reload ran during the shutdown in at least one run (got $reloaded)" [ "$reloaded" -ge 1 ]
it_check "no capture rule left behind" no_rules
it_done
