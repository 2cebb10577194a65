// Calls to the steplake HTTP API (same origin; the session cookie travels automatically).

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

export async function api(path, { method = "GET", body, params } = {}) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch("/api/v1" + path + query(params), init);
  } catch (e) {
    throw new ApiError(0, "server unreachable: " + e.message, "network");
  }
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { raw: text }; } }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    const message = typeof err.message === "string" ? err.message : `HTTP ${resp.status}`;
    if (resp.status === 401) window.dispatchEvent(new CustomEvent("steplake:auth-required"));
    throw new ApiError(resp.status, message, err.code || err.type);
  }
  return data;
}

export const getJSON = (path, params) => api(path, { params });
export const postJSON = (path, body) => api(path, { method: "POST", body });
