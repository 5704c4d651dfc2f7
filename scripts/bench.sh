#!/usr/bin/env bash
# The speed table: for generated closures of two sizes, wall time, CPU time and peak RSS of
#   - the reference: `xz -dc | gzip -6` over the same harts, two at a time (2 cores);
#   - the native engine: cold (empty layer cache), warm (nothing changed), a new release of
#     the primary package, lib002 rebuilt with its dependents (each into oci:DIR);
#   - native cold export + push to the loopback registry, against the docker/BuildKit engine's
#     build + push of the same closure on a fresh dockerd, cold and with --cache-from the
#     image it pushed (Docker 20.10's client at /usr/bin/docker; the daemon's CPU time is not
#     in the CPU column, only the client's);
# every row also as a ratio to the reference, all measured in this run (the machine is
# shared and noisy: read the ratios). Needs the services of scripts/services.sh.
#
#   bash scripts/bench.sh                     # 40 packages / 100 MB and 120 / 600 MB
#   SIZES="40:100" bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"40:100 120:600"}
. scripts/services.sh >/dev/null
reg=$HAB_OCI_TEST_REGISTRY
cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
kit=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d /tmp/hb.XXXX)
. scripts/bench-lib.sh
trap 'stop_dockerds; rm -rf "$work"' EXIT
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
run_id=$$-$(date +%s)

printf '%s, %s CPUs, %s\n' "$(uname -sr)" "$(nproc)" "$(date -u +%Y-%m-%d)"
printf '\n%-11s %-46s %8s %8s %9s %9s\n' closure step "wall s" "cpu s" "peak MiB" "vs ref"
for s in $sizes; do
  n=${s%%:*}; mb=${s##*:}
  c="$work/c$n"
  gen=(--out "$c" --packages "$n" --size-mb "$mb" --block-kb 8192 --seed "$(date +%s)")
  "$kit" gen "${gen[@]}" >/dev/null
  mkdir -p "$c/xz"
  for f in "$c"/artifacts/*.hart; do tail -n +6 "$f" >"$c/xz/$(basename "$f").xz"; done
  label="${n}p/${mb}MB"
  ref=""
  row() { # step, "wall cpu rss"
    local w=${2%% *} rest=${2#* }
    local cpu=${rest%% *} rss=${rest##* }
    [ -n "$ref" ] || ref=$w
    printf '%-11s %-46s %8.2f %8.2f %9.1f %8.2fx\n' "$label" "$1" "$w" "$cpu" "$rss" \
      "$(awk -v a="$w" -v b="$ref" 'BEGIN { print a / b }')"
  }
  row "xz -dc | gzip -6, two at a time (reference)" \
    "$(measure sh -c "ls $c/xz/*.xz | xargs -P2 -I{} sh -c 'xz -dc {} | gzip -6 > /dev/null'")"
  exp=(-q export --source "$c" --no-supervisor gen/app)
  export HAB_OCI_CACHE="$work/cache$n"
  row "native cold (empty layer cache)" "$(measure "$bin" "${exp[@]}" -o "oci:$work/o1")"
  row "native warm (nothing changed)" "$(measure "$bin" "${exp[@]}" -o "oci:$work/o2")"
  export HAB_OCI_CACHE="$work/cache$n-push"
  prefix="$reg/bench-$run_id-$n"
  row "native cold export + push" \
    "$(measure "$bin" "${exp[@]}" --registry-url "$prefix/native" --push-image)"
  bk=(-q export --engine docker --engine-binary /usr/bin/docker --docker-builder buildkit
      --source "$c" --no-supervisor --registry-url "$prefix/buildkit" --push-image gen/app)
  fresh_dockerd
  row "docker/BuildKit build + push, cold" \
    "$(measure env DOCKER_HOST="$fresh" "$bin" "${bk[@]}" --no-auto-cache-from)"
  fresh_dockerd
  row "docker/BuildKit build + push, --cache-from" \
    "$(measure env DOCKER_HOST="$fresh" "$bin" "${bk[@]}" --cache-from "$prefix/buildkit/gen/app:latest")"
  stop_dockerds
  export HAB_OCI_CACHE="$work/cache$n"
  "$kit" rebuild "${gen[@]}" --package app --release 20240202000000 >/dev/null
  row "native, new release of the primary (warm)" "$(measure "$bin" "${exp[@]}" -o "oci:$work/o3")"
  "$kit" rebuild "${gen[@]}" --package lib002 --release 20240303000000 >/dev/null
  row "native, lib002 + dependents rebuilt (warm)" "$(measure "$bin" "${exp[@]}" -o "oci:$work/o4")"
  rm -rf "$c" "$work"/o* "$work"/cache* "$work"/d*
done
