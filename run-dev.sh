#!/usr/bin/env bash
# The main job on a fresh machine: builds SMS, the Spearlet and the built-in plugins, then runs a
# local SMS and one Spearlet with the default plugins (redb storage, least-connections placement,
# the wasm/process/container executors, idle-time reclamation). Ctrl-C stops both (the Spearlet
# drains first). Extra arguments go to `sms` (try --help).
set -euo pipefail
cd "$(dirname "$0")"

rustup target add wasm32-wasip2 wasm32-wasip1 wasm32-unknown-unknown
# spear-tests' build script builds every guest plugin (component, Extism, native) with the real
# toolchains into target/spear-guests/artifacts.
cargo build --release -j2 -p spear-sms -p spear-spearlet -p spear-cli -p spear-tests

# The container executor talks to a private Podman (installed from Debian and started here, as the
# tests do); without it only container executions fail, each with the reason.
bash tests/podman/setup.sh >/dev/null ||
  echo "run-dev.sh: warning: Podman could not be set up; container executions will fail until an engine runs" >&2

dev=target/dev
mkdir -p "$dev/plugins" "$dev/data"
for p in round-robin least-connections affinity adaptive idle-time memory-pressure error-rate; do
  cp -f "target/spear-guests/artifacts/component/$p.wasm" "$dev/plugins/$p.wasm"
done
for p in redb memory process wasm container; do
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
if [ ! -f "$dev/spearlet.toml" ]; then
  cat > "$dev/spearlet.toml" <<'TOML'
# Edit [scheduler] (the local strategy choosing an instance per invocation) or [reclaimer] while
# the Spearlet runs: they apply at once. The rest needs a restart.
[spearlet]
node_name = "dev-node"
sms_grpc_addr = "127.0.0.1:50051"
sms_http_addr = "127.0.0.1:8080"
auto_register = true
heartbeat_interval = 5

[spearlet.grpc]
addr = "127.0.0.1:50052"

[spearlet.http.server]
addr = "127.0.0.1:8082"

[spearlet.storage]
backend = "redb"
data_dir = "data/spearlet"

[executors]
enabled = ["wasm", "process", "container"]

[plugins]
dir = "plugins"
watch = true

[scheduler]
strategy = "least-connections"

[reclaimer]
policy = "idle-time"             # try: memory-pressure, error-rate
interval_ms = 10000
[reclaimer.config]
idle_ms = 300000
TOML
fi
cd "$dev"
../release/sms --config sms.toml "$@" &
sms=$!
trap 'kill -TERM "$spearlet" "$sms" 2>/dev/null; wait' INT TERM
# The Spearlet waits for SMS (connect retries), registers, and takes work.
../release/spearlet --config spearlet.toml --auto-register &
spearlet=$!
sleep 1
echo "SMS:      REST http://127.0.0.1:8080/api/v1   gRPC 127.0.0.1:50051"
echo "          Swagger http://127.0.0.1:8080/swagger-ui/   metrics http://127.0.0.1:8080/metrics"
echo "          web admin http://127.0.0.1:8081/"
echo "Spearlet: status http://127.0.0.1:8082/api/v1/status   instances http://127.0.0.1:8082/api/v1/instances"
echo "config:   $PWD/sms.toml $PWD/spearlet.toml   plugins: $PWD/plugins"
echo "CLI:      $(cd .. && pwd)/release/spear status    (try: spear run --type process --name /bin/echo -- hello)"
wait -n "$sms" "$spearlet"
kill -TERM "$spearlet" "$sms" 2>/dev/null || true
wait
