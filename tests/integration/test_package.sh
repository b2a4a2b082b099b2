#!/usr/bin/env bash
# The Debian package (packaging/build-deb.sh, `make deb`): its contents,
# control fields and conffiles; an install, upgrade, remove and purge with
# dpkg into a throwaway root (never the machine's own /usr, /etc or dpkg
# database); the installed programs checking the installed config; and the
# unit through `systemd-analyze verify`. Builds build-deb/ if needed.
. "$(dirname "$0")/lib.sh"

it_need dpkg dpkg-deb dpkg-query cmake md5sum
[ "$(id -u)" = 0 ] || it_skip "needs root (dpkg installs root-owned files into the test root)"

arch=$(dpkg --print-architecture)
em_version=$(sed -n 's/^#define EM_VERSION "\(.*\)"$/\1/p' "$IT_ROOT/proto/em.h")
v1=${em_version/-/\~}
v2=$v1+up1
dpkg --compare-versions "$v2" gt "$v1" || it_die "test versions: $v2 must sort after $v1"

it_log "building the packages $v1 and $v2"
deb1=$("$IT_ROOT/packaging/build-deb.sh" -o "$IT_TMP/v1" 2>"$IT_TMP/build1.log" | tail -n 1) ||
	it_die "build-deb.sh failed: $(tail -n 5 "$IT_TMP/build1.log")"
deb2=$("$IT_ROOT/packaging/build-deb.sh" -o "$IT_TMP/v2" -v "$v2" 2>"$IT_TMP/build2.log" | tail -n 1) ||
	it_die "build-deb.sh -v failed: $(tail -n 5 "$IT_TMP/build2.log")"
it_check "package named edgemesh_${v1}_$arch.deb" [ "$deb1" = "$IT_TMP/v1/edgemesh_${v1}_$arch.deb" ]
it_check "bumped package named edgemesh_${v2}_$arch.deb" [ "$deb2" = "$IT_TMP/v2/edgemesh_${v2}_$arch.deb" ]
[ -f "$deb1" ] && [ -f "$deb2" ] || it_die "no package built"

# ---- contents: exact file set, modes and owners ------------------------------
dpkg-deb -c "$deb1" | awk '{ print $1, $2, $6 }' | sort -k3 >"$IT_TMP/contents"
want_contents() {
	cat <<-'EOF'
	drwxr-xr-x root/root ./
	drwxr-xr-x root/root ./etc/
	drwxr-xr-x root/root ./etc/edgemesh/
	-rw------- root/root ./etc/edgemesh/cloud.json
	-rw------- root/root ./etc/edgemesh/edge.json
	drwxr-xr-x root/root ./lib/
	drwxr-xr-x root/root ./lib/systemd/
	drwxr-xr-x root/root ./lib/systemd/system/
	-rw-r--r-- root/root ./lib/systemd/system/edgemesh.service
	drwxr-xr-x root/root ./usr/
	drwxr-xr-x root/root ./usr/bin/
	-rwxr-xr-x root/root ./usr/bin/edgemesh
	-rwxr-xr-x root/root ./usr/bin/meshctl
	drwxr-xr-x root/root ./usr/share/
	drwxr-xr-x root/root ./usr/share/doc/
	drwxr-xr-x root/root ./usr/share/doc/edgemesh/
	-rw-r--r-- root/root ./usr/share/doc/edgemesh/PROTOCOL.md
	-rw-r--r-- root/root ./usr/share/doc/edgemesh/README.md
	-rw-r--r-- root/root ./usr/share/doc/edgemesh/config.md
	-rw-r--r-- root/root ./usr/share/doc/edgemesh/copyright
	EOF
}
want_contents | sort -k3 >"$IT_TMP/contents.want"
if diff -u "$IT_TMP/contents.want" "$IT_TMP/contents" >"$IT_TMP/contents.diff"; then
	it_ok "contents: programs in /usr/bin, configs 0600 in /etc/edgemesh, unit, docs; all root-owned"
