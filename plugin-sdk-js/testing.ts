/**
 * Native test helpers: run a plugin module on an event with a given `plugin_config`, as the
 * host would, under Node's own test runner (`node --test`).
 *
 * ```ts
 * import { test } from "node:test";
 * import assert from "node:assert/strict";
 * import * as plugin from "./plugin.ts";
 * import { event, run } from "@hookwasm/plugin-sdk/testing";
 *
 * test("passes", () => {
 *   const { result } = run(plugin, event("message.created", { x: 1 }), { prefix: "hi" });
 *   assert.deepEqual(result, { ok: true, value: { kind: "pass" } });
 * });
 * ```
 */

import { readFileSync } from "node:fs";

import { type Action, type Event, type Plugin, makeEvent, withCall } from "./hookwasm.ts";

type Config = Record<string, string> | [string, string][];

const pairs = (config: Config): [string, string][] =>
  (Array.isArray(config) ? config : Object.entries(config)).slice().sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/** An event of `eventType` with `data` (serialized as JSON). */
export function event(eventType: string, data: unknown, id = "evt_test", timestamp = "2026-01-01T00:00:00Z"): Event {
  return makeEvent(id, eventType, timestamp, new TextEncoder().encode(JSON.stringify(data)));
}

/** An event from an envelope file (`{"id", "type", "timestamp", "data"}`); its `data` is
 * written again as compact JSON, as hookwasm passes it. */
export function loadEvent(path: string): Event {
  const envelope = JSON.parse(readFileSync(path, "utf8"));
  return makeEvent(envelope.id, envelope.type, envelope.timestamp, new TextEncoder().encode(JSON.stringify(envelope.data)));
}

/** Runs `transform` as the host would: the action (or the error's message) and the lines logged. */
export function run(plugin: Plugin, event: Event, config: Config = {}) {
  return withCall<Action>(pairs(config), () => plugin.transform(event));
}

/** Runs `checkConfig` (if the plugin has one) with `config`. */
export function checkConfig(plugin: Plugin, config: Config = {}) {
  return withCall(pairs(config), () => plugin.checkConfig?.());
}

/** The JSON body of a `deliver` action. */
export function deliveredJson(action: Action): any {
  if (action.kind !== "deliver") throw new Error(`expected a deliver action, got ${action.kind}`);
  return JSON.parse(new TextDecoder().decode(action.body));
}
