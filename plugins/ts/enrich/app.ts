// enrich in TypeScript: the port of plugins/rust/enrich (its crate docs are
// the specification), on the JavaScript SDK with its type declarations and
// the reading model of plugins/js. Built by `make plugins`: type-checked with
// tsc, bundled by rolldown, componentized by ComponentizeJS.

import {
  ConfigError,
  Invalid,
  defineProcessor,
  type Config,
  type Event,
  type Output,
} from "../../../sdk/js/tidewater.js";
import {
  NotJson,
  byteOrder,
  enrichedJson,
  lastParseSortsPlainly,
  parseJson,
  parseNumberText,
} from "../../js/readings/readings.js";

/** The data sets' column names and what enrich calls them. */
const BUILT_IN_FIELDS: ReadonlyMap<string, string> = new Map([
  ["temperature (celsius)", "temperature_c"],
  ["Water flow [l/s]", "flow_l_s"],
  ["glucose", "glucose_mg_dl"],
  ["isig", "isig_na"],
]);

/** `field.<column>`: a column's measurement name; `kind.<device>`: a device's kind. */
const fields = new Map<string, string>();
const kinds = new Map<string, string>();

/** Any UTF-16 code unit from U+D800 up: names with one need `byteOrder` to sort. */
const HIGH = /[\ud800-\uffff]/;
/** Whether every configured measurement name sorts with the engine's own `sort()`. */
let renamesPlain = true;

function init(config: Config): void {
  for (const [key, value] of config) {
    let table: Map<string, string>;
    let name: string;
    if (key.startsWith("field.")) [table, name] = [fields, key.slice(6)];
    else if (key.startsWith("kind.")) [table, name] = [kinds, key.slice(5)];
    else throw new ConfigError(`unknown config key "${key}" (expected field.<column> or kind.<device>)`);
    if (!name || !value) throw new ConfigError(`config key "${key}" needs a name and a value`);
    table.set(name, value);
  }
  renamesPlain = ![...fields.values()].some((name) => HIGH.test(name));
}

type DeviceKind = "flowmeter" | "glucose-monitor" | "room-sensor" | "thermometer" | "unknown";

function kindOf(names: readonly string[]): DeviceKind {
  if (names.includes("flow_l_s")) return "flowmeter";
  if (names.includes("glucose_mg_dl")) return "glucose-monitor";
  if (names.includes("co2_ppm") || names.includes("humidity_pct") || names.includes("light_lux")) {
    return "room-sensor";
  }
  if (names.includes("temperature_c")) return "thermometer";
  return "unknown";
}

function toNumber(v: unknown): number | null {
  if (typeof v === "number") return v;
  if (typeof v === "string") return parseNumberText(v);
  return null;
}

/** Sets measurement `name` in the parallel arrays (a later one replaces an earlier one in place). */
function put(names: string[], values: Array<number | null>, name: string, value: number | null): void {
  const i = names.indexOf(name);
  if (i < 0) {
    names.push(name);
    values.push(value);
  } else values[i] = value;
}

// The hot path is written as plugins/js/enrich is, so that the JavaScript
// rolldown emits is the same: the engine interprets it (no JIT inside a
// component), so a class with field initialisers and methods, `for...of`
// (an iterator object per loop), destructuring and an extra call per event
// cost time that plain arrays and index loops do not (README: TypeScript).

function onEvent(event: Event): Output[] {
  if (event.value === null) throw new Invalid("tombstone: a reading needs a value");
  let parsed: unknown;
  try {
    parsed = parseJson(event.value);
  } catch (e) {
    if (e instanceof NotJson) throw new Invalid("value is not JSON");
    throw e;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Invalid("value is not a JSON object");
  }
  const reading = parsed as Record<string, unknown>;
  const device = reading.device, ts = reading.ts;
  if (typeof device !== "string") throw new Invalid('field "device" is missing or not a string');
  if (typeof ts !== "string") throw new Invalid('field "ts" is missing or not a string');

  const plain = lastParseSortsPlainly();
  const columns = Object.keys(reading);
  if (plain) columns.sort();
  else columns.sort(byteOrder);
  const names: string[] = [];
  const values: Array<number | null> = [];
  let any = false;
  for (let i = 0; i < columns.length; i++) {
    const column = columns[i] as string;
    if (column === "device" || column === "ts") continue;
    const x = toNumber(reading[column]);
    if (x !== null) any = true;
    put(names, values, fields.get(column) ?? BUILT_IN_FIELDS.get(column) ?? column, x);
  }
  if (!any) throw new Invalid(`reading from ${device} at ${ts} has no measurement that parses`);
  const c = names.indexOf("temperature_c");
  if (c >= 0) {
    const v = values[c] as number | null;
    put(names, values, "temperature_f", v === null ? null : (v * 9) / 5 + 32);
  }
  const l = names.indexOf("flow_l_s");
  if (l >= 0) {
    const v = values[l] as number | null;
    put(names, values, "flow_m3_h", v === null ? null : v * 3.6);
  }
  const kind = kinds.get(device) ?? kindOf(names);
  return [{ key: device, value: enrichedJson(device, ts, kind, names, values, plain && renamesPlain) }];
}

export const { init: initExport, process } = defineProcessor({ process: onEvent, init });
export { initExport as init };
