#!/usr/bin/env bash
# Export from Builder against the same export from local harts, in one run: a generated
# closure served by testkit's fake Builder on loopback (`hab-oci-testkit serve-builder`),
# exported with empty artifact, key and hab-oci caches (every package and the key
# downloaded, verified, then built), next to `--source` with an empty hab-oci cache.
# Prints wall and CPU seconds and the ratio (the machine is shared: compare ratios).
#
#   bash scripts/bench-builder.sh            # 40 packages, 100 MB unpacked, 3 rounds
#   PACKAGES=90 SIZE_MB=200 ROUNDS=1 bash scripts/bench-builder.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-40}
size=${SIZE_MB:-100}
rounds=${ROUNDS:-3}
cargo build --release --quiet -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
tk=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d /tmp/hab-oci-bench-builder.XXXX)
srv=
trap '[ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

"$tk" gen --out "$work/c" --packages "$packages" --size-mb "$size" >/dev/null
"$tk" serve-builder --dir "$work/c" --channel stable >"$work/url" &
srv=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.1; done
url=$(head -n 1 "$work/url")

local_export() {
  rm -rf "$work/l" && mkdir -p "$work/l"
  measure env HAB_OCI_CACHE="$work/l/cache" HAB_CACHE_KEY_PATH="$work/c/keys" \
    HAB_CACHE_ARTIFACT_PATH="$work/l/none" \
    "$bin" -q export --source "$work/c" --no-supervisor gen/app -o "oci:$work/l/out"
}
builder_export() {
  rm -rf "$work/b" && mkdir -p "$work/b"
  measure env HAB_OCI_CACHE="$work/b/cache" HAB_CACHE_KEY_PATH="$work/b/keys" \
    HAB_CACHE_ARTIFACT_PATH="$work/b/artifacts" \
    "$bin" -q export --url "$url" --channel stable --no-supervisor gen/app -o "oci:$work/b/out"
}

echo "closure: $packages packages, $size MB unpacked; Builder at $url (loopback)"
printf '%-6s %-34s %8s %8s %8s\n' round step wall cpu ratio
for r in $(seq "$rounds"); do
  read -r lw lc _ < <(local_export)
  read -r bw bc _ < <(builder_export)
  n=$(find "$work/b/artifacts" -name '*.hart' | wc -l)
  ratio=$(python3 -c "print(f'{$bw/$lw:.2f}')")
  printf '%-6s %-34s %8s %8s %8s\n' "$r" "local harts (--source), cold" "$lw" "$lc" "1.00"
  printf '%-6s %-34s %8s %8s %8s\n' "$r" "Builder, cold caches ($n downloaded)" "$bw" "$bc" "$ratio"
done
