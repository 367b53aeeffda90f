// Unit tests of enrich, run natively: make test bundles them (rolldown) and runs node --test.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { Event, EventResult } from "../../../sdk/js/tidewater.js";
import { process } from "./app.ts";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null | undefined): string => new TextDecoder().decode(b ?? new Uint8Array());
const event = (value: string | null): Event => ({
  topic: "sensor-readings", partition: 0, offset: 0n, timestampMs: 0n, key: null,
  value: value === null ? null : enc(value), headers: [],
});
const one = (value: string | null): EventResult => {
  const [r] = process([event(value)]);
  assert.ok(r);
  return r;
};

test("converts celsius and keys by device", () => {
  const r = one('{"device":"buoy","ts":"2016-02-15T00:00:00Z","temperature (celsius)":4.929}');
  assert.equal(r.tag, "ok");
  if (r.tag !== "ok") return;
  assert.equal(dec(r.val[0]?.key), "buoy");
  assert.equal(
    dec(r.val[0]?.value),
    '{"device":"buoy","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"temperature_c":4.929,"temperature_f":40.8722}}',
  );
});

test("a tombstone and a value that is not JSON are invalid", () => {
  assert.deepEqual(one(null), { tag: "err", val: { tag: "invalid", val: "tombstone: a reading needs a value" } });
  assert.deepEqual(one("not json"), { tag: "err", val: { tag: "invalid", val: "value is not JSON" } });
});

test("names sort in UTF-8 byte order, not UTF-16 order", () => {
  const r = one('{"device":"d","ts":"t","\ue000":1,"🌊":2}');
  assert.equal(r.tag, "ok");
  if (r.tag !== "ok") return;
  assert.equal(dec(r.val[0]?.value), '{"device":"d","ts":"t","kind":"unknown","measurements":{"\ue000":1,"🌊":2}}');
});
