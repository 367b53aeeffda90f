// Unit tests of threshold, run natively: node --test (make test does).
import assert from "node:assert/strict";
import { test } from "node:test";

import { state } from "../../../sdk/js/tidewater.js";
import { init, process } from "./app.js";

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);
const reading = (flow) => ({
  topic: "readings-enriched", partition: 0, offset: 0n, timestampMs: 0n, key: null, headers: [],
  value: enc(`{"device":"pipe","ts":"t","kind":"flowmeter","measurements":{"flow_l_s":${flow}}}`),
});
const texts = (r) => r.val.map((o) => dec(o.value));

test("alerts on crossing and jump, and keeps state", () => {
  state.clear();
  init([["flow_l_s.min", "50"], ["flow_l_s.delta", "30"]]);
  assert.deepEqual(texts(process([reading(100)])[0]), []);
  assert.deepEqual(texts(process([reading(24.5)])[0]), [
    '{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"below-min","value":24.5,"limit":50,"previous":100}',
    '{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"jump","value":24.5,"limit":30,"previous":100}',
  ]);
  const t = state.get("pipe/flow_l_s");
  assert.equal(t.length, 33);
  assert.equal(t[32], 0); // below
});

test("a bad config is refused with a message", () => {
  assert.throws(() => init([["flow_l_s", "1"]]), (e) =>
    e === 'unknown config key "flow_l_s" (expected <measurement>.min, .max or .delta)');
});
