#!/usr/bin/env bash
# Starts what the integration tests talk to, unless it already runs: a Docker engine
# (dockerd 20.10 from Debian's docker.io; no bridge networking, containers use --network none)
# and a registry (Debian's docker-registry, distribution v2.8) on 127.0.0.1:5000.
# Source it: `. scripts/services.sh` exports HAB_OCI_TEST_REGISTRY.
set -euo pipefail

state=${HAB_OCI_SERVICES_DIR:-/tmp/hab-oci-services}
mkdir -p "$state"

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: $state/dockerd.log)" >&2
  nohup dockerd --host unix:///var/run/docker.sock --data-root "$state/docker" \
    --iptables=false --bridge=none >"$state/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:" >&2; tail -20 "$state/dockerd.log" >&2; exit 1; }
fi

registry=127.0.0.1:5000
if ! curl -fsS "http://$registry/v2/" >/dev/null 2>&1; then
  echo "starting docker-registry on $registry (log: $state/registry.log)" >&2
  cat >"$state/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $state/registry }, delete: { enabled: true } }
http: { addr: $registry }
YML
  nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
  for _ in $(seq 30); do
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fsS "http://$registry/v2/" >/dev/null || { echo "docker-registry did not start:" >&2; tail -20 "$state/registry.log" >&2; exit 1; }
fi
export HAB_OCI_TEST_REGISTRY=$registry
