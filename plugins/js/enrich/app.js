// enrich in JavaScript: the port of plugins/rust/enrich (its crate docs are
// the specification). Built by `make plugins` (ComponentizeJS).

import { ConfigError, Invalid, defineProcessor } from "../../../sdk/js/tidewater.js";
import {
  NotJson, byteOrder, enrichedJson, lastParseSortsPlainly, parseJson, parseNumberText,
} from "../readings/readings.js";

const BUILT_IN_FIELDS = new Map([
  ["temperature (celsius)", "temperature_c"],
  ["Water flow [l/s]", "flow_l_s"],
  ["glucose", "glucose_mg_dl"],
  ["isig", "isig_na"],
]);

const fields = new Map();
const kinds = new Map();

/** @param {Array<[string, string]>} config */
function init(config) {
  for (const [key, value] of config) {
    let table, name;
    if (key.startsWith("field.")) [table, name] = [fields, key.slice(6)];
    else if (key.startsWith("kind.")) [table, name] = [kinds, key.slice(5)];
    else throw new ConfigError(`unknown config key "${key}" (expected field.<column> or kind.<device>)`);
    if (!name || !value) throw new ConfigError(`config key "${key}" needs a name and a value`);
    table.set(name, value);
  }
  renamesPlain = ![...fields.values()].some((name) => HIGH.test(name));
}

/** Any UTF-16 code unit from U+D800 up: names with one need `byteOrder` to sort. */
const HIGH = /[\ud800-\uffff]/;
/** Whether every configured column name sorts plainly (see lastParseSortsPlainly). */
let renamesPlain = true;

/** @param {string[]} names measurement names */
function kindOf(names) {
  if (names.includes("flow_l_s")) return "flowmeter";
  if (names.includes("glucose_mg_dl")) return "glucose-monitor";
  if (names.includes("co2_ppm") || names.includes("humidity_pct") || names.includes("light_lux")) {
    return "room-sensor";
  }
  if (names.includes("temperature_c")) return "thermometer";
  return "unknown";
}

/** @param {unknown} v */
function toNumber(v) {
  if (typeof v === "number") return v;
  if (typeof v === "string") return parseNumberText(v);
  return null;
}

/**
 * Sets measurement `name` (a later one replaces an earlier one in place).
 * @param {string[]} names @param {(number | null)[]} values
 * @param {string} name @param {number | null} value
 */
function put(names, values, name, value) {
  const i = names.indexOf(name);
  if (i < 0) {
    names.push(name);
    values.push(value);
  } else values[i] = value;
}

// The hot path allocates little and leaves sorting, parsing and string
// building to the engine's compiled built-ins: the engine interprets
// JavaScript (no JIT inside a component) and every object is work for its
// collector. Measurements are two parallel arrays, not a Map.

/** @param {import("../../../sdk/js/tidewater.js").Event} event */
function onEvent(event) {
  if (event.value === null) throw new Invalid("tombstone: a reading needs a value");
  let fieldsIn;
  try {
    fieldsIn = parseJson(event.value);
  } catch (e) {
    if (e instanceof NotJson) throw new Invalid("value is not JSON");
    throw e;
  }
  if (fieldsIn === null || typeof fieldsIn !== "object" || Array.isArray(fieldsIn)) {
    throw new Invalid("value is not a JSON object");
  }
  const device = fieldsIn.device, ts = fieldsIn.ts;
  if (typeof device !== "string") throw new Invalid('field "device" is missing or not a string');
  if (typeof ts !== "string") throw new Invalid('field "ts" is missing or not a string');

  const plain = lastParseSortsPlainly();
  const columns = Object.keys(fieldsIn);
  if (plain) columns.sort();
  else columns.sort(byteOrder);
  /** @type {string[]} */
  const names = [];
  /** @type {(number | null)[]} */
  const values = [];
  let any = false;
  for (let i = 0; i < columns.length; i++) {
    const column = columns[i];
    if (column === "device" || column === "ts") continue;
    const x = toNumber(fieldsIn[column]);
    if (x !== null) any = true;
    put(names, values, fields.get(column) ?? BUILT_IN_FIELDS.get(column) ?? column, x);
  }
  if (!any) throw new Invalid(`reading from ${device} at ${ts} has no measurement that parses`);
  const c = names.indexOf("temperature_c");
  if (c >= 0) put(names, values, "temperature_f", values[c] === null ? null : (values[c] * 9) / 5 + 32);
  const l = names.indexOf("flow_l_s");
  if (l >= 0) put(names, values, "flow_m3_h", values[l] === null ? null : values[l] * 3.6);
  const kind = kinds.get(device) ?? kindOf(names);
  return [{ key: device, value: enrichedJson(device, ts, kind, names, values, plain && renamesPlain) }];
}

export const { init: initExport, process } = defineProcessor({ process: onEvent, init });
export { initExport as init };
