// enrich in JavaScript: the port of plugins/rust/enrich (its crate docs are
// the specification). Built by `make plugins` (componentize-qjs).

import { ConfigError, Invalid, defineProcessor } from "../../../sdk/js/tidewater.js";
import { NotJson, byteOrder, enrichedJson, parseJson, parseNumberText } from "../readings/readings.js";

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
}

/** @param {Map<string, number | null>} m */
function kindOf(m) {
  if (m.has("flow_l_s")) return "flowmeter";
  if (m.has("glucose_mg_dl")) return "glucose-monitor";
  if (m.has("co2_ppm") || m.has("humidity_pct") || m.has("light_lux")) return "room-sensor";
  if (m.has("temperature_c")) return "thermometer";
  return "unknown";
}

function toNumber(v) {
  if (typeof v === "number") return v;
  if (typeof v === "string") return parseNumberText(v);
  return null;
}

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

  const m = new Map();
  for (const column of Object.keys(fieldsIn).sort(byteOrder)) {
    if (column === "device" || column === "ts") continue;
    const name = fields.get(column) ?? BUILT_IN_FIELDS.get(column) ?? column;
    m.set(name, toNumber(fieldsIn[column]));
  }
  let any = false;
  for (const v of m.values()) if (v !== null) any = true;
  if (!any) throw new Invalid(`reading from ${device} at ${ts} has no measurement that parses`);
  if (m.has("temperature_c")) {
    const c = m.get("temperature_c");
    m.set("temperature_f", c === null ? null : (c * 9) / 5 + 32);
  }
  if (m.has("flow_l_s")) {
    const l = m.get("flow_l_s");
    m.set("flow_m3_h", l === null ? null : l * 3.6);
  }
  const kind = kinds.get(device) ?? kindOf(m);
  return [{ key: device, value: enrichedJson(device, ts, kind, m) }];
}

export const { init: initExport, process } = defineProcessor({ process: onEvent, init });
export { initExport as init };
