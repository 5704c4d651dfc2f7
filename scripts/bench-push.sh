#!/usr/bin/env bash
# Benchmark: native push to a loopback registry against `skopeo copy oci:DIR docker://...` of
# the same image, cold and no-op, measured in this run. The export is timed on its own, so
# the push's share is the difference. Needs the registry of scripts/services.sh.
#
#   bash scripts/bench-push.sh            # 40 packages, ~100 MB unpacked
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-40}
size_mb=${SIZE_MB:-100}
. scripts/services.sh
reg=$HAB_OCI_TEST_REGISTRY
cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PWD/target/release/hab-oci-testkit" gen --out "$work/c" --packages "$packages" --size-mb "$size_mb" --block-kb 8192 >/dev/null
run_id=$$-$(date +%s)
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }'; }
exp=(export -q --source "$work/c" --no-supervisor gen/app)

build=$(secs "$bin" "${exp[@]}" -o "oci:$work/img")
ours_cold=$(secs "$bin" "${exp[@]}" --registry-url "$reg/bench-$run_id/ours" --push-image)
ours_noop=$(secs "$bin" "${exp[@]}" --registry-url "$reg/bench-$run_id/ours" --push-image --report "$work/noop.json")
sk_cold=$(secs skopeo copy --dest-tls-verify=false "oci:$work/img:latest" "docker://$reg/bench-$run_id/skopeo:latest")
sk_noop=$(secs skopeo copy --dest-tls-verify=false "oci:$work/img:latest" "docker://$reg/bench-$run_id/skopeo:latest")
layers=$(python3 -c "import json; print(len(json.load(open('$work/noop.json'))['layers']))")
printf '\n%d packages, %d layers, %s MB unpacked; loopback registry %s\n\n' "$packages" "$layers" "$size_mb" "$reg"
printf '%-48s %8s\n' step "wall s"
printf '%-48s %8s\n' "hab-oci export -o oci: (build only)" "$build"
printf '%-48s %8s\n' "hab-oci export --push-image, cold (build + push)" "$ours_cold"
printf '%-48s %8s\n' "  push share (difference)" "$(awk -v a="$ours_cold" -v b="$build" 'BEGIN { printf "%.2f", a - b }')"
printf '%-48s %8s\n' "skopeo copy oci: -> docker://, cold" "$sk_cold"
printf '%-48s %8s\n' "hab-oci export --push-image, no-op (build + push)" "$ours_noop"
printf '%-48s %8s\n' "  push share (difference)" "$(awk -v a="$ours_noop" -v b="$build" 'BEGIN { printf "%.2f", a - b }')"
printf '%-48s %8s\n' "skopeo copy, no-op" "$sk_noop"
