#!/usr/bin/env bash
# Benchmark: what a fresh CI runner uploads when hab-oci pushes a docker/buildah image (the
# default: the image read out of the engine, each layer compressed with hab-oci's pinned
# gzip), for docker's legacy builder, docker's BuildKit (Docker 20.10's own client) and
# buildah, to the loopback registry of scripts/services.sh. Each engine works on state of its
# own (a dockerd with its own data root, a buildah store of its own), so the shared daemon
# is left alone.
#
# On a generated closure (gen --packages 40 --size-mb 100 --seed 1), per engine:
#   v1            export + push into an empty repository
#   v1 fresh      the engine's images and build cache removed (docker rmi, docker builder
#                 prune -af; buildah rmi --all), the same packages again, no cache options
#   v2 fresh      removed again, a new release of gen/app, no cache options
#   v2 fresh+cache the same into a repository holding only v1, with the cache options
#                 (docker: NAME:latest, pulled by the legacy builder, BuildKit's inline cache;
#                 buildah: --cache-from/--cache-to a cache repository)
# and prints wall time (build + read out + push), COPY steps from the cache, and the push
# section of the report: blobs uploaded / already there, bytes uploaded, tags written or
# unchanged. For docker's legacy builder it also builds v2 without a push on a new daemon
# (the push's share of "v2 fresh" is the difference), then runs `docker push` of it and
# prints what the daemon wrote meanwhile (/proc/PID/io wchar: the upload, since a push
# writes nothing else of size).
#
#   bash scripts/bench-engine-push.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
reg=$HAB_OCI_TEST_REGISTRY
cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
kit=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d /tmp/hbp.XXXX)
. scripts/bench-lib.sh
cleanup() {
  for st in "$work"/b*/storage.conf; do
    [ -e "$st" ] && CONTAINERS_STORAGE_CONF=$st buildah rmi --all --force >/dev/null 2>&1 || true
  done
  stop_dockerds
  rm -rf "$work"
}
trap cleanup EXIT
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
export HAB_OCI_CACHE=$work/cache
run_id=$$-$(date +%s)
gen=(--packages 40 --size-mb 100 --seed 1)

printf '\n40 packages, 100 MB unpacked (seed 1); registry %s; %s CPUs\n' "$reg" "$(nproc)"
printf '\n%-9s %-16s %7s %7s %9s %9s %12s %6s\n' engine step "wall s" cached "uploaded" "skipped" "bytes up" "tags"

row() { # engine, step, seconds, report
  python3 - "$@" <<'PY'
import json, sys
label, step, secs, path = sys.argv[1:5]
r = json.load(open(path)); p = r["push"]; e = r["engine"]
print(f"{label:<9} {step:<16} {float(secs):7.2f} {e['cached_steps']:>3}/{e['copy_steps']:<3} "
      f"{p['blobs_uploaded']:>9} {p['blobs_skipped']:>9} {p['bytes_uploaded']:>12} "
      f"{p['tags_written']}w/{p['tags_unchanged']}u")
PY
}

bench_engine() { # label, then hab-oci engine arguments
  local label=$1; shift
  local c="$work/$label"
  "$kit" gen --out "$c" "${gen[@]}" >/dev/null
  local prefix="$reg/bench-ep-$run_id/$label"
  local state_var state
  case $label in
    buildah)
      mkdir -p "$work/b$label"
      printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$work/b$label" "$work/b$label" >"$work/b$label/storage.conf"
      state_var=CONTAINERS_STORAGE_CONF state=$work/b$label/storage.conf ;;
    *) fresh_dockerd; state_var=DOCKER_HOST state=$fresh ;;
  esac
  local no_cache=() with_cache=()
  case $label in
    legacy | buildkit) no_cache=(--no-auto-cache-from) ;;
    buildah) with_cache=(--cache-from "$prefix/cache" --cache-to "$prefix/cache") ;;
  esac
  wipe() {
    if [ "$label" = buildah ]; then
      env "$state_var=$state" buildah rmi --all --force >/dev/null 2>&1 || true
    else
      # Children first: a parent refuses to go while a child image needs it.
      local ids _
      for _ in 1 2 3 4 5; do
        ids=$(docker -H "$state" images -aq | sort -u)
        [ -z "$ids" ] && break
        docker -H "$state" rmi -f $ids >/dev/null 2>&1 || true
      done
      docker -H "$state" builder prune -af >/dev/null
      [ -z "$(docker -H "$state" images -aq)" ] || { echo "images left on $state" >&2; exit 1; }
    fi
  }
  step() { # step name, repository, extra args...
    local name=$1 repo=$2; shift 2
    local s e
    s=$(date +%s.%N)
    env "$state_var=$state" "$bin" export -q --report "$work/r.json" --source "$c" --no-supervisor \
      --registry-url "$repo" --push-image "$@" gen/app >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    e=$(date +%s.%N)
    row "$label" "$name" "$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')" "$work/r.json"
  }
  local buildah_v1=()
  [ "$label" = buildah ] && buildah_v1=(--cache-to "$prefix/cache")
  step v1 "$prefix/a" "$@" "${no_cache[@]}" "${buildah_v1[@]}"
  # A repository holding v1 only, for the cache-options row.
  step "v1 (2nd repo)" "$prefix/b" "$@" "${no_cache[@]}"
  wipe; step "v1 fresh" "$prefix/a" "$@" "${no_cache[@]}"
  "$kit" rebuild --out "$c" "${gen[@]}" --package app --release 20240202000000 >/dev/null
  wipe; step "v2 fresh" "$prefix/a" "$@" "${no_cache[@]}"
  wipe; step "v2 fresh+cache" "$prefix/b" "$@" "${with_cache[@]}"
  if [ "$label" = legacy ]; then
    # `docker push` of the same v2 from a new daemon (the registry has every blob). A new
    # one: `docker rmi` keeps what the daemon learnt of the registry's blobs from its pulls
    # (the diff_id -> digest records), which a fresh runner does not have.
    fresh_dockerd
    state=$fresh
    local pid before after s e
    s=$(date +%s.%N)
    env DOCKER_HOST="$state" "$bin" export -q --source "$c" --no-supervisor --registry-url "$prefix/a" \
      "$@" "${no_cache[@]}" gen/app >/dev/null 2>&1
    e=$(date +%s.%N)
    printf '%-9s %-16s %7.2f\n' "$label" "v2 build only" "$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')"
    pid=$(cat "$(dirname "${state#unix://}")/pid")
    before=$(awk '/^wchar/ { print $2 }' "/proc/$pid/io")
    s=$(date +%s.%N)
    docker -H "$state" push -q "$prefix/a/gen/app:latest" >/dev/null
    e=$(date +%s.%N)
    after=$(awk '/^wchar/ { print $2 }' "/proc/$pid/io")
    printf '%-9s %-16s %7.2f %7s %9s %9s %12s\n' "$label" "docker push v2" \
      "$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')" - - - "$((after - before))"
  fi
}

bench_engine legacy --engine docker --docker-builder legacy
bench_engine buildkit --engine docker --engine-binary /usr/bin/docker --docker-builder buildkit
bench_engine buildah --engine buildah
