// The self-service key page: everything goes through the key and audit REST endpoints of
// this server, with the browser's own credentials (same origin). No key is kept anywhere but
// in the "new key" box, until the page is left.
"use strict";

const root = location.pathname.replace(/\/hokusai\/keys\/?$/, "");
const api = `${root}/ajax-api/2.0/mlflow/hokusai`;
const EVENTS = ["created", "rotated", "revoked", "expired-use", "denied-use", "login-limited",
  "rate-limited", "limited", "policy-created", "policy-deleted", "exchanged", "exchange-refused",
  "signed-in", "signed-out", "session-revoked", "sign-in-refused", "roles-changed", "expiring", "dormant"];
const $ = (selector) => document.querySelector(selector);
// Keys per page of the table: fewer where each key is a card (the CSS's breakpoint).
const NARROW = matchMedia("(max-width: 60rem)");
const pageSize = () => (NARROW.matches ? 10 : 20);
let me = null;
let auditToken = null;
let listed = [];  // the keys the table pages through
let page = 0;

// The REST API's messages name its fields ('expires_in_days' must be …); the page's name the
// field's label, as the person sees it.
const LABELS = {
  name: "Name",
  scope: "Scope",
  expires_in_days: "Expires in (days)",
  allowed_ips: "Allowed IPs",
  rate_limit: "Rate limit",
  experiments: "Only experiments",
  registered_models: "Only models",
  can_create: "May create experiments and models",
  username: "For user",
  grace_seconds: "Seconds the old key keeps working",
};
const LEADING_FIELD = /^(?:[A-Z_]+: )?'([a-z_]+)'/;

class PageError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

function inWords(message) {
  const match = LEADING_FIELD.exec(message);
  if (match && LABELS[match[1]]) {
    return new PageError(LABELS[match[1]] + message.slice(match[0].length), match[1]);
  }
  if (message.startsWith("This API key is read-only:")) {
    return new PageError("This page is signed in with a read-only key: it can list keys but " +
      "not create, rotate or revoke them. Open the page with a write key to change keys.");
  }
  return new PageError(message);
}

async function call(path, options = {}) {
  const response = await fetch(`${api}/${path}`, {
    credentials: "same-origin",
    cache: "no-store",
    ...options,
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
  });
  let body = {};
  try { body = await response.json(); } catch (_) { body = {}; }
  if (!response.ok) {
    throw inWords(body.message || `The server answered ${response.status}.`);
  }
  return body;
}

function show(id, text) {
  const element = $(id);
  element.textContent = text || "";
  element.hidden = !text;
}

function failed(error) {
  show("#notice", "");
  show("#error", error.message);
  const field = error.field && $(`#create-form [name="${error.field}"]`);
  if (field && !field.disabled) {
    field.setAttribute("aria-invalid", "true");
    field.setAttribute("aria-describedby", "error");
    field.focus();
  }
}

// "2026-12-03 17:15" (UTC, to the minute; the second too with seconds) from an ISO time.
function when(iso, seconds = false) {
  if (!iso) return "–";
  const text = iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "");
  return seconds ? text : text.replace(/^(.{16}):\d\d$/, "$1");
}

// How long until an expiry: minutes under an hour, hours under a day, else days.
function remaining(milliseconds) {
  const minutes = Math.max(1, Math.ceil(milliseconds / 60000));
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.ceil(milliseconds / 3600000);
  if (hours < 24) return `${hours} h`;
  return `${Math.ceil(milliseconds / 86400000)} d`;
}

