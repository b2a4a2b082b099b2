#!/usr/bin/env bash
# Idle RSS of the arm64 edgemesh, on an emulated arm64 machine:
#
#   bench/arm64_rss.sh [WORKERS...]       (default: 1 2 4)
#
# User-mode qemu (qemu-aarch64-static, what make arm64-test uses) has no
# io_uring, so the engine stops at start there. This boots Debian's arm64
# cloud kernel under qemu-system-aarch64 (full-system emulation, its own
# io_uring) with an initramfs holding busybox, the arm64 edgemesh of
# build-arm64/ and the arm64 libraries it loads. Its init starts a cloud
# node (tunnel listener on loopback, capture off, admin off) for each
# worker count, waits 15 s, prints VmRSS, VmHWM and their parts from
# /proc/PID/status (RssShmem: the binary and libraries, which sit in the
# initramfs), stops it with SIGTERM and powers off. Nothing leaves the
# guest (no network device). Installs qemu-system-arm and cpio; takes the
# kernel and busybox packages with apt-get download (not installed) into
# build-arm64/vm/. About 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=("${@:-1 2 4}")
# shellcheck disable=SC2206
workers=(${workers[*]})

JOBS=${JOBS:-2} cmake/arm64.sh build >/dev/null
VM=$PWD/build-arm64/vm
mkdir -p "$VM/debs"
chmod 0777 "$VM/debs"
missing=""
for p in qemu-system-arm cpio; do
	dpkg-query -W -f='${Status}' $p 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ ! -e "$VM/vmlinuz" ] || [ ! -x "$VM/busybox" ]; then
	# The cloud kernel (virt machines' drivers built in) the meta package
	# names today, and a static busybox.
	kpkg=$(apt-cache depends linux-image-cloud-arm64:arm64 | sed -n 's/^ *Depends: //p' | head -n 1)
	(cd "$VM/debs" && apt-get download -qq "$kpkg" busybox-static:arm64 2>/dev/null)
	rm -rf "$VM/x" && mkdir "$VM/x"
	for d in "$VM"/debs/*.deb; do dpkg -x "$d" "$VM/x"; done
	kernels=("$VM"/x/boot/vmlinuz-*)
	cp "${kernels[0]}" "$VM/vmlinuz"
	cp "$VM/x/bin/busybox" "$VM/busybox"
	rm -rf "$VM/x" "$VM/debs"
fi

# The initramfs: busybox, edgemesh and the closure of its libraries.
R=$VM/root
rm -rf "$R" && mkdir -p "$R"/{bin,dev,proc,sys,tmp,etc,lib/aarch64-linux-gnu}
cp "$VM/busybox" "$R/bin/busybox"
for t in sh mount ip sleep cat grep kill poweroff mkdir echo; do ln -s busybox "$R/bin/$t"; done
aarch64-linux-gnu-strip -o "$R/bin/edgemesh" build-arm64/edgemesh
cp -L /lib/ld-linux-aarch64.so.1 "$R/lib/"
todo=$(readelf -d build-arm64/edgemesh | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
seen=" ld-linux-aarch64.so.1 "
while [ -n "$todo" ]; do
	next=""
	for lib in $todo; do
		case $seen in *" $lib "*) continue ;; esac
		seen="$seen$lib "
		src=""
		for d in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu; do
			[ -e "$d/$lib" ] && { src=$d/$lib; break; }
		done
		[ -n "$src" ] || { echo "no arm64 $lib" >&2; exit 1; }
		cp -L "$src" "$R/lib/aarch64-linux-gnu/$lib"
		next="$next $(readelf -d "$src" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
	done
	todo=$next
done
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
python3 - "$R/etc/cloud.json" "$key" <<'EOF'
import json, sys
path, key = sys.argv[1:]
# The shipped cloud config, its paths under /var/lib/edgemesh moved to /tmp/data.
def moved(v):
    if isinstance(v, dict):
        return {k: moved(x) for k, x in v.items()}
    if isinstance(v, list):
        return [moved(x) for x in v]
    if isinstance(v, str) and v.startswith("/var/lib/edgemesh"):
        return "/tmp/data" + v[len("/var/lib/edgemesh"):]
    return v
c = moved(json.load(open("conf/cloud.json")))
c["admin"] = {"listen": ""}
c["tunnel"].update(listen="127.0.0.1:20006", cluster_key=key)
json.dump(c, open(path, "w"), indent=1)
EOF
cat >"$R/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t devtmpfs dev /dev 2>/dev/null
ip link set lo up
echo "arm64-vm: kernel \$(cat /proc/sys/kernel/osrelease), \$(grep -c ^processor /proc/cpuinfo) cpus, \$(grep -m1 KernelPageSize /proc/self/smaps | tr -s " ")"
for w in ${workers[*]}; do
	rm -rf /tmp/data; mkdir -p /tmp/data
	sed "s/\"workers\": *[0-9]*/\"workers\": \$w/" /etc/cloud.json >/tmp/c.json
	/bin/edgemesh -c /tmp/c.json >/tmp/log 2>&1 &
	pid=\$!
	sleep 15
	if [ -d /proc/\$pid ]; then
		echo "arm64-vm: workers \$w \$(grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)' /proc/\$pid/status | tr -s ' \t\n' ' ')"
		kill -TERM \$pid; sleep 3
	else
		echo "arm64-vm: workers \$w: edgemesh exited:"; cat /tmp/log
	fi
	grep -m2 -E 'starting|io_uring|error' /tmp/log | sed 's/^/arm64-vm:   /'
done
poweroff -f
EOF
chmod 0755 "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$VM/initrd.gz"

echo "booting $(basename "$(ls "$VM"/vmlinuz)") under qemu-system-aarch64 (workers: ${workers[*]})"
timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 2 -m 1024 -nographic -no-reboot \
	-nic none -kernel "$VM/vmlinuz" -initrd "$VM/initrd.gz" \
	-append "console=ttyAMA0 quiet rdinit=/init panic=-1" </dev/null | tr -d '\r' | grep '^arm64-vm:'
