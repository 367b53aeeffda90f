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
    for (const x of v) check(x, escapes);
  } else if (v !== null && typeof v === "object") {
    for (const k of Object.keys(v)) {
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

/** The JSON value in `raw` (strict, as serde_json). @param {Uint8Array} raw */
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
  check(v, text.includes("\\u"));
  return v;
}

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

/** An enriched reading's canonical JSON text. */
export function enrichedJson(device, ts, kind, measurements) {
  let s = '{"device":' + string(device) + ',"ts":' + string(ts) + ',"kind":' + string(kind) + ',"measurements":{';
  const names = [...measurements.keys()].sort(byteOrder);
  for (let i = 0; i < names.length; i++) {
    if (i) s += ",";
    s += string(names[i]) + ":" + number(measurements.get(names[i]));
  }
  return s + "}}";
}
