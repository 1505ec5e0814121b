#!/usr/bin/env bash
# Build pack-assemblyscript (an Extism module) into OUT_DIR/pack-assemblyscript.wasm.
#
# Tool chain: node >= 20 and npm (not installed here), then AssemblyScript and @extism/as-pdk at
# the versions pinned in package-lock.json, installed with `npm ci` into ./node_modules (skipped
# while node_modules matches the lock file).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (need node >= 20 with npm)" >&2; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "build.sh: node $(node --version) is too old, AssemblyScript 0.28 needs node >= 20" >&2
    exit 1
fi

cd "$here"
stamp=node_modules/.spear-package-lock.json
if ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund
    cp package-lock.json "$stamp"
fi

node_modules/.bin/asc assembly/index.ts --config asconfig.json --target release \
    --outFile "$out/pack-assemblyscript.wasm"
echo "built $out/pack-assemblyscript.wasm"
