#!/usr/bin/env bash
# Benchmark: a two-platform export (x86_64-linux + aarch64-linux, one index) against the
# one-platform export of the same closure, measured in this run; then a push of both, and
# an image on a registry base pushed to the base's registry (what the push uploads of the
# base: nothing). Needs the registry of scripts/services.sh and skopeo.
#
#   bash scripts/bench-platforms.sh        # 40 packages, ~100 MB unpacked per target
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-40}
size_mb=${SIZE_MB:-100}
. scripts/services.sh
reg=$HAB_OCI_TEST_REGISTRY
cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
kit=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seed=$(date +%s)
for t in x86_64-linux aarch64-linux; do
  "$kit" gen --out "$work/c" --packages "$packages" --size-mb "$size_mb" --block-kb 8192 --seed "$seed" --target "$t" >/dev/null
done
# The base: another closure, exported as an image and pushed with skopeo.
"$kit" gen --out "$work/b" --origin base --packages 10 --size-mb 30 --seed "$seed" >/dev/null
run_id=$$-$(date +%s)
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }'; }
exp=(export -q --no-cache --sbom none --source "$work/c" --no-supervisor gen/app)
one=$(secs "$bin" "${exp[@]}" --target x86_64-linux -o "oci:$work/one")
two=$(secs "$bin" "${exp[@]}" --target x86_64-linux,aarch64-linux -o "oci:$work/two")
push=$(secs "$bin" "${exp[@]}" --target x86_64-linux,aarch64-linux --registry-url "$reg/bench-$run_id" --push-image --report "$work/push.json")
noop=$(secs "$bin" "${exp[@]}" --target x86_64-linux,aarch64-linux --registry-url "$reg/bench-$run_id" --push-image --report "$work/noop.json")

"$bin" export -q --no-cache --sbom none --source "$work/b" --no-supervisor base/app -o "oci:$work/base" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/base:latest" "docker://$reg/bench-$run_id/base:1" >/dev/null
on_base=$(secs "$bin" "${exp[@]}" --base-image "$reg/bench-$run_id/base:1" --registry-url "$reg/bench-$run_id/on-base" --push-image --report "$work/base.json")

python3 - "$work" "$one" "$two" "$push" "$noop" "$on_base" "$packages" "$size_mb" <<'PY'
import json, sys
w, one, two, push, noop, on_base = sys.argv[1], *map(float, sys.argv[2:7])
packages, size_mb = sys.argv[7], sys.argv[8]
p, n, b = (json.load(open(f"{w}/{f}.json")) for f in ("push", "noop", "base"))
base_bytes = sum(l["size"] for l in b["layers"] if l.get("source") == "base")
ours = sum(l["size"] for l in b["layers"] if l.get("source") != "base")
print(f"\n{packages} packages, ~{size_mb} MB unpacked per target; loopback registry\n")
print(f"{'step':58} {'wall s':>8} {'ratio':>7}")
print(f"{'export -o oci:, x86_64-linux only (baseline)':58} {one:8.2f} {1:7.2f}")
print(f"{'export -o oci:, x86_64-linux + aarch64-linux (index)':58} {two:8.2f} {two / one:7.2f}")
print(f"{'export --push-image, two platforms, cold':58} {push:8.2f} {push / one:7.2f}")
print(f"{'export --push-image, two platforms, no-op':58} {noop:8.2f} {noop / one:7.2f}")
print(f"{'export --push-image on a registry base (same registry)':58} {on_base:8.2f} {on_base / one:7.2f}")
pp, nn, bb = p["push"], n["push"], b["push"]
print(f"\ncold push: {pp['blobs_uploaded']} blobs, {pp['bytes_uploaded']} bytes uploaded, {pp['requests']} requests")
print(f"no-op push: {nn['blobs_uploaded']} blobs, {nn['bytes_uploaded']} bytes uploaded, {nn['tags_unchanged']} tags unchanged, {nn['requests']} requests")
print(f"on the base: the base's layers {base_bytes} bytes ({bb['blobs_mounted']} blobs mounted), our layers {ours} bytes; "
      f"uploaded {bb['bytes_uploaded']} bytes, of which beyond our layers (the config): {bb['bytes_uploaded'] - ours}")
PY
