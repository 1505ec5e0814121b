// pack-assemblyscript: the SPEAR-Next `pack-*` scheduling strategy as an Extism module.
//
// Every `spear_*` export reads its input with Extism's `input_*` functions (JSON, or raw bytes for
// restore-state), writes JSON output with `output_set` and reports a refusal with `error_set` and
// a non-zero return. See docs/plugins.md, "The Extism form", and examples/README.md for the policy.

import { Host } from "@extism/as-pdk";
import { Json, Parser, quote, KIND_ARRAY, KIND_BOOL, KIND_OBJECT, KIND_STRING } from "./json";

// `alloc`, `store_u8`, `output_set` and `error_set` of the Extism kernel. The PDK declares them too,
// but its `Host.outputString` sizes the output in UTF-16 units; these are used directly instead.
@external("extism:host/env", "alloc")
declare function extism_alloc(length: u64): u64;
@external("extism:host/env", "store_u8")
declare function extism_store_u8(offset: u64, value: u8): void;
@external("extism:host/env", "output_set")
declare function extism_output_set(offset: u64, length: u64): void;
@external("extism:host/env", "error_set")
declare function extism_error_set(offset: u64): void;

const NAME = "pack-assemblyscript";
const VERSION = "0.1.0";
const DESCRIPTION =
  "Packs work onto the busiest target that fits (AssemblyScript example, Extism module)";
const SCHEMA =
  '{"type":"object","properties":{"max_active":{"type":"integer","minimum":1}},"additionalProperties":false}';

class Label {
  key: string = "";
  value: string = "";
}

class Resources {
  cpu_millis: u64 = 0;
  memory_mb: u64 = 0;
  disk_mb: u64 = 0;

  covers(needs: Resources): bool {
    return (
      this.cpu_millis >= needs.cpu_millis &&
      this.memory_mb >= needs.memory_mb &&
      this.disk_mb >= needs.disk_mb
    );
  }

  subtract(needs: Resources): void {
    this.cpu_millis = sat(this.cpu_millis, needs.cpu_millis);
    this.memory_mb = sat(this.memory_mb, needs.memory_mb);
    this.disk_mb = sat(this.disk_mb, needs.disk_mb);
  }
}

function sat(a: u64, b: u64): u64 {
  return a > b ? a - b : 0;
}

class Target {
  id: u64 = 0;
  labels: Array<Label> = new Array<Label>();
  available: Resources = new Resources();
  active: u32 = 0;
  healthy: bool = false;

  hasLabel(l: Label): bool {
    for (let i = 0; i < this.labels.length; i++) {
      const m = this.labels[i];
      if (m.key == l.key && m.value == l.value) return true;
    }
    return false;
  }
}

class Request {
  needs: Resources = new Resources();
  required: Array<Label> = new Array<Label>();
}

// ---- state -------------------------------------------------------------------------------------

let hasMaxActive = false;
let maxActive: u64 = 0;
const view = new Map<u64, Target>();

// ---- Extism I/O --------------------------------------------------------------------------------

function copyOut(bytes: Uint8Array): u64 {
  const offset = extism_alloc(<u64>bytes.length);
  for (let i = 0; i < bytes.length; i++) extism_store_u8(offset + <u64>i, bytes[i]);
  return offset;
}

function output(s: string): void {
  const bytes = Uint8Array.wrap(String.UTF8.encode(s));
  extism_output_set(copyOut(bytes), <u64>bytes.length);
}

function fail(message: string): i32 {
  extism_error_set(copyOut(Uint8Array.wrap(String.UTF8.encode(message))));
  return 1;
}

/** The call's input parsed as JSON; null (and the error in `inputError`) when malformed. */
let inputError = "";
function inputJson(): Json | null {
  const p = new Parser(Host.input());
  const v = p.document();
  if (v === null) {
    const e = p.error;
    inputError = "invalid input: " + (e === null ? "malformed JSON" : e);
  }
  return v;
}

/** Called by AssemblyScript on a failed assertion or out-of-bounds access (`--use abort=`). */
function spearAbort(
  message: string | null,
  fileName: string | null,
  line: u32,
  column: u32,
): void {
  let text = "abort: " + (message === null ? "" : message);
  if (fileName !== null) text += " at " + fileName + ":" + line.toString() + ":" + column.toString();
  fail(text);
  unreachable();
}

// ---- decoding ----------------------------------------------------------------------------------

function u64Field(o: Json, key: string): u64 {
  const v = o.get(key);
  return v !== null && v.isU64 ? v.u64 : 0;
}

