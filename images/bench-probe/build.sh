#!/bin/sh
# Builds hack/bench's probes static for x86_64 into OUTDIR (idempotent: rebuilt only when
# a source is newer than its binary):
#   getppid      N raw getppid syscalls, prints ns per call (seccomp cost, scenario 5)
#   idmap-bind   the legacy helper's idmapped bind mount for runc/crun (scenario 4)
#   seccomp-filter  dumps a container's seccomp filter and runs it in a plain process (5)
# usage: images/bench-probe/build.sh OUTDIR
set -eu
out=${1:?usage: build.sh OUTDIR}
here=$(dirname "$0")
mkdir -p "$out"
for prog in getppid idmap-bind seccomp-filter; do
  src="$here/$prog.c"
  if [ ! -x "$out/$prog" ] || [ "$src" -nt "$out/$prog" ] || [ "$0" -nt "$out/$prog" ]; then
    gcc -static -O2 -Wall -Werror -o "$out/.$prog.tmp" "$src"
    mv "$out/.$prog.tmp" "$out/$prog"
  fi
done
