import assert from "node:assert/strict";
import { test } from "node:test";

import { checkConfig, deliveredJson, event, loadEvent, run } from "@hookwasm/plugin-sdk/testing";

import * as plugin from "./plugin.ts";

const CONFIG = { base_url: "https://desk.example.com/", channel: "#support" };
const sample = (name: string) => loadEvent(new URL(`../../../examples/events/${name}.json`, import.meta.url).pathname);

test("a new message becomes a Slack message linking to the conversation", () => {
  const { result } = run(plugin, sample("message.created"), CONFIG);
  assert.ok(result.ok);
  const body = deliveredJson(result.value);
  assert.equal(body.channel, "#support");
  assert.match(body.text, /^New message from Ada Okafor on “/);
  assert.equal(body.blocks[3].elements[0].url, "https://desk.example.com/conversations/cnv_5Hq8Lm");
});

test("private notes are skipped unless include_private is set", () => {
  const note = sample("message.created.private-note");
  assert.deepEqual(run(plugin, note, CONFIG).result, { ok: true, value: { kind: "skip", reason: "private note" } });
  const included = run(plugin, note, { ...CONFIG, include_private: "true" }).result;
  assert.ok(included.ok && included.value.kind === "deliver");
});

test("events it does not handle are skipped", () => {
  const { result } = run(plugin, event("ticket.merged", {}), CONFIG);
  assert.deepEqual(result, { ok: true, value: { kind: "skip", reason: "slack-notify does not handle ticket.merged" } });
});

test("the config is checked", () => {
  assert.deepEqual(checkConfig(plugin, {}).result, { ok: false, error: "plugin_config.base_url is required" });
  assert.equal(checkConfig(plugin, { base_url: "ftp://x" }).result.ok, false);
  assert.equal(checkConfig(plugin, { base_url: "https://x", include_private: "yes" }).result.ok, false);
  assert.equal(checkConfig(plugin, CONFIG).result.ok, true);
});
