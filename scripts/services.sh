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

# A second registry with htpasswd basic auth behind TLS, its certificate signed by a CA made
# here (tests pass it with --ca-cert). Test-only credentials.
tls_registry=127.0.0.1:5443
tls="$state/tls"
if ! curl -fsS --cacert "$tls/ca.crt" -u testuser:testpassword "https://$tls_registry/v2/" >/dev/null 2>&1; then
  echo "starting docker-registry with TLS and basic auth on $tls_registry" >&2
  rm -rf "$tls" && mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tls/ca.key" -out "$tls/ca.crt" \
    -days 3650 -subj "/CN=hab-oci test CA" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -keyout "$tls/server.key" -out "$tls/server.csr" \
    -subj "/CN=127.0.0.1" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$tls/san.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -out "$tls/server.crt" -days 3650 -extfile "$tls/san.ext" >/dev/null 2>&1
  htpasswd -Bbn testuser testpassword > "$tls/htpasswd"
  cat >"$state/registry-tls.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $state/registry-tls }, delete: { enabled: true } }
http: { addr: $tls_registry, tls: { certificate: $tls/server.crt, key: $tls/server.key } }
auth: { htpasswd: { realm: hab-oci-test, path: $tls/htpasswd } }
YML
  nohup docker-registry serve "$state/registry-tls.yml" >"$state/registry-tls.log" 2>&1 &
  for _ in $(seq 30); do
    curl -fsS --cacert "$tls/ca.crt" -u testuser:testpassword "https://$tls_registry/v2/" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fsS --cacert "$tls/ca.crt" -u testuser:testpassword "https://$tls_registry/v2/" >/dev/null \
    || { echo "TLS docker-registry did not start:" >&2; tail -20 "$state/registry-tls.log" >&2; exit 1; }
fi
export HAB_OCI_TEST_TLS_REGISTRY=$tls_registry HAB_OCI_TEST_CA=$tls/ca.crt
