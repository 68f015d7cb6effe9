#!/usr/bin/env bash
# Builds the demo layer store, shaped like left4me's /var/lib/left4me:
#   installation/      the busybox rootfs, owned by uid 980 (the service user), standing
#                      in for the shared game installation
#   overlays/maps/     a "map overlay": adds a file and overrides the installation's motd
#   overlays/plugins/  a "script-built overlay", owned by uid 981 like the sandbox's output
#                      (the demo bundle idmaps it 981 -> 980)
# usage: images/demo-store/build.sh BUSYBOX_ROOTFS OUTDIR   (idempotent, atomic rename)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
rootfs=${1:?usage: $0 BUSYBOX_ROOTFS OUTDIR}
out=${2:?usage: $0 BUSYBOX_ROOTFS OUTDIR}
stamp="$(cat "$rootfs/.stamp" 2>/dev/null || echo none)-$(sha256sum "$0" | cut -d' ' -f1)"
up_to_date "$out" "$stamp"
start_build "$out" store
tmp=$build_tmp
cp -a "$rootfs" "$tmp/installation"
rm -f "$tmp/installation/.stamp"
echo "installation motd (hidden by the maps overlay)" >"$tmp/installation/etc/motd"
mkdir -p "$tmp/installation/left4dead2/cfg"
echo 'hostname "installation default"' >"$tmp/installation/left4dead2/cfg/server.cfg"
chown -R 980:980 "$tmp/installation"
mkdir -p "$tmp/overlays/maps/etc" "$tmp/overlays/maps/left4dead2/addons" \
  "$tmp/overlays/plugins/left4dead2/addons/sourcemod/logs"
echo "welcome to the left4me demo (from overlays/maps)" >"$tmp/overlays/maps/etc/motd"
echo "c1m1_hotel" >"$tmp/overlays/maps/left4dead2/addons/maps.txt"
echo "sourcemod plugin" >"$tmp/overlays/plugins/left4dead2/addons/sourcemod/plugin.smx"
chown -R 981:981 "$tmp/overlays/plugins"
publish "$out" "$stamp"
