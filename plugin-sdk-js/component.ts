/**
 * The component's exports (`hookwasm:plugin@0.2.0`) around a plugin module: what
 * `hookwasm plugin build` bundles as the entry point. Not for plugin code.
 */

import { type Plugin, makeEvent, withCall } from "./hookwasm.ts";

type WitEvent = { id: string; eventType: string; timestamp: string; data: Uint8Array };
type WitResult<T> = { tag: "ok"; val: T } | { tag: "err"; val: string };

/** A deliver action as the contract carries it, or why it cannot be (checked here: a value
 * of the wrong type would trap while being handed over, and the call's logs would be lost). */
function deliverable(headers: unknown, body: unknown): WitResult<unknown> {
  if (!(body instanceof Uint8Array)) return { tag: "err", val: "deliver: the body must be a string or a Uint8Array" };
  const pairs = Array.isArray(headers) ? headers : [];
  if (!pairs.every((pair) => Array.isArray(pair) && pair.length === 2 && pair.every((s) => typeof s === "string"))) {
    return { tag: "err", val: "deliver: header names and values must be strings" };
  }
  return { tag: "ok", val: { tag: "deliver", val: { headers: pairs, body } } };
}

export function exportPlugin(plugin: Plugin) {
  return {
    transform(event: WitEvent, pairs: [string, string][]) {
      const { result, logs } = withCall(pairs, () =>
        plugin.transform(makeEvent(event.id, event.eventType, event.timestamp, event.data)),
      );
      let action: WitResult<unknown>;
      if (!result.ok) {
        action = { tag: "err", val: result.error };
      } else {
        const decided = result.value;
        switch (decided?.kind) {
          case "deliver":
            action = deliverable(decided.headers, decided.body);
            break;
          case "pass":
            action = { tag: "ok", val: { tag: "pass" } };
            break;
          case "skip":
            action = { tag: "ok", val: { tag: "skip", val: decided.reason } };
            break;
          default:
            action = { tag: "err", val: "transform returned no Action (use deliver, deliverJson, pass or skip)" };
        }
      }
      return { action, logs };
    },
    checkConfig(pairs: [string, string][]) {
      const { result, logs } = withCall(pairs, () => plugin.checkConfig?.());
      const outcome: WitResult<undefined> = result.ok ? { tag: "ok", val: undefined } : { tag: "err", val: result.error };
      return { outcome, logs };
    },
  };
}
