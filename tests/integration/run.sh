#!/usr/bin/env bash
# Runs every tests/integration/test_*.sh, or only those named
# (`run.sh test_forward test_tunnel`), with a time limit each; they use the
# real binaries in build/ (and build-asan/ where a test asks for it). Prints
# "N passed, N failed" and exits non-zero on any failure.
#
# I/O backends: the tests run on the daemon's default (io_backend "auto"),
# then again with every daemon on the epoll backend
# (EDGEMESH_IO_BACKEND=epoll), reported as NAME@epoll: every test whose
# daemons carry traffic, all but NOT_ENGINE (config checks, the store, the
# package, the backend choice itself, which runs both).
# EM_IO_BACKEND=epoll (or io_uring) instead runs every selected test once,
# on that backend.
set -u
NOT_ENGINE=" test_config test_capture_guard test_manifests test_store test_package test_io_backend "
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
runs=()
if [ -n "${EM_IO_BACKEND:-}" ]; then
	for t in "${scripts[@]}"; do runs+=("$t@$EM_IO_BACKEND"); done
else
	for t in "${scripts[@]}"; do runs+=("$t@"); done
	for t in "${scripts[@]}"; do
		case "$NOT_ENGINE" in *" $(basename "$t" .sh) "*) ;; *) runs+=("$t@epoll") ;; esac
	done
fi
for r in "${runs[@]}"; do
	t=${r%@*} backend=${r##*@}
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)${backend:+@$backend}
	log="build/integration-$name.log"
	start=$(date +%s)
	if [ -n "$backend" ]; then
		EDGEMESH_IO_BACKEND=$backend timeout -k 10 300 bash "$t" >"$log" 2>&1
	else
		timeout -k 10 300 bash "$t" >"$log" 2>&1
	fi
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
