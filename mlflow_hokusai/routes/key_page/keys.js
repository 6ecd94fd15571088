// The self-service key page: everything goes through the key and audit REST endpoints of
// this server, with the browser's own credentials (same origin). No key is kept anywhere but
// in the "new key" box, until the page is left.
"use strict";

const root = location.pathname.replace(/\/hokusai\/keys\/?$/, "");
const api = `${root}/ajax-api/2.0/mlflow/hokusai`;
const EVENTS = ["created", "rotated", "revoked", "expired-use", "denied-use", "login-limited",
  "rate-limited", "limited", "policy-created", "policy-deleted", "exchanged", "exchange-refused",
  "signed-in", "signed-out", "session-revoked", "sign-in-refused"];
const $ = (selector) => document.querySelector(selector);
let me = null;
let auditToken = null;

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
    throw new Error(body.message || `The server answered ${response.status}.`);
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
  $("#error").focus?.();
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?\+00:00$/, "") : "–";
}

function status(key) {
  if (key.status === "active" && key.expires_at) {
    const days = (Date.parse(key.expires_at) - Date.now()) / 86400000;
    if (days < 7) return `expiring (${Math.max(0, Math.ceil(days))} d)`;
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

function button(label, action, title) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.className = "small";
  element.setAttribute("aria-label", title);
  element.addEventListener("click", action);
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
  const body = $("#keys tbody");
  body.replaceChildren();
  const shown = keys.filter((key) => !wanted || key.status === wanted);
  for (const key of shown) {
    const row = body.insertRow();
    row.dataset.keyId = key.id;
    cell(row, key.name || "–");
    if (me.is_admin) cell(row, key.username, "admin-col");
    cell(row, `${key.prefix}…`, "mono");
    cell(row, key.scope);
    cell(row, status(key), `status status-${key.status}`);
    cell(row, when(key.created_at));
    cell(row, when(key.expires_at));
    cell(row, when(key.last_used_at));
    cell(row, (key.allowed_ips || []).join(", ") || "anywhere");
    cell(row, key.rate_limit || "none");
    cell(row, limits(key.limits));
    const actions = cell(row, "");
    if (key.status !== "revoked" && key.status !== "expired") {
      actions.append(
        button("Rotate", () => rotate(key), `Rotate ${key.name || key.prefix}`),
        button("Revoke", () => revoke(key), `Revoke ${key.name || key.prefix}`),
      );
    }
  }
  if (!shown.length) {
    const row = body.insertRow();
    const td = cell(row, "No keys.");
    td.colSpan = 12;
  }
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
  const form = new FormData(event.target);
  const body = {};
  for (const [name, value] of form.entries()) {
    const text = String(value).trim();
    if (!text) continue;
    if (name === "expires_in_days") body[name] = /^\d+$/.test(text) ? Number(text) : text;
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
  const params = new URLSearchParams({ max_results: "50" });
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
    for (const value of [when(entry.time), entry.event, entry.actor, entry.username,
      entry.key_id, entry.address, entry.detail]) {
      cell(row, value || "–");
    }
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
  $("#filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
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
