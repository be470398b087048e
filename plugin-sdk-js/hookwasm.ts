/**
 * The hookwasm plugin SDK for JavaScript and TypeScript: what a plugin module needs and
 * nothing more. A plugin module exports `transform(event)` and, optionally, `checkConfig()`;
 * `hookwasm plugin build` bundles it with this SDK and makes it a WebAssembly component
 * (`hookwasm:plugin@0.2.0`, see `wit/plugin.wit`). The same module runs under Node's own test
 * runner through `./testing.ts`.
 *
 * ```ts
 * import { type Event, type Action, deliverJson, skip } from "@hookwasm/plugin-sdk";
 *
 * export function transform(event: Event): Action {
 *   const data = event.json();
 *   if (!data.conversation?.labels?.includes("vip")) return skip("not a VIP conversation");
 *   return deliverJson({ text: `VIP: ${data.message?.body}` });
 * }
 * ```
 */

/** One EasyDesk event, as the producer posted it. */
export interface Event {
  /** Unique event id, stable across retries. */
  readonly id: string;
  /** Dotted event type, e.g. `message.created`. */
  readonly eventType: string;
  /** RFC 3339 timestamp of when the event happened. */
  readonly timestamp: string;
  /** The event's `data` object as UTF-8 JSON text. */
  readonly data: Uint8Array;
  /** `data` parsed (once per call). */
  json(): any;
}

/** What to deliver for an event. */
export type Action =
  | { readonly kind: "deliver"; readonly headers: [string, string][]; readonly body: Uint8Array }
  | { readonly kind: "pass" }
  | { readonly kind: "skip"; readonly reason: string };

/** Send `body` (a string is sent as UTF-8) with extra `headers`. It must be JSON unless a
 * `content-type` header is given. */
export function deliver(body: Uint8Array | string, headers: Record<string, string> = {}): Action {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return { kind: "deliver", headers: Object.entries(headers).map(([name, value]) => [name, String(value)]), body: bytes };
}

/** Send `value` as compact JSON. With `sortKeys`, object keys are written sorted (as Rust's
 * `serde_json::Value` writes them), else in insertion order. */
export function deliverJson(value: unknown, options: { sortKeys?: boolean } = {}): Action {
  const text = options.sortKeys ? sortedJson(value) : JSON.stringify(value);
  if (text === undefined) throw new Error("deliverJson: the value is not JSON");
  return deliver(text);
}

/** Send the event envelope unchanged. */
export function pass(): Action {
  return { kind: "pass" };
}

/** Send nothing; the delivery is recorded as filtered with `reason`. */
export function skip(reason: string): Action {
  return { kind: "skip", reason };
}

/** Code point order, as Rust compares strings (UTF-16 order differs past U+FFFF). */
function byCodePoint(a: string, b: string): number {
  const [x, y] = [Array.from(a), Array.from(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const diff = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (diff !== 0) return diff;
  }
  return x.length - y.length;
}

/** JSON with object keys written in code point order. Written out here rather than by
 * rebuilding objects: an object lists integer-like keys first whatever the insertion order. */
function sortedJson(value: unknown): string | undefined {
  if (value !== null && typeof value === "object" && typeof (value as { toJSON?: unknown }).toJSON === "function") {
    value = (value as { toJSON: () => unknown }).toJSON();
  }
  if (Array.isArray(value)) return `[${value.map((item) => sortedJson(item) ?? "null").join(",")}]`;
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const fields: string[] = [];
  for (const key of Object.keys(value).sort(byCodePoint)) {
    const field = sortedJson((value as Record<string, unknown>)[key]);
    if (field !== undefined) fields.push(`${JSON.stringify(key)}:${field}`);
  }
  return `{${fields.join(",")}}`;
}

/** The webhook's `plugin_config`, for the call in progress. */
export const config = {
  /** The value of `key`, if set. */
  get(key: string): string | undefined {
    return current.config.get(key);
  },
  /** Every key that is set, sorted. */
  keys(): string[] {
    return [...current.config.keys()].sort();
  },
  /** The value of `key`, or an error naming the missing key. */
  require(key: string): string {
    const value = current.config.get(key);
    if (value === undefined) throw new Error(`plugin_config.${key} is required`);
    return value;
  },
  /** Comma-separated list in `key`, trimmed, empty items dropped; empty if unset. */
  list(key: string): string[] {
    return (current.config.get(key) ?? "").split(",").map((item) => item.trim()).filter((item) => item !== "");
  },
  /** Boolean in `key` (`true`/`false`), `fallback` if unset, an error otherwise. */
  flag(key: string, fallback: boolean): boolean {
    const value = current.config.get(key);
    if (value === undefined) return fallback;
    if (value === "true" || value === "false") return value === "true";
    throw new Error(`plugin_config.${key} must be true or false, got ${JSON.stringify(value)}`);
  },
};

export type Level = "debug" | "info" | "warn" | "error";

/** Lines for the host's log, tagged there with the plugin and event. `console.log` output
 * reaches the log too, as stdout. */
export const log = {
  debug: (message: unknown) => current.logs.push({ level: "debug", message: String(message) }),
  info: (message: unknown) => current.logs.push({ level: "info", message: String(message) }),
  warn: (message: unknown) => current.logs.push({ level: "warn", message: String(message) }),
  error: (message: unknown) => current.logs.push({ level: "error", message: String(message) }),
};

/** A plugin module: what `hookwasm plugin build` and `./testing.ts` call. */
export interface Plugin {
  transform(event: Event): Action;
  checkConfig?(): void;
}

/** One call's config and log lines. A fresh instance runs every call, so module state
 * never outlives it; tests reset it per call. */
interface Call {
  config: Map<string, string>;
  logs: { level: Level; message: string }[];
}

let current: Call = { config: new Map(), logs: [] };

/** Runs `body` with `config` installed; returns its value or error and the lines it logged.
 * Shared by the component's exports and the native test helpers. */
export function withCall<T>(
  pairs: Iterable<[string, string]>,
  body: () => T,
): { result: { ok: true; value: T } | { ok: false; error: string }; logs: Call["logs"] } {
  current = { config: new Map(pairs), logs: [] };
  try {
    return { result: { ok: true, value: body() }, logs: current.logs };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { result: { ok: false, error: message }, logs: current.logs };
  } finally {
    current = { config: new Map(), logs: [] };
  }
}

/** An [`Event`] from its fields. */
export function makeEvent(id: string, eventType: string, timestamp: string, data: Uint8Array): Event {
  let parsed: { value: any } | undefined;
  return {
    id,
    eventType,
    timestamp,
    data,
    json() {
      if (parsed === undefined) {
        try {
          parsed = { value: JSON.parse(new TextDecoder().decode(data)) };
        } catch (error) {
          throw new Error(`event data is not valid JSON: ${error instanceof Error ? error.message : error}`);
        }
      }
      return parsed.value;
    },
  };
}
