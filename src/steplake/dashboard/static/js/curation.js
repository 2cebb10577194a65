// Curation form (quality, trainable, tags, note) for a step, a trajectory, a selection or a filter;
// feedback; the history of a record's curation.
import { api, postJSON, getJSON } from "./api.js";
import { h, replace, fmtTime, toast, badge, pretty, plural } from "./dom.js";

const REVIEWER_KEY = "steplake.reviewer";

function reviewer() { try { return localStorage.getItem(REVIEWER_KEY) || ""; } catch (e) { return ""; } }
function rememberReviewer(v) { try { localStorage.setItem(REVIEWER_KEY, v); } catch (e) { /* private mode */ } }

export function tagChips(tags, onRemove) {
  return h("span", { class: "tags" }, (tags || []).map((t) => h("span", { class: "tag" }, t,
    onRemove ? h("button", { type: "button", class: "tag-x", title: "remove tag", "aria-label": "remove tag", onclick: () => onRemove(t) }, "×") : null)));
}

// target: {trajectory_ids: [...]} | {step_ids: [...]} | {filters: {...}} ; current: curation dict or null.
export function curationForm({ target, current, label, onDone }) {
  const cur = current || { quality: "unreviewed", trainable: true, tags: [], note: "" };
  const removed = new Set();
  const quality = h("select", { name: "quality", class: "input" },
    h("option", { value: "" }, "(unchanged)"),
    ["unreviewed", "good", "bad"].map((q) => h("option", { value: q }, q)),
    h("option", { value: "__custom" }, "other label…"));
  const custom = h("input", { class: "input", name: "quality_custom", placeholder: "label", hidden: true });
  quality.addEventListener("change", () => { custom.hidden = quality.value !== "__custom"; });
  const trainable = h("select", { name: "trainable", class: "input" },
    h("option", { value: "" }, "(unchanged)"), h("option", { value: "true" }, "trainable"),
    h("option", { value: "false" }, "not trainable"));
  const tagsAdd = h("input", { class: "input", name: "tags_add", placeholder: "tag1, tag2" });
  const note = h("textarea", { class: "input", name: "note", rows: 2, placeholder: current ? "note (replaces the current note)" : "note" });
  const who = h("input", { class: "input", name: "reviewer", placeholder: "your name", value: reviewer() });
  const chipBox = h("span", {});
  const drawChips = () => replace(chipBox, tagChips((cur.tags || []).filter((t) => !removed.has(t)), (t) => { removed.add(t); drawChips(); }));
  drawChips();
  const err = h("div", { class: "form-error", role: "alert" });
  const form = h("form", { class: "curation-form", dataset: { testid: "curation-form" } },
    label ? h("div", { class: "form-target" }, label) : null,
    current ? h("div", { class: "current" }, "now: ", badge(cur.quality, "q-" + cur.quality), " ",
      cur.trainable ? badge("trainable", "good") : badge("not trainable", "bad"), " ", chipBox,
      cur.note ? h("div", { class: "note-text" }, cur.note) : null) : null,
    h("div", { class: "form-grid" },
      h("label", {}, "Quality", quality, custom),
      h("label", {}, "Trainable", trainable),
      h("label", {}, "Add tags", tagsAdd),
      h("label", {}, "Reviewer", who)),
    h("label", { class: "full" }, "Note", note),
    err,
    h("div", { class: "form-actions" }, h("button", { class: "btn btn-primary", type: "submit" }, "Apply curation")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const change = {};
    const q = quality.value === "__custom" ? custom.value.trim() : quality.value;
    if (q) change.quality = q;
    if (trainable.value) change.trainable = trainable.value === "true";
    const add = tagsAdd.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (add.length) change.tags_add = add;
    if (removed.size) change.tags_remove = [...removed];
    if (note.value.trim()) change.note = note.value;
    if (!Object.keys(change).length) { err.textContent = "Nothing to change."; return; }
    if (who.value.trim()) { change.reviewer = who.value.trim(); rememberReviewer(change.reviewer); }
    try {
      let res;
      if (target.filters) res = await postJSON("/dashboard/curate", { filters: target.filters, ...change });
      else res = await postJSON("/curation", { ...target, ...change });
      toast(`Curated ${plural(res.updated, "record")}.`, "ok");
      if (onDone) onDone(res);
    } catch (e) { err.textContent = e.message; }
  });
  return form;
}

function describeChange(c) {
  const parts = [];
  for (const [k, v] of Object.entries(c || {})) {
    if (v === null || v === undefined) continue;
    if (["step_ids", "trajectory_ids", "filter", "reviewer"].includes(k)) continue;
    parts.push(`${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  return parts.join(" · ");
}

export async function historyList(targetId) {
  const box = h("div", { class: "history" });
  try {
    const res = await getJSON("/curation/history", { target_id: targetId });
    if (!res.items.length) return replace(box, h("div", { class: "muted small" }, "No curation yet."));
    replace(box, h("ol", { class: "timeline" }, res.items.slice().reverse().map((e) => h("li", {},
      h("span", { class: "muted" }, fmtTime(e.at) + " "), h("b", {}, e.reviewer || "anonymous"), " ",
      h("span", { class: "change" }, describeChange(e.change))))));
  } catch (e) { replace(box, h("div", { class: "error-box small" }, e.message)); }
  return box;
}

export function feedbackBox({ trajectory_id, step_id, onDone }) {
  const target = step_id ? { step_id } : { trajectory_id };
  const comment = h("input", { class: "input", placeholder: "comment (optional)", name: "feedback_comment" });
  const list = h("div", { class: "feedback-list" });
  async function load() {
    try {
      const res = await getJSON("/feedback", target);
      replace(list, res.items.length ? h("ul", { class: "plain" }, res.items.slice(-10).reverse().map((f) => h("li", {},
        badge(f.kind), " ", h("span", { class: "mono" }, typeof f.value === "string" ? f.value : pretty(f.value)), " ",
        f.comment ? h("span", {}, "“" + f.comment + "”") : null, " ",
        h("span", { class: "muted small" }, (f.author || "") + " " + fmtTime(f.created_at))))) : h("div", { class: "muted small" }, "No feedback yet."));
    } catch (e) { replace(list, h("div", { class: "error-box small" }, e.message)); }
  }
  async function send(kind, value) {
    const body = { ...target, kind, value, author: reviewer() || undefined };
    if (comment.value.trim()) body.comment = comment.value.trim();
    await api("/feedback", { method: "POST", body });
    comment.value = "";
    toast("Feedback recorded.", "ok");
    load();
    if (onDone) onDone();
  }
  load();
  return h("div", { class: "feedback" },
    h("div", { class: "row" },
      h("button", { class: "btn", type: "button", title: "thumbs up", onclick: () => send("thumbs", 1) }, "▲ good"),
      h("button", { class: "btn", type: "button", title: "thumbs down", onclick: () => send("thumbs", -1) }, "▼ bad"),
      comment,
      h("button", { class: "btn", type: "button", onclick: () => { if (comment.value.trim()) send("comment", comment.value.trim()); } }, "Comment")),
    list);
}

export function modal(title, content) {
  const close = () => overlay.remove();
  const overlay = h("div", { class: "modal-overlay", onclick: (ev) => { if (ev.target === overlay) close(); } },
    h("div", { class: "modal card", role: "dialog", "aria-label": title },
      h("div", { class: "card-head" }, h("h2", {}, title), h("button", { class: "btn btn-ghost", type: "button", onclick: close }, "✕")),
      content));
  document.body.appendChild(overlay);
  return close;
}
