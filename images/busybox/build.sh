#!/usr/bin/env bash
# Builds the busybox root filesystem used by the tests and the demo, from Debian's
# busybox-static (no downloads): busybox plus one symlink per applet, the usual top-level
# directories and a passwd/group with the users the tests and bundles use.
#
# usage: images/busybox/build.sh OUTDIR
# Idempotent: OUTDIR is rebuilt only when busybox or this script changed, and it is
# replaced atomically (built beside it, then renamed), so a crash never leaves half a rootfs.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

out=${1:?usage: $0 OUTDIR}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build.sh: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "build.sh: $busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

stamp="$(cat "$busybox" "$0" | sha256sum | cut -d" " -f1)"
up_to_date "$out" "$stamp"

start_build "$out" busybox
tmp=$build_tmp

mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,etc,root,run,var/tmp,home/user,tmp}
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
chmod 0700 "$tmp/root"
install -m 0755 "$busybox" "$tmp/bin/busybox"
# --list-full gives each applet's install path (bin/sh, usr/bin/env...); busybox itself
# is already installed and must not become a symlink to itself.
"$busybox" --list-full | grep -v '^\(bin/\)\?busybox$' | while read -r applet; do
  case "$applet" in
    bin/*) ln -sf busybox "$tmp/$applet" ;;
    *) ln -sf /bin/busybox "$tmp/$applet" ;;
  esac
done

cat >"$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
game:x:980:980:game server:/home/game:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$tmp/etc/group" <<'GROUP'
root:x:0:
game:x:980:
user:x:1000:
nogroup:x:65534:
GROUP
chown 1000:1000 "$tmp/home/user"
echo "left4me" >"$tmp/etc/hostname"
: >"$tmp/etc/resolv.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$tmp/etc/hosts"
publish "$out" "$stamp"