function labelsField(o: Json, key: string): Array<Label> {
  const out = new Array<Label>();
  const v = o.get(key);
  if (v === null || v.kind != KIND_ARRAY) return out;
  for (let i = 0; i < v.items.length; i++) {
    const item = v.items[i];
    if (item.kind != KIND_OBJECT) continue;
    const l = new Label();
    const k = item.get("key");
    const val = item.get("value");
    if (k !== null && k.kind == KIND_STRING) l.key = k.str;
    if (val !== null && val.kind == KIND_STRING) l.value = val.str;
    out.push(l);
  }
  return out;
}

function resourcesField(o: Json, key: string): Resources {
  const r = new Resources();
  const v = o.get(key);
  if (v === null || v.kind != KIND_OBJECT) return r;
  r.cpu_millis = u64Field(v, "cpu_millis");
  r.memory_mb = u64Field(v, "memory_mb");
  r.disk_mb = u64Field(v, "disk_mb");
  return r;
}

function decodeTarget(o: Json): Target {
  const t = new Target();
  t.id = u64Field(o, "id");
  t.labels = labelsField(o, "labels");
  t.available = resourcesField(o, "available");
  const active = u64Field(o, "active");
  t.active = active > <u64>U32.MAX_VALUE ? U32.MAX_VALUE : <u32>active;
  const healthy = o.get("healthy");
  t.healthy = healthy !== null && healthy.kind == KIND_BOOL && healthy.bool;
  return t;
}

function decodeRequest(o: Json): Request {
  const r = new Request();
  r.needs = resourcesField(o, "needs");
  r.required = labelsField(o, "required");
  return r;
}

// ---- the policy --------------------------------------------------------------------------------

function fits(t: Target, r: Request): bool {
  if (!t.healthy) return false;
  if (hasMaxActive && <u64>t.active >= maxActive) return false;
  if (!t.available.covers(r.needs)) return false;
  for (let i = 0; i < r.required.length; i++) {
    if (!t.hasLabel(r.required[i])) return false;
  }
  return true;
}

/** The busiest candidate, ties to the lowest id; null when none fits. */
function pick(r: Request): Target | null {
  const targets = view.values();
  let best: Target | null = null;
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (!fits(t, r)) continue;
    if (best === null) {
      best = t;
      continue;
    }
    if (t.active > best.active || (t.active == best.active && t.id < best.id)) best = t;
  }
  return best;
}

// ---- exports -----------------------------------------------------------------------------------

export function spear_info(): i32 {
  output(
    '{"name":' + quote(NAME) +
      ',"version":' + quote(VERSION) +
      ',"kind":"scheduling-strategy","description":' + quote(DESCRIPTION) +
      ',"config_schema":' + quote(SCHEMA) + "}",
  );
  return 0;
}

export function spear_configure(): i32 {
  const p = new Parser(Host.input());
  const config = p.document();
  if (config === null || config.kind != KIND_OBJECT) return fail("config must be a JSON object");
  let has = false;
  let max: u64 = 0;
  for (let i = 0; i < config.keys.length; i++) {
    const key = config.keys[i];
    const v = config.items[i];
    if (key == "max_active") {
      if (!v.isU64 || v.u64 == 0) return fail("max_active: must be a positive integer");
      has = true;
      max = v.u64;
    } else {
      return fail("unknown key `" + key + "`");
    }
  }
  hasMaxActive = has;
  maxActive = max;
  return 0;
}

export function spear_upsert(): i32 {
  const v = inputJson();
  if (v === null) return fail(inputError);
  if (v.kind != KIND_ARRAY) return fail("invalid input: expected an array of targets");
  for (let i = 0; i < v.items.length; i++) {
    const t = decodeTarget(v.items[i]);
    view.set(t.id, t);
  }
  return 0;
}

export function spear_remove(): i32 {
  const v = inputJson();
  if (v === null) return fail(inputError);
  if (v.kind != KIND_ARRAY) return fail("invalid input: expected an array of ids");
  for (let i = 0; i < v.items.length; i++) {
    const id = v.items[i];
    if (id.isU64 && view.has(id.u64)) view.delete(id.u64);
  }
  return 0;
}

export function spear_place(): i32 {
  const v = inputJson();
  if (v === null) return fail(inputError);
  if (v.kind != KIND_ARRAY) return fail("invalid input: expected an array of requests");
  let out = "[";
  for (let i = 0; i < v.items.length; i++) {
    if (i > 0) out += ",";
    const r = decodeRequest(v.items[i]);
    const t = pick(r);
    if (t === null) {
      out += '{"Reject":"no target fits"}';
      continue;
    }
    if (t.active < U32.MAX_VALUE) t.active += 1;
    t.available.subtract(r.needs);
    out += '{"Assign":' + t.id.toString() + "}";
  }
  output(out + "]");
  return 0;
}

export function spear_observe(): i32 {
  return 0;
}

export function spear_save_state(): i32 {
  // No state to carry: the host re-sends its view after a swap. No output means no bytes.
  return 0;
}

export function spear_restore_state(): i32 {
  return 0;
}
