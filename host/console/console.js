// hookwasm console. Uses the admin API only. Everything shown from the server (payloads,
// names, errors) goes into the page as text: no HTML is ever built from data.
"use strict";

const KNOWN_TYPES = [
  "message.created", "conversation.created", "conversation.updated", "conversation.assigned",
  "conversation.status_changed", "conversation.label_added", "conversation.label_removed",
];
const STATES = ["pending", "retrying", "delivered", "filtered", "held", "dead"];
const TOKEN_KEY = "hookwasm.admin_token";

// ---- small DOM helpers: properties and text only ----

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP, unlike a style attribute
    else if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (key === "data") for (const [name, v] of Object.entries(value)) node.dataset[name] = v;
    else if (key in node && typeof node[key] !== "function") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

const main = () => document.getElementById("main");

// Replaces `node`'s children; arrays are flattened, and null, undefined and false left out.
function put(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function show(...nodes) {
  put(main(), ...nodes);
}

// `show`, only while the route that started the page (`mine`) is the current one.
function showIf(live, ...nodes) {
  if (live()) show(...nodes);
}

function notice(message, kind) {
  const box = document.getElementById("notice");
  box.hidden = !message;
  box.className = kind || "info";
  box.textContent = message || "";
}

function time(ms) {
  if (ms === null || ms === undefined) return "-";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function short(sha) {
  return sha ? sha.slice(0, 12) : "-";
}

function table(headers, rows, onClick) {
  const head = el("tr", {}, headers.map((h) => el("th", { class: h.narrow ? "" : h.wide ? "hide-narrow" : "" }, h.label || h)));
  const body = rows.map((row) =>
    el("tr", onClick ? { class: "link", tabIndex: 0, on: { click: () => onClick(row.key), keydown: (e) => e.key === "Enter" && onClick(row.key) } } : {},
      row.cells.map((cell, i) => el("td", { class: headers[i].wide ? "hide-narrow" : "" }, cell))));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}

function stateBadge(state) {
  const kind = { delivered: "ok", dead: "bad", held: "bad", retrying: "warn", filtered: "muted" }[state] || "";
  return el("span", { class: `badge ${kind}`, data: { state } }, state);
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, contentType) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers["Content-Type"] = contentType || "application/wasm";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    throw new ApiError(response.status, (json && json.error) || `${method} ${path} answered ${response.status}`);
  }
  return json;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== "" && value !== null) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---- sign-in ----

async function signedIn() {
  try {
    await api("GET", "/v1/plugins");
    return true;
  } catch (error) {
    if (error.status === 401 || error.status === 403) return false;
    throw error;
  }
}

function signInPage(reason) {
  document.getElementById("nav").hidden = true;
  const token = el("input", { type: "password", id: "token", autocomplete: "off", placeholder: "admin_token" });
  const form = el("form", { id: "sign-in", on: { submit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, token.value);
    await route();
  } } },
  el("label", { htmlFor: "token" }, "Admin token"), token,
  el("p", { class: "hint" }, "The server's [server] admin_token. It is kept in this tab only (sessionStorage) and sent as a Bearer token. A server without one answers its own machine (loopback) only."),
  el("button", { type: "submit" }, "Sign in"));
  show(el("h1", {}, "Sign in"), reason ? el("p", { class: "bad" }, reason) : null, el("section", {}, form));
}

// ---- router ----

let refresher = null;
// Counts routes: a page still loading when another one starts must not draw over it.
let epoch = 0;
// A notice to show on the next page (set just before navigating).
let flashed = null;

function flash(message) {
  flashed = message;
}

// Runs `draw` every `ms` while the page that set it is the current one.
function every(ms, draw) {
  const mine = epoch;
  refresher = setInterval(async () => {
    if (mine !== epoch) return clearInterval(refresher);
    try {
      await draw(() => mine === epoch);
    } catch (error) {
      notice(error.message, "error");
    }
  }, ms);
}

async function route() {
  clearInterval(refresher);
  refresher = null;
  epoch += 1;
  notice(flashed || "");
  flashed = null;
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!(await signedIn())) {
      const hadToken = !!sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      return signInPage(hadToken ? "That token was refused." : null);
    }
    document.getElementById("nav").hidden = false;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("current", path.startsWith(link.getAttribute("href").slice(1)));
    }
    const [page, id] = parts;
    if (page === "webhooks" && id === "new") return await webhookForm(null);
    if (page === "webhooks" && id) return await webhookPage(id);
    if (page === "webhooks") return await webhooksPage();
    if (page === "deliveries" && id) return await deliveryPage(id);
    if (page === "deliveries") return await deliveriesPage(params);
    if (page === "events") return await eventsPage(id);
    if (page === "plugins" && id) return await pluginPage(id);
    if (page === "plugins") return await pluginsPage();
    return await overviewPage();
  } catch (error) {
    show(el("h1", {}, "Something went wrong"), el("p", { class: "bad", id: "page-error" }, error.message));
  }
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---- overview ----

