import { test } from "node:test";
import assert from "node:assert/strict";
import { TokenSource, UnauthorizedError } from "../src/index.js";

test("two concurrent expiries call getToken once", async () => {
  let calls = 0;
  let release;
  const gate = new Promise((r) => { release = r; });
  const tokens = new TokenSource(async ({ reason }) => { calls += 1; await gate; return `t${calls}-${reason}`; });
  const g = tokens.generation;
  const a = tokens.refresh("token_expiring", g);
  const b = tokens.refresh("auth_expired", g);
  release();
  assert.deepEqual(await Promise.all([a, b]), ["t1-token_expiring", "t1-token_expiring"]);
  assert.equal(calls, 1);
  // a caller that saw the old generation after the refresh finished gets the new token, no call
  assert.equal(await tokens.refresh("token_expired", g), "t1-token_expiring");
  assert.equal(calls, 1);
  // a later expiry of the new token calls again
  assert.equal(await tokens.refresh("token_expiring", tokens.generation), "t2-token_expiring");
  assert.equal(calls, 2);
});

test("the reasons reach getToken in order", async () => {
  const reasons = [];
  const tokens = new TokenSource(({ reason }) => { reasons.push(reason); return "x"; });
  await tokens.refresh("start");
  await tokens.refresh("token_expiring", tokens.generation);
  await tokens.refresh("unauthorized", tokens.generation);
  assert.deepEqual(reasons, ["start", "token_expiring", "unauthorized"]);
});

test("a failing getToken is unauthorized; null means cookies", async () => {
  const failing = new TokenSource(() => { throw new Error("no session"); });
  await assert.rejects(failing.refresh("start"), (err) => err instanceof UnauthorizedError && err.code === "unauthorized");
  const bad = new TokenSource(() => 42);
  await assert.rejects(bad.refresh("start"), UnauthorizedError);
  const cookie = new TokenSource(() => null);
  assert.equal(await cookie.refresh("start"), null);
  assert.equal(cookie.generation, 1);
  assert.throws(() => new TokenSource("nope"), TypeError);
});
