#!/usr/bin/env bash
# The arm64 (aarch64) cross build, on a Debian 12 amd64 host:
#
#   cmake/arm64.sh deps    install what the cross build and its tests need
#   cmake/arm64.sh build   deps, then build-arm64/: edgemesh, meshctl and the
#                          pure unit tests (make cross-arm64)
#   cmake/arm64.sh test    build, then run the pure unit tests under
#                          qemu-aarch64-static, `edgemesh -t` of the arm64
#                          binary on conf/edge.json and conf/cloud.json, and
#                          check the arm64 package made from build-arm64/
#                          (make arm64-test, part of make test)
#
# deps adds the arm64 architecture to dpkg (multiarch) and installs Debian's
# cross toolchain, user-mode qemu and the arm64 -dev packages of the
# libraries; nothing is done when all are there. Criterion is the exception:
# libcriterion-dev:arm64 would replace the amd64 one (libnanomsg5 is not
# Multi-Arch: same), so its arm64 packages are unpacked, not installed, into
# build-arm64/criterion-root/ (EM_ARM64_EXTRA_ROOT of cmake/aarch64.cmake).
set -euo pipefail
cd "$(dirname "$0")/.."

BDIR=${ARM64_BUILD_DIR:-build-arm64}
JOBS=${JOBS:-2}
EXTRA=$PWD/$BDIR/criterion-root
SHIM=$PWD/$BDIR/qemu-exec
# Build and runtime packages of the arm64 build: the cross compiler, qemu
# to run its tests here, the arm64 -dev packages of CMakeLists.txt's
# libraries, and the arm64 runtime libraries of the unpacked Criterion.
PACKAGES="crossbuild-essential-arm64 qemu-user-static dpkg-dev pkg-config
	liburing-dev:arm64 libsqlite3-dev:arm64 libmimalloc-dev:arm64 libcjson-dev:arm64
	libyaml-dev:arm64 liburcu-dev:arm64 libssl-dev:arm64 libbpf-dev:arm64 clang bpftool
	libffi8:arm64 libgit2-1.5:arm64"
CRITERION_DEBS="libcriterion3:arm64 libcriterion-dev:arm64 libnanomsg5:arm64"

# The unit tests that need neither io_uring nor privileges nor a network
# beyond socketpairs and Unix sockets in /tmp: codecs, config, store,
# tunnel session and TLS, balancer; plus the two store concurrency tests.
# Left out: engine tests that set up io_uring (bufring, engine, queue,
# router_tls, sock), capture (iptables in a namespace), conc_engine.
PURE_TESTS="test_addr test_clock test_frame test_http1 test_sniff test_tls
	test_api test_arena test_beehive test_changelog test_config test_control test_db
	test_db_crash test_json test_k8s test_kube test_manifest test_router test_store
	test_qps test_svcstat test_table
	test_pki test_session test_tls_pipe
	test_balancer test_http_page test_tunnel
	conc_qps conc_table"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

