#!/usr/bin/env bash
# Build pack-js (a WASM component of the spear:plugin `scheduling-strategy` world) into
# OUT_DIR/pack-js.wasm.
#
# Tool chain: node >= 20 and npm (not installed here), then componentize-js at the version pinned
# in package-lock.json, installed with `npm ci` into ./node_modules (skipped while node_modules
# matches the lock file). componentize-js brings the StarlingMonkey (SpiderMonkey) engine and a
# Wizer binary as npm packages: nothing else is downloaded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$here/../../wit"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (need node >= 20 with npm)" >&2; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "build.sh: node $(node --version) is too old, componentize-js needs node >= 20" >&2
    exit 1
fi

cd "$here"
stamp=node_modules/.spear-package-lock.json
if ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund
    cp package-lock.json "$stamp"
fi

# Every WASI feature of the engine is disabled (stdio, random, clocks, http, fetch-event): the
# component then imports nothing but spear:plugin/host, which is all a SPEAR host offers anyway.
# Math.random(), Date.now() and console.log() are therefore unavailable: log with the host's `log`.
node_modules/.bin/componentize-js pack.js \
    --wit "$wit" --world-name scheduling-strategy \
    --disable stdio random clocks http fetch-event \
    --out "$out/pack-js.wasm"
echo "built $out/pack-js.wasm"
