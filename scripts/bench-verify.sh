#!/usr/bin/env bash
# Benchmark: `hab-oci hart verify` and `hab-oci resolve` on a generated closure, against the
# reference `xz -dc FILE > /dev/null` over the same payloads, all measured in this run (the
# machine is shared and noisy: read the ratios, not the seconds). Best of RUNS runs each.
#
#   bash scripts/bench-verify.sh            # 50 packages, ~100 MB unpacked, ~55 MB of harts
#   PACKAGES=120 SIZE_MB=600 bash scripts/bench-verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-50}
size_mb=${SIZE_MB:-100}
runs=${RUNS:-3}

cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Habitat's xz -6 -T0 cuts 24 MiB blocks; 4 MiB blocks make multi-block payloads at this size.
"$PWD/target/release/hab-oci-testkit" gen --out "$work/c" --packages "$packages" \
  --size-mb "$size_mb" --block-kb 4096 >/dev/null
harts=("$work"/c/artifacts/*.hart)
mkdir "$work/xz"
for f in "${harts[@]}"; do
  # The payload starts after the header's fifth newline.
  tail -n +6 "$f" > "$work/xz/$(basename "$f" .hart).xz"
done
hart_bytes=$(cat "${harts[@]}" | wc -c)
unpacked=$(cat "$work"/xz/*.xz | xz -dc | wc -c)

best() { # best wall seconds of $runs runs of "$@"
  local b="" t
  for _ in $(seq "$runs"); do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    t=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.4f", e - s }')
    if [ -z "$b" ] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then b=$t; fi
  done
  echo "$b"
}
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
xz_all() { for f in "$work"/xz/*.xz; do xz -dc "$f" > /dev/null; done; }
verify_all() { "$bin" hart verify --keys "$work/c/keys" "${harts[@]}"; }
resolve_all() { HAB_CACHE_ARTIFACT_PATH=/nonexistent "$bin" resolve --no-cache --source "$work/c" gen/app; }

ref=$(best xz_all)
ver=$(best verify_all)
res=$(best resolve_all)

printf '\nclosure: %d packages, %.1f MB of harts, %.1f MB unpacked; best of %d runs; %s cores\n\n' \
  "${#harts[@]}" "$(calc "$hart_bytes/1000000")" "$(calc "$unpacked/1000000")" "$runs" "$(nproc)"
printf '%-52s %9s %10s %9s\n' "command" "wall s" "MB/s hart" "vs ref"
row() { printf '%-52s %9.3f %10.1f %8.2fx\n' "$1" "$2" "$(calc "$hart_bytes/1000000/$2")" "$(calc "$2/$ref")"; }
row "xz -dc (reference, one file after another)" "$ref"
row "hab-oci hart verify (signature + BLAKE2b + IDENT)" "$ver"
row "hab-oci resolve (verify + full metadata decode)" "$res"
