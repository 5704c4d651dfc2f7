#!/usr/bin/env bash
# Regenerates the example packages in examples/artifacts from the package directories in
# examples/pkgs, signed with the test-only example key in examples/keys (created on first run).
# The output is reproducible: modes are normalized and every mtime is SOURCE_DATE_EPOCH.
#
#   bash scripts/make-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p hab-oci
bin=target/release/hab-oci
keys=examples/keys
mkdir -p "$keys" examples/artifacts

key=$(ls "$keys"/example-*.sig.key 2>/dev/null | head -n 1 || true)
if [ -z "$key" ]; then
  "$bin" --quiet key generate --keys "$keys" example >/dev/null
  key=$(ls "$keys"/example-*.sig.key | head -n 1)
fi

# git keeps only the executable bit; give everything else fixed modes.
find examples/pkgs -type d -exec chmod 755 {} +
find examples/pkgs -type f -perm -u+x -exec chmod 755 {} +
find examples/pkgs -type f ! -perm -u+x -exec chmod 644 {} +

rm -f examples/artifacts/*.hart
export SOURCE_DATE_EPOCH=1704067200
for ident in examples/pkgs/hab/pkgs/*/*/*/*; do
  (cd examples/artifacts && "../../$bin" --quiet hart pack --key "../../$key" "../../$ident")
done
"$bin" hart verify --keys "$keys" examples/artifacts/*.hart
"$bin" resolve --source examples example/hello
