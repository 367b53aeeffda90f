// threshold in TypeScript: the port of plugins/rust/threshold (its crate docs
// are the specification), on the JavaScript SDK with its type declarations
// and the reading model of plugins/js. Built by `make plugins`.

import {
  ConfigError,
  Invalid,
  defineProcessor,
  state,
  type Config,
  type Event,
  type Output,
} from "../../../sdk/js/tidewater.js";
import {
  NotJson,
  byteOrder,
  lastParseSortsPlainly,
  number,
  parseF64Strict,
  parseJson,
  string,
} from "../../js/readings/readings.js";

/** Where a value is against its bounds; the number is what the state keeps. */
const enum Zone {
  Below = 0,
  Within = 1,
  Above = 2,
}

interface Rule {
  min: number | null;
  max: number | null;
  delta: number | null;
}

/** What the state keeps per device and measurement (33 bytes, little-endian). */
interface Track {
  count: number;
  last: number;
  min: number;
  max: number;
  zone: Zone;
}

interface Reading {
  device: string;
  ts: string;
  measurements: Record<string, unknown>;
}

type AlertKind = "below-min" | "above-max" | "back-in-range" | "jump";

const rules = new Map<string, Rule>();
const NO_RULE: Readonly<Rule> = { min: null, max: null, delta: null };

const unknown = (key: string): ConfigError =>
  new ConfigError(`unknown config key "${key}" (expected <measurement>.min, .max or .delta)`);

function init(config: Config): void {
  for (const [key, value] of config) {
    const dot = key.lastIndexOf(".");
    if (dot < 0) throw unknown(key);
    const x = parseF64Strict(value);
    if (x === null) throw new ConfigError(`config ${key} = "${value}" is not a number`);
    const measurement = key.slice(0, dot);
    const what = key.slice(dot + 1);
    let r = rules.get(measurement);
    if (r === undefined) {
      r = { min: null, max: null, delta: null };
      rules.set(measurement, r);
    }
    if (what === "min") r.min = x;
    else if (what === "max") r.max = x;
    else if (what === "delta") {
      if (!(x > 0)) throw new ConfigError(`config ${key} = "${value}" must be above 0`);
      r.delta = x;
    } else throw unknown(key);
  }
  for (const m of [...rules.keys()].sort(byteOrder)) {
    const r = rules.get(m);
    if (r && r.min !== null && r.max !== null && r.min > r.max) {
      throw new ConfigError(`${m}.min (${number(r.min)}) is above ${m}.max (${number(r.max)})`);
    }
  }
}

function encode(t: Track): Uint8Array {
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

function decode(b: Uint8Array | null): Track | null {
  if (b === null || b.length < 33) return null;
  const zone = b[32];
  if (zone === undefined || zone > 2) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    count: v.getUint32(0, true) + v.getUint32(4, true) * 4294967296,
    last: v.getFloat64(8, true),
    min: v.getFloat64(16, true),
    max: v.getFloat64(24, true),
    zone: zone as Zone,
  };
}

function alert(
  r: Reading,
  measurement: string,
  kind: AlertKind,
  value: number,
  limit: number,
  previous: number | null,
): Output {
  const text =
    '{"device":' + string(r.device) + ',"ts":' + string(r.ts) + ',"measurement":' + string(measurement) +
    ',"alert":' + string(kind) + ',"value":' + number(value) + ',"limit":' + number(limit) +
    ',"previous":' + number(previous) + "}";
  return { key: r.device, value: text };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

function parseEnriched(raw: Uint8Array): Reading {
  let v: unknown;
  try {
    v = parseJson(raw);
  } catch (e) {
    if (e instanceof NotJson) throw new Invalid("value is not JSON");
    throw e;
  }
  const obj = isObject(v) ? v : {};
  const { measurements, device, ts, kind } = obj;
  if (!isObject(measurements)) throw new Invalid('field "measurements" is missing or not an object');
  if (typeof device !== "string") throw new Invalid('field "device" is missing or not a string');
  if (typeof ts !== "string") throw new Invalid('field "ts" is missing or not a string');
  if (typeof kind !== "string") throw new Invalid('field "kind" is missing or not a string');
  return { device, ts, measurements };
}

/** The alert for a change of zone, if the bound it crossed is set. */
function crossing(now: Zone, was: Zone, rule: Readonly<Rule>): [AlertKind, number] | null {
  let kind: AlertKind;
  let limit: number | null;
  if (now === Zone.Below) [kind, limit] = ["below-min", rule.min];
  else if (now === Zone.Above) [kind, limit] = ["above-max", rule.max];
  else if (was === Zone.Below) [kind, limit] = ["back-in-range", rule.min];
  else [kind, limit] = ["back-in-range", rule.max];
  return limit === null ? null : [kind, limit];
}

function onEvent(event: Event): Output[] {
  if (event.value === null) throw new Invalid("tombstone: a reading needs a value");
  const r = parseEnriched(event.value);
  const alerts: Output[] = [];
  const names = Object.keys(r.measurements);
  if (lastParseSortsPlainly()) names.sort();
  else names.sort(byteOrder);
  for (const name of names) {
    const x = r.measurements[name];
    if (typeof x !== "number") continue;
    const rule = rules.get(name) ?? NO_RULE;
    const key = r.device + "/" + name;
    const before = decode(state.get(key));
    const now =
      rule.min !== null && x < rule.min ? Zone.Below : rule.max !== null && x > rule.max ? Zone.Above : Zone.Within;
    const was = before === null ? Zone.Within : before.zone;
    const previous = before === null ? null : before.last;
    if (now !== was) {
      const cross = crossing(now, was, rule);
      if (cross) alerts.push(alert(r, name, cross[0], x, cross[1], previous));
    }
    if (rule.delta !== null && previous !== null && Math.abs(x - previous) > rule.delta) {
      alerts.push(alert(r, name, "jump", x, rule.delta, previous));
    }
    const t: Track =
      before === null
        ? { count: 1, last: x, min: x, max: x, zone: now }
        : { count: before.count + 1, last: x, min: Math.min(before.min, x), max: Math.max(before.max, x), zone: now };
    state.set(key, encode(t));
  }
  return alerts;
}

export const { init: initExport, process } = defineProcessor({ process: onEvent, init });
export { initExport as init };