deps() {
	export DEBIAN_FRONTEND=noninteractive
	local updated=0 missing="" p
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		echo "dpkg: adding the arm64 architecture"
		dpkg --add-architecture arm64
		apt-get update -qq
		updated=1
	fi
	for p in $PACKAGES; do installed "$p" || missing="$missing $p"; done
	if [ -n "$missing" ]; then
		echo "installing:$missing"
		[ $updated = 1 ] || apt-get update -qq
		updated=1
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
	if [ ! -e "$EXTRA/usr/lib/aarch64-linux-gnu/pkgconfig/criterion.pc" ]; then
		rm -rf "$EXTRA" && mkdir -p "$EXTRA/debs"
		# apt-get download writes as _apt where it can: let it.
		chmod 0777 "$EXTRA/debs"
		# shellcheck disable=SC2086
		(cd "$EXTRA/debs" && { apt-get download -qq $CRITERION_DEBS 2>/dev/null ||
			{ apt-get update -qq && apt-get download -qq $CRITERION_DEBS 2>/dev/null; }; }) ||
			{ echo "cannot download $CRITERION_DEBS" >&2; exit 1; }
		for d in "$EXTRA"/debs/*.deb; do dpkg -x "$d" "$EXTRA"; done
		rm -rf "$EXTRA/debs"
		# Its own .pc names /usr and the static libraries' private
		# dependencies; the shared library is all the tests link.
		local v
		v=$(sed -n 's/^Version: //p' "$EXTRA/usr/lib/aarch64-linux-gnu/pkgconfig/criterion.pc")
		cat >"$EXTRA/usr/lib/aarch64-linux-gnu/pkgconfig/criterion.pc" <<-EOF
			prefix=$EXTRA/usr
			includedir=\${prefix}/include
			libdir=\${prefix}/lib/aarch64-linux-gnu
			Name: criterion
			Description: Criterion, arm64, unpacked for the cross build
			Version: $v
			Libs: -L\${libdir} -lcriterion
			Cflags: -I\${includedir}
		EOF
		echo "unpacked Criterion (arm64) into $EXTRA"
	fi
}

build() {
	deps
	# Configured as packaging/build-deb.sh configures a package build
	# (prefix /usr, Debian's hardening flags for arm64), so that the tests
	# run the code the package ships and the package check packages this
	# build instead of compiling it again.
	local conf=(-DCMAKE_INSTALL_PREFIX=/usr)
	if [ ! -e "$BDIR/CMakeCache.txt" ]; then
		conf+=(-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake)
		eval "$(CC=aarch64-linux-gnu-gcc dpkg-architecture -a arm64 -s 2>/dev/null)"
		export DEB_BUILD_MAINT_OPTIONS=hardening=+all
		CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
		LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
		export CFLAGS LDFLAGS
	fi
	cmake -S . -B "$BDIR" "${conf[@]}" -DCMAKE_BUILD_TYPE=Release -DEM_ARM64_EXTRA_ROOT="$EXTRA" >/dev/null
	# shellcheck disable=SC2086
	cmake --build "$BDIR" -j "$JOBS" --target edgemesh meshctl $PURE_TESTS
	# The exec shim of the tests under qemu (cmake/qemu_exec.c), for the
	# emulated programs and for the host's shell.
	local t cc
	for t in aarch64-linux-gnu x86_64-linux-gnu; do
		cc=gcc; [ $t = aarch64-linux-gnu ] && cc=aarch64-linux-gnu-gcc
		mkdir -p "$SHIM/lib/$t"
		if [ cmake/qemu_exec.c -nt "$SHIM/lib/$t/qemu_exec.so" ]; then
			$cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$SHIM/lib/$t/qemu_exec.so" cmake/qemu_exec.c
		fi
	done
	readelf -h "$BDIR/edgemesh" | sed -n "s/^ *Machine: */$BDIR: edgemesh and meshctl for /p"
}

pass=0 fail=0
check() { # check DESCRIPTION COMMAND...: one result line
	local what=$1; shift
	if "$@"; then pass=$((pass + 1)); echo "PASS $what"; else fail=$((fail + 1)); echo "FAIL $what"; fi
}
refuses() { ! "$@"; }
logged() { # logged LOG COMMAND...: its output to LOG, shown when it fails
	local log=$1; shift
	"$@" >"$log" 2>&1 || { sed 's/^/    /' "$log"; return 1; }
}

