#!/usr/bin/env bash
# Installs, idempotently, what the `etcd` storage backend needs from Debian: `protobuf-compiler`
# and `libprotobuf-dev` (the etcd-client crate compiles etcd's .proto files with protoc when it
# builds; they import protobuf's well-known types) and `etcd-server`
# (the tests start their own etcd members on 127.0.0.1; the package's service is not used).
# Run by run-tests.sh and run-dev.sh before they build.
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
