// Unit tests of enrich, run natively: node --test (make test does).
import assert from "node:assert/strict";
import { test } from "node:test";

import { process } from "./app.js";

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);
const event = (value) => ({
  topic: "sensor-readings", partition: 0, offset: 0n, timestampMs: 0n, key: null,
  value: value === null ? null : enc(value), headers: [],
});

test("converts celsius and keys by device", () => {
  const [r] = process([event('{"device":"buoy","ts":"2016-02-15T00:00:00Z","temperature (celsius)":4.929}')]);
  assert.equal(r.tag, "ok");
  assert.equal(dec(r.val[0].key), "buoy");
  assert.equal(
    dec(r.val[0].value),
    '{"device":"buoy","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"temperature_c":4.929,"temperature_f":40.8722}}',
  );
});

test("a tombstone and a value that is not JSON are invalid", () => {
  const [a, b] = process([event(null), event("not json")]);
  assert.deepEqual(a, { tag: "err", val: { tag: "invalid", val: "tombstone: a reading needs a value" } });
  assert.deepEqual(b, { tag: "err", val: { tag: "invalid", val: "value is not JSON" } });
});

test("names sort in UTF-8 byte order, not UTF-16 order", () => {
  const [r] = process([event('{"device":"d","ts":"t","\ue000":1,"🌊":2}')]);
  assert.equal(
    dec(r.val[0].value),
    '{"device":"d","ts":"t","kind":"unknown","measurements":{"\ue000":1,"🌊":2}}',
  );
});
