//! Extism modules written by hand (WAT), for guests no PDK would build: each export hands back a
//! fixed output through Extism's kernel exactly as the PDKs do (allocate a block, copy the bytes
//! in, `output_set` the block), or a forged `output_set`.

/// What one export hands back.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// These bytes, in a block of their own.
    Text(&'a str),
    /// A block of `len` bytes holding the text, announced with `output_set(block, -block + len)`:
    /// offset + length wraps past 2^64.
    Wrapping(&'a str),
}

/// A core module with the Extism imports and one export per `(name, output)`; every other
/// `spear_*` export a strategy or reclamation policy may need returns nothing.
pub fn extism_module(exports: &[(&str, Output<'_>)]) -> Vec<u8> {
    let mut data = String::new();
    let mut funcs = String::new();
    let mut offset = 0usize;
    for (name, output) in exports {
        let (Output::Text(text) | Output::Wrapping(text)) = output;
        let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("(data (i32.const {offset}) \"{escaped}\")\n"));
        let len = text.len();
        let length = match output {
            Output::Text(_) => format!("(i64.const {len})"),
            Output::Wrapping(_) => {
                format!("(i64.add (i64.sub (i64.const 0) (local.get $off)) (i64.const {len}))")
            }
        };
        funcs.push_str(&format!(
            "(func (export \"{name}\") (result i32) (local $off i64)
               (local.set $off (call $emit (i32.const {offset}) (i32.const {len})))
               (call $output_set (local.get $off) {length})
               (i32.const 0))\n"
        ));
        offset += len;
    }
    let named: Vec<&str> = exports.iter().map(|(n, _)| *n).collect();
    for other in [
        "spear_configure",
        "spear_upsert",
        "spear_remove",
        "spear_observe",
        "spear_save_state",
        "spear_restore_state",
    ] {
        if !named.contains(&other) {
            funcs.push_str(&format!(
                "(func (export \"{other}\") (result i32) (i32.const 0))\n"
            ));
        }
    }
    let pages = offset / 65536 + 1;
    let wat = format!(
        r#"(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") {pages})
  {data}
  ;; Copy memory[src, src + len) into a new Extism block; return its offset.
  (func $emit (param $src i32) (param $len i32) (result i64)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (call $store_u8
          (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
          (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $off))
  {funcs})"#
    );
    wat::parse_str(&wat).expect("valid WAT")
}

/// `plugin-info` JSON for a hand-written module.
pub fn info_json(name: &str, kind: &str, description: &str) -> String {
    serde_json::json!({
        "name": name,
        "version": "1.0.0",
        "kind": kind,
        "description": description,
        "config_schema": "{}",
    })
    .to_string()
}
