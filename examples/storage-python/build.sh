#!/usr/bin/env bash
# Build kv-python (a WASM component of the spear:plugin `storage-backend` world) into
# OUT_DIR/kv-python.wasm.
#
# Tool chain: python3 (3.11 or later) with venv and pip, not installed here; then componentize-py at
# the pinned version, installed from PyPI into a venv under target/example-tools/python-venv
# (skipped while that venv already holds the pinned version). componentize-py brings its own
# CPython build for WASI: nothing else is downloaded.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wit="$here/../../wit"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

venv="$repo/target/example-tools/python-venv"
installed() {
    [ -x "$venv/bin/python" ] && [ -x "$venv/bin/componentize-py" ] &&
        [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null)" \
            = "$COMPONENTIZE_PY_VERSION" ]
}
if ! installed; then
    python="${PYTHON:-}"
    if [ -z "$python" ]; then
        for p in python3.11 python3; do
            command -v "$p" >/dev/null && { python="$p"; break; }
        done
    fi
    [ -n "$python" ] || { echo "build.sh: python3 not found (need python >= 3.11 with venv)" >&2; exit 1; }
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# The app is the module `kv` (kv.py in this folder); componentize-py generates its bindings
# (the `wit_world` package) from the WIT files and bundles the app with CPython and the stdlib.
rm -rf "$here/__pycache__"   # bytecode of a local run of kv.py is not wanted in the bundle
"$venv/bin/componentize-py" --quiet -d "$wit" -w storage-backend \
    componentize --python-path "$here" kv --output "$out/kv-python.wasm"
echo "built $out/kv-python.wasm"