const SERIES = {
  events: [["events_accepted", "events accepted", "#2459d6"]],
  deliveries: [["delivered", "delivered", "#1b7f3b"], ["filtered", "filtered", "#8a94a3"], ["held", "held", "#9a6700"], ["dead", "dead", "#b3261e"]],
  latency: [["attempt_latency_ms", "mean attempt latency (ms)", "#6b3fd4"]],
  queue: [["queue_depth", "queue depth", "#0b7a8a"]],
};

function chart(points, series) {
  const width = 600, height = 120, pad = 4;
  const values = series.flatMap(([key]) => points.map((p) => p[key] || 0));
  const max = Math.max(1, ...values);
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", preserveAspectRatio: "none", role: "img" });
  box.append(svg("line", { x1: 0, y1: height - pad, x2: width, y2: height - pad, stroke: "#d9dee5" }));
  const n = Math.max(points.length - 1, 1);
  for (const [key, , color] of series) {
    const coords = points.map((p, i) => `${(i / n) * width},${height - pad - ((p[key] || 0) / max) * (height - 2 * pad)}`);
    box.append(svg("polyline", { points: coords.join(" "), fill: "none", stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  }
  const last = points[points.length - 1] || {};
  const legend = el("div", { class: "chart-legend" }, series.map(([key, label, color]) =>
    el("span", {}, el("span", { class: "swatch", style: { background: color } }), `${label}: ${last[key] === null || last[key] === undefined ? "-" : Math.round(last[key] * 10) / 10} now, max ${Math.round(max * 10) / 10}`)));
  return [box, legend];
}

async function overviewPage() {
  const mine = epoch;
  const draw = async (live) => {
    const [stats, webhooks, plugins] = await Promise.all([api("GET", "/v1/stats"), api("GET", "/v1/webhooks"), api("GET", "/v1/plugins")]);
    const trouble = [];
    for (const w of webhooks.webhooks) {
      const h = w.health;
      if (!w.active) trouble.push([w, `disabled: ${w.disabled_reason || "in its definition"}`]);
      else if (h.recent_attempts > 0 && h.recent_successes < h.recent_attempts) {
        trouble.push([w, `${h.recent_attempts - h.recent_successes} of its last ${h.recent_attempts} attempts failed; last ${h.last_status || h.last_error || "-"}`]);
      }
    }
    const failing = plugins.plugins.filter((p) => p.state === "failed" || p.state === "unloaded");
    const held = await api("GET", `/v1/deliveries/count${query({ state: "held" })}`);
    const points = stats.points;
    showIf(live,
      el("h1", {}, "Overview"),
      el("section", { id: "trouble" }, el("h2", {}, "Needs attention"),
        trouble.length === 0 && failing.length === 0 && held.count === 0 ? el("p", { class: "ok" }, "Nothing: every webhook is active and its recent attempts succeeded.") : null,
        trouble.map(([w, why]) => el("p", {}, el("a", { href: `#/webhooks/${encodeURIComponent(w.id)}` }, w.id), " ", el("span", { class: "bad" }, why))),
        failing.map((p) => el("p", {}, el("a", { href: `#/plugins/${encodeURIComponent(p.name)}` }, `plugin ${p.name}`), " ", el("span", { class: "bad" }, `${p.state}: ${p.last_error || ""}`))),
        held.count > 0 ? el("p", {}, el("a", { href: "#/deliveries?state=held" }, `${held.count} deliveries held`), " until their plugin works") : null),
      el("div", { class: "grid" },
        el("section", {}, el("h2", {}, "Events accepted (per 10 s)"), chart(points, SERIES.events)),
        el("section", {}, el("h2", {}, "Deliveries by final state (per 10 s)"), chart(points, SERIES.deliveries)),
        el("section", {}, el("h2", {}, "Attempt latency"), chart(points, SERIES.latency)),
        el("section", {}, el("h2", {}, "Queue depth"), chart(points, SERIES.queue))),
      el("p", { class: "hint" }, `The last hour on this host, in ${stats.interval_s} s points; refreshes every 5 s.`));
  };
  await draw(() => mine === epoch);
  every(5000, draw);
}

// ---- webhooks ----

function health(w) {
  const h = w.health;
  if (!w.active) return el("span", { class: "badge bad" }, "disabled");
  if (h.recent_attempts === 0) return el("span", { class: "muted" }, "no attempts yet");
  const rate = Math.round((100 * h.recent_successes) / h.recent_attempts);
  return el("span", { class: rate === 100 ? "ok" : rate >= 90 ? "warn" : "bad" }, `${rate}% of ${h.recent_attempts}, last ${h.last_status || "error"}`);
}

async function webhooksPage() {
  const { webhooks } = await api("GET", "/v1/webhooks");
  show(
    el("div", { class: "row" }, el("h1", {}, "Webhooks"), el("button", { id: "new-webhook", on: { click: () => go("#/webhooks/new") } }, "New webhook")),
    webhooks.length === 0 ? el("p", {}, "No webhooks yet.") : table(
      ["Id", { label: "URL", wide: true }, { label: "Events", wide: true }, "Plugin", "Health"],
      webhooks.map((w) => ({ key: w.id, cells: [w.id, w.url, w.events.join(", "), w.plugin || "-", health(w)] })),
      (id) => go(`#/webhooks/${encodeURIComponent(id)}`)));
}

function pairsText(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

function parsePairs(text, field) {
  const map = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`${field}: "${line}" is not key=value`);
    map[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return map;
}

async function webhookForm(existing) {
  const { plugins } = await api("GET", "/v1/plugins");
  const w = existing || { id: "", url: "", events: [], plugin: null, plugin_config: {}, headers: {}, enabled: true };
  const field = (id, label, input, hint) => [el("label", { htmlFor: id }, label), input, hint ? el("div", { class: "hint" }, hint) : null];
  const text = (id, value, type) => el("input", { id, name: id, type: type || "text", value: value === null || value === undefined ? "" : value });
  const id = text("f-id", w.id);
  id.disabled = !!existing;
  const url = text("f-url", w.url, "url");
  const known = KNOWN_TYPES.concat(["*"]);
  const boxes = known.map((type) => el("label", { class: "inline" }, el("input", { type: "checkbox", value: type, checked: w.events.includes(type), class: "f-event" }), type));
  const otherEvents = text("f-events-other", w.events.filter((e) => !known.includes(e)).join(", "));
  const plugin = el("select", { id: "f-plugin" }, el("option", { value: "" }, "(none: the event as it is)"),
    plugins.map((p) => el("option", { value: p.name, selected: p.name === w.plugin }, `${p.name} (${p.state})`)));
  const pluginConfig = el("textarea", { id: "f-plugin-config", value: pairsText(w.plugin_config) });
  const headers = el("textarea", { id: "f-headers", value: pairsText(w.headers) });
  const filter = text("f-filter", w.filter);
  const rate = text("f-rate", w.rate_limit);
  const timeout = text("f-timeout", w.timeout);
  const schedule = text("f-schedule", (w.retry_schedule || []).join(", "));
  const inFlight = text("f-in-flight", w.max_in_flight, "number");
  const disableAfter = text("f-disable-after", w.disable_after);
  const enabled = el("input", { type: "checkbox", id: "f-enabled", checked: w.enabled });
  const result = el("div", { id: "save-result" });
  const save = async (event) => {
    event.preventDefault();
    try {
      const events = Array.from(document.querySelectorAll(".f-event")).filter((b) => b.checked).map((b) => b.value)
        .concat(otherEvents.value.split(",").map((s) => s.trim()).filter(Boolean));
      const body = {
        id: id.value.trim(), url: url.value.trim(), events, plugin: plugin.value || null,
        plugin_config: parsePairs(pluginConfig.value, "plugin config"), headers: parsePairs(headers.value, "headers"),
        enabled: enabled.checked,
      };
      if (filter.value.trim()) body.filter = filter.value.trim();
      if (rate.value.trim()) body.rate_limit = rate.value.trim();
      if (timeout.value.trim()) body.timeout = timeout.value.trim();
      if (schedule.value.trim()) body.retry_schedule = schedule.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (inFlight.value.trim()) body.max_in_flight = Number(inFlight.value);
      if (disableAfter.value.trim()) body.disable_after = disableAfter.value.trim();
      const saved = existing
        ? await api("PUT", `/v1/webhooks/${encodeURIComponent(body.id)}`, body)
        : await api("POST", "/v1/webhooks", body);
      flash(`Saved webhook ${saved.id}. Send it a test event to check the endpoint.`);
      go(`#/webhooks/${encodeURIComponent(saved.id)}`);
    } catch (error) {
      put(result, el("p", { class: "bad", id: "save-error" }, error.message));
    }
  };
  const form = el("form", { id: "webhook-form", on: { submit: save } },
    field("f-id", "Id", id, "Letters, digits, - and _; fixed once created."),
    field("f-url", "URL", url),
    el("label", {}, "Events"), el("div", {}, boxes), field("f-events-other", "Other types or prefixes", otherEvents, "Comma-separated, e.g. ticket.*"),
    field("f-plugin", "Plugin", plugin),
    field("f-plugin-config", "Plugin config", pluginConfig, "One key=value per line."),
    field("f-headers", "Extra headers", headers, "One name=value per line."),
    field("f-filter", "Filter (CEL)", filter, "e.g. data.conversation.priority == \"urgent\""),
    field("f-rate", "Rate limit", rate, "e.g. 50/s or 600/m"),
    field("f-timeout", "Timeout", timeout, "e.g. 10s (default from [delivery])"),
    field("f-schedule", "Retry schedule", schedule, "e.g. 0s, 5s, 5m, 30m"),
    field("f-in-flight", "Max in flight", inFlight),
    field("f-disable-after", "Disable after", disableAfter, "e.g. 5d of nothing but failures"),
    el("label", { class: "inline" }, enabled, "Enabled"),
    el("div", { class: "row" }, el("button", { type: "submit", id: "save-webhook" }, existing ? "Save" : "Create"),
      el("button", { type: "button", class: "quiet", on: { click: () => (existing ? route() : go("#/webhooks")) } }, "Cancel")),
    result);
  show(el("h1", {}, existing ? `Edit ${w.id}` : "New webhook"), el("section", {}, form));
}

function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(Boolean).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function webhookPage(id) {
  const w = await api("GET", `/v1/webhooks/${encodeURIComponent(id)}`);
  const testResult = el("div", { id: "test-result" });
  const secretBox = el("div", { id: "secret" });
  const action = (label, attrs, work) => el("button", Object.assign({ type: "button", on: { click: async () => {
    try { await work(); } catch (error) { notice(error.message, "error"); }
  } } }, attrs), label);
  const sendTest = async () => {
    put(testResult, el("p", { class: "muted" }, "Sending…"));
    let outcome;
    try {
      outcome = await api("POST", `/v1/webhooks/${encodeURIComponent(id)}/test`);
    } catch (error) {
      return put(testResult, el("p", { class: "bad", id: "test-status" }, error.message));
    }
    const request = outcome.request;
    put(testResult,
      el("h2", {}, "Test event"),
      kv([
        ["Result", el("span", { class: outcome.delivered ? "ok" : "bad", id: "test-status" }, outcome.delivered ? `delivered: HTTP ${outcome.status}` : (outcome.status ? `HTTP ${outcome.status}` : outcome.action))],
        ["Action", outcome.action],
        outcome.latency_ms !== null && outcome.latency_ms !== undefined ? ["Latency", `${outcome.latency_ms} ms`] : null,
        outcome.reason ? ["Reason", outcome.reason] : null,
        outcome.error ? ["Error", outcome.error] : null,
        ["Plugin version", short(outcome.plugin_sha)],
      ]),
      request ? [el("h2", {}, "Request sent"), el("p", { class: "mono" }, `POST ${request.url}`),
        el("pre", {}, Object.entries(request.headers).map(([k, v]) => `${k}: ${v}`).join("\n")),
        el("pre", { id: "test-body" }, request.body)] : null,
      outcome.response_excerpt ? [el("h2", {}, "Response (excerpt)"), el("pre", {}, outcome.response_excerpt)] : null);
  };
  const rotate = async () => {
    if (!confirm(`Rotate the secret of ${id}? The old one keeps signing too for a grace period.`)) return;
    const rotated = await api("POST", `/v1/webhooks/${encodeURIComponent(id)}/rotate-secret`);
    const where = rotated.secret_file ? ` It is in ${rotated.secret_file} on the host, and` : " It is";
    notice(`Rotated.${where} shown by Show secret (or hookwasm webhooks secret ${id}); the previous secret also signs until ${time(rotated.previous_valid_until_ms)}.`, "info");
  };
  const showSecret = async () => {
    const secret = await api("GET", `/v1/webhooks/${encodeURIComponent(id)}/secret`);
    put(secretBox, el("h2", {}, "Signing secret"), el("pre", { id: "secret-value" }, secret.secret),
      secret.previous_valid_until_ms ? el("p", { class: "hint" }, `The previous secret signs too until ${time(secret.previous_valid_until_ms)}.`) : null,
      el("p", { class: "hint" }, "Give it to the receiver to verify the webhook-signature header (Standard Webhooks)."));
  };
  const toggle = async () => {
    await api("POST", `/v1/webhooks/${encodeURIComponent(id)}/${w.active ? "disable" : "enable"}`);
    await route();
  };
  show(
    el("div", { class: "row" }, el("h1", {}, w.id), w.active ? el("span", { class: "badge ok", id: "webhook-state" }, "active") : el("span", { class: "badge bad", id: "webhook-state" }, "disabled")),
    el("section", {},
      kv([
        ["URL", w.url], ["Events", w.events.join(", ")], ["Plugin", w.plugin || "-"],
        ["Plugin config", pairsText(w.plugin_config) || "-"], ["Headers", pairsText(w.headers) || "-"],
        w.filter ? ["Filter", w.filter] : null, w.rate_limit ? ["Rate limit", w.rate_limit] : null,
        w.timeout ? ["Timeout", w.timeout] : null, w.retry_schedule ? ["Retry schedule", w.retry_schedule.join(", ")] : null,
        w.max_in_flight ? ["Max in flight", String(w.max_in_flight)] : null, w.disable_after ? ["Disable after", w.disable_after] : null,
        w.disabled_reason ? ["Disabled", w.disabled_reason] : null,
        ["Health", health(w)], ["Defined in", w.read_only ? "the config file (read-only here)" : "the API"],
      ]),
      el("div", { class: "row" },
        action("Send test event", { id: "send-test" }, sendTest),
        action(w.active ? "Disable" : "Enable", { id: "toggle", class: w.active ? "danger" : "" }, toggle),
        w.read_only ? null : action("Edit", { id: "edit", class: "quiet" }, () => webhookForm(w)),
        w.read_only ? null : action("Rotate secret", { id: "rotate", class: "quiet" }, rotate),
        action("Show secret", { id: "show-secret", class: "quiet" }, showSecret),
        el("a", { href: `#/deliveries?webhook=${encodeURIComponent(id)}` }, "Deliveries"))),
    el("section", {}, testResult, secretBox));
}

// ---- deliveries ----

async function deliveriesPage(params) {
  const { webhooks } = await api("GET", "/v1/webhooks");
  const since = { "": "any time", "900000": "last 15 min", "3600000": "last hour", "86400000": "last 24 h", "604800000": "last 7 days" };
  const webhook = el("select", { id: "q-webhook" }, el("option", { value: "" }, "all webhooks"), webhooks.map((w) => el("option", { value: w.id, selected: params.get("webhook") === w.id }, w.id)));
  const state = el("select", { id: "q-state" }, el("option", { value: "" }, "any state"), STATES.map((s) => el("option", { value: s, selected: params.get("state") === s }, s)));
  const type = el("input", { id: "q-type", type: "text", placeholder: "event type", value: params.get("event_type") || "" });
  const window_ = el("select", { id: "q-since" }, Object.entries(since).map(([v, label]) => el("option", { value: v, selected: (params.get("since") || "") === v }, label)));
  const apply = (event) => {
    event.preventDefault();
    go(`#/deliveries${query({ webhook: webhook.value, state: state.value, event_type: type.value.trim(), since: window_.value })}`);
  };
  const filter = {
    webhook: params.get("webhook") || undefined, state: params.get("state") || undefined,
    event_type: params.get("event_type") || undefined,
    since_ms: params.get("since") ? Date.now() - Number(params.get("since")) : undefined,
  };
  const page = await api("GET", `/v1/deliveries${query(Object.assign({ limit: 100, before: params.get("before") || undefined }, filter))}`);
  const replayable = filter.webhook && ["dead", "held", "filtered", "delivered"].includes(filter.state);
  const replay = async () => {
    try {
      const { count } = await api("GET", `/v1/deliveries/count${query(filter)}`);
      if (!confirm(`Send ${count} ${filter.state} deliveries of ${filter.webhook} again?`)) return;
      const done = await api("POST", "/v1/deliveries/replay", filter);
      flash(`Replaying ${done.replayed} deliveries.`);
      setTimeout(route, 1000);
    } catch (error) {
      notice(error.message, "error");
    }
  };
  const draw = (deliveries) => table(
    ["Id", "State", "Webhook", { label: "Event type", wide: true }, { label: "Attempts", wide: true }, "Last", { label: "Created", wide: true }],
    deliveries.map((d) => {
      const last = d.attempts[d.attempts.length - 1];
      return { key: d.id, cells: [el("span", { class: "mono" }, d.id), stateBadge(d.state), d.webhook_id, d.event_type, String(d.attempts.length), last ? (last.status || "error") : "-", time(d.created_at_ms)] };
    }),
    (id) => go(`#/deliveries/${encodeURIComponent(id)}`));
  const empty = () => el("p", { id: "no-deliveries" }, "No deliveries match.");
  const list = el("div", { id: "delivery-list" }, page.deliveries.length ? draw(page.deliveries) : empty());
  show(
    el("h1", {}, "Deliveries"),
    el("section", {}, el("form", { class: "row", on: { submit: apply } }, webhook, state, type, window_, el("button", { type: "submit" }, "Filter")),
      replayable ? el("div", { class: "row" }, el("button", { type: "button", id: "replay", on: { click: replay } }, `Replay these ${filter.state} deliveries`)) : el("p", { class: "hint" }, "Pick a webhook and a state (dead, held, ...) to replay them in bulk.")),
    list,
    page.next_before ? el("p", {}, el("a", { href: `#/deliveries${query({ webhook: filter.webhook, state: filter.state, event_type: filter.event_type, since: params.get("since"), before: page.next_before })}` }, "Older")) : null,
    el("p", { class: "hint" }, "Newest first; refreshes every 3 s."));
  if (!params.get("before")) {
    every(3000, async (live) => {
      const fresh = await api("GET", `/v1/deliveries${query(Object.assign({ limit: 100 }, filter))}`);
      if (live()) put(list, fresh.deliveries.length ? draw(fresh.deliveries) : empty());
    });
  }
}

function prettyJson(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

async function deliveryPage(id) {
  const d = await api("GET", `/v1/deliveries/${encodeURIComponent(id)}`);
  const retry = async () => {
    try {
      await api("POST", `/v1/deliveries/${encodeURIComponent(id)}/retry`);
      flash("Sent again: the new attempt shows below once it is made.");
      setTimeout(route, 1000);
    } catch (error) { notice(error.message, "error"); }
  };
  show(
    el("div", { class: "row" }, el("h1", { class: "mono" }, d.id), stateBadge(d.state)),
    el("section", {}, kv([
      ["Webhook", el("a", { href: `#/webhooks/${encodeURIComponent(d.webhook_id)}` }, d.webhook_id)],
      ["Event", el("a", { href: `#/events/${encodeURIComponent(d.event_id)}` }, `${d.event_id} (${d.event_type})`)],
      ["Created", time(d.created_at_ms)], d.reason ? ["Reason", d.reason] : null,
      ["Plugin version", d.plugin_sha ? el("span", { class: "mono", title: d.plugin_sha }, short(d.plugin_sha)) : "-"],
      ["pending", "retrying"].includes(d.state) ? ["Next attempt", time(d.next_attempt_at_ms)] : null,
    ]), el("div", { class: "row" }, el("button", { id: "retry", type: "button", on: { click: retry } }, "Send again now"))),
    el("section", {}, el("h2", {}, `Attempts (${d.attempts.length})`), d.attempts.length === 0 ? el("p", {}, "None yet.") : table(
      ["At", "Status", "Latency", { label: "Error", wide: false }, { label: "Response excerpt", wide: true }],
      d.attempts.map((a) => ({ key: a.at_ms, cells: [time(a.at_ms), a.status ? String(a.status) : "-", `${a.latency_ms} ms`, a.error || "-", el("span", { class: "mono" }, a.response_excerpt || "")] })))),
    el("section", {}, el("h2", {}, "Body sent"), d.body === undefined || d.body === null ? el("p", { class: "muted" }, "Not transformed yet (or filtered or held).") : [
      el("pre", { id: "delivery-headers" }, Object.entries(d.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n") || "(no extra headers; the signature headers are added per attempt)"),
      el("pre", { id: "delivery-body" }, prettyJson(d.body))]));
}

// ---- events ----

async function eventsPage(id) {
  const input = el("input", { type: "text", id: "event-id", placeholder: "event id, e.g. evt_01JDX4N1B7", value: id || "" });
  const form = el("form", { class: "row", on: { submit: (event) => { event.preventDefault(); go(`#/events/${encodeURIComponent(input.value.trim())}`); } } },
    input, el("button", { type: "submit" }, "Look up"));
  if (!id) return show(el("h1", {}, "Events"), el("section", {}, form, el("p", { class: "hint" }, "What became of an event for every webhook, and why.")));
  let explained;
  try {
    explained = await api("GET", `/v1/events/${encodeURIComponent(id)}`);
  } catch (error) {
    return show(el("h1", {}, "Events"), el("section", {}, form), el("p", { class: "bad", id: "event-error" }, error.message));
  }
  const e = explained.event;
  show(
    el("h1", {}, "Events"), el("section", {}, form),
    el("section", {}, el("h2", { class: "mono" }, e.id), kv([["Type", e.type], ["Timestamp", e.timestamp], ["Received", time(e.received_at_ms)]]),
      el("pre", { id: "event-data" }, JSON.stringify(e.data, null, 2))),
    el("section", { id: "why" }, el("h2", {}, "For each webhook"), table(["Webhook", "Delivery", "What happened"],
      explained.webhooks.map((w) => ({ key: w.webhook, cells: [w.webhook,
        w.delivery ? el("a", { href: `#/deliveries/${encodeURIComponent(w.delivery)}`, class: "mono" }, w.delivery) : "-", w.why] })))));
}

// ---- plugins ----

async function pluginsPage() {
  const { plugins } = await api("GET", "/v1/plugins");
  show(el("h1", {}, "Plugins"),
    plugins.length === 0 ? el("p", {}, "No plugins: deploy one on a plugin's page, or drop a .wasm in plugins_dir.") : table(
      ["Name", "State", "Version", { label: "Loaded at", wide: true }, { label: "Webhooks", wide: true }, "Last error"],
      plugins.map((p) => ({ key: p.name, cells: [p.name, el("span", { class: p.state === "loaded" ? "ok" : "bad", data: { plugin: p.name } }, p.state),
        el("span", { class: "mono" }, short(p.sha256)), time(p.loaded_at), (p.webhooks || []).join(", ") || "-", el("span", { class: "bad" }, p.last_error || "")] })),
      (name) => go(`#/plugins/${encodeURIComponent(name)}`)),
    el("section", {}, el("h2", {}, "Deploy a new plugin"), deployForm(null)));
}

function deployForm(fixedName) {
  const name = el("input", { type: "text", id: "deploy-name", placeholder: "plugin name", value: fixedName || "" });
  name.disabled = !!fixedName;
  const file = el("input", { type: "file", id: "deploy-file", accept: ".wasm,application/wasm" });
  const activate = el("input", { type: "checkbox", id: "deploy-activate", checked: true });
  const result = el("div", { id: "deploy-result" });
  const submit = async (event) => {
    event.preventDefault();
    if (!file.files[0]) return put(result, el("p", { class: "bad" }, "Pick a .wasm file."));
    try {
      const deployed = await api("PUT", `/v1/plugins/${encodeURIComponent(name.value.trim())}${activate.checked ? "" : "?activate=false"}`, file.files[0]);
      put(result, el("p", { class: "ok" }, `${deployed.plugin} ${short(deployed.sha256)}: ${deployed.new ? "stored" : "already stored"}, ${deployed.activated ? "serving now" : "not serving"}.`));
      const mine = epoch;
      setTimeout(() => mine === epoch && go(`#/plugins/${encodeURIComponent(deployed.plugin)}`), 800);
    } catch (error) {
      put(result, el("p", { class: "bad", id: "deploy-error" }, error.message));
    }
  };
  return el("form", { on: { submit } }, fixedName ? null : [el("label", { htmlFor: "deploy-name" }, "Name"), name],
    el("label", { htmlFor: "deploy-file" }, "Component (.wasm)"), file,
    el("label", { class: "inline" }, activate, "Serve it at once"),
    el("div", { class: "row" }, el("button", { type: "submit", id: "deploy" }, "Deploy")), result);
}

async function pluginPage(name) {
  const [{ plugins }, versions, { webhooks }] = await Promise.all([
    api("GET", "/v1/plugins"), api("GET", `/v1/plugins/${encodeURIComponent(name)}/versions`), api("GET", "/v1/webhooks")]);
  const p = plugins.find((x) => x.name === name) || { name, state: "unknown", webhooks: [] };
  const act = (label, work) => el("button", { type: "button", class: "quiet", on: { click: async () => {
    try { await work(); await route(); } catch (error) { notice(error.message, "error"); }
  } } }, label);
  const canary = p.canary;
  const dryRun = (() => {
    const file = el("input", { type: "file", id: "dry-file", accept: ".wasm,application/wasm" });
    const webhook = el("select", { id: "dry-webhook" }, el("option", { value: "" }, "every webhook using it"),
      webhooks.filter((w) => w.plugin === name).map((w) => el("option", { value: w.id }, w.id)));
    const limit = el("input", { type: "number", id: "dry-limit", value: 500, min: 1 });
    const out = el("div", { id: "dry-result" });
    const submit = async (event) => {
      event.preventDefault();
      if (!file.files[0]) return put(out, el("p", { class: "bad" }, "Pick a candidate .wasm file."));
      put(out, el("p", { class: "muted" }, "Replaying stored events…"));
      try {
        const report = await api("POST", `/v1/plugins/${encodeURIComponent(name)}/dry-run${query({ webhook: webhook.value, limit: limit.value })}`, file.files[0]);
        const s = report.summary;
        put(out,
          kv([["Events", String(s.events)], ["Same", String(s.same)], ["Body changed", String(s.body_changed)], ["Action changed", String(s.action_changed)],
            ["New errors", el("span", { class: s.new_errors ? "bad" : "" }, String(s.new_errors))], ["Errors fixed", String(s.errors_fixed)],
            ["Time per event", `${s.serving_us_per_event.toFixed(1)} µs serving, ${s.candidate_us_per_event.toFixed(1)} µs candidate`],
            report.complete ? null : ["Note", "Stopped at the time budget: counts cover the events replayed."]]),
          report.changes.slice(0, 20).map((c) => el("div", { class: "card" },
            el("p", {}, el("strong", {}, c.kind), ` ${c.event_id} (${c.event_type}) to ${c.webhook}`),
            el("p", { class: "hint" }, `serving: ${c.serving.action}${c.serving.error ? ": " + c.serving.error : ""}; candidate: ${c.candidate.action}${c.candidate.error ? ": " + c.candidate.error : ""}`),
            c.body_patch ? el("pre", {}, c.body_patch.map((op) => `${op.op} ${op.path}${op.value !== undefined ? ": " + JSON.stringify(op.value) : ""}`).join("\n")) : null,
            c.body_text ? el("pre", {}, `- ${c.body_text[0]}\n+ ${c.body_text[1]}`) : null,
            c.headers.length ? el("pre", {}, c.headers.map((h) => `${h.name}: ${h.serving || "(none)"} -> ${h.candidate || "(none)"}`).join("\n")) : null)));
      } catch (error) {
        put(out, el("p", { class: "bad" }, error.message));
      }
    };
    return el("form", { on: { submit } }, el("label", { htmlFor: "dry-file" }, "Candidate (.wasm)"), file,
      el("label", { htmlFor: "dry-webhook" }, "Events of"), webhook, el("label", { htmlFor: "dry-limit" }, "Newest events"), limit,
      el("div", { class: "row" }, el("button", { type: "submit" }, "Dry run")), out);
  })();
  show(
    el("div", { class: "row" }, el("h1", {}, name), el("span", { class: `badge ${p.state === "loaded" ? "ok" : "bad"}`, id: "plugin-state" }, p.state)),
    el("section", {}, kv([
      ["Serving", el("span", { class: "mono" }, p.sha256 || "-")], ["Loaded at", time(p.loaded_at)],
      ["Last error", el("span", { class: "bad", id: "plugin-error" }, p.last_error || "-")],
      ["Webhooks", (p.webhooks || []).join(", ") || "-"], p.file ? ["File", p.file] : null,
      canary ? ["Canary", `${short(canary.sha256)} on ${canary.percent}%: ${canary.candidate.held}/${canary.candidate.transforms} held, ${canary.candidate.delivered} delivered (serving: ${canary.serving.held}/${canary.serving.transforms} held)`] : null,
    ]), canary ? el("div", { class: "row" },
      act("Promote the canary", () => api("POST", `/v1/plugins/${encodeURIComponent(name)}/promote`)),
      act("End the canary", () => api("POST", `/v1/plugins/${encodeURIComponent(name)}/activate`, { sha256: p.sha256 }))) : null),
    el("section", {}, el("h2", {}, "Versions"), versions.versions.length === 0 ? el("p", {}, "None stored.") : table(
      ["sha256", "Serves", { label: "Size", wide: true }, { label: "Uploaded", wide: true }, { label: "By", wide: true }, ""],
      versions.versions.map((v) => ({ key: v.sha256, cells: [el("span", { class: "mono", title: v.sha256 }, short(v.sha256)),
        v.serving ? el("span", { class: "ok" }, "serving") : v.canary_percent ? `canary ${v.canary_percent}%` : "-",
        `${v.size} B`, time(v.uploaded_at_ms), v.uploaded_by,
        v.serving ? "" : el("span", { class: "row" },
          act("Activate", () => api("POST", `/v1/plugins/${encodeURIComponent(name)}/activate`, { sha256: v.sha256 })),
          act("Canary 10%", () => api("POST", `/v1/plugins/${encodeURIComponent(name)}/activate`, { sha256: v.sha256, percent: 10 })))] })))),
    el("section", {}, el("h2", {}, "Deploy a new version"), deployForm(name)),
    el("section", {}, el("h2", {}, "What would a new version change?"), dryRun));
}

// ---- start ----

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  go("#/overview");
});
window.addEventListener("hashchange", route);
route();
