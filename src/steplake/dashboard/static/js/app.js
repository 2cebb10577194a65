// The single-page app: hash routes, sign-in, live connection, view mounting.
import { api, ApiError } from "./api.js";
import { replace, h, toast } from "./dom.js";
import { connectLive, disconnectLive, onLiveState, subscribe } from "./live.js";
import * as overview from "./views/overview.js";
import * as trajectories from "./views/trajectories.js";
import * as inspector from "./views/inspector.js";
import * as batches from "./views/batches.js";

const view = document.getElementById("view");
let cleanup = null;
let started = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(qs || ""));
  return { parts, params };
}

function route() {
  if (!started) return;
  const { parts, params } = parseHash();
  let name = parts[0] || "overview";
  let mod = overview;
  let arg = params;
  if (name === "trajectories") mod = trajectories;
  else if (name === "t" && parts[1]) { mod = inspector; arg = { id: parts[1], ...params }; name = "trajectories"; }
  else if (name === "batches") mod = batches;
  else name = "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.route === name);
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } }
  cleanup = null;
  replace(view, h("div", { class: "loading" }, "Loading…"));
  try {
    cleanup = mod.render(view, arg) || null;
  } catch (e) {
    replace(view, h("div", { class: "error-box" }, "This view failed: " + e.message));
  }
}

async function refreshPolicy() {
  try {
    const p = await api("/policy");
    document.getElementById("policy-chip").textContent = "policy v" + p.version;
  } catch (e) { /* shown elsewhere */ }
}

function showSignIn() {
  started = false;
  document.getElementById("sign-out").hidden = true;
  disconnectLive();
  if (cleanup) { try { cleanup(); } catch (e) { /* ignore */ } cleanup = null; }
  replace(view);
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-key").focus();
}

async function start() {
  document.getElementById("signin").hidden = true;
  started = true;
  connectLive(showSignIn);
  refreshPolicy();
  route();
}

async function boot() {
  onLiveState((s) => {
    const el = document.getElementById("live-state");
    el.textContent = s === "off" ? "offline" : s;
    el.className = "live-state ls-" + s.replace(/\s+/g, "-");
  });
  subscribe(["policy"], refreshPolicy, 1000);
  window.addEventListener("hashchange", route);
  window.addEventListener("steplake:auth-required", () => { if (started) showSignIn(); });
  document.getElementById("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = document.getElementById("signin-key");
    const errBox = document.getElementById("signin-error");
    errBox.textContent = "";
    try {
      await api("/session", { method: "POST", body: { key: input.value } });
      input.value = "";
      document.getElementById("sign-out").hidden = false;
      await start();
    } catch (e) {
      errBox.textContent = e instanceof ApiError ? e.message : String(e);
    }
  });
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await api("/session", { method: "DELETE" }); } catch (e) { /* ignore */ }
    showSignIn();
  });
  let session;
  try {
    session = await api("/session");
  } catch (e) {
    replace(view, h("div", { class: "error-box" }, "Cannot reach the steplake API: " + e.message));
    return;
  }
  document.getElementById("sign-out").hidden = !session.keys_required;
  if (session.keys_required && !session.authenticated) showSignIn();
  else await start();
}

window.addEventListener("unhandledrejection", (ev) => {
  const e = ev.reason;
  if (e instanceof ApiError && e.status === 401) return;
  toast(e && e.message ? e.message : String(e), "error");
});

boot();
