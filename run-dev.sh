#!/usr/bin/env bash
# The main job on a fresh machine: builds SMS, the Spearlet and the built-in plugins, then runs a
# local SMS and one Spearlet with the default plugins (redb storage, least-connections placement,
# the wasm/process/container executors, idle-time reclamation). Ctrl-C stops both (the Spearlet
# drains first). Extra arguments go to `spear dev` (try --help).
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-wasip2 wasm32-wasip1 wasm32-unknown-unknown
# protoc, which the etcd storage backend's client compiles etcd's API with (and etcd itself).
bash tests/etcd/setup.sh
# spear-tests' build script builds every guest plugin (component, Extism, native) with the real
# toolchains into target/spear-guests/artifacts.
cargo build --release -j2 -p spear-sms -p spear-spearlet -p spear-cli -p spear-tests

# The container executor talks to a private Podman (installed from Debian and started here, as the
# tests do); without it only container executions fail, each with the reason.
bash tests/podman/setup.sh >/dev/null ||
  echo "run-dev.sh: warning: Podman could not be set up; container executions will fail until an engine runs" >&2

dev=target/dev
mkdir -p "$dev/plugins" "$dev/data"
for p in round-robin least-connections affinity adaptive weighted-round-robin random idle-time memory-pressure error-rate; do
  cp -f "target/spear-guests/artifacts/component/$p.wasm" "$dev/plugins/$p.wasm"
done
for p in redb etcd memory process wasm container; do
  cp -f "target/spear-guests/artifacts/native/$p.so" "$dev/plugins/$p.so"
done
# `spear dev` writes target/dev/sms.toml and spearlet.toml when missing (then they are yours to
# edit), starts SMS and the Spearlet, prints their addresses, and stops both on Ctrl-C.
exec target/release/spear dev --dir "$dev" "$@"
