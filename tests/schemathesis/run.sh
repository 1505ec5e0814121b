#!/usr/bin/env bash
# The REST contract against a live SMS: schemathesis (from PyPI, pinned, installed here into
# target/example-tools/schemathesis-venv, skipped while that venv holds the pinned version)
# generates requests from SMS's own OpenAPI document (/api/openapi.json) for a bounded time and
# fails on any server error or any answer that does not match the document: its status code,
# content type, headers or body schema (SSE events included), and 405s without `Allow`.
#
# Usage: tests/schemathesis/run.sh [SECONDS]   (default 120; needs target/debug/sms and the built
# test plugins, which `cargo test --workspace` leaves behind)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
budget="${1:-120}"
VERSION=4.32.5

venv="$repo/target/example-tools/schemathesis-venv"
installed() {
    [ -x "$venv/bin/schemathesis" ] &&
        [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" \
            = "$VERSION" ]
}
if ! installed; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

sms="$repo/target/debug/sms"
guests="$repo/target/spear-guests/artifacts"
[ -x "$sms" ] || { echo "run.sh: $sms not built (run cargo test --workspace first)" >&2; exit 1; }
work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/plugins"
cp "$guests/native/redb.so" "$guests/native/memory.so" "$guests/component/round-robin.wasm" "$work/plugins/"
cat > "$work/sms.toml" <<TOML
[http]
addr = "127.0.0.1:0"
[grpc]
addr = "127.0.0.1:0"
[database]
db_type = "redb"
path = "data/sms.redb"
[files]
dir = "data/files"
max_upload_mb = 1
[plugins]
dir = "plugins"
TOML
cd "$work"
SMS_LOG=warn "$sms" --config sms.toml > sms.out 2> sms.err &
pid=$!
for _ in $(seq 100); do
    grep -q "http=" sms.out 2>/dev/null && break
    sleep 0.1
done
http="$(grep -o 'http=[^ ]*' sms.out | head -1 | cut -d= -f2)"
[ -n "$http" ] || { echo "run.sh: sms did not start" >&2; cat sms.err >&2; exit 1; }

# negative_data_rejection: whatever the document forbids, the server refuses. positive_data_acceptance
# is left out: the request schemas carry types, enums and ranges, but not every rule the server
# checks (URI grammar, control characters, label keys, "task_id or executable"; docs/api.md, "Limits").
status=0
"$venv/bin/schemathesis" run "http://$http/api/openapi.json" \
    --checks negative_data_rejection,not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
    --max-time "$budget" --workers 1 --max-examples 50 || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: sms died during the run" >&2
    cat sms.err >&2
    exit 1
fi
if grep -q "panicked" sms.err; then
    echo "run.sh: sms logged a panic" >&2
    cat sms.err >&2
    exit 1
fi
exit "$status"
