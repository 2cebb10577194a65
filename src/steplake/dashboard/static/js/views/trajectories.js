// Trajectories: a filtered, server-paged list that grows live; selection and bulk curation.
import { getJSON } from "../api.js";
import { h, replace, fmtNum, fmtFloat, fmtAgo, fmtTime, shortId, badge } from "../dom.js";
import { subscribe } from "../live.js";
import { curationForm, modal, tagChips } from "../curation.js";

const PAGE = 100;
const FILTERS = [
  { key: "q", label: "Search messages", type: "search", wide: true, placeholder: "text in messages…" },
  { key: "channel", label: "Channel", type: "text", list: "dl-channels" },
  { key: "status", label: "Status", options: ["", "open", "complete", "abandoned"] },
  { key: "quality", label: "Quality", type: "text", list: "dl-quality" },
  { key: "trainable", label: "Trainable", options: ["", "true", "false"] },
  { key: "continuity", label: "Continuity", options: ["", "clean", "realigned", "fork"] },
  { key: "agent", label: "Agent", type: "text" },
  { key: "group_id", label: "Group", type: "text" },
  { key: "min_reward", label: "Reward ≥", type: "number" },
  { key: "max_reward", label: "Reward ≤", type: "number" },
  { key: "policy_version", label: "Policy", type: "number" },
  { key: "since", label: "Since", type: "datetime-local" },
  { key: "until", label: "Until", type: "datetime-local" },
];

