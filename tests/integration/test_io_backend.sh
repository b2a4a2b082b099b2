#!/usr/bin/env bash
# io_backend: under a seccomp filter that refuses io_uring (as the default
# profiles of Docker and containerd do), "auto" logs why once and serves on
# the epoll backend, and stats say so; "io_uring" then refuses to start,
# naming the cause; without the filter "auto" runs io_uring; a bad value is
# refused by `edgemesh -t` with the file, the key and what was expected.
. "$(dirname "$0")/lib.sh"
it_need socat cc
unset EDGEMESH_IO_BACKEND # this test picks the backend itself

cc -O2 -Wall -o "$IT_TMP/no_io_uring" "$IT_ROOT/tests/integration/no_io_uring.c" ||
	it_die "cannot build no_io_uring"
REAL_EDGEMESH=$EDGEMESH
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$IT_TMP/no_io_uring" "$REAL_EDGEMESH" >"$IT_TMP/em-seccomp"
chmod +x "$IT_TMP/em-seccomp"

stats_has() {
	timeout 10 "$MESHCTL" -s "$IT_SOCK" stats | tr -d '\t ' | grep -q "\"io_backend\":\"$1\""
}

N=$IT_NET
IT_LISTENERS="[{ \"listen\": \"$N.1:18007\", \"service\": \"default/echo\", \"port\": 7 }]"
IT_EXTRA='"io_backend": "auto",'
it_em_config

# -- auto under the filter: epoll, the reason logged once
EDGEMESH=$IT_TMP/em-seccomp
it_em_start
n=$(grep -c 'io_backend "auto": io_uring_setup failed: Operation not permitted; running the epoll backend' "$IT_EM_LOG")
it_check "auto under a seccomp filter refusing io_uring: the reason is logged once (got $n)" [ "$n" = 1 ]
it_check "the start line names the epoll backend" grep -q 'io backend epoll (io_backend "auto")' "$IT_EM_LOG"
it_check "meshctl stats: io_backend epoll" stats_has epoll

it_apply "$(it_list "$(it_svc default echo 10.96.1.7 7 7007)" "$(it_ep default echo 7007 $N.21)")"
it_backend echo echo $N.21:7007
out=$(printf 'hello over epoll\n' | timeout 10 socat -t 3 - TCP:$N.1:18007 2>&1)
it_check "raw TCP echo through a listener on epoll (got '$out')" [ "$out" = "hello over epoll" ]
res=$(timeout 20 "$EMLOAD" -m pingpong -a $N.1:18007 -c 8 -d 2 -s 512 -t 1 2>"$IT_TMP/emload.err" | tail -n 1)
it_log "emload: $res"
if [[ $res =~ ops=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 100 ] && [[ $res =~ errors=0( |$) ]]; then
	it_ok "emload pingpong through the listener on epoll: every response equals its request"
else
	it_fail "emload pingpong on epoll: $res $(cat "$IT_TMP/emload.err")"
fi
n=$(grep -c 'running the epoll backend' "$IT_EM_LOG")
it_check "still one line about the fallback after traffic (got $n)" [ "$n" = 1 ]
it_em_stop

# -- io_uring asked for under the filter: refused at start, naming why
IT_EXTRA='"io_backend": "io_uring",'
it_em_config
timeout 10 "$IT_TMP/em-seccomp" -c "$IT_CONF" >"$IT_TMP/refused.log" 2>&1
rc=$?
it_check "io_backend io_uring under the filter: exit 1 (got $rc)" [ "$rc" = 1 ]
it_check "... saying io_uring_setup was refused" \
	grep -q 'io_uring unavailable (io_uring_setup failed: Operation not permitted)' "$IT_TMP/refused.log"

# -- auto without the filter: io_uring where the kernel has it
EDGEMESH=$REAL_EDGEMESH
IT_EXTRA='"io_backend": "auto",'
it_em_config
it_em_start
if grep -q 'io_backend "auto": io_uring_setup failed' "$IT_EM_LOG"; then
	it_log "this host refuses io_uring itself: auto ran epoll"
	it_check "meshctl stats: io_backend epoll" stats_has epoll
else
	it_check "auto without the filter: the io_uring backend" grep -q 'io backend io_uring' "$IT_EM_LOG"
	it_check "meshctl stats: io_backend io_uring" stats_has io_uring
fi
it_em_stop

# -- a bad value
IT_EXTRA='"io_backend": "poll",'
it_em_config
out=$("$EDGEMESH" -c "$IT_CONF" -t 2>&1)
rc=$?
it_check "io_backend \"poll\": edgemesh -t exits 1 (got $rc)" [ "$rc" = 1 ]
it_check "... naming the file, the key and the values (got: $out)" \
	grep -qF "$IT_CONF: io_backend: expected \"auto\", \"io_uring\" or \"epoll\"" <<<"$out"
it_done
