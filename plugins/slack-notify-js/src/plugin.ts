/**
 * `slack-notify-js`: EasyDesk events as Slack messages (Block Kit), with a link back to the
 * conversation. The TypeScript twin of `plugins/slack-notify`: the same config, and the same
 * bytes out for every event (a test checks it on every sample).
 *
 * | key | meaning |
 * |---|---|
 * | `base_url` | required: the help desk's URL, for the conversation link |
 * | `channel` | Slack channel to post to (optional) |
 * | `include_private` | `true` to notify private notes too (default `false`) |
 */

import { type Action, type Event, config, deliverJson, skip } from "@hookwasm/plugin-sdk";

const MAX_EXCERPT = 280;

interface Person {
  name?: string;
}

interface Data {
  conversation: {
    id: string;
    subject?: string;
    status?: string;
    priority?: string;
    channel?: string;
    inbox?: { name: string } | null;
    customer?: Person | null;
  };
  message?: { author: Person; body?: string; private?: boolean } | null;
  assignee?: Person | null;
  from?: string | null;
  to?: string | null;
  label?: string | null;
  changes?: Record<string, unknown> | null;
}

function baseUrl(): string {
  const url = config.require("base_url");
  if (!(url.startsWith("https://") || url.startsWith("http://"))) {
    throw new Error(`plugin_config.base_url must be an http(s) URL, got ${JSON.stringify(url)}`);
  }
  return url.replace(/\/+$/, "");
}

const escape = (text: string) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

/** The first 280 characters (code points, as Rust counts them), with an ellipsis if cut. */
function excerpt(text: string): string {
  const chars = Array.from(text);
  return chars.length > MAX_EXCERPT ? `${chars.slice(0, MAX_EXCERPT).join("")}…` : text;
}

/** The headline, or why the event is skipped. */
function headline(eventType: string, data: Data): { text: string } | { skip: string } {
  const subject = escape(data.conversation.subject ?? "");
  switch (eventType) {
    case "message.created": {
      const message = data.message;
      if (!message) return { skip: "message.created without a message" };
      const kind = message.private ? "Private note" : "New message";
      return { text: `${kind} from ${escape(message.author.name ?? "")} on “${subject}”` };
    }
    case "conversation.created":
      return { text: `New conversation: “${subject}”` };
    case "conversation.assigned":
      return { text: `“${subject}” assigned to ${escape(data.assignee ? (data.assignee.name ?? "") : "nobody")}` };
    case "conversation.status_changed":
      return { text: `“${subject}” changed from ${data.from ?? "?"} to ${data.to ?? "?"}` };
    case "conversation.label_added":
      return { text: `Label \`${escape(data.label ?? "?")}\` added to “${subject}”` };
    case "conversation.label_removed":
      return { text: `Label \`${escape(data.label ?? "?")}\` removed from “${subject}”` };
    case "conversation.updated":
      return { text: `“${subject}” updated (${Object.keys(data.changes ?? {}).sort().join(", ")})` };
    default:
      if (eventType.startsWith("conversation.")) return { text: `“${subject}”: ${eventType}` };
      return { skip: `slack-notify does not handle ${eventType}` };
  }
}

function parse(event: Event): Data {
  const data = event.json();
  if (typeof data?.conversation?.id !== "string") {
    throw new Error("event data: conversation.id must be a string");
  }
  if (data.message && typeof data.message.author !== "object") {
    throw new Error("event data: message.author is missing");
  }
  return data as Data;
}

export function checkConfig(): void {
  baseUrl();
  config.flag("include_private", false);
}

export function transform(event: Event): Action {
  if (event.eventType !== "message.created" && !event.eventType.startsWith("conversation.")) {
    return skip(`slack-notify does not handle ${event.eventType}`);
  }
  const data = parse(event);
  if (data.message?.private && !config.flag("include_private", false)) {
    return skip("private note");
  }
  const line = headline(event.eventType, data);
  if ("skip" in line) return skip(line.skip);
  const { text } = line;
  const conversation = data.conversation;
  const link = `${baseUrl()}/conversations/${conversation.id}`;

  const blocks: unknown[] = [{ type: "section", text: { type: "mrkdwn", text: `*<${link}|${text}>*` } }];
  if (data.message) {
    blocks.push({ type: "section", text: { type: "mrkdwn", text: `> ${escape(excerpt(data.message.body ?? ""))}` } });
  }
  const context = [
    `*Status:* ${conversation.status ?? ""}`,
    `*Priority:* ${conversation.priority ?? ""}`,
    `*Channel:* ${conversation.channel ?? ""}`,
  ];
  if (conversation.inbox) context.push(`*Inbox:* ${escape(conversation.inbox.name)}`);
  if (conversation.customer) context.push(`*Customer:* ${escape(conversation.customer.name ?? "")}`);
  blocks.push({ type: "context", elements: context.map((t) => ({ type: "mrkdwn", text: t })) });
  blocks.push({
    type: "actions",
    elements: [{ type: "button", text: { type: "plain_text", text: "Open conversation" }, url: link }],
  });

  const body: Record<string, unknown> = { text, blocks };
  const channel = config.get("channel");
  if (channel !== undefined) body.channel = channel;
  // Sorted keys: what the Rust plugin's `serde_json::Value` writes.
  return deliverJson(body, { sortKeys: true });
}
