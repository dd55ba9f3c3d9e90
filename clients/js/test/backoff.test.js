import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, retryAfterMs, reconnectDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from "../src/index.js";

test("full jitter: 0 to the capped exponential ceiling", () => {
  assert.equal(backoffDelay(0, { random: () => 0 }), 0);
  assert.equal(backoffDelay(0, { random: () => 0.999999 }), BACKOFF_BASE_MS);
  assert.equal(backoffDelay(1, { random: () => 0.999999 }), 2 * BACKOFF_BASE_MS);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  // at and past the cap: 500 * 2**4 = 8000 is the cap, 2**5 would be 16000
  assert.equal(backoffDelay(4, { random: () => 0.999999 }), BACKOFF_CAP_MS);
  assert.equal(backoffDelay(5, { random: () => 0.999999 }), BACKOFF_CAP_MS);
  assert.equal(backoffDelay(1000, { random: () => 0.999999 }), BACKOFF_CAP_MS);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(i % 8);
    assert.ok(d >= 0 && d <= BACKOFF_CAP_MS, `delay ${d}`);
  }
});

test("bad attempts count as the first", () => {
  assert.equal(backoffDelay(-3, { random: () => 0.999999 }), BACKOFF_BASE_MS);
  assert.equal(backoffDelay(NaN, { random: () => 0.999999 }), BACKOFF_BASE_MS);
});

test("Retry-After in seconds or as an HTTP date", () => {
  const now = Date.parse("2026-12-04T12:00:00Z");
  assert.equal(retryAfterMs("5", now), 5000);
  assert.equal(retryAfterMs(" 120 ", now), 120_000);
  assert.equal(retryAfterMs("0", now), 0);
  assert.equal(retryAfterMs("Fri, 04 Dec 2026 12:00:30 GMT", now), 30_000);
  assert.equal(retryAfterMs("Fri, 04 Dec 2026 11:00:00 GMT", now), 0);   // in the past
  assert.equal(retryAfterMs("-5", now), 0);
  assert.equal(retryAfterMs("soon", now), 0);
  assert.equal(retryAfterMs("", now), 0);
  assert.equal(retryAfterMs(null, now), 0);
});

test("a reconnect never comes sooner than Retry-After", () => {
  for (let i = 0; i < 100; i++) {
    const d = reconnectDelay(6, 3000);
    assert.ok(d >= 3000 && d <= 3000 + BACKOFF_BASE_MS, `delay ${d}`);
  }
  assert.equal(reconnectDelay(2, 0, { random: () => 0.999999 }), 4 * BACKOFF_BASE_MS);
});
