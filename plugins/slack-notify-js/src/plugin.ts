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

/** The event's data, read as the Rust plugin's serde types read it. */
interface Data {
  conversation: {
    id: string;
    subject: string;
    status: string;
    priority: string;
    channel: string;
    inbox?: { name: string };
    customer?: { name: string };
  };
  message?: { author: { name: string }; body: string; private: boolean };
  assignee?: { name: string };
  from?: string;
  to?: string;
  label?: string;
  changes?: Record<string, unknown>;
}

function fail(path: string, expected: string): never {
  throw new Error(`event data: ${path} must be ${expected}`);
}

/** A string field with a default: absent or `null` is "", anything but a string an error. */
function text(value: unknown, path: string): string {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : fail(path, "a string");
}

/** An optional string field: absent or `null` is none. */
function optionalText(value: unknown, path: string): string | undefined {
  return value === undefined || value === null ? undefined : typeof value === "string" ? value : fail(path, "a string");
}

/** An optional object field: absent or `null` is none. */
function object(value: unknown, path: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return undefined;
  return typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : fail(path, "an object");
}

function parse(event: Event): Data {
  const data = object(event.json(), "data") ?? fail("data", "an object");
  const c = object(data.conversation, "conversation") ?? fail("conversation", "present");
  const person = (value: unknown, path: string) => {
    const found = object(value, path);
    return found && { name: text(found.name, `${path}.name`) };
  };
  const inbox = object(c.inbox, "conversation.inbox");
  const message = object(data.message, "message");
  return {
    conversation: {
      id: typeof c.id === "string" ? c.id : fail("conversation.id", "a string"),
      subject: text(c.subject, "conversation.subject"),
      status: text(c.status, "conversation.status"),
      priority: text(c.priority, "conversation.priority"),
      channel: text(c.channel, "conversation.channel"),
      inbox: inbox && { name: typeof inbox.name === "string" ? inbox.name : fail("conversation.inbox.name", "a string") },
      customer: person(c.customer, "conversation.customer"),
    },
    message: message && {
      author: person(message.author, "message.author") ?? fail("message.author", "present"),
      body: text(message.body, "message.body"),
      private:
        message.private === undefined || message.private === null
          ? false
          : typeof message.private === "boolean"
            ? message.private
            : fail("message.private", "a boolean"),
    },
    assignee: person(data.assignee, "assignee"),
    from: optionalText(data.from, "from"),
    to: optionalText(data.to, "to"),
    label: optionalText(data.label, "label"),
    changes: object(data.changes, "changes"),
  };
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
  const subject = escape(data.conversation.subject);
  switch (eventType) {
    case "message.created": {
      const message = data.message;
      if (!message) return { skip: "message.created without a message" };
      const kind = message.private ? "Private note" : "New message";
      return { text: `${kind} from ${escape(message.author.name)} on “${subject}”` };
    }
    case "conversation.created":
      return { text: `New conversation: “${subject}”` };
    case "conversation.assigned":
      return { text: `“${subject}” assigned to ${escape(data.assignee ? data.assignee.name : "nobody")}` };
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
    blocks.push({ type: "section", text: { type: "mrkdwn", text: `> ${escape(excerpt(data.message.body))}` } });
  }
  const context = [
    `*Status:* ${conversation.status}`,
    `*Priority:* ${conversation.priority}`,
    `*Channel:* ${conversation.channel}`,
  ];
  if (conversation.inbox) context.push(`*Inbox:* ${escape(conversation.inbox.name)}`);
  if (conversation.customer) context.push(`*Customer:* ${escape(conversation.customer.name)}`);
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