// The status in words: an active key the server calls expiring (within its warning window,
// keys/lifetime.py) says how soon.
function keyStatus(key) {
  if (key.expiring && key.expires_at) {
    return `expires in ${remaining(Date.parse(key.expires_at) - Date.now())}`;
  }
  if (key.status === "rotating" && key.rotation_ends_at) {
    return `rotating until ${when(key.rotation_ends_at)}`;
  }
  return key.status;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function dateCell(row, iso) {
  const td = cell(row, when(iso), "date");
  if (iso) td.title = `${when(iso, true)} UTC`;
  return td;
}

// "Last used", and for its owner (or an admin) where from: the last addresses the key was
// used from, newest first, each with when it was last seen there, folded under a summary.
function lastUsedCell(row, key) {
  const td = cell(row, "", "last-used");
  const box = document.createElement("div");  // one grid item where rows are cards
  const date = document.createElement("span");
  date.className = "date";
  date.textContent = when(key.last_used_at);
  if (key.last_used_at) date.title = `${when(key.last_used_at, true)} UTC`;
  box.append(date);
  const seen = key.addresses || [];
  if (seen.length) {
    const details = document.createElement("details");
    details.className = "addresses";
    const summary = document.createElement("summary");
    summary.textContent = seen.length === 1 ? "1 address" : `${seen.length} addresses`;
    summary.title = "The addresses this key was last used from";
    const list = document.createElement("ul");
    for (const entry of seen) {
      const item = document.createElement("li");
      const address = document.createElement("span");
      address.className = "address mono";
      address.textContent = entry.address;
      const time = document.createElement("time");
      time.dateTime = entry.last_seen_at;
      time.textContent = when(entry.last_seen_at);
      time.title = `last seen ${when(entry.last_seen_at, true)} UTC`;
      item.append(address, time);
      list.append(item);
    }
    details.append(summary, list);
    box.append(details);
  }
  td.append(box);
  return td;
}

// Each cell is labelled with its column's heading, shown beside it where rows become cards.
function labelCells(table, row) {
  const headings = [...table.querySelectorAll("thead th")].filter((th) => !th.hidden);
  [...row.cells].forEach((td, index) => {
    const heading = headings[index]?.textContent;
    if (heading && heading !== "Actions") td.dataset.label = heading;
  });
}

// Why this sign-in cannot create, rotate or revoke keys (null: it can), as the server's rules
// say: a read-only key, a key limited to some experiments and models, or a key a token
// exchange issued (keyless CI).
function cannotChange() {
  if (me.scope === "read") {
    return "You are signed in with a read-only key: you can see your keys here but not " +
      "create, rotate or revoke them. Open this page with a write key to change keys.";
  }
  if (me.limits) {
    return "You are signed in with a key limited to some experiments and models: it cannot " +
      "create, rotate or revoke keys. Open this page with an unlimited key to change keys.";
  }
  if (me.federated) {
    return "You are signed in with a short-lived key from a token exchange (keyless CI): it " +
      "cannot create, rotate or revoke keys. Open this page with an ordinary key to change keys.";
  }
  return null;
}

function button(label, action, title) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.className = "small";
  element.setAttribute("aria-label", title);
  if (cannotChange()) {
    element.disabled = true;
    element.setAttribute("aria-describedby", "cannot-change");
  } else element.addEventListener("click", action);
  return element;
}

async function rotate(key) {
  const answer = prompt(
    `Rotate "${key.name || key.prefix}"? A new key replaces it.\n` +
    "Seconds the old key keeps working (empty: the server's default, 0: stop it now):", "0");
  if (answer === null) return;
  const grace = answer.trim();
  try {
    const body = { key_id: key.id };
    if (grace) body.grace_seconds = /^\d+$/.test(grace) ? Number(grace) : grace;
    const rotated = await call("api-keys/rotate", { method: "POST", body: JSON.stringify(body) });
    showNewKey(rotated.key);
    show("#notice", `Rotated ${key.prefix}… — the replacement is shown above.`);
    show("#error", "");
    await refresh();
  } catch (error) { failed(error); }
}

async function refresh() {
  await loadKeys();
  if (me.is_admin) await loadAudit();
}

async function revoke(key) {
  if (!confirm(`Revoke "${key.name || key.prefix}" (${key.prefix}…)? It stops working at once.`)) {
    return;
  }
  try {
    await call("api-keys/revoke", { method: "POST", body: JSON.stringify({ key_id: key.id }) });
    show("#notice", `Revoked ${key.prefix}…`);
    show("#error", "");
    await refresh();
  } catch (error) { failed(error); }
}

