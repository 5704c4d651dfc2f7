#!/usr/bin/env bash
# Regenerates the example packages in examples/artifacts from the package directories in
# examples/pkgs, signed with the test-only example key in examples/keys (created on first run).
# First it builds the example's program from examples/src into the package directories:
# example/libhello's lib/libhello.a and include/hello.h, and example/hello's bin/hello and
# `run`, a static x86_64 program without libc (under 1 KB) that prints the greeting of
# example/greeting-data, so an image of the closure runs with no shell and no dynamic loader.
# The output is reproducible: fixed compiler flags, a deterministic `ar`, normalized modes and
# every mtime SOURCE_DATE_EPOCH. (Another gcc/binutils release may emit other bytes for the
# binaries: commit them with the harts.)
#
#   bash scripts/make-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=examples/pkgs/hab/pkgs/example
libhello=$pkgs/libhello/1.2.0/20240101000000
[ "$(uname -m)" = x86_64 ] || { echo "make-examples.sh: the example program is x86_64 Linux code" >&2; exit 1; }
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cflags=(-std=c11 -m64 -march=x86-64 -mtune=generic -Os -Wall -Wextra -Werror -ffreestanding
  -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-pie
  -fcf-protection=none -fno-ident)
gcc "${cflags[@]}" -c examples/src/libhello/hello.c -o "$build/hello.o"
mkdir -p "$libhello/lib" "$libhello/include"
rm -f "$libhello/lib/libhello.a"
ar rcsD "$libhello/lib/libhello.a" "$build/hello.o"
cp examples/src/libhello/hello.h "$libhello/include/hello.h"
gcc "${cflags[@]}" -I"$libhello/include" -static -nostdlib -no-pie -s -Wl,--build-id=none \
  -Wl,-z,noseparate-code -Wl,-z,norelro -Wl,-z,noexecstack \
  examples/src/hello/main.c -L"$libhello/lib" -lhello -o "$build/hello"
for hello in "$pkgs"/hello/*/*; do
  mkdir -p "$hello/bin"
  # `run` (what a plan's pkg_svc_run makes; an image's entrypoint with --no-supervisor) is
  # the program itself: a script would need a shell the image does not have.
  cp "$build/hello" "$hello/bin/hello"
  rm -f "$hello/run"
  cp "$build/hello" "$hello/run"
done

cargo build --quiet --release -p hab-oci
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/release/hab-oci
keys=examples/keys
mkdir -p "$keys" examples/artifacts

key=$(ls "$keys"/example-*.sig.key 2>/dev/null | head -n 1 || true)
if [ -z "$key" ]; then
  "$bin" --quiet key generate --keys "$keys" example >/dev/null
  key=$(ls "$keys"/example-*.sig.key | head -n 1)
fi

# git keeps only the executable bit; give everything else fixed modes.
find examples/pkgs -type d -exec chmod 755 {} +
find examples/pkgs -type f -perm -u+x -exec chmod 755 {} +
find examples/pkgs -type f ! -perm -u+x -exec chmod 644 {} +

rm -f examples/artifacts/*.hart
export SOURCE_DATE_EPOCH=1704067200
for ident in examples/pkgs/hab/pkgs/*/*/*/*; do
  (cd examples/artifacts && "$bin" --quiet hart pack --key "../../$key" "../../$ident")
done
"$bin" hart verify --keys "$keys" examples/artifacts/*.hart
"$bin" resolve --source examples example/hello
