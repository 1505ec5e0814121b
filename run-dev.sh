#!/usr/bin/env bash
# The main job on a fresh machine: builds SMS and the built-in plugins, then runs a local SMS with
# the default plugins (redb storage, least-connections strategy), Swagger UI and the web admin.
# Ctrl-C stops it. Extra arguments go to `sms` (try --help). Spearlet joins with issue 4.
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-wasip2 wasm32-unknown-unknown
# spear-tests' build script builds every guest plugin (component, Extism, native) with the real
# toolchains into target/spear-guests/artifacts.
cargo build --release -j2 -p spear-sms -p spear-cli -p spear-tests

dev=target/dev
mkdir -p "$dev/plugins" "$dev/data"
for p in round-robin least-connections affinity adaptive idle-time memory-pressure error-rate; do
  cp -f "target/spear-guests/artifacts/component/$p.wasm" "$dev/plugins/$p.wasm"
done
for p in redb memory; do
  cp -f "target/spear-guests/artifacts/native/$p.so" "$dev/plugins/$p.so"
done
if [ ! -f "$dev/sms.toml" ]; then
  cat > "$dev/sms.toml" <<'TOML'
# Edit [scheduler] while SMS runs: it applies at once (or is rejected, with the reason, and the
# old one stays). SMS's own keys need a restart.
enable_swagger = true
enable_web_admin = true
web_admin_addr = "127.0.0.1:8081"

[http]
addr = "127.0.0.1:8080"

[grpc]
addr = "127.0.0.1:50051"

[database]
db_type = "redb"
path = "data/sms.redb"

[files]
dir = "data/files"
max_upload_mb = 64

[plugins]
dir = "plugins"
watch = true
call_timeout_ms = 10

[scheduler]
strategy = "least-connections"   # try: round-robin, affinity, adaptive
TOML
fi
cd "$dev"
echo "SMS:      REST http://127.0.0.1:8080/api/v1   gRPC 127.0.0.1:50051"
echo "          Swagger http://127.0.0.1:8080/swagger-ui/   metrics http://127.0.0.1:8080/metrics"
echo "          web admin http://127.0.0.1:8081/"
echo "config:   $PWD/sms.toml   plugins: $PWD/plugins"
exec ../release/sms --config sms.toml "$@"
