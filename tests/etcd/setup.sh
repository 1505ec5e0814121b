#!/usr/bin/env bash
# Installs, idempotently, what the `etcd` storage backend needs from Debian: `protobuf-compiler`
# and `libprotobuf-dev` (the etcd-client crate compiles etcd's .proto files with protoc when it
# builds; they import protobuf's well-known types), `etcd-server` (the tests start their own etcd
# members on 127.0.0.1; the package's service is not used) and `etcd-client` (`etcdctl`, which the
# tests use to find a cluster's leader and to look at its keys: a fresh Debian has no etcdctl with
# etcd-server).
# Run by run-tests.sh and run-dev.sh before they build.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