async function loadKeys() {
  const filters = new FormData($("#filter-form"));
  const params = new URLSearchParams();
  const user = (filters.get("username") || "").trim();
  if (me.is_admin && user) params.set("username", user);
  else if (me.is_admin) params.set("all", "true");
  const wanted = filters.get("status") || "";
  const { api_keys: keys } = await call(`api-keys/list?${params}`);
  listed = keys.filter((key) => !wanted || key.status === wanted);
  showKeys();
}

function rateLimit(value) {
  return !value || value === "none" ? "unlimited" : value;
}

// One page of the listed keys (the page stays where it was after a rotation or revocation).
function showKeys() {
  const size = pageSize();
  const pages = Math.max(1, Math.ceil(listed.length / size));
  page = Math.min(page, pages - 1);
  const body = $("#keys tbody");
  body.replaceChildren();
  const first = page * size;
  for (const key of listed.slice(first, first + size)) {
    const row = body.insertRow();
    row.dataset.keyId = key.id;
    cell(row, key.name || "–", "name");
    if (me.is_admin) cell(row, key.username, "admin-col");
    cell(row, `${key.prefix}…`, "mono");
    cell(row, key.scope);
    const [state, until] = keyStatus(key).split(" until ");
    const tone = key.expiring ? "expiring" : key.status;
    const status = cell(row, until ? `${state} until` : state, `status status-${tone}`);
    if (until) status.append(document.createElement("br"), until);
    dateCell(row, key.created_at);
    dateCell(row, key.expires_at);
    lastUsedCell(row, key);
    cell(row, (key.allowed_ips || []).join(", ") || "anywhere");
    cell(row, rateLimit(key.rate_limit));
    cell(row, limits(key.limits), "limits");
    const actions = cell(row, "", "actions");
    if (key.status !== "revoked" && key.status !== "expired") {
      actions.append(
        button("Rotate", () => rotate(key), `Rotate ${key.name || key.prefix}`),
        button("Revoke", () => revoke(key), `Revoke ${key.name || key.prefix}`),
      );
    }
    labelCells($("#keys"), row);
  }
  if (!listed.length) {
    const row = body.insertRow();
    const td = cell(row, "No keys.");
    td.colSpan = 12;
  }
  $("#keys-pager").hidden = pages < 2;
  $("#keys-page").textContent =
    `Keys ${first + 1}–${Math.min(first + size, listed.length)} of ${listed.length}`;
  $("#keys-previous").disabled = page === 0;
  $("#keys-next").disabled = page >= pages - 1;
}

function turn(by) {
  page += by;
  showKeys();
  $("#keys-title").scrollIntoView({ block: "nearest" });
}

// A key's resource limits in words ("all" when it has none).
function limits(value) {
  if (!value) return "all";
  const parts = [];
  if (value.experiments) {
    const shown = value.experiments.map((e) => `${e.id ?? e.name} (${e.permission})`);
    parts.push(`experiments: ${shown.join(", ") || "none"}`);
    const models = value.registered_models.map((m) => `${m.name} (${m.permission})`);
    parts.push(`models: ${models.join(", ") || "none"}`);
  }
  if (value.can_create) parts.push("may create");
  if (value.workspace) parts.push(`workspace: ${value.workspace}`);
  return parts.join("; ");
}

function showNewKey(key) {
  const uri = `${location.origin}${root}`;
  $("#new-key-value").value = key;
  $("#new-key-env").value =
    `export MLFLOW_TRACKING_URI=${uri}\nexport MLFLOW_TRACKING_TOKEN=${key}`;
  $("#new-key").hidden = false;
  $("#new-key-value").focus();
  $("#new-key-value").select();
}

async function copy(selector, what) {
  const text = $(selector).value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    $(selector).select();
    document.execCommand("copy");
  }
  show("#notice", `${what} copied.`);
}

