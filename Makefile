# Thin wrapper over CMake. Building installs nothing: only `make test`,
# `make demo`, `make bench` and `make bench-quick` first install the missing
# Debian packages (`make deps`), then build and run; see README.md.
# `make deb` builds the Debian package build/edgemesh_VERSION_ARCH.deb
# (packaging/build-deb.sh, in its own build dir build-deb/); `make deb
# ARCH=arm64` the arm64 one (build-deb-arm64/).

PACKAGES := build-essential cmake pkg-config clang \
	liburing-dev libsqlite3-dev libmimalloc-dev libcjson-dev libyaml-dev liburcu-dev libcriterion-dev libssl-dev \
	sqlite3 iptables iproute2 procps psmisc socat curl python3 openssl \
	haproxy nginx libnginx-mod-stream wrk \
	dpkg-dev systemd libbpf-dev bpftool
JOBS ?= $(shell nproc)
PROMTOOL := build/tools/promtool
CMAKE_FLAGS ?=

.PHONY: all deps build debug asan tsan fuzz test unit-test asan-test tsan-test fuzz-test \
	integration-test demo bench bench-quick format clean deb cross-arm64 arm64-test

all: build

deps:
	@missing=""; for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)

debug:
	cmake -S . -B build-debug -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-debug -j $(JOBS)

asan:
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DEM_SANITIZE=address >/dev/null
	cmake --build build-asan -j $(JOBS)

tsan:
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DEM_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j $(JOBS)

# The package is built from the install rules of a Release build with
# prefix /usr (build-deb/, Debian's hardening flags); see README.md, Install.
deb:
	JOBS=$(JOBS) packaging/build-deb.sh $(if $(ARCH),-a $(ARCH))

fuzz:
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DEM_FUZZ=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)

# The suites build what they need; `test` installs the packages before any
# build starts (a fresh machine has no cmake yet).
unit-test: build
	cd build && ctest --output-on-failure -j 2

asan-test: asan
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
		ctest --output-on-failure -j 2

tsan-test: tsan
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -L concurrency

fuzz-test: fuzz
	tests/fuzz/run.sh build-fuzz

integration-test: build asan $(PROMTOOL)
	tests/integration/run.sh

# promtool (Prometheus's checker of the metrics format, for test_admin),
# taken out of Debian's prometheus package without installing it: no
# service is started and nothing else is pulled in.
$(PROMTOOL):
	@mkdir -p build/tools && rm -rf build/tools/pkg && mkdir build/tools/pkg && \
	cd build/tools/pkg && \
	{ apt-get download prometheus >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } && \
	dpkg -x prometheus_*.deb x && cp x/usr/bin/promtool ../promtool && \
	cd .. && rm -rf pkg && echo "fetched $(PROMTOOL)"

test: deps
	$(MAKE) unit-test asan-test tsan-test fuzz-test integration-test arm64-test
	@echo "make test: all suites passed"

demo: deps
	$(MAKE) build
	conf/demo.sh

bench: deps
	$(MAKE) build
	bench/run all

bench-quick: deps
	$(MAKE) build
	bench/run --quick all

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# arm64: the cross build in build-arm64/ (edgemesh, meshctl, the pure unit
# tests) and its tests under qemu-aarch64-static, with the package check;
# both install what they need first (cmake/arm64.sh; README.md, arm64).
cross-arm64:
	JOBS=$(JOBS) cmake/arm64.sh build

arm64-test:
	JOBS=$(JOBS) cmake/arm64.sh test

clean:
	rm -rf build build-debug build-asan build-tsan build-fuzz build-deb build-arm64 build-deb-arm64
