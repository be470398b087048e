import assert from "node:assert/strict";
import { test } from "node:test";

import { checkConfig, deliveredJson, event, run } from "@hookwasm/plugin-sdk/testing";

import * as plugin from "./plugin.js";

const SVIX = `
function handler(webhook) {
  if (webhook.eventType === "message.created" && webhook.payload.data.message.private) {
    webhook.cancel = true;
  }
  webhook.payload = { text: "New event: " + webhook.eventType, id: webhook.payload.id };
  return webhook;
}`;

const HOOKDECK = `
addHandler("transform", (request, context) => {
  request.headers["x-source"] = "easydesk";
  request.body = { kind: request.body.type, conversation: request.body.data.conversation.id };
  return request;
});`;

const message = (isPrivate) =>
  event("message.created", { conversation: { id: "cnv_1" }, message: { private: isPrivate } }, "evt_1");

test("a Svix handler reshapes the payload", () => {
  const { result } = run(plugin, message(false), { script: SVIX });
  assert.deepEqual(deliveredJson(result.value), { text: "New event: message.created", id: "evt_1" });
});

test("a Svix handler's cancel skips the event", () => {
  const { result } = run(plugin, message(true), { script: SVIX });
  assert.deepEqual(result.value, { kind: "skip", reason: "cancelled by the transformation" });
});

test("a Svix handler may not redirect the webhook", () => {
  const { result } = run(plugin, message(false), { script: "function handler(w) { w.url = 'https://x'; return w }" });
  assert.equal(result.ok, false);
  assert.match(result.error, /webhook.url cannot be changed/);
});

test("a Hookdeck handler reshapes the body and adds headers", () => {
  const { result } = run(plugin, message(false), { script: HOOKDECK });
  assert.deepEqual(deliveredJson(result.value), { kind: "message.created", conversation: "cnv_1" });
  assert.deepEqual(result.value.headers, [["x-source", "easydesk"]]);
});

test("a script that does not compile, or defines no handler, is refused at config check", () => {
  assert.match(checkConfig(plugin, { script: "function handler(" }).result.error, /SyntaxError/);
  assert.match(checkConfig(plugin, { script: "const x = 1;" }).result.error, /neither function handler/);
  assert.match(checkConfig(plugin, {}).result.error, /plugin_config.script is required/);
  assert.equal(checkConfig(plugin, { script: SVIX }).result.ok, true);
});
