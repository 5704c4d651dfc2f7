#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs the format
# check, clippy (warnings are errors), every unit and integration test, the doctests, and
# each fuzz target for a short bounded time (scripts/fuzz.sh).
# Runs on a fresh machine of the project's kind (Debian 12, root) and in CI (`.ci/run`).
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }

# System packages the tests and benchmarks use: real tools check our images (skopeo, umoci,
# docker load/run against a real dockerd, podman load/run, containerd's ctr import/run against
# dockerd's containerd, a real registry); busybox-static is a real
# executable inside test packages. In CI (CI set) a test whose service is missing fails;
# elsewhere the test runner reports it as skipped (crates/hab-oci/tests/common/mod.rs).
apt_packages=(xz-utils curl openssl apache2-utils docker.io containerd docker-registry skopeo umoci busybox-static buildah podman)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The SBOM validators the tests run on hab-oci's documents (crates/hab-oci/tests/sbom.rs):
# pyspdxtools (SPDX 2.3) and cyclonedx-python-lib's strict JSON schema validator (CycloneDX
# 1.6), pinned.
sbom_validators=("spdx-tools==0.8.5" "cyclonedx-python-lib[json-validation]==11.12.0")
if ! python3 -c 'import spdx_tools, cyclonedx.validation.json, jsonschema' >/dev/null 2>&1; then
  log "installing ${sbom_validators[*]}"
  python3 -m pip install -q "${sbom_validators[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

log "starting dockerd and a registry on 127.0.0.1:5000"
# shellcheck source=scripts/services.sh
. scripts/services.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
cargo nextest run --workspace --locked --no-fail-fast

log "doctests"
cargo test --workspace --doc --locked
log "fuzz targets, ${FUZZ_SECONDS:-20} s each"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz.sh

log "all tests passed"
