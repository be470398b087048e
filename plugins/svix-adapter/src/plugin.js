// `svix-adapter`: runs a transformation written for Svix (`function handler(webhook)`) or
// Hookdeck (`addHandler("transform", (request, context) => ...)`) unchanged. The script is
// the webhook's `plugin_config.script` (`--config script=@transform.js` reads it from a file).
// The subset it supports is documented in the README ("Transformations from Svix and Hookdeck").
//
// | key | meaning |
// |---|---|
// | `script` | required: the transformation's JavaScript source |
// | `url` | what the script sees as `webhook.url` (Svix); default empty |

import { config, deliver, deliverJson, skip } from "@hookwasm/plugin-sdk";

/** The script's handler: compiled per call (a fresh instance runs every event). */
function load(script) {
  const registered = {};
  const addHandler = (kind, handler) => {
    if (kind === "transform" && typeof handler === "function") registered.transform = handler;
  };
  let handler;
  try {
    const factory = new Function(
      "addHandler",
      `"use strict";\n${script}\n;return typeof handler === "function" ? handler : undefined;`,
    );
    handler = factory(addHandler);
  } catch (error) {
    throw new Error(`plugin_config.script: ${error instanceof Error ? `${error.name}: ${error.message}` : error}`);
  }
  if (handler) return { style: "svix", handler };
  if (registered.transform) return { style: "hookdeck", handler: registered.transform };
  throw new Error(
    'plugin_config.script defines neither function handler(webhook) (Svix) nor addHandler("transform", fn) (Hookdeck)',
  );
}

function settled(value, style) {
  if (value && typeof value.then === "function") {
    throw new Error(`the ${style} transformation returned a Promise: only synchronous transformations are supported`);
  }
  if (value === null || typeof value !== "object") {
    throw new Error(`the ${style} transformation must return the ${style === "svix" ? "webhook" : "request"} object`);
  }
  return value;
}

function runSvix(handler, envelope, eventType) {
  const url = config.get("url") ?? "";
  const webhook = settled(handler({ method: "POST", url, eventType, payload: envelope, cancel: false }), "svix");
  if (webhook.cancel === true) return skip("cancelled by the transformation");
  if (webhook.method !== "POST") throw new Error("webhook.method cannot be changed: hookwasm sends POST");
  if (webhook.url !== url) throw new Error("webhook.url cannot be changed: hookwasm delivers to the webhook's URL");
  if (webhook.payload === undefined) throw new Error("webhook.payload is undefined");
  return deliverJson(webhook.payload);
}

function runHookdeck(handler, envelope) {
  const request = { headers: { "content-type": "application/json" }, body: envelope, query: "", parsed_query: {}, path: "/" };
  const out = settled(handler(request, { connection: {} }), "hookdeck");
  const headers = {};
  for (const [name, value] of Object.entries(out.headers ?? {})) {
    if (name.toLowerCase() === "content-type" && value === "application/json") continue;
    headers[name] = String(value);
  }
  if (out.body === undefined) throw new Error("request.body is undefined");
  return deliver(typeof out.body === "string" ? out.body : JSON.stringify(out.body), headers);
}

export function checkConfig() {
  load(config.require("script"));
}

export function transform(event) {
  const { style, handler } = load(config.require("script"));
  // The payload is the envelope hookwasm would send, keys in its order.
  const envelope = { id: event.id, type: event.eventType, timestamp: event.timestamp, data: event.json() };
  return style === "svix" ? runSvix(handler, envelope, event.eventType) : runHookdeck(handler, envelope);
}
