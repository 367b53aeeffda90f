// Type declarations of readings.js (the sensor-reading model shared by the
// JavaScript processors), for the TypeScript processors in plugins/ts.

/** Thrown when bytes are not JSON (as serde_json reads it). */
export class NotJson extends Error {}

/** The JSON value in `raw` (strict, as serde_json reads it). Throws NotJson. */
export function parseJson(raw: Uint8Array): unknown;

/**
 * Whether every string of the last value parseJson returned sorts in UTF-8
 * byte order with the engine's own `sort()`; else sort with `byteOrder`.
 */
export function lastParseSortsPlainly(): boolean;

/** A number written as text (readings::parse_number_text), or null. */
export function parseNumberText(s: string): number | null;

/** Rust's `str::parse::<f64>` grammar (no trimming), finite only, or null. */
export function parseF64Strict(s: string): number | null;

/** `x` in the canonical form (String(x), -0 as 0), or "null". */
export function number(x: number | null): string;

/** `s` as a JSON string, escaped as serde_json escapes it. */
export function string(s: string): string;

/** Compares two strings in the byte order of their UTF-8 (a sort comparator). */
export function byteOrder(a: string, b: string): number;

/**
 * An enriched reading's canonical JSON text; `names` and `values` are the
 * measurements as parallel arrays, in any order.
 */
export function enrichedJson(
  device: string,
  ts: string,
  kind: string,
  names: readonly string[],
  values: ReadonlyArray<number | null>,
  plain?: boolean,
): string;
