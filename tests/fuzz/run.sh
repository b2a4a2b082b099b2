#!/usr/bin/env bash
# Runs each libFuzzer harness of <build-dir> briefly over its seed corpus
# (tests/fuzz/corpus/<name>/). Without clang the fuzz build is skipped.
set -u
build=${1:-build-fuzz}
secs=${FUZZ_SECONDS:-10}
cd "$(dirname "$0")/../.."
fail=0 n=0
for f in "$build"/fuzz_*; do
	[ -x "$f" ] || continue
	name=$(basename "$f")
	seeds="tests/fuzz/corpus/${name#fuzz_}"
	work="build-fuzz/corpus-run/$name"
	mkdir -p "$work"
	n=$((n + 1))
	if "$f" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=5 "$work" ${seeds:+$( [ -d "$seeds" ] && echo "$seeds")} \
		>"build-fuzz/$name.log" 2>&1; then
		echo "PASS $name ($(grep -o 'stat::number_of_executed_units: [0-9]*' "build-fuzz/$name.log" || tail -n 1 "build-fuzz/$name.log"))"
	else
		fail=$((fail + 1)); echo "FAIL $name"; tail -n 40 "build-fuzz/$name.log"
	fi
done
echo "fuzz: $((n - fail)) passed, $fail failed"
[ $fail -eq 0 ]