# The arm64 package (packaging/build-deb.sh -a arm64): its architecture,
# programs and Depends, an install, an upgrade and a purge with dpkg into a throwaway root
# whose database holds the host's arm64 runtime packages, and the installed
# edgemesh -t under qemu on the installed config.
package_check() {
	local tmp=$1 deb dep_names lib pkg missing="" R ADMIN p f
	deb=$(packaging/build-deb.sh -a arm64 -B "$BDIR" -o "$tmp/deb" | tail -n 1)
	check "build-deb.sh -a arm64 writes edgemesh_*_arm64.deb ($deb)" \
		bash -c "[[ '$deb' == */edgemesh_*_arm64.deb ]] && [ -f '$deb' ]"
	check "Architecture: arm64" [ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ]
	dep_names=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$')
	for p in libc6 liburing2 libsqlite3-0 libmimalloc2.0 libcjson1 libyaml-0-2 liburcu8 libssl3 libbpf1; do
		check "Depends names $p" grep -qx "$p" <<<"$dep_names"
	done
	check "Depends names no -dev package" refuses grep -q -- '-dev$' <<<"$dep_names"
	dpkg-deb -x "$deb" "$tmp/x"
	for f in edgemesh meshctl; do
		check "/usr/bin/$f is an AArch64 program" \
			bash -c "readelf -h '$tmp/x/usr/bin/$f' | grep -q 'Machine:.*AArch64'"
	done
	# Each library the programs need is an arm64 library of a package that
	# Depends names.
	for lib in $(readelf -d "$tmp/x/usr/bin/edgemesh" "$tmp/x/usr/bin/meshctl" |
		sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u); do
		pkg=""
		for f in /lib/aarch64-linux-gnu/$lib /usr/lib/aarch64-linux-gnu/$lib /lib/$lib /usr/lib/$lib; do
			pkg=$(dpkg -S "$f" 2>/dev/null | head -n 1) && break
		done
		pkg=${pkg%%: *}
		case $pkg in
		*:arm64) grep -qx "${pkg%:arm64}" <<<"$dep_names" || missing="$missing $lib($pkg)" ;;
		*) missing="$missing $lib(${pkg:-no arm64 package})" ;;
		esac
	done
	check "Depends covers every library the programs need${missing:+; missing:$missing}" [ -z "$missing" ]

	R=$tmp/root ADMIN=$tmp/root/var/lib/dpkg
	mkdir -p "$ADMIN/info" "$ADMIN/updates" "$ADMIN/triggers"
	: >"$ADMIN/available"; : >"$ADMIN/status"
	dpkg --root="$R" --add-architecture arm64
	for p in $dep_names; do
		{ dpkg-query -s "$p:arm64" && echo; } >>"$ADMIN/status" 2>/dev/null
	done
	local DPKG=(dpkg "--root=$R" --force-not-root --force-script-chrootless --log=/dev/null)
	check "dpkg --root -i installs the arm64 package, its Depends met by arm64 packages" \
		logged "$tmp/install.log" "${DPKG[@]}" -i "$deb"
	key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	sed -i "s/change-me-to-a-long-random-cluster-key/$key/" "$R/etc/edgemesh/edge.json"
	check "installed arm64 edgemesh -t accepts the installed edge.json with a real key" \
		qemu-aarch64-static "$R/usr/bin/edgemesh" -c "$R/etc/edgemesh/edge.json" -t
	check "installed arm64 meshctl runs (usage)" \
		bash -c "qemu-aarch64-static '$R/usr/bin/meshctl' -h 2>&1 | grep -q '^usage: meshctl'"
	# An upgrade to a later version keeps the edited conffile.
	local v1 v2 deb2 edited
	v1=$(dpkg-deb -f "$deb" Version)
	v2=$v1+up1
	deb2=$(packaging/build-deb.sh -a arm64 -B "$BDIR" -o "$tmp/deb2" -v "$v2" | tail -n 1)
	edited=$(md5sum <"$R/etc/edgemesh/edge.json")
	check "dpkg --root -i upgrades the arm64 package to $v2" \
		logged "$tmp/upgrade.log" "${DPKG[@]}" --force-confold -i "$deb2"
	check "the upgraded package is $v2" \
		[ "$(dpkg-query --admindir="$ADMIN" -W -f='${Version}' edgemesh)" = "$v2" ]
	check "the upgrade keeps the edited edge.json" \
		[ "$(md5sum <"$R/etc/edgemesh/edge.json")" = "$edited" ]
	check "upgraded arm64 edgemesh -t accepts it" \
		qemu-aarch64-static "$R/usr/bin/edgemesh" -c "$R/etc/edgemesh/edge.json" -t
	check "dpkg --root -P purges it" logged "$tmp/purge.log" "${DPKG[@]}" -P edgemesh
	check "purge leaves no file of the package" \
		bash -c "[ ! -e '$R/usr/bin/edgemesh' ] && [ ! -e '$R/etc/edgemesh' ] && [ ! -e '$R/lib/systemd/system/edgemesh.service' ]"
}

run_test() {
	build
	local start re tmp key f out rc
	start=$(date +%s)
	# shellcheck disable=SC2086 # unquoted: one space between names
	re="^($(echo $PURE_TESTS | tr ' ' '|'))\$"
	# ctest runs the programs under qemu-aarch64-static (the toolchain's
	# emulator); the shim turns Criterion's re-exec of the test program
	# into one under qemu too. $LIB is for the loaders, not the shell.
	# Emulation is 5-10 times slower than the host: a program that fails
	# runs once more, since a few tests wait at most 5 s of wall clock for
	# a result (test_control's 5,000 Services once took longer at a load
	# average of 16); one that fails twice fails the run.
	# shellcheck disable=SC2016
	(cd "$BDIR" && LD_PRELOAD="$SHIM"'/$LIB/qemu_exec.so' \
		ctest --output-on-failure -R "$re" --timeout 300 -j "$JOBS" --repeat until-pass:2)
	echo "arm64 unit tests took $(( $(date +%s) - start ))s"
	start=$(date +%s)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	# edgemesh -t of the arm64 binary on the shipped configs, with their
	# placeholder key replaced by a real one (the placeholder is refused).
	key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	for f in edge cloud; do
		sed "s/change-me-to-a-long-random-cluster-key/$key/" "conf/$f.json" >"$tmp/$f.json"
		rc=0; out=$(qemu-aarch64-static "$BDIR/edgemesh" -c "$tmp/$f.json" -t 2>&1) || rc=$?
		check "arm64 edgemesh -t accepts conf/$f.json with a real key ($out)" [ $rc = 0 ]
		check "arm64 edgemesh -t refuses the placeholder key of conf/$f.json" \
			refuses qemu-aarch64-static "$BDIR/edgemesh" -c "conf/$f.json" -t 2>/dev/null
	done
	package_check "$tmp"
	echo "arm64 edgemesh -t and package: $pass passed, $fail failed ($(( $(date +%s) - start ))s)"
	[ $fail = 0 ]
}

case ${1:-} in
deps) deps ;;
build) build ;;
test) run_test ;;
*) echo "usage: $0 deps|build|test" >&2; exit 2 ;;
esac
