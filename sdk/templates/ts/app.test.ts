// Unit tests of {{name}}: make test (type-checked with tsc against Node's types,
// bundled, run by node --test). Events are built as the component gets them:
// offset and timestampMs are bigint (WIT u64 and s64).
import assert from "node:assert/strict";
import { test } from "node:test";

import { process } from "./app.ts";
import { state, utf8, type Event } from "./tidewater.js";

const event = (value: string | null): Event => ({
  topic: "in", partition: 0, offset: 0n, timestampMs: 0n, key: null, headers: [],
  value: value === null ? null : utf8.encode(value),
});

test("shouts and counts", () => {
  state.clear();
  const [first] = process([event("hi")]);
  assert.ok(first?.tag === "ok");
  assert.equal(utf8.decode(first.val[0]?.value ?? new Uint8Array()), "HI");
  const [second] = process([event("yo")]);
  assert.ok(second?.tag === "ok");
  assert.equal(utf8.decode(second.val[0]?.headers[0]?.[1] ?? new Uint8Array()), "2");
  assert.equal(process([event(null)])[0]?.tag, "err");
});
