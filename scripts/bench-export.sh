#!/usr/bin/env bash
# Benchmark: cold native export of generated closures to oci:DIR, against the reference
# `xz -dc | gzip -6` over the same harts two at a time (2 cores), both measured in this run
# (the machine is shared and noisy: read the ratios). Reports wall time and peak RSS for two
# closure sizes. Best of RUNS runs.
#
#   bash scripts/bench-export.sh
#   SIZES="40:100 120:600" RUNS=1 bash scripts/bench-export.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"40:100 80:250"}
runs=${RUNS:-3}

cargo build --quiet --release -p hab-oci -p hab-oci-testkit
bin=$PWD/target/release/hab-oci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs "$@" and prints "<wall seconds> <peak RSS MiB>" (RSS of the largest child process).
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{wall:.3f} {rss:.1f}")
PY
}
best() { # best wall (and its RSS) of $runs runs
  local b="" line
  for _ in $(seq "$runs"); do
    line=$(measure "$@")
    if [ -z "$b" ] || awk -v a="${line%% *}" -v b="${b%% *}" 'BEGIN { exit !(a < b) }'; then b=$line; fi
  done
  echo "$b"
}

printf '%-9s %-40s %9s %9s %9s\n' closure command "wall s" "vs ref" "peak MiB"
for s in $sizes; do
  n=${s%%:*}; mb=${s##*:}
  dir="$work/c$n"
  "$PWD/target/release/hab-oci-testkit" gen --out "$dir" --packages "$n" --size-mb "$mb" --block-kb 8192 >/dev/null
  mkdir -p "$dir/xz"
  for f in "$dir"/artifacts/*.hart; do tail -n +6 "$f" > "$dir/xz/$(basename "$f").xz"; done
  ref=$(best sh -c "ls $dir/xz/*.xz | xargs -P2 -I{} sh -c 'xz -dc {} | gzip -6 > /dev/null'")
  ours=$(best sh -c "rm -rf $dir/out && HAB_CACHE_ARTIFACT_PATH=/nonexistent $bin -q export --no-cache --source $dir --no-supervisor gen/app -o oci:$dir/out > /dev/null")
  label="${n}p/${mb}MB"
  printf '%-9s %-40s %9.2f %8.2fx %9s\n' "$label" "xz -dc | gzip -6, two at a time" "${ref%% *}" 1 "-"
  printf '%-9s %-40s %9.2f %8.2fx %9.1f\n' "$label" "hab-oci export -o oci: (cold)" "${ours%% *}" \
    "$(awk -v a="${ours%% *}" -v b="${ref%% *}" 'BEGIN { print a / b }')" "${ours##* }"
done
