#!/usr/bin/env bash
# Runs every tests/integration/test_*.sh, or only those named
# (`run.sh test_forward test_tunnel`), with a time limit each; they use the
# real binaries in build/ (and build-asan/ where a test asks for it). Prints
# "N passed, N failed" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
pass=0 fail=0 skip=0 failed=()
scripts=(tests/integration/test_*.sh)
if [ $# -gt 0 ]; then
	scripts=()
	for n in "$@"; do
		n=$(basename "$n" .sh)
		[ -e "tests/integration/$n.sh" ] || { echo "no such test: $n" >&2; exit 2; }
		scripts+=("tests/integration/$n.sh")
	done
fi
for t in "${scripts[@]}"; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)
	log="build/integration-$name.log"
	start=$(date +%s)
	timeout -k 10 300 bash "$t" >"$log" 2>&1
	rc=$?
	dur=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS $name (${dur}s)"
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$log")"
	else
		fail=$((fail + 1)); failed+=("$name"); echo "FAIL $name (rc=$rc, ${dur}s); last lines of $log:"
		tail -n 30 "$log" | sed 's/^/    /'
	fi
done
echo "integration: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
