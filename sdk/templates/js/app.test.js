// Unit tests of {{name}}: make test (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { process } from "./app.js";
import { state, utf8 } from "./tidewater.js";

const event = (value) => ({
  topic: "in", partition: 0, offset: 0n, timestampMs: 0n, key: null, headers: [],
  value: value === null ? null : utf8.encode(value),
});

test("shouts and counts", () => {
  state.clear();
  assert.equal(utf8.decode(process([event("hi")])[0].val[0].value), "HI");
  const [r] = process([event("yo")]);
  assert.equal(utf8.decode(r.val[0].headers[0][1]), "2");
  assert.equal(process([event(null)])[0].tag, "err");
});
