// The sensor-reading model shared by the JavaScript processors: the JS port of
// plugins/rust/readings (its crate docs are the rule).

import { utf8 } from "../../../sdk/js/tidewater.js";

/** Thrown when bytes are not JSON (as serde_json reads it). */
export class NotJson extends Error {}

const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function check(v, escapes) {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new NotJson("number out of range");
  } else if (typeof v === "string") {
    if (escapes && LONE.test(v)) throw new NotJson("lone surrogate");
  } else if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) check(v[i], escapes);
  } else if (v !== null && typeof v === "object") {
    for (const k in v) {
      if (escapes && LONE.test(k)) throw new NotJson("lone surrogate");
      check(v[k], escapes);
    }
  }
}

// serde_json refuses more than 127 levels of nesting.
function tooDeep(text) {
  let depth = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 91 || c === 123) { if (++depth >= 128) return true; }
    else if (c === 93 || c === 125) depth--;
  }
  return false;
}

/** Any UTF-16 code unit from U+D800 up (surrogates and U+E000..U+FFFF). */
const HIGH = /[\ud800-\uffff]/;

let plain = false;

/**
 * The JSON value in `raw` (strict, as serde_json reads it).
 *
 * Most of the work is the engine's own (TextDecoder, JSON.parse, RegExp),
 * which runs compiled; what serde_json refuses and JSON.parse accepts is
 * checked after: numbers that overflow a double (JSON.parse gives Infinity),
 * lone surrogate escapes (only possible when the text has a `\\u`), more
 * than 127 levels of nesting (only possible with 128 brackets or more).
 * @param {Uint8Array} raw
 */
export function parseJson(raw) {
  const text = utf8.decode(raw);
  if (text === null) throw new NotJson("not UTF-8");
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    throw new NotJson("syntax");
  }
  if (text.length >= 256 && (text.match(/[[{]/g)?.length ?? 0) >= 128 && tooDeep(text)) {
    throw new NotJson("too deep");
  }
  const escapes = text.includes("\\u");
  check(v, escapes);
  plain = !escapes && !HIGH.test(text);
  return v;
}

/**
 * Whether every string of the last value parseJson returned is made of
 * characters below U+D800, where the engine's own `sort()` (UTF-16 code-unit
 * order, compiled) is the UTF-8 byte order; else sort with `byteOrder`.
 */
export const lastParseSortsPlainly = () => plain;

const NUMBER_TEXT = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

/** A number written as text (readings::parse_number_text), or null. @param {string} s */
export function parseNumberText(s) {
  const t = s.replace(/^[ \t\n\f\r]+|[ \t\n\f\r]+$/g, "");
  if (!NUMBER_TEXT.test(t)) return null;
  const x = Number(t);
  return Number.isFinite(x) ? x : null;
}

/** Rust's `str::parse::<f64>` grammar (no trimming), finite only, or null. @param {string} s */
export function parseF64Strict(s) {
  if (!NUMBER_TEXT.test(s)) return null;
  const x = Number(s);
  return Number.isFinite(x) ? x : null;
}

/** `x` in the canonical form (String(x)), or "null". @param {number | null} x */
export function number(x) {
  if (x === null || !Number.isFinite(x)) return "null";
  if (x === 0) return "0";
  return String(x);
}

/** `s` as a JSON string, escaped as serde_json escapes it. @param {string} s */
export const string = (s) => JSON.stringify(s);

// Code-unit order with surrogates moved above U+FFFF: code point order,
// which is the byte order of UTF-8.
function fix(c) {
  return c >= 0xd800 && c <= 0xdfff ? c + 0x2000 : c >= 0xe000 ? c - 0x800 : c;
}

/** Compares two strings in the byte order of their UTF-8. */
export function byteOrder(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i), y = b.charCodeAt(i);
    if (x !== y) return fix(x) - fix(y);
  }
  return a.length - b.length;
}

/** A name JavaScript enumerates before the others (an array index), whatever the insertion order. */
const INDEX = /^(?:0|[1-9][0-9]*)$/m;

/**
 * An enriched reading's canonical JSON text. `names` and `values` are the
 * measurements (parallel arrays, any order); `plain` says the names sort in
 * byte order with the engine's own `sort()` (see lastParseSortsPlainly).
 *
 * JSON.stringify writes numbers as String(x) (-0 as 0, NaN and infinities
 * as null) and escapes strings as serde_json does, so when the names can be
 * inserted in order (none looks like an array index) the engine writes the
 * whole text in one compiled call.
 * @param {string} device @param {string} ts @param {string} kind
 * @param {string[]} names @param {(number | null)[]} values @param {boolean} [plain]
 */
export function enrichedJson(device, ts, kind, names, values, plain = false) {
  const order = names.slice();
  if (plain) order.sort();
  else order.sort(byteOrder);
  if (!INDEX.test(order.join("\n"))) {
    /** @type {Record<string, number | null>} */
    const measurements = Object.create(null);
    for (let i = 0; i < order.length; i++) measurements[order[i]] = values[names.indexOf(order[i])];
    return JSON.stringify({ device, ts, kind, measurements });
  }
  let s = '{"device":' + string(device) + ',"ts":' + string(ts) + ',"kind":' + string(kind) + ',"measurements":{';
  for (let i = 0; i < order.length; i++) {
    if (i) s += ",";
    s += string(order[i]) + ":" + number(values[names.indexOf(order[i])]);
  }
  return s + "}}";
}