async function create(event) {
  event.preventDefault();
  if (!me || cannotChange()) return;
  for (const field of event.target.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-describedby");
  }
  const form = new FormData(event.target);
  const body = {};
  for (const [name, value] of form.entries()) {
    const text = String(value).trim();
    if (!text) continue;
    if (name === "expires_in_days") body[name] = /^\d+$/.test(text) ? Number(text) : text;
    else if (name === "rate_limit" && /^(unlimited|none|no limit)$/i.test(text)) body[name] = "unlimited";
    else if (name === "allowed_ips") body[name] = text.split(/[\s,]+/).filter(Boolean);
    else if (name === "experiments" || name === "registered_models") {
      body[name] = text.split(",").map((entry) => entry.trim()).filter(Boolean);
    } else if (name === "can_create") body[name] = true;
    else body[name] = text;
  }
  try {
    const made = await call("api-keys/create", { method: "POST", body: JSON.stringify(body) });
    event.target.reset();
    showNewKey(made.key);
    show("#error", "");
    show("#notice", `Created ${made.api_key.prefix}… for ${made.api_key.username}.`);
    await refresh();
  } catch (error) { failed(error); }
}

async function loadAudit(more = false) {
  const form = new FormData($("#audit-form"));
  const params = new URLSearchParams({ max_results: NARROW.matches ? "20" : "50" });
  for (const name of ["username", "event", "since"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  if (more && auditToken) params.set("page_token", auditToken);
  const { events, next_page_token: token } = await call(`audit/list?${params}`);
  auditToken = token || null;
  const body = $("#audit tbody");
  if (!more) body.replaceChildren();
  for (const entry of events) {
    const row = body.insertRow();
    for (const value of [when(entry.time, true), entry.event, entry.actor, entry.username,
      entry.key_id, entry.address, entry.detail]) {
      cell(row, value || "–");
    }
    row.cells[0].className = "date";
    labelCells($("#audit"), row);
  }
  $("#audit-more").hidden = !auditToken;
}

async function start() {
  $("#mlflow-link").href = `${root}/`;
  try {
    me = await call("whoami");
  } catch (error) { failed(error); return; }
  $("#who").textContent = `Signed in as ${me.username}${me.is_admin ? " (admin)" : ""}` +
    (me.scope === "read" ? " with a read-only key" : "");
  if (me.session_id) {  // signed in with the identity provider: a way out
    $("#sign-out").href = `${root}/hokusai/logout`;
    $("#sign-out").hidden = false;
  }
  for (const element of document.querySelectorAll(".admin-only, .admin-col")) {
    element.hidden = !me.is_admin;
  }
  if (me.is_admin) $("#keys-title").textContent = "Keys";
  const select = $("#audit-form select[name=event]");
  for (const name of EVENTS) select.append(new Option(name, name));
  $("#create-form").addEventListener("submit", create);
  const why = cannotChange();
  show("#cannot-change", why);
  $("#create-fields").disabled = Boolean(why);  // disabled in the HTML until now
  $("#keys-previous").addEventListener("click", () => turn(-1));
  $("#keys-next").addEventListener("click", () => turn(1));
  NARROW.addEventListener("change", () => { if (listed.length) showKeys(); });
  $("#filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    page = 0;
    loadKeys().catch(failed);
  });
  $("#audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadAudit().catch(failed);
  });
  $("#audit-more").addEventListener("click", () => loadAudit(true).catch(failed));
  $("#copy-key").addEventListener("click", () => copy("#new-key-value", "Key"));
  $("#copy-env").addEventListener("click", () => copy("#new-key-env", "Both lines"));
  $("#dismiss-key").addEventListener("click", () => {
    $("#new-key-value").value = "";
    $("#new-key-env").value = "";
    $("#new-key").hidden = true;
  });
  try {
    await refresh();
  } catch (error) { failed(error); }
  document.body.dataset.ready = "true";
}

start();
