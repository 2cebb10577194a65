// DOM helpers. Every string from data becomes a Text node or a property value: never HTML.

const SAFE_ATTRS = new Set(["type", "name", "placeholder", "title", "min", "max", "step", "for", "id",
  "role", "rows", "cols", "list", "autocomplete", "tabindex", "colspan", "aria-label", "spellcheck",
  "download", "target", "rel", "width", "height", "viewBox", "x", "y", "x1", "x2", "y1", "y2", "rx",
  "d", "fill", "stroke", "stroke-width", "text-anchor", "dominant-baseline", "transform", "points",
  "opacity", "class", "value", "cx", "cy", "r"]);

export function safeHref(url) {
  // Only same-origin paths and in-app hash routes; never javascript:, data:, //host, ...
  const s = String(url ?? "");
  if (/^#\//.test(s)) return s;
  if (/^\/(?!\/)[^\s\\]*$/.test(s) && !/^\/\\/.test(s)) return s;
  return null;
}

function setAttrs(el, attrs, isSvg) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : String(v));
    else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k === "style") for (const [sk, sv] of Object.entries(v)) el.style[sk] = String(sv);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "href") { const u = safeHref(v); if (u) el.setAttribute("href", u); }
    else if (k === "text") el.textContent = String(v);
    else if (k === "checked" || k === "disabled" || k === "selected" || k === "open" || k === "hidden"
      || k === "required" || k === "multiple") el[k] = Boolean(v);
    else if (k === "value" && !isSvg) el.value = String(v);
    else if (SAFE_ATTRS.has(k) || k.startsWith("data-") || k.startsWith("aria-")) el.setAttribute(k, String(v));
    else throw new Error("attribute not allowed: " + k);
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs, false);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs, true);
  append(el, children);
  return el;
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
export function replace(el, ...children) { clear(el); append(el, children); return el; }

export function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  const v = Number(n);
  if (!Number.isFinite(v)) return String(n);
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 1 : 2) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return v.toLocaleString("en-US");
}

// A count and its noun: "1 step", "2 steps", "12.5k tokens" (many defaults to one + "s").
export function plural(n, one, many) {
  return `${fmtNum(n)} ${Number(n) === 1 ? one : (many || one + "s")}`;
}

export function fmtFloat(n, digits = 3) {
  if (n === null || n === undefined || n === "") return "–";
  const v = Number(n);
  return Number.isFinite(v) ? v.toFixed(digits) : String(n);
}

export function fmtTime(epoch) {
  if (!epoch) return "–";
  const d = new Date(epoch * 1000);
  const pad = (x) => String(x).padStart(2, "0");
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtAgo(epoch) {
  if (!epoch) return "–";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function shortId(id, n = 12) {
  const v = String(id ?? "");
  return v.length > n + 1 ? v.slice(0, n) + "…" : v;
}

export function badge(text, kind) {
  return h("span", { class: ["badge", kind ? "b-" + kind : null] }, text);
}

export function debounce(fn, ms) {
  let timer = null;
  let last = 0;
  return (...args) => {
    const wait = Math.max(0, ms - (Date.now() - last));
    if (timer) return;
    timer = setTimeout(() => { timer = null; last = Date.now(); fn(...args); }, wait);
  };
}

export function pretty(value) {
  try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
}

export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) { box = h("div", { id: "toasts" }); document.body.appendChild(box); }
  const t = h("div", { class: ["toast", "t-" + kind], role: "status" }, message);
  box.appendChild(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 3500);
}
