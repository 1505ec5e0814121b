#!/usr/bin/env bash
# Build pack-c (a WASM component of the world spear:plugin/scheduling-strategy) into
# OUT_DIR/pack-c.wasm.
#
# Tool chain, installed idempotently and pinned:
#   - Debian: clang, lld, wasi-libc, libclang-rt-dev-wasm32 (the wasm32 compiler-rt builtins);
#     only the missing ones are installed (apt-get, as root or through sudo);
#   - crates.io: wit-bindgen-cli and wasm-tools, `cargo install --locked --debug` into
#     REPO/target/example-tools/cargo (skipped when that version is there): unoptimized, as they
#     only turn one small module into a component, and built in 3.5 min instead of 7.5 min here,
#     sharing one build directory (this run's own, removed at its end). Their wasm-encoder / wit-parser is 0.245,
#     the one wasmtime 43 uses;
#   - crates.io: the WASI preview1 reactor adapter, read from the crate
#     wasi-preview1-component-adapter-provider (same version as wasmtime), only when the core
#     module imports wasi_snapshot_preview1 (this one does not: it uses no WASI call).
# Set CARGO_BUILD_JOBS to limit the parallelism of the cargo installs.
set -euo pipefail

WIT_BINDGEN_VERSION=0.53.1
WASM_TOOLS_VERSION=1.245.1
ADAPTER_VERSION=43.0.2
DEBIAN_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tools="$repo/target/example-tools/cargo"
work="$here/build"

# ---- Debian packages ---------------------------------------------------------------------------
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "build.sh: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- cargo-installed tools ---------------------------------------------------------------------
# cargo_tool CRATE BINARY VERSION FEATURES
cargo_tool() {
    local crate="$1" bin="$2" version="$3" features="$4"
    if [ -x "$tools/bin/$bin" ] && "$tools/bin/$bin" --version 2>/dev/null | grep -qE "(^| )$version( |$)"; then
        return
    fi
    echo "build.sh: cargo install $crate $version"
    CARGO_TARGET_DIR="$build" cargo install --locked --debug --force --version "$version" \
        --root "$tools" --no-default-features --features "$features" "$crate"
}
mkdir -p "$(dirname "$tools")"
build="$(mktemp -d "$tools-build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
cargo_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" component,validate,print
cargo_tool wit-bindgen-cli wit-bindgen "$WIT_BINDGEN_VERSION" c
wasm_tools="$tools/bin/wasm-tools"
wit_bindgen="$tools/bin/wit-bindgen"

# ---- bindings and core module ------------------------------------------------------------------
rm -rf "$work"
mkdir -p "$work/bindings"
"$wit_bindgen" c --world scheduling-strategy --out-dir "$work/bindings" "$repo/wit" >/dev/null

clang --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra \
    -Wno-unused-parameter -I "$work/bindings" \
    "$here/pack.c" "$work/bindings/scheduling_strategy.c" \
    "$work/bindings/scheduling_strategy_component_type.o" \
    -Wl,--strip-debug -o "$work/pack-c.core.wasm"

# ---- component ---------------------------------------------------------------------------------
adapt=()
if "$wasm_tools" print "$work/pack-c.core.wasm" | grep -q '(import "wasi_snapshot_preview1"'; then
    # Fetch the adapter crate from crates.io through cargo (a throwaway package; `cargo vendor`
    # unpacks it) and take the reactor adapter it embeds.
    fetch="$repo/target/example-tools/adapter-$ADAPTER_VERSION"
    adapter="$fetch/vendor/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm"
    if [ ! -f "$adapter" ]; then
        mkdir -p "$fetch/src"
        cat >"$fetch/Cargo.toml" <<EOF
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"

[workspace]
EOF
        : >"$fetch/src/lib.rs"
        (cd "$fetch" && cargo vendor --versioned-dirs vendor >/dev/null)
    fi
    adapt=(--adapt "wasi_snapshot_preview1=$adapter")
fi

"$wasm_tools" component new "$work/pack-c.core.wasm" "${adapt[@]}" -o "$out/pack-c.wasm"
"$wasm_tools" validate "$out/pack-c.wasm"
echo "built $out/pack-c.wasm"
