// `pack-js`: the example packing strategy of examples/README.md, as a WASM component built by
// componentize-js (SpiderMonkey) against the `scheduling-strategy` world of SPEAR's WIT files.
//
// Each request goes to the eligible target with the *most* active work (ties: the lowest id), so
// work packs onto busy targets and leaves the others free to be drained or scaled down.
// `max_active` caps how much a target takes.
//
// How the WIT types look from JavaScript (the jco conventions componentize-js follows):
// - the exported interface `strategy` is the exported object `strategy`, its functions camelCased
//   (`save-state` → `saveState`);
// - record fields are camelCased (`cpu-millis` → `cpuMillis`);
// - u64 values (ids, resources) are BigInts, u32 values (`active`) are Numbers;
// - a variant is `{ tag, val }`, an enum is its case name as a string;
// - a function returning `result<_, string>` returns normally for `ok`, and throws the error
//   string for `err`.
//
// The module's top level runs once, at build time (Wizer snapshots it); module-level state then
// lives as long as the component instance.

import { log } from "spear:plugin/host@0.1.1";

const NAME = "pack-js";
const VERSION = "0.1.0";

/** The JSON Schema of the configuration, as `info` reports it. */
const CONFIG_SCHEMA =
  '{"type":"object","properties":{"max_active":{"type":"integer","minimum":1}},"additionalProperties":false}';

/** `active` is a u32 on the wire: a larger cap means nothing, refuse it like the Rust example. */
const U32_MAX = 2 ** 32 - 1;

/** The host's targets by id (BigInt keys). */
const targets = new Map();
/** The cap on a target's active work, or null for no limit. */
let maxActive = null;

/**
 * Read `{"max_active": N}` into N (null: no limit). Throws the message naming the problem.
 * @param {string} text
 * @returns {number | null}
 */
function parseConfig(text) {
  text = text.trim();
  if (text === "" || text === "null") return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw `config is not JSON: ${e.message}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw "config must be a JSON object";
  }
  let cap = null;
  // Sorted, so that with several problems the one reported is the same as in the other examples.
  for (const key of Object.keys(value).sort()) {
    if (key !== "max_active") throw `unknown key \`${key}\``;
    const n = value[key];
    // JSON.parse gives `1.0` as the Number 1: the text cannot be told apart, so it is accepted.
    if (!Number.isInteger(n) || n < 1 || n > U32_MAX) {
      throw "max_active: must be a positive integer";
    }
    cap = n;
  }
  return cap;
}

/** The host's hard rules: healthy, enough of every resource, every required label. */
function fits(request, target) {
  const need = request.needs;
  const have = target.available;
  return (
    target.healthy &&
    have.cpuMillis >= need.cpuMillis &&
    have.memoryMb >= need.memoryMb &&
    have.diskMb >= need.diskMb &&
    request.required.every((r) =>
      target.labels.some((l) => l.key === r.key && l.value === r.value),
    )
  );
}

/** `a - b`, saturating at zero (BigInts). */
const sub = (a, b) => (a > b ? a - b : 0n);

/** Count one placement in the view, so that later requests of the batch see it. */
function claim(target, needs) {
  target.active = Math.min(target.active + 1, U32_MAX);
  const a = target.available;
  target.available = {
    cpuMillis: sub(a.cpuMillis, needs.cpuMillis),
    memoryMb: sub(a.memoryMb, needs.memoryMb),
    diskMb: sub(a.diskMb, needs.diskMb),
  };
}

/** Ranking order: the most active first, among equals the lowest id (ids are BigInts). */
function byRank(a, b) {
  if (a.active !== b.active) return b.active - a.active;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** The exported `spear:plugin/strategy` interface. */
export const strategy = {
  info() {
    return {
      name: NAME,
      version: VERSION,
      kind: "scheduling-strategy",
      description: "Packing: the busiest target that fits first, up to max_active",
      configSchema: CONFIG_SCHEMA,
    };
  },

  configure(config) {
    // Parse first: a refused configuration throws before anything changes.
    maxActive = parseConfig(config);
    log("debug", `${NAME}: max_active = ${maxActive ?? "none"}`);
  },

  upsert(list) {
    for (const t of list) targets.set(t.id, t);
  },

  remove(ids) {
    for (const id of ids) targets.delete(id);
  },

  place(requests) {
    // Rank the view once per batch, the busiest first and ties to the lowest id, so that each
    // request takes the first target of the ranking that fits (usually the very first) rather than
    // scanning the whole view. Unhealthy targets and those at the cap cannot become candidates
    // during the batch: leave them out.
    const ranked = [];
    for (const t of targets.values()) {
      if (t.healthy && (maxActive === null || t.active < maxActive)) ranked.push(t);
    }
    ranked.sort(byRank);
    return requests.map((r) => {
      let i = ranked.findIndex((t) => fits(r, t));
      if (i < 0) return { tag: "reject", val: "no target fits" };
      const t = ranked[i];
      claim(t, r.needs);
      if (maxActive !== null && t.active >= maxActive) {
        ranked.splice(i, 1);
      } else {
        // One more active unit: move it up past the targets it now outranks.
        while (i > 0 && byRank(t, ranked[i - 1]) < 0) {
          ranked[i] = ranked[i - 1];
          ranked[--i] = t;
        }
      }
      return { tag: "assign", val: t.id };
    });
  },

  observe(_outcomes) {
    // Packing learns nothing from outcomes.
  },

  saveState() {
    // Nothing learned; the host re-sends the view after a swap.
    return new Uint8Array(0);
  },

  restoreState(_state) {
    // Accepts anything.
  },
};
