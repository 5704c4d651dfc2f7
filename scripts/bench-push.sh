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
kit=$PWD/target/release/hab-oci-testkit
# A fresh seed each run: content the registry has never seen, so "cold" is cold.
gen_args=(--out "$work/c" --packages "$packages" --size-mb "$size_mb" --block-kb 8192 --seed "$(date +%s)")
"$kit" gen "${gen_args[@]}" >/dev/null
run_id=$$-$(date +%s)
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }'; }
# --no-cache: every export builds its layers, so the push share is the difference.
exp=(export -q --no-cache --source "$work/c" --no-supervisor gen/app)

build=$(secs "$bin" "${exp[@]}" -o "oci:$work/img")
ours_cold=$(secs "$bin" "${exp[@]}" --registry-url "$reg/bench-$run_id/ours" --push-image)
ours_noop=$(secs "$bin" "${exp[@]}" --registry-url "$reg/bench-$run_id/ours" --push-image --report "$work/noop.json")
sk_cold=$(secs skopeo copy --dest-tls-verify=false "oci:$work/img:latest" "docker://$reg/bench-$run_id/skopeo:latest")
sk_noop=$(secs skopeo copy --dest-tls-verify=false "oci:$work/img:latest" "docker://$reg/bench-$run_id/skopeo:latest")
layers=$(python3 -c "import json; print(len(json.load(open('$work/noop.json'))['layers']))")
noop_requests=$(python3 -c "import json; p = json.load(open('$work/noop.json'))['push']; print(p['requests'])")
printf '\n%d packages, %d layers, %s MB unpacked; loopback registry %s\n\n' "$packages" "$layers" "$size_mb" "$reg"
printf '%-48s %8s\n' step "wall s"
printf '%-48s %8s\n' "hab-oci export -o oci: (build only)" "$build"
printf '%-48s %8s\n' "hab-oci export --push-image, cold (build + push)" "$ours_cold"
printf '%-48s %8s\n' "  push share (difference)" "$(awk -v a="$ours_cold" -v b="$build" 'BEGIN { printf "%.2f", a - b }')"
printf '%-48s %8s\n' "skopeo copy oci: -> docker://, cold" "$sk_cold"
printf '%-48s %8s\n' "hab-oci export --push-image, no-op (build + push)" "$ours_noop"
printf '%-48s %8s\n' "  push share (difference)" "$(awk -v a="$ours_noop" -v b="$build" 'BEGIN { printf "%.2f", a - b }')"
printf '%-48s %8s\n' "skopeo copy, no-op" "$sk_noop"
printf '\nno-op push: %s HTTP requests for 3 tags and %s layers (handshake included)\n' "$noop_requests" "$layers"

# Changes, pushed to the same repository; bytes from the report and from the registry's storage.
store=${HAB_OCI_SERVICES_DIR:-/tmp/hab-oci-services}/registry
stored() { du -sb "$store" | cut -f1; }
change() { # label, rebuild-args...
  local label=$1; shift
  "$kit" rebuild "${gen_args[@]}" "$@" >/dev/null
  local before after
  before=$(stored)
  "$bin" "${exp[@]}" --registry-url "$reg/bench-$run_id/ours" --push-image --report "$work/r.json" >/dev/null 2>&1
  after=$(stored)
  python3 - "$work/r.json" "$label" "$before" "$after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = r["push"]
print(f"{sys.argv[2]:<48} uploaded {p['blobs_uploaded']} blobs / {p['bytes_uploaded']} B, "
      f"skipped {p['blobs_skipped']}; registry storage +{int(sys.argv[4]) - int(sys.argv[3])} B")
PY
}
echo
change "v2: new release of the primary (gen/app)" --package app --release 20240202000000
change "v3: lib002 rebuilt with its dependents" --package lib002 --release 20240303000000
