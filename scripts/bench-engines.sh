#!/usr/bin/env bash
# Benchmark and table for the engines: the fresh-CI scenario and two changes, for the native
# engine, docker's legacy builder, docker's BuildKit (through Docker 20.10's own client) and
# buildah (overlay storage), all pushing to the loopback registry of scripts/services.sh.
#
# For each engine, on a generated closure (40 packages by default):
#   v1            export + push into an empty engine state
#   fresh+cache   engine state thrown away (new dockerd data root / new buildah store /
#                 empty layer cache), v1 again with the cache options (docker: NAME:latest
#                 as cache source, pulled first by the legacy builder; BuildKit: its inline
#                 cache; buildah: --cache-from/--cache-to a cache repository; native: the
#                 layer cache v1 filled)
#   fresh         the same on fresh state with no cache options
#   v2            a new release of the primary package, with the cache options (on the
#                 state of "fresh+cache")
#   v2 fresh      the same on fresh engine state with no cache options
#   v3            lib002 rebuilt with its dependents, with the cache options
#   v3 fresh      the same on fresh engine state with no cache options
# and prints wall time, layers served from the engine's cache, and the layers the previous
# version's image did not have (what a push uploads): v1 for the v1 and v2 rows, v2 for v3.
#
#   bash scripts/bench-engines.sh             # 40 packages, ~100 MB unpacked
#   PACKAGES=10 SIZE_MB=10 bash scripts/bench-engines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
packages=${PACKAGES:-40}
size_mb=${SIZE_MB:-100}
. scripts/services.sh
reg=$HAB_OCI_TEST_REGISTRY
cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
kit=$PWD/target/release/hab-oci-testkit
work=$(mktemp -d /tmp/hbe.XXXX)
. scripts/bench-lib.sh
cleanup() {
  stop_dockerds
  rm -rf "$work"
}
trap cleanup EXIT
export HAB_CACHE_ARTIFACT_PATH=/nonexistent
export HAB_OCI_CACHE=$work/cache
run_id=$$-$(date +%s)

n_stores=0
fresh_store() {
  n_stores=$((n_stores + 1))
  local d="$work/b$n_stores"
  mkdir -p "$d"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$d" "$d" >"$d/storage.conf"
  fresh="$d/storage.conf"
}

new_vs() { comm -13 <(sort "$1") <(sort "$2") | wc -l; }

printf '\n%d packages, %s MB unpacked; registry %s; %s\n' "$packages" "$size_mb" "$reg" "$(nproc) CPUs"
printf '\n%-10s %-12s %8s %14s %18s\n' engine step "wall s" "cached layers" "new layers pushed"

# One closure for every engine (fresh content each run, so "v1" is cold in the registry);
# each engine works on its own copy, since the changes add packages to it.
seed=$(date +%s)
"$kit" gen --out "$work/closure" --packages "$packages" --size-mb "$size_mb" --block-kb 8192 --seed "$seed" >/dev/null

bench_engine() { # engine-label, then the hab-oci engine arguments
  local label=$1; shift
  local c="$work/$label"
  cp -a "$work/closure" "$c"
  local gen=(--out "$c" --packages "$packages" --size-mb "$size_mb" --block-kb 8192 --seed "$seed")
  local prefix="$reg/bench-eng-$run_id/$label"
  local cache_opts=()
  case $label in
    buildah) cache_opts=(--cache-from "$prefix/cache" --cache-to "$prefix/cache") ;;
  esac
  # Rows without the cache options push to a repository of their own: a push to the main one
  # would make their image the next row's cache source (NAME:latest). "New layers" is always
  # against the baseline image's layer list, i.e. what a push to the main repository uploads.
  step() { # step-name, baseline-file or -, env-assignment or -, repository prefix, extra args...
    local name=$1 base=$2 envset=$3 repo=$4; shift 4
    local s e
    local envs=()
    [ "$envset" = - ] || envs=("$envset")
    s=$(date +%s.%N)
    env "${envs[@]}" "$bin" export -q --report "$work/r.json" --source "$c" --no-supervisor --registry-url "$repo" --push-image "$@" gen/app >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    e=$(date +%s.%N)
    layers "$repo/gen/app:latest" >"$work/$label.$name"
    local cached
    cached=$(python3 - "$work/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e, c = r.get("engine"), r.get("cache")
if e:
    print("%d/%d" % (e["cached_steps"], e["copy_steps"]))
elif c:
    print("%d/%d" % (c["hits"] - c["prebuilt"], c["hits"] + c["misses"]))
else:
    print("0/%d" % (len(r["layers"]) - 1))
PY
)
    local baseline=/dev/null
    [ "$base" = - ] || baseline="$work/$label.$base"
    printf '%-10s %-12s %8.2f %14s %18s\n' "$label" "$name" "$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')" "$cached" \
      "$(new_vs "$baseline" "$work/$label.$name")/$(wc -l <"$work/$label.$name")"
  }
  local no_cache=() with_cache=() fresh_env
  case $label in
    native) no_cache=(--no-cache) ;;
    legacy | buildkit) no_cache=(--no-auto-cache-from) ;;
    buildah) with_cache=(--cache-from "$prefix/cache" --cache-to "$prefix/cache") ;;
  esac
  # Fresh engine state, in $fresh_env (an environment assignment).
  new_state() {
    case $label in
      native) n_stores=$((n_stores + 1)); fresh_env="HAB_OCI_CACHE=$work/n$n_stores" ;;
      legacy | buildkit) fresh_dockerd; fresh_env="DOCKER_HOST=$fresh" ;;
      buildah) fresh_store; fresh_env="CONTAINERS_STORAGE_CONF=$fresh" ;;
    esac
  }
  local v1_opts=("${no_cache[@]}")
  [ "$label" = native ] && v1_opts=()
  [ "$label" = buildah ] && v1_opts=(--cache-to "$prefix/cache")
  local nc="$prefix-nocache"
  new_state; local v1_env=$fresh_env
  step v1 - "$v1_env" "$prefix" "$@" "${v1_opts[@]}"
  local cached_env=$v1_env
  [ "$label" = native ] || { new_state; cached_env=$fresh_env; }
  step fresh+cache v1 "$cached_env" "$prefix" "$@" "${with_cache[@]}"
  new_state; step fresh v1 "$fresh_env" "$nc" "$@" "${no_cache[@]}"
  "$kit" rebuild "${gen[@]}" --package app --release 20240202000000 >/dev/null
  step v2 v1 "$cached_env" "$prefix" "$@" "${with_cache[@]}"
  new_state; step "v2 fresh" v1 "$fresh_env" "$nc" "$@" "${no_cache[@]}"
  "$kit" rebuild "${gen[@]}" --package lib002 --release 20240303000000 >/dev/null
  step v3 v2 "$cached_env" "$prefix" "$@" "${with_cache[@]}"
  new_state; step "v3 fresh" v2 "$fresh_env" "$nc" "$@" "${no_cache[@]}"
  if [ "$label" = buildah ]; then
    for st in "$work"/b*/storage.conf; do
      CONTAINERS_STORAGE_CONF=$st buildah rmi --all --force >/dev/null 2>&1 || true
    done
  fi
}

bench_engine native
bench_engine legacy --engine docker --docker-builder legacy
bench_engine buildkit --engine docker --engine-binary /usr/bin/docker --docker-builder buildkit
bench_engine buildah --engine buildah
