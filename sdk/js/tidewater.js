// tidewater.js: write tidewater stream processors in JavaScript.
//
// A processor is one function called once per event:
//
//   import { defineProcessor, Invalid, utf8 } from "../../../sdk/js/tidewater.js";
//
//   /** @param {import("../../../sdk/js/tidewater.js").Event} event */
//   function onEvent(event) {
//     if (event.value === null) throw new Invalid("tombstone");
//     return [{ key: event.key, value: event.value }];
//   }
//
//   export const { init, process } = defineProcessor({ process: onEvent });
//
// The SDK receives the batches from the host (the tidewater:processor@0.1.0
// WIT world), calls your function for each event in order and returns one
// result per event: the outputs it returned, or the error it threw
// (Transient, Invalid or Fatal). Any other exception traps the component,
// like a panic in Rust: the host discards the instance, finds the event and
// dead-letters it.
//
// This module imports nothing from the host, so unit tests run it with plain
// `node`: `state` is then an in-memory Map and `log` writes to stderr.
// Inside the component, component.js connects both to the host.

/**
 * One record read from an input topic.
 * @typedef {object} Event
 * @property {string} topic
 * @property {number} partition
 * @property {bigint} offset the record's offset in its partition (WIT u64: a
 *   BigInt, exact at any size; `Number(offset)` where a number is needed)
 * @property {bigint} timestampMs milliseconds since the Unix epoch (UTC) (WIT
 *   s64: a BigInt; `new Date(Number(timestampMs))`)
 * @property {Uint8Array | null} key
 * @property {Uint8Array | null} value null is a tombstone, distinct from an empty value
 * @property {Array<[string, Uint8Array]>} headers in order; names may repeat
 */

/**
 * One record to publish. `value` and `key` may be strings (written as UTF-8).
 * @typedef {object} Output
 * @property {Uint8Array | string | null} value null publishes a tombstone
 * @property {Uint8Array | string | null} [key]
 * @property {string | null} [topic] null: the processor's configured output
 * @property {Array<[string, Uint8Array | string]>} [headers]
 */

/** Why one event could not be processed. Throw a subclass. */
export class ProcessError extends Error {
  /** @param {"transient" | "invalid" | "fatal"} kind @param {string} message */
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
/** A passing failure: the host retries the event with backoff. */
export class Transient extends ProcessError {
  /** @param {string} message */
  constructor(message) { super("transient", message); }
}
/** The event is bad: the host dead-letters it. */
export class Invalid extends ProcessError {
  /** @param {string} message */
  constructor(message) { super("invalid", message); }
}
/** The processor cannot go on: the host stops it (others go on). */
export class Fatal extends ProcessError {
  /** @param {string} message */
  constructor(message) { super("fatal", message); }
}
/** Thrown by an init function to refuse the config. */
export class ConfigError extends Error {}

// StarlingMonkey and node have TextDecoder (fatal: strict; ignoreBOM: keep a
// BOM as U+FEFF, which JSON then refuses, as serde_json does); QuickJS has not.
const nativeDecoder =
  typeof TextDecoder === "function" ? new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }) : null;

const nativeEncoder = typeof TextEncoder === "function" ? new TextEncoder() : null;

/** UTF-8, by hand where TextEncoder/TextDecoder are missing (QuickJS). */
export const utf8 = {
  /** @param {string} s @returns {Uint8Array} */
  encode(s) {
    if (nativeEncoder) return nativeEncoder.encode(s);
    const out = new Uint8Array(s.length * 3);
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      let c = s.charCodeAt(i);
      if (c < 0x80) { out[n++] = c; continue; }
      if (c < 0x800) { out[n++] = 0xc0 | (c >> 6); out[n++] = 0x80 | (c & 63); continue; }
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          out[n++] = 0xf0 | (c >> 18); out[n++] = 0x80 | ((c >> 12) & 63);
          out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
          continue;
        }
      }
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      out[n++] = 0xe0 | (c >> 12); out[n++] = 0x80 | ((c >> 6) & 63); out[n++] = 0x80 | (c & 63);
    }
    return out.subarray(0, n);
  },
  /** Strict: null when `b` is not valid UTF-8. @param {Uint8Array} b @returns {string | null} */
  decode(b) {
    if (nativeDecoder) {
      try {
        return nativeDecoder.decode(b);
      } catch {
        return null;
      }
    }
    const units = [];
    let out = "";
    const len = b.length;
    for (let i = 0; i < len;) {
      const c = b[i];
      if (c < 0x80) { units.push(c); i++; }
      else {
        let n, cp, min;
        if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 31; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 15; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 7; min = 0x10000; }
        else return null;
        if (i + n > len) return null;
        for (let j = 1; j < n; j++) {
          const d = b[i + j];
          if ((d & 0xc0) !== 0x80) return null;
          cp = (cp << 6) | (d & 63);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
        if (cp >= 0x10000) {
          cp -= 0x10000;
          units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023));
        } else units.push(cp);
        i += n;
      }
      if (units.length >= 8192) {
        out += String.fromCharCode.apply(null, units);
        units.length = 0;
      }
    }
    return out + String.fromCharCode.apply(null, units);
  },
};

