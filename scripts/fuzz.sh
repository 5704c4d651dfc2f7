#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time with seed corpora made from
# the repository's real harts, keys and registry answers, and prints a table of executions.
# A crash fails the script (libFuzzer leaves the input in fuzz/artifacts/TARGET/; turn it
# into a regression test beside the code it broke).
#
#   bash scripts/fuzz.sh                   # every target, FUZZ_SECONDS (20) each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh rewrite
#
# Needs the nightly toolchain and cargo-fuzz (both installed here if missing).
# Built without a sanitizer: the targets are safe Rust (the workspace forbids unsafe code),
# where libFuzzer finds panics, overflows and hangs (`-a` keeps debug assertions and
# overflow checks on in the optimized build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
all=(hart_header ident key_file metadata rewrite reference www_authenticate registry_json)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
# cargo-fuzz builds with nightly-only flags: install the toolchain when the machine lacks it.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "installing the nightly toolchain (rustup, profile minimal) for cargo fuzz" >&2
  rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
(cd fuzz && cargo +nightly fuzz build -s none -O -a >/dev/null)

seeds=$(mktemp -d /tmp/hab-oci-fuzz.XXXX)
trap 'rm -rf "$seeds"' EXIT
mk() { mkdir -p "$seeds/$1"; }
for t in "${all[@]}"; do mk "$t"; done
harts=(fixtures/builder/*.hart fixtures/habitat/*.hart examples/artifacts/*.hart)
i=0
for h in "${harts[@]}"; do
  [ -f "$h" ] || continue
  i=$((i + 1))
  head -c 2048 "$h" >"$seeds/hart_header/$i"
  # The decoded payload: what the metadata reader and the rewriter see.
  if tail -n +6 "$h" | xz -dc >"$seeds/metadata/$i" 2>/dev/null; then
    cp "$seeds/metadata/$i" "$seeds/rewrite/$i"
  else
    rm -f "$seeds/metadata/$i"
  fi
done
for k in fixtures/*/*.pub fixtures/*/*.sig.key examples/keys/*; do
  [ -f "$k" ] && cp "$k" "$seeds/key_file/$(basename "$k")"
done
n=0
seed() { n=$((n + 1)); printf '%s' "$2" >"$seeds/$1/s$n"; }
seed ident $'core/glibc/2.27/20190115002733\ncore/glibc/2.27.1/20190115002733'
seed ident $'1.2.3-beta12\n1.2.3-beta2'
seed ident $'neurosis/oddversion6\nneurosis/oddversion6/2.0'
seed ident $'1.0.0-rc1+build.5\n1.0.0'
seed reference 'registry.example.com:5000/team/app:1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
seed reference 'ubuntu'
seed reference '127.0.0.1:5000/x/{{pkg_name}}:{{pkg_version}}'
seed reference '[::1]:5000/a/b'
seed www_authenticate 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"'
seed www_authenticate 'Basic realm="Registry Realm"'
seed www_authenticate 'Wed, 21 Oct 2015 07:28:00 GMT'
seed www_authenticate '120'
seed registry_json '{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{"reason":"bad"}}]}'
seed registry_json '{"token":"abc","access_token":"def","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}'

printf '%-18s %8s %12s %10s\n' target seconds executions "exec/s"
status=0
for t in "${targets[@]}"; do
  corpus="$seeds/$t-corpus"
  mkdir -p "$corpus"
  log="$seeds/$t.log"
  if (cd fuzz && cargo +nightly fuzz run -s none -O -a "$t" "$corpus" "$seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
      >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf '%-18s %8s %12s %10s\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}"
  else
    status=1
    printf '%-18s %8s %12s %10s\n' "$t" "$seconds" CRASH -
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20
  fi
done
exit $status
