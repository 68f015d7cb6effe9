# Shared by the image build scripts (sourced): an output directory is rebuilt only when
# its inputs changed (a stamp), built beside its final place and renamed into it, so a
# crash never leaves half a tree.

# up_to_date OUT STAMP: exits the script (0) when OUT was built from STAMP.
up_to_date() {
  if [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; then
    echo "$1 is up to date"
    exit 0
  fi
}

# start_build OUT NAME: prints a fresh 0755 temp dir beside OUT (removed on failure).
start_build() {
  mkdir -p "$(dirname "$1")"
  build_tmp=$(mktemp -d "$(dirname "$1")/.$2-build.XXXXXX")
  trap 'rm -rf "$build_tmp"' EXIT
  chmod 0755 "$build_tmp"
}

# publish OUT STAMP: stamps the temp dir and renames it over OUT.
publish() {
  echo "$2" >"$build_tmp/.stamp"
  if [ -e "$1" ]; then
    mv "$1" "$1.old.$$"
    mv "$build_tmp" "$1"
    rm -rf "$1.old.$$"
  else
    mv "$build_tmp" "$1"
  fi
  trap - EXIT
  echo "built $1"
}