const memory = new Map();
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
let host = {
  state: {
    get: (k) => (memory.has(hex(k)) ? memory.get(hex(k)) : null),
    set: (k, v) => { memory.set(hex(k), Uint8Array.from(v)); },
    delete: (k) => { memory.delete(hex(k)); },
  },
  log: (level, message) => { console.error(`[${level}] ${message}`); },
};

/** Connects state and log to the host (component.js calls it). @param {typeof host} h */
export function install(h) { host = h; }

const bytes = (k) => (typeof k === "string" ? utf8.encode(k) : k);

/**
 * Per-processor key-value state kept by the host: committed with the batch's
 * outputs and position, or not at all; reads see earlier writes of the batch.
 */
export const state = {
  /** @param {Uint8Array | string} key @returns {Uint8Array | null} */
  get: (key) => host.state.get(bytes(key)) ?? null,
  /** @param {Uint8Array | string} key @param {Uint8Array} value */
  set: (key, value) => host.state.set(bytes(key), value),
  /** @param {Uint8Array | string} key */
  delete: (key) => host.state.delete(bytes(key)),
  /** Empties the in-memory stand-in (unit tests only). */
  clear: () => memory.clear(),
};

/** Levelled logging into the host's log (rate-limited by the host). */
export const log = {
  /** @param {string} m */ trace: (m) => host.log("trace", m),
  /** @param {string} m */ debug: (m) => host.log("debug", m),
  /** @param {string} m */ info: (m) => host.log("info", m),
  /** @param {string} m */ warn: (m) => host.log("warn", m),
  /** @param {string} m */ error: (m) => host.log("error", m),
};

const NO_HEADERS = Object.freeze([]);

/** An output as the bindings take it: bytes for key and value (strings as UTF-8). @param {Output} o */
function lower(o) {
  const headers = o.headers;
  let hs = NO_HEADERS;
  if (headers !== undefined && headers !== null && headers.length > 0) {
    hs = new Array(headers.length);
    for (let k = 0; k < headers.length; k++) hs[k] = [headers[k][0], bytes(headers[k][1])];
  }
  const key = o.key, value = o.value;
  return {
    topic: o.topic ?? null,
    key: key === undefined || key === null ? null : bytes(key),
    value: value === undefined || value === null ? null : bytes(value),
    headers: hs,
  };
}

/**
 * The processor's config: the `config` table of its TOML section, in order.
 * @typedef {Array<[string, string]>} Config
 */

/**
 * Turns one function per event (and an optional init) into the two exports of
 * the WIT world: `export const { init, process } = defineProcessor({...})`.
 * @param {{ process: (event: Event) => Output[], init?: (config: Config) => void }} p
 */
export function defineProcessor(p) {
  const onEvent = p.process;
  const onInit = p.init;
  return {
    /** @param {Config} config */
    init(config) {
      if (!onInit) return;
      try {
        onInit(config);
      } catch (e) {
        if (e instanceof ConfigError) throw e.message;
        throw e;
      }
    },
    /** @param {Event[]} events */
    process(events) {
      // One plain loop, no closures or iterators per event: the engine
      // interprets this code, and everything it allocates is collector work.
      const n = events.length;
      const results = new Array(n);
      for (let i = 0; i < n; i++) {
        const event = events[i];
        // The bindings give `undefined` for an absent option; the documented type is null.
        if (event.key === undefined) event.key = null;
        if (event.value === undefined) event.value = null;
        let outs;
        try {
          outs = onEvent(event);
        } catch (e) {
          if (e instanceof ProcessError) {
            results[i] = { tag: "err", val: { tag: e.kind, val: e.message } };
            continue;
          }
          throw e;
        }
        const m = outs.length;
        const val = new Array(m);
        for (let j = 0; j < m; j++) val[j] = lower(outs[j]);
        results[i] = { tag: "ok", val };
      }
      return results;
    },
  };
}
