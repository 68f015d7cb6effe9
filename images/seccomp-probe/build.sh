#!/bin/sh
# Builds the seccomp probe (probe.c) static for x86_64 and i386 into DIR/probe64 and
# DIR/probe32 (needs gcc-multilib, installed by hack/install-deps). Idempotent.
set -eu
out=${1:?usage: build.sh OUTDIR}
src=$(dirname "$0")/probe.c
mkdir -p "$out"
for bits in 64 32; do
  if [ ! -x "$out/probe$bits" ] || [ "$src" -nt "$out/probe$bits" ]; then
    gcc -m$bits -static -O2 -Wall -Werror -pthread -o "$out/.probe$bits.tmp" "$src"
    mv "$out/.probe$bits.tmp" "$out/probe$bits"
  fi
done
