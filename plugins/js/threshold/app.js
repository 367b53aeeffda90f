// threshold in JavaScript: the port of plugins/rust/threshold (its crate docs
// are the specification). Built by `make plugins` (ComponentizeJS).

import { ConfigError, Invalid, defineProcessor, state } from "../../../sdk/js/tidewater.js";
import {
  NotJson, byteOrder, lastParseSortsPlainly, number, parseF64Strict, parseJson, string,
} from "../readings/readings.js";

const BELOW = 0, WITHIN = 1, ABOVE = 2;
/** measurement -> {min, max, delta} (null where unset) */
const rules = new Map();

const unknown = (key) =>
  new ConfigError(`unknown config key "${key}" (expected <measurement>.min, .max or .delta)`);

/** @param {Array<[string, string]>} config */
function init(config) {
  for (const [key, value] of config) {
    const dot = key.lastIndexOf(".");
    if (dot < 0) throw unknown(key);
    const x = parseF64Strict(value);
    if (x === null) throw new ConfigError(`config ${key} = "${value}" is not a number`);
    const m = key.slice(0, dot), what = key.slice(dot + 1);
    if (!rules.has(m)) rules.set(m, { min: null, max: null, delta: null });
    const r = rules.get(m);
    if (what === "min") r.min = x;
    else if (what === "max") r.max = x;
    else if (what === "delta") {
      if (!(x > 0)) throw new ConfigError(`config ${key} = "${value}" must be above 0`);
      r.delta = x;
    } else throw unknown(key);
  }
  for (const m of [...rules.keys()].sort(byteOrder)) {
    const r = rules.get(m);
    if (r.min !== null && r.max !== null && r.min > r.max) {
      throw new ConfigError(`${m}.min (${number(r.min)}) is above ${m}.max (${number(r.max)})`);
    }
  }
}

function encode(t) {
  const b = new Uint8Array(33);
  const v = new DataView(b.buffer);
  v.setUint32(0, t.count % 4294967296, true);
  v.setUint32(4, Math.floor(t.count / 4294967296), true);
  v.setFloat64(8, t.last, true);
  v.setFloat64(16, t.min, true);
  v.setFloat64(24, t.max, true);
  b[32] = t.zone;
  return b;
}

function decode(b) {
  if (b === null || b.length < 33 || b[32] > 2) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    count: v.getUint32(0, true) + v.getUint32(4, true) * 4294967296,
    last: v.getFloat64(8, true),
    min: v.getFloat64(16, true),
    max: v.getFloat64(24, true),
    zone: b[32],
  };
}

function alert(r, measurement, kind, value, limit, previous) {
  const text =
    '{"device":' + string(r.device) + ',"ts":' + string(r.ts) + ',"measurement":' + string(measurement) +
    ',"alert":' + string(kind) + ',"value":' + number(value) + ',"limit":' + number(limit) +
    ',"previous":' + number(previous) + "}";
  return { key: r.device, value: text };
}

function parseEnriched(raw) {
  let v;
  try {
    v = parseJson(raw);
  } catch (e) {
    if (e instanceof NotJson) throw new Invalid("value is not JSON");
    throw e;
  }
  const obj = v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
  const m = obj.measurements;
  if (m === null || typeof m !== "object" || Array.isArray(m)) {
    throw new Invalid('field "measurements" is missing or not an object');
  }
  for (const f of ["device", "ts", "kind"]) {
    if (typeof obj[f] !== "string") throw new Invalid(`field "${f}" is missing or not a string`);
  }
  return { device: obj.device, ts: obj.ts, measurements: m };
}

const NO_RULE = { min: null, max: null, delta: null };

/** @param {import("../../../sdk/js/tidewater.js").Event} event */
function onEvent(event) {
  if (event.value === null) throw new Invalid("tombstone: a reading needs a value");
  const r = parseEnriched(event.value);
  const alerts = [];
  const names = Object.keys(r.measurements);
  if (lastParseSortsPlainly()) names.sort();
  else names.sort(byteOrder);
  for (const name of names) {
    const x = r.measurements[name];
    if (typeof x !== "number") continue;
    const rule = rules.get(name) ?? NO_RULE;
    const key = r.device + "/" + name;
    const before = decode(state.get(key));
    const now = rule.min !== null && x < rule.min ? BELOW : rule.max !== null && x > rule.max ? ABOVE : WITHIN;
    const was = before === null ? WITHIN : before.zone;
    const previous = before === null ? null : before.last;
    if (now !== was) {
      let kind, limit;
      if (now === BELOW) [kind, limit] = ["below-min", rule.min];
      else if (now === ABOVE) [kind, limit] = ["above-max", rule.max];
      else if (was === BELOW) [kind, limit] = ["back-in-range", rule.min];
      else [kind, limit] = ["back-in-range", rule.max];
      if (limit !== null) alerts.push(alert(r, name, kind, x, limit, previous));
    }
    if (rule.delta !== null && previous !== null && Math.abs(x - previous) > rule.delta) {
      alerts.push(alert(r, name, "jump", x, rule.delta, previous));
    }
    const t = before === null
      ? { count: 1, last: x, min: x, max: x, zone: now }
      : { count: before.count + 1, last: x, min: Math.min(before.min, x), max: Math.max(before.max, x), zone: now };
    state.set(key, encode(t));
  }
  return alerts;
}

export const { init: initExport, process } = defineProcessor({ process: onEvent, init });
export { initExport as init };
