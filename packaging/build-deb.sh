#!/usr/bin/env bash
# Builds the Debian package of edgemesh from the CMake install rules:
#
#   packaging/build-deb.sh [-v VERSION] [-o OUTDIR] [-B BUILDDIR] [-a ARCH]
#
# Configures BUILDDIR (default build-deb/) as a Release build with prefix
# /usr (the install rules put the configs in /etc and the unit in
# /lib/systemd/system for that prefix only), builds the two programs, stages
# `cmake --install --strip` with DESTDIR, adds the docs' copyright file and
# DEBIAN/ (control, conffiles, maintainer scripts of packaging/deb/), and
# writes OUTDIR/edgemesh_VERSION_ARCH.deb (default OUTDIR build/), printing
# its path last. VERSION defaults to EM_VERSION of proto/em.h with its first
# "-" made "~" (0.4.0-dev -> 0.4.0~dev, which sorts before 0.4.0).
# Depends comes from dpkg-shlibdeps (dpkg-dev) when present, else from a
# fixed list of Debian 12 package names.
#
# -a arm64 (make deb ARCH=arm64) cross-builds the package for arm64: it
# installs the cross toolchain and the arm64 -dev packages first
# (cmake/arm64.sh deps), configures with cmake/aarch64.cmake in
# build-deb-arm64/, takes Debian's flags for arm64, and dpkg-shlibdeps
# names the arm64 runtime packages (the multiarch libraries the programs
# were linked against). -a with the machine's own architecture is the
# native build.
set -euo pipefail
cd "$(dirname "$0")/.."

version="" out=build bdir="" arch=""
while getopts v:o:B:a: opt; do
	case $opt in
	v) version=$OPTARG ;;
	o) out=$OPTARG ;;
	B) bdir=$OPTARG ;;
	a) arch=$OPTARG ;;
	*) echo "usage: $0 [-v VERSION] [-o OUTDIR] [-B BUILDDIR] [-a ARCH]" >&2; exit 2 ;;
	esac
done
maintainer=${DEB_MAINTAINER:-edgemesh maintainers <maintainers@edgemesh.invalid>}

if [ -z "$version" ]; then
	version=$(sed -n 's/^#define EM_VERSION "\(.*\)"$/\1/p' proto/em.h)
	version=${version/-/\~}
fi
# Debian: starts with a digit, then digits, letters and . + ~ (no "-": the
# package is native, with no Debian revision).
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "bad package version '$version'" >&2; exit 1; }
native=$(dpkg --print-architecture)
arch=${arch:-$native}
cross=()
if [ "$arch" != "$native" ]; then
	[ "$arch" = arm64 ] || { echo "cross packages: arm64 only, not '$arch'" >&2; exit 2; }
	cmake/arm64.sh deps >&2
	bdir=${bdir:-build-deb-arm64}
	[ -e "$bdir/CMakeCache.txt" ] || cross=(-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake)
	# DEB_HOST_* of arm64, for dpkg-buildflags and dpkg-shlibdeps.
	eval "$(CC=aarch64-linux-gnu-gcc dpkg-architecture -a "$arch" -s 2>/dev/null)"
fi
bdir=${bdir:-build-deb}

# Debian's hardening flags (stack protector, fortify, relro/now) when
# dpkg-buildflags is there; they join the project's own flags.
if [ ! -e "$bdir/CMakeCache.txt" ] && command -v dpkg-buildflags >/dev/null; then
	export DEB_BUILD_MAINT_OPTIONS=hardening=+all
	CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
	LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
	export CFLAGS LDFLAGS
fi
cmake -S . -B "$bdir" "${cross[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build "$bdir" -j "${JOBS:-2}" --target edgemesh meshctl >/dev/null

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "$out/.deb-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
DESTDIR=$root cmake --install "$bdir" --strip >/dev/null

doc=$root/usr/share/doc/edgemesh
install -m 0644 packaging/deb/copyright "$doc/copyright"
for f in bin/edgemesh bin/meshctl; do
	[ -x "$root/usr/$f" ] || { echo "install rules left out /usr/$f" >&2; exit 1; }
done
for f in edge.json cloud.json; do
	[ -f "$root/etc/edgemesh/$f" ] || { echo "install rules left out /etc/edgemesh/$f" >&2; exit 1; }
done
[ -f "$root/lib/systemd/system/edgemesh.service" ] || { echo "install rules left out the unit" >&2; exit 1; }

# Runtime packages: what dpkg-shlibdeps finds for the libraries the programs
# link (it wants a debian/control beside it, so it runs in a scratch dir).
depends=""
if command -v dpkg-shlibdeps >/dev/null; then
	mkdir -p "$stage/shl/debian"
	printf 'Source: edgemesh\n\nPackage: edgemesh\nArchitecture: any\n' >"$stage/shl/debian/control"
	depends=$(cd "$stage/shl" && dpkg-shlibdeps -O "$root/usr/bin/edgemesh" "$root/usr/bin/meshctl" 2>/dev/null |
		sed -n 's/^shlibs:Depends=//p')
fi
if [ -z "$depends" ]; then
	echo "dpkg-shlibdeps not available: Depends from the fixed list" >&2
	depends="libc6, libcjson1, libmimalloc2.0, libsqlite3-0, libssl3, liburcu8, liburing2, libyaml-0-2"
fi
for f in edgemesh meshctl; do
	m=$(readelf -h "$root/usr/bin/$f" 2>/dev/null | sed -n 's/^ *Machine: *//p') || true
	case $arch:$m in
	amd64:*X86-64 | arm64:AArch64 | *:) ;;
	*) echo "/usr/bin/$f is built for '$m', not $arch" >&2; exit 1 ;;
	esac
done

size=$(du -sk --apparent-size "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: edgemesh
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Recommends: iptables
Section: net
Priority: optional
Description: service-mesh data plane for edge nodes
 edgemesh routes connections to Kubernetes Services on nodes at the edge:
 it captures cluster IPs with iptables (or listens on explicit addresses),
 balances over the services' endpoints, reaches endpoints on other nodes
 through authenticated multiplexed tunnels, and keeps serving from its local
 store while the cloud is unreachable.
 .
 The package holds the daemon edgemesh, the client meshctl, configs for
 both roles in /etc/edgemesh and a hardened systemd unit (not enabled: set
 the cluster key in /etc/edgemesh/edge.json first).
EOF
printf '/etc/edgemesh/edge.json\n/etc/edgemesh/cloud.json\n' >"$root/DEBIAN/conffiles"
# md5sums of the files but the conffiles (dpkg keeps those apart), for debsums.
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z |
	xargs -0 md5sum) >"$root/DEBIAN/md5sums"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
# Files are 0644/0755 whatever the umask, except the configs: they will
# hold the cluster key.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod go-w {} +
chmod 0600 "$root"/etc/edgemesh/*.json

deb=$out/edgemesh_${version}_${arch}.deb
dpkg-deb --build --root-owner-group -Zxz "$root" "$deb" >/dev/null
echo "$deb"
