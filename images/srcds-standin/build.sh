#!/usr/bin/env bash
# Builds a layer store shaped like left4me's /var/lib/left4me, around the stand-in
# srcds (srcds_linux.c, a 32-bit static program; needs gcc-multilib):
#   base/                  the busybox rootfs (the system the game runs on)
#   installation/          srcds_run + srcds_linux + left4dead2/cfg/server.cfg (defaults) and
#                          the service user's home with .steam/sdk32/steamclient.so (a stand-in
#                          file), owned by uid 980 (the service user), like the shared installation
#   overlays/map/          a map overlay: left4dead2/addons/c2m1_highway.vpk and
#                          left4dead2/cfg/server_map.cfg setting the map
#   overlays/config/       a config overlay (script-built: owned by uid 981):
#                          left4dead2/cfg/server.cfg with a hostname, exec'ing server_map.cfg
# usage: images/srcds-standin/build.sh BUSYBOX_ROOTFS OUTDIR   (idempotent, atomic rename)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
rootfs=${1:?usage: $0 BUSYBOX_ROOTFS OUTDIR}
out=${2:?usage: $0 BUSYBOX_ROOTFS OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
stamp="$(cat "$rootfs/.stamp" 2>/dev/null || echo none)-$(cat "$0" "$here/srcds_linux.c" "$here/srcds_run" | sha256sum | cut -d' ' -f1)"
up_to_date "$out" "$stamp"
start_build "$out" srcds
tmp=$build_tmp
cp -a "$rootfs" "$tmp/base"
rm -f "$tmp/base/.stamp"
inst="$tmp/installation"
mkdir -p "$inst/left4dead2/cfg" "$inst/left4dead2/addons" "$inst/bin"
gcc -m32 -static -O2 -Wall -Werror -o "$inst/srcds_linux" "$here/srcds_linux.c"
install -m 0755 "$here/srcds_run" "$inst/srcds_run"
echo 'hostname "left4me stand-in (installation default)"' >"$inst/left4dead2/cfg/server.cfg"
mkdir -p "$inst/home/left4me/.steam/sdk32"
echo "stand-in steamclient" >"$inst/home/left4me/.steam/sdk32/steamclient.so"
chown -R 980:980 "$inst"
map="$tmp/overlays/map"
mkdir -p "$map/left4dead2/addons" "$map/left4dead2/cfg"
head -c 4096 /dev/zero >"$map/left4dead2/addons/c2m1_highway.vpk"
echo 'map c2m1_highway' >"$map/left4dead2/cfg/server_map.cfg"
config="$tmp/overlays/config"
mkdir -p "$config/left4dead2/cfg"
printf 'hostname "left4me test server"\nsv_cheats 0\nexec server_map.cfg\n' \
  >"$config/left4dead2/cfg/server.cfg"
chown -R 981:981 "$config"
publish "$out" "$stamp"