else
	it_fail "contents differ from the layout: $(cat "$IT_TMP/contents.diff")"
fi

# ---- control fields ----------------------------------------------------------
field() { dpkg-deb -f "$1" "$2"; }
it_check "Package: edgemesh" [ "$(field "$deb1" Package)" = edgemesh ]
it_check "Version: $v1 (from EM_VERSION $em_version)" [ "$(field "$deb1" Version)" = "$v1" ]
it_check "bumped Version: $v2" [ "$(field "$deb2" Version)" = "$v2" ]
it_check "Architecture: $arch" [ "$(field "$deb1" Architecture)" = "$arch" ]
it_check "Maintainer set" [ -n "$(field "$deb1" Maintainer)" ]
it_check "Recommends: iptables" [ "$(field "$deb1" Recommends)" = iptables ]
it_check "Description set" [ -n "$(field "$deb1" Description)" ]
depends=$(field "$deb1" Depends)
dep_names=$(echo "$depends" | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' | grep -v '^$')
for p in libc6 liburing2 libsqlite3-0 libmimalloc2.0 libcjson1 libyaml-0-2 liburcu8 libssl3 libbpf1; do
	it_check "Depends names $p" grep -qx "$p" <<<"$dep_names"
done
# Every library the programs link (their NEEDED entries, as ldd resolves
# them) comes from a package Depends names; what those libraries load in
# turn (libbpf's libelf, say) is their packages' own Depends.
dpkg-deb -x "$deb1" "$IT_TMP/x"
if command -v ldd >/dev/null && command -v readelf >/dev/null; then
	missing=""
	needed=$(readelf -d "$IT_TMP/x/usr/bin/edgemesh" "$IT_TMP/x/usr/bin/meshctl" |
		sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
	for lib in $(ldd "$IT_TMP/x/usr/bin/edgemesh" "$IT_TMP/x/usr/bin/meshctl" |
		awk '$3 ~ /^\// { print $1, $3 }' | sort -u |
		while read -r name path; do grep -qx "$name" <<<"$needed" && echo "$path"; done | sort -u); do
		alt=$lib
		case $lib in /usr/lib/*) alt=${lib#/usr} ;; /lib/*) alt=/usr$lib ;; esac
		pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$alt" 2>/dev/null) || { missing="$missing $lib(no package)"; continue; }
		pkg=${pkg%%:*}
		grep -qx "$pkg" <<<"$dep_names" || missing="$missing $lib($pkg)"
	done
	it_check "Depends covers every library the programs link${missing:+; missing:$missing}" [ -z "$missing" ]
fi
dpkg-deb -I "$deb1" conffiles >"$IT_TMP/conffiles"
it_check "conffiles: /etc/edgemesh/edge.json and cloud.json" \
	[ "$(sort "$IT_TMP/conffiles")" = "$(printf '/etc/edgemesh/cloud.json\n/etc/edgemesh/edge.json')" ]
it_check "md5sums match the files" \
	bash -c "cd '$IT_TMP/x' && dpkg-deb -I '$deb1' md5sums | md5sum --quiet -c -"

unit=$IT_TMP/x/lib/systemd/system/edgemesh.service
it_check "unit: NoNewPrivileges=yes" grep -qx 'NoNewPrivileges=yes' "$unit"
it_check "unit names no /usr/local path" bash -c "! grep -q /usr/local '$unit'"
it_check "unit: ExecStart=/usr/bin/edgemesh -c /etc/edgemesh/edge.json" \
	grep -qx 'ExecStart=/usr/bin/edgemesh -c /etc/edgemesh/edge.json' "$unit"
it_check "unit: ExecReload checks the config before the SIGHUP" \
	bash -c "grep '^ExecReload=' '$unit' | head -n 2 | tr '\n' '|' | grep -qx 'ExecReload=/usr/bin/edgemesh -c /etc/edgemesh/edge.json -t|ExecReload=/bin/kill -HUP \\\$MAINPID|'"

# ---- install into a throwaway root ------------------------------------------
R=$IT_TMP/root
ADMIN=$R/var/lib/dpkg
mkdir -p "$ADMIN/info" "$ADMIN/updates" "$ADMIN/triggers"
: >"$ADMIN/available"
# The root's database holds the machine's entries of the packages Depends
# names, so dpkg checks the dependencies for real (and finds them met).
: >"$ADMIN/status"
for p in $dep_names; do
	# With a foreign architecture added (make arm64-test), a name alone is
	# ambiguous for packages installed for both: ask for ours first.
	{ dpkg-query -s "$p:$arch" 2>/dev/null || dpkg-query -s "$p" 2>/dev/null; } >>"$ADMIN/status" ||
		it_die "host lacks $p, which the package depends on"
	echo >>"$ADMIN/status"
	: >"$ADMIN/info/$p.list"
	: >"$ADMIN/info/$p:$arch.list"
done
DPKG=(dpkg "--root=$R" --force-not-root --force-script-chrootless --log=/dev/null)
state() { dpkg-query "--admindir=$ADMIN" -W -f '${Status} ${Version}' edgemesh 2>/dev/null; }

# What the host has before: none of it may change.
host_sig() {
	local f
	for f in /usr/bin/edgemesh /usr/bin/meshctl /etc/edgemesh /lib/systemd/system/edgemesh.service /var/lib/edgemesh; do
		stat -c '%n %i %Y' "$f" 2>/dev/null || echo "$f absent"
	done
	dpkg-query -W -f '${Status} ${Version}' edgemesh 2>/dev/null || echo "edgemesh not in the host database"
}
host_before=$(host_sig)

"${DPKG[@]}" -i "$deb1" >"$IT_TMP/install.log" 2>&1
it_check "dpkg --root -i installs (log: $(tail -n 2 "$IT_TMP/install.log" | tr '\n' ' '))" \
	[ "$(state)" = "install ok installed $v1" ]
mode() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
it_check "installed /usr/bin/edgemesh 755 root" [ "$(mode "$R/usr/bin/edgemesh")" = "755 root:root" ]
it_check "installed /usr/bin/meshctl 755 root" [ "$(mode "$R/usr/bin/meshctl")" = "755 root:root" ]
it_check "installed /etc/edgemesh/edge.json 600 root" [ "$(mode "$R/etc/edgemesh/edge.json")" = "600 root:root" ]
it_check "installed /etc/edgemesh/cloud.json 600 root" [ "$(mode "$R/etc/edgemesh/cloud.json")" = "600 root:root" ]
it_check "installed unit 644" [ "$(mode "$R/lib/systemd/system/edgemesh.service")" = "644 root:root" ]
it_check "installed docs" [ -s "$R/usr/share/doc/edgemesh/README.md" ] && [ -s "$R/usr/share/doc/edgemesh/copyright" ]
it_check "installed edge.json is the shipped conf/edge.json" cmp -s "$R/etc/edgemesh/edge.json" "$IT_ROOT/conf/edge.json"
it_check "installed meshctl runs (usage)" bash -c "'$R/usr/bin/meshctl' -h 2>&1 | grep -q '^usage: meshctl'"

# The shipped placeholder key is refused, with the hint; a real key passes.
out=$("$R/usr/bin/edgemesh" -c "$R/etc/edgemesh/edge.json" -t 2>&1)
rc=$?
it_check "installed edgemesh -t refuses the shipped edge.json (rc=$rc)" [ $rc -ne 0 ]
it_check "the refusal says to make a key with openssl rand" grep -q 'openssl rand -hex 32' <<<"$out"
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
for f in edge cloud; do
	sed "s/change-me-to-a-long-random-cluster-key/$key/" "$R/etc/edgemesh/$f.json" >"$IT_TMP/$f.json"
	out=$("$R/usr/bin/edgemesh" -c "$IT_TMP/$f.json" -t 2>&1)
	it_check "installed edgemesh -t accepts the installed $f.json with a real key ($out)" [ $? -eq 0 ]
done

# ---- upgrade: a modified conffile is kept ------------------------------------
sed -i "s/change-me-to-a-long-random-cluster-key/$key/" "$R/etc/edgemesh/edge.json"
edited=$(md5sum <"$R/etc/edgemesh/edge.json")
"${DPKG[@]}" -i "$deb2" >"$IT_TMP/upgrade.log" 2>&1
it_check "upgrade to $v2 (log: $(tail -n 2 "$IT_TMP/upgrade.log" | tr '\n' ' '))" \
	[ "$(state)" = "install ok installed $v2" ]
it_check "upgrade keeps the edited edge.json" [ "$(md5sum <"$R/etc/edgemesh/edge.json")" = "$edited" ]
it_check "upgrade keeps its mode 600" [ "$(mode "$R/etc/edgemesh/edge.json")" = "600 root:root" ]
it_check "upgrade leaves no .dpkg-new/.dpkg-old" bash -c "! ls '$R/etc/edgemesh' | grep -q dpkg"
it_check "edited edge.json passes -t after the upgrade" \
	bash -c "'$R/usr/bin/edgemesh' -c '$R/etc/edgemesh/edge.json' -t 2>/dev/null"

# ---- remove keeps the conffiles, purge removes them and the state ------------
mkdir -p "$R/var/lib/edgemesh" && echo db >"$R/var/lib/edgemesh/edgemesh.db"
"${DPKG[@]}" -r edgemesh >"$IT_TMP/remove.log" 2>&1
it_check "remove leaves config-files ($(state))" [ "$(state)" = "deinstall ok config-files $v2" ]
it_check "remove deletes the programs" [ ! -e "$R/usr/bin/edgemesh" ] && [ ! -e "$R/usr/bin/meshctl" ]
it_check "remove deletes the unit" [ ! -e "$R/lib/systemd/system/edgemesh.service" ]
it_check "remove keeps the edited edge.json" [ "$(md5sum <"$R/etc/edgemesh/edge.json" 2>/dev/null)" = "$edited" ]
"${DPKG[@]}" -P edgemesh >"$IT_TMP/purge.log" 2>&1
it_check "purge forgets the package ($(state))" bash -c "! dpkg-query --admindir='$ADMIN' -W edgemesh >/dev/null 2>&1 || [ \"\$(dpkg-query --admindir='$ADMIN' -W -f '\${Status}' edgemesh)\" = 'unknown ok not-installed' ]"
it_check "purge removes the conffiles and /etc/edgemesh" [ ! -e "$R/etc/edgemesh" ]
it_check "purge removes the state directory (postrm, under DPKG_ROOT)" [ ! -e "$R/var/lib/edgemesh" ]
it_check "purge leaves no file of the package" \
	bash -c "[ -z \"\$(find '$R' -path '$ADMIN' -prune -o -type f -print)\" ]"

host_after=$(host_sig)
it_check "the host's files and dpkg database are untouched" [ "$host_before" = "$host_after" ]

# ---- the packaged daemon with the unit's capabilities only ------------------
# Root bounded to CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_BPF with
# no_new_privs, as the unit runs it (setpriv stands in for systemd): capture
# on in a namespace of the test's own, its rules installed at start, removed
# by SIGTERM, and removed by --remove-capture after a SIGKILL.
caps=-all,+net_admin,+net_raw,+net_bind_service,+bpf
if command -v setpriv >/dev/null && command -v ip >/dev/null && command -v iptables-save >/dev/null &&
	setpriv --bounding-set "$caps" --no-new-privs -- true 2>/dev/null; then
	it_netns capped
	if it_in iptables -t nat -S >/dev/null 2>&1; then
		EDGEMESH=$IT_TMP/edgemesh-capped
		printf '#!/bin/sh\nexec setpriv --bounding-set %s --no-new-privs -- %s "$@"\n' \
			"$caps" "$IT_TMP/x/usr/bin/edgemesh" >"$EDGEMESH"
		chmod 755 "$EDGEMESH"
		IT_CAPTURE='{"enabled": true, "port": 15001, "service_cidrs": ["10.96.0.0/12"]}'
		it_em_config
		chain() { it_in iptables-save -t nat | grep -q '^:EDGEMESH '; }
		it_em_start
		it_check "capped daemon has exactly the four capabilities" \
			[ "$(awk '/^CapEff:/ { print $2 }' "/proc/$IT_EM_PID/status")" = 0000008000003400 ]
		it_check "capped daemon installs its capture chain" chain
		it_em_stop TERM
		it_check "capped daemon exits 0 on SIGTERM (rc=$IT_RC)" [ "$IT_RC" = 0 ]
		it_check "capped daemon removes its chain at exit" bash -c "! ip netns exec '$IT_NS' iptables-save -t nat | grep -q EDGEMESH"
		it_em_start
		it_check "capped daemon installs its chain again" chain
		it_em_stop KILL
		it_check "the chain outlives SIGKILL" chain
		it_check "capped --remove-capture exits 0" it_in "$EDGEMESH" -c "$IT_CONF" --remove-capture
		it_check "capped --remove-capture removes the chain" bash -c "! ip netns exec '$IT_NS' iptables-save -t nat | grep -q EDGEMESH"
	else
		it_log "capped capture run skipped: iptables nat does not work in a network namespace"
	fi
	IT_NS=""
else
	it_log "capped capture run skipped: needs setpriv (util-linux), ip and iptables"
fi

# ---- the unit through systemd-analyze verify ---------------------------------
# Verified inside a root made of the extracted package, the two host programs
# the unit runs beside edgemesh, and the host's target units it refers to.
if command -v systemd-analyze >/dev/null && [ -e /lib/systemd/system/multi-user.target ]; then
	V=$IT_TMP/verify
	cp -a "$IT_TMP/x" "$V"
	mkdir -p "$V/bin"
	cp /bin/touch /bin/kill "$V/bin/"
	cp -a /lib/systemd/system/*.target "$V/lib/systemd/system/"
	out=$(systemd-analyze verify "--root=$V" edgemesh.service 2>&1)
	rc=$?
	it_check "systemd-analyze verify: no complaint (rc=$rc${out:+: $out})" [ $rc -eq 0 ] && [ -z "$out" ]
	dump=$(SYSTEMD_LOG_LEVEL=debug systemd-analyze verify "--root=$V" edgemesh.service 2>&1)
	for k in CapabilityBoundingSet AmbientCapabilities; do
		got=$(sed -n "s/^[[:space:]]*$k: //p" <<<"$dump" | head -n 1)
		it_check "systemd parses $k as the four capabilities ($got)" \
			[ "$(tr ' ' '\n' <<<"$got" | sort | tr '\n' ' ')" = "cap_bpf cap_net_admin cap_net_bind_service cap_net_raw " ]
	done
	for k in 'ProtectSystem: strict' 'ProtectHome: yes' 'PrivateTmp: yes' 'UMask: 0077' \
		'StateDirectory: edgemesh' 'ReadWritePaths: -/run/xtables.lock' 'LimitNOFILE: 1048576'; do
		it_check "systemd parses $k" grep -q "^[[:space:]]*$k\$" <<<"$dump"
	done
	# The same check on a unit with a typo must complain: the check can fail.
	sed -i 's/^ProtectHome=/ProtectHom=/' "$V/lib/systemd/system/edgemesh.service"
	out=$(systemd-analyze verify "--root=$V" edgemesh.service 2>&1)
	it_check "systemd-analyze verify complains about a typo (control)" grep -q ProtectHom <<<"$out"
else
	it_log "systemd-analyze verify skipped: systemd-analyze or the host's systemd units missing (package systemd)"
fi

it_done