function toLocalInput(epoch) {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function filterBar(params, onChange) {
  const inputs = {};
  const fields = FILTERS.map((f) => {
    let input;
    if (f.options) {
      input = h("select", { class: "input", name: f.key }, f.options.map((o) => h("option", { value: o }, o || "any")));
      input.value = params[f.key] || "";
    } else {
      const v = f.type === "datetime-local" ? toLocalInput(params[f.key]) : (params[f.key] || "");
      input = h("input", { class: "input", name: f.key, type: f.type, list: f.list, placeholder: f.placeholder || "", step: f.type === "number" ? "any" : undefined, value: v });
    }
    inputs[f.key] = input;
    const ev = f.type === "search" || f.type === "text" || f.type === "number" ? "change" : "change";
    input.addEventListener(ev, () => onChange(read()));
    if (f.type === "search") input.addEventListener("keydown", (e) => { if (e.key === "Enter") onChange(read()); });
    return h("label", { class: ["filter", f.wide ? "wide" : null] }, h("span", {}, f.label), input);
  });
  function read() {
    const out = {};
    for (const f of FILTERS) {
      let v = inputs[f.key].value.trim();
      if (!v) continue;
      if (f.type === "datetime-local") v = String(Math.floor(new Date(v).getTime() / 1000));
      out[f.key] = v;
    }
    return out;
  }
  const clearBtn = h("button", { class: "btn btn-ghost", type: "button", onclick: () => onChange({}) }, "Clear");
  return h("div", { class: "filters card" }, fields, h("div", { class: "filter-actions" }, clearBtn),
    h("datalist", { id: "dl-quality" }, ["unreviewed", "good", "bad"].map((q) => h("option", { value: q }))),
    h("datalist", { id: "dl-channels" }));
}

function continuityCell(t) {
  if (t.n_fork) return badge(`fork ×${t.n_fork}`, "fork");
  if (t.n_realigned) return badge(`realigned ×${t.n_realigned}`, "realigned");
  return t.n_steps ? badge("clean", "clean") : h("span", { class: "muted" }, "–");
}

function row(t, selected, onToggle, fresh) {
  const link = "#/t/" + encodeURIComponent(t.trajectory_id);
  const cur = t.curation || {};
  const pv = t.policy_versions || [];
  const box = h("input", { type: "checkbox", checked: selected.has(t.trajectory_id), "aria-label": "select", onclick: (ev) => ev.stopPropagation(), onchange: (ev) => onToggle(t.trajectory_id, ev.target.checked) });
  return h("tr", { class: ["clickable", fresh ? "fresh" : null], dataset: { trajectoryId: t.trajectory_id },
    onclick: (ev) => { if (ev.target.closest("a,input,button")) return; location.hash = link; } },
    h("td", { class: "sel" }, box),
    h("td", { class: "muted nowrap", title: fmtTime(t.created_at) }, fmtAgo(t.updated_at)),
    h("td", { class: "mono" }, h("a", { href: link, title: t.trajectory_id }, shortId(t.trajectory_id, 22))),
    h("td", {}, t.channel),
    h("td", { class: "mono", title: t.group_id }, shortId(t.group_id, 14)),
    h("td", {}, (t.metadata && typeof t.metadata.agent === "string") ? shortId(t.metadata.agent, 20) : h("span", { class: "muted" }, "–")),
    h("td", {}, badge(t.status, t.status)),
    h("td", { class: "num" }, fmtNum(t.n_steps)),
    h("td", { class: "num" }, fmtFloat(t.reward)),
    h("td", {}, badge(cur.quality || "unreviewed", "q-" + (cur.quality || "unreviewed")), " ", tagChips((cur.tags || []).slice(0, 3))),
    h("td", {}, cur.trainable === false ? badge("no", "bad") : h("span", { class: "muted" }, "yes")),
    h("td", {}, continuityCell(t)),
    h("td", { class: "mono" }, pv.length ? (pv[0] === pv[1] ? "v" + pv[0] : `v${pv[0]}–v${pv[1]}`) : "–"));
}

export function render(root, params) {
  let alive = true;
  const filters = { ...params };
  let items = [];
  let cursor = null;
  const selected = new Set();
  const known = new Set();
  const tbody = h("tbody", {});
  const info = h("span", { class: "muted" });
  const more = h("button", { class: "btn", type: "button", hidden: true, onclick: () => loadMore() }, "Load more");
  const selInfo = h("span", { class: "muted" });
  const curateSel = h("button", { class: "btn", type: "button", disabled: true, onclick: () => openCurate("selection") }, "Curate selection");
  const curateAll = h("button", { class: "btn", type: "button", onclick: () => openCurate("filter") }, "Curate all matching…");

  function setFilters(f) {
    const qs = new URLSearchParams(f).toString();
    location.hash = "#/trajectories" + (qs ? "?" + qs : "");
  }
  const bar = filterBar(filters, setFilters);

  function draw(freshIds) {
    replace(tbody, items.length ? items.map((t) => row(t, selected, toggle, freshIds && freshIds.has(t.trajectory_id)))
      : h("tr", {}, h("td", { colspan: 13, class: "empty" }, "No trajectory matches.")));
    info.textContent = `${fmtNum(items.length)} shown${cursor ? " · more available" : ""}`;
    more.hidden = !cursor;
    selInfo.textContent = selected.size ? `${selected.size} selected` : "";
    curateSel.disabled = !selected.size;
  }
  function toggle(id, on) { if (on) selected.add(id); else selected.delete(id); draw(); }

  async function loadFirst(live) {
    const page = await getJSON("/trajectories", { ...filters, limit: PAGE });
    if (!alive) return;
    const fresh = new Set();
    if (live) {
      const firstIds = new Set(page.items.map((t) => t.trajectory_id));
      for (const t of page.items) if (!known.has(t.trajectory_id)) fresh.add(t.trajectory_id);
      const rest = items.filter((t) => !firstIds.has(t.trajectory_id));
      const keepRest = items.length > PAGE;  // the user loaded more pages: keep them below
      items = keepRest ? page.items.concat(rest) : page.items;
      if (!keepRest) cursor = page.next_cursor;
    } else { items = page.items; cursor = page.next_cursor; }
    for (const t of items) known.add(t.trajectory_id);
    draw(fresh);
  }
  async function loadMore() {
    if (!cursor) return;
    const page = await getJSON("/trajectories", { ...filters, limit: PAGE, cursor });
    items = items.concat(page.items); cursor = page.next_cursor;
    for (const t of page.items) known.add(t.trajectory_id);
    draw();
  }
  function openCurate(kind) {
    const target = kind === "selection" ? { trajectory_ids: [...selected] } : { filters };
    const label = kind === "selection" ? `${selected.size} selected trajectories`
      : `every trajectory matching the filter${Object.keys(filters).length ? "" : " (no filter: ALL trajectories)"}`;
    const close = modal("Curate " + label, curationForm({ target, label: "Applies to " + label,
      onDone: () => { close(); selected.clear(); loadFirst(true); } }));
  }

  replace(root,
    h("div", { class: "page-head" }, h("h1", {}, "Trajectories"), info),
    bar,
    h("div", { class: "toolbar" }, selInfo, curateSel, curateAll),
    h("div", { class: "card table-wrap" }, h("table", { class: "table", id: "trajectory-table" },
      h("thead", {}, h("tr", {}, h("th", { class: "sel" }, h("input", { type: "checkbox", "aria-label": "select all", onchange: (ev) => {
        for (const t of items) { if (ev.target.checked) selected.add(t.trajectory_id); else selected.delete(t.trajectory_id); }
        draw();
      } })), ["updated", "trajectory", "channel", "group", "agent", "status", "steps", "reward", "quality", "trainable", "continuity", "policy"].map((c) => h("th", {}, c)))),
      tbody)),
    h("div", { class: "center" }, more));

  getJSON("/dashboard/overview", { window: 300, bucket: 60 }).then((o) => {
    const dl = document.getElementById("dl-channels");
    if (dl) replace(dl, o.channels.map((c) => h("option", { value: c })));
  }).catch(() => {});
  loadFirst(false).catch((e) => replace(tbody, h("tr", {}, h("td", { colspan: 13, class: "error-box" }, e.message))));
  const unsub = subscribe(["trajectory", "step", "curation", "reward", "group"], () => loadFirst(true).catch(() => {}), 500);
  return () => { alive = false; unsub(); };
}
