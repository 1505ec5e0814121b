#!/usr/bin/env bash
# The main job on a fresh machine: builds the built-in plugins and runs a local plugin host over a
# simulated cluster (`spear plugin sim`), with the plugin directory and config watched for hot reload.
# Until SMS and Spearlet land this is the dev mode; extra arguments go to `spear plugin sim`.
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-wasip2 wasm32-unknown-unknown
# spear-tests' build script builds every guest plugin (component, Extism, native) with the real
# toolchains into target/spear-guests/artifacts.
cargo build --release -j2 -p spear-cli -p spear-tests

dev=target/dev
mkdir -p "$dev/plugins"
for p in round-robin least-connections affinity adaptive idle-time memory-pressure error-rate; do
  cp -f "target/spear-guests/artifacts/component/$p.wasm" "$dev/plugins/$p.wasm"
done
if [ ! -f "$dev/host.toml" ]; then
  cat > "$dev/host.toml" <<'TOML'
# Edit me while `run-dev.sh` runs: the change applies at once (or is rejected, with the reason).
[plugins]
dir = "plugins"
watch = true
call_timeout_ms = 10
memory_limit_mb = 64
quarantine_after = 3

[scheduler]
strategy = "least-connections"   # try: round-robin, affinity, adaptive

[scheduler.config]

[reclaimer]
policy = "idle-time"

[reclaimer.config]
idle_ms = 300000
TOML
fi
echo "plugins: $dev/plugins   config: $dev/host.toml"
exec target/release/spear plugin sim --config "$dev/host.toml" "$@"
