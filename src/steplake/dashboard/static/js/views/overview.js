// Overview: live counters, steps per minute, rewards, policy versions, funnel, continuity, captures.
import { getJSON } from "../api.js";
import { h, replace, fmtNum, fmtFloat, fmtAgo, shortId, badge, plural } from "../dom.js";
import { subscribe } from "../live.js";
import { timeSeries, histogram, hbars, stacked, rewardByVersion } from "../charts.js";

function tile(label, value, sub, kind) {
  return h("div", { class: ["tile", kind ? "tile-" + kind : null], dataset: { counter: label } },
    h("div", { class: "tile-label" }, label),
    h("div", { class: "tile-value" }, value),
    sub ? h("div", { class: "tile-sub" }, sub) : null);
}

function card(title, body, extra) {
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, title), extra || null), body);
}

function tiles(st) {
  const tr = st.trajectories || {};
  const gr = st.groups || {};
  const ba = st.batches || {};
  const cap = st.captures || {};
  const tok = st.tokens || {};
  return h("div", { class: "tiles" },
    tile("Steps", fmtNum(st.steps), `${plural(tok.prompt, "prompt token")} · ${plural(tok.response, "response token")}`),
    tile("Open", fmtNum(tr.open), "trajectories collecting"),
    tile("Complete", fmtNum(tr.complete), "trajectories"),
    tile("Abandoned", fmtNum(tr.abandoned), "idle past timeout", tr.abandoned ? "warn" : null),
    tile("Groups ready", fmtNum(gr.ready), `${fmtNum(gr.collecting)} collecting`),
    tile("Batches leased", fmtNum(ba.leased), `${plural(gr.leased, "group")} leased`),
    tile("Batches consumed", fmtNum(ba.consumed), `${plural(gr.consumed, "group")} consumed`),
    tile("Capture errors", fmtNum(cap.failed), `${fmtNum(cap.pending)} pending · ${fmtNum(cap.committed)} committed`,
      cap.failed ? "bad" : null),
    tile("Policy", "v" + (st.policy_version ?? 0), "published version"));
}

function policyTable(policy) {
  if (!policy.versions.length) return h("div", { class: "empty" }, "No steps yet.");
  const max = Math.max(...policy.versions.map((v) => v.trajectories));
  return h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, h("th", {}, "version"), h("th", {}, "staleness"), h("th", {}, "trajectories"),
      h("th", {}, "reward"), h("th", {}, ""))),
    h("tbody", {}, policy.versions.slice(0, 8).map((v) => h("tr", {},
      h("td", { class: "mono" }, "v" + v.version),
      h("td", {}, v.staleness === 0 ? badge("current", "good") : badge(v.staleness + " behind", v.staleness > 2 ? "bad" : "warn")),
      h("td", { class: "num" }, fmtNum(v.trajectories)),
      h("td", { class: "num" }, v.reward && v.reward.n ? `${fmtFloat(v.reward.mean)} ± ${fmtFloat(v.reward.std)}` : "–"),
      h("td", { class: "bar-cell" }, h("span", { class: "mini-bar", style: { width: (100 * v.trajectories / max) + "%" } }))))));
}

function captures(st) {
  const cap = st.captures || {};
  const gw = st.gateway;
  const rows = [
    ["pending", fmtNum(cap.pending)], ["committed", fmtNum(cap.committed)], ["failed", fmtNum(cap.failed)],
  ];
  return h("div", {},
    h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    cap.last_error ? h("div", { class: "error-box small" }, "last error: " + cap.last_error) : h("div", { class: "muted small" }, "No capture error."),
    gw ? h("details", { class: "small" }, h("summary", {}, "gateway"), h("pre", { class: "json" }, JSON.stringify(gw, null, 2))) : null);
}

// This server's --prompt-mode and its steps per mode (gateway stats, counted since the server started).
function promptModes(gw) {
  const pm = gw && gw.prompt_modes;
  if (!pm) return null;
  const steps = pm.steps || {};
  const builds = pm.builds || {};
  return h("div", { class: "muted small prompt-modes", dataset: { promptMode: pm.mode } },
    `prompt mode ${pm.mode}: ${fmtNum(steps.tokens || 0)} on token ids (${fmtNum(builds.bridge || 0)} bridged, ` +
    `${fmtNum(builds.render || 0)} rendered) · ${fmtNum(steps.chat || 0)} chat · ${plural(pm.fallbacks || 0, "fallback")}`,
    pm.last_fallback ? h("span", { title: pm.last_fallback }, " (last: " + pm.last_fallback + ")") : null);
}

async function recent(container) {
  const page = await getJSON("/trajectories", { limit: 8 });
  replace(container, page.items.length ? h("table", { class: "table compact" }, h("tbody", {}, page.items.map((t) =>
    h("tr", { class: "clickable", onclick: () => { location.hash = "#/t/" + encodeURIComponent(t.trajectory_id); } },
      h("td", { class: "mono" }, h("a", { href: "#/t/" + encodeURIComponent(t.trajectory_id) }, shortId(t.trajectory_id, 18))),
      h("td", {}, badge(t.status, t.status)),
      h("td", { class: "num" }, plural(t.n_steps, "step")),
      h("td", { class: "num" }, fmtFloat(t.reward)),
      h("td", { class: "muted" }, fmtAgo(t.updated_at)))))) : h("div", { class: "empty" }, "No trajectories yet."));
}

export function render(root) {
  let alive = true;
  const body = h("div", { class: "overview" });
  replace(root, h("div", { class: "page-head" }, h("h1", {}, "Overview"),
    h("span", { class: "muted" }, "Live counters of the data pool; charts cover the last 30 minutes.")), body);
  const recentBox = h("div", {}, "…");

  async function load() {
    const o = await getJSON("/dashboard/overview", { window: 1800, bucket: 30 });
    if (!alive) return;
    const st = o.stats;
    const cont = st.continuity || {};
    const funnel = o.funnel.stages.map((s) => ({ label: s.name, count: s.count }));
    const series = o.series.points;
    const lastRate = series.length ? series[series.length - 1].steps * o.series.per_minute : 0;
    replace(body,
      tiles(st),
      h("div", { class: "grid2" },
        card("Steps per minute", timeSeries(series, o.series.per_minute),
          h("span", { class: "muted" }, `now ${fmtFloat(lastRate, 1)}/min · forks in red`)),
        card("Reward distribution", histogram(o.rewards),
          h("span", { class: "muted" }, `${fmtNum(o.rewards.n)} recent trajectories · mean ${fmtFloat(o.rewards.mean)} (dashed)`)),
        card("Funnel", hbars(funnel, o.funnel.stages[0].count),
          h("span", { class: "muted" }, `trajectories · ${fmtNum(o.funnel.abandoned)} abandoned · ${fmtNum(o.funnel.untrainable)} untrainable`)),
        card("Continuity", h("div", {}, stacked([
          { label: "first", count: cont.first || 0, kind: "first" },
          { label: "clean", count: cont.clean || 0, kind: "clean" },
          { label: "realigned", count: cont.realigned || 0, kind: "realigned" },
          { label: "fork", count: cont.fork || 0, kind: "fork" }]), promptModes(st.gateway)),
          h("span", { class: "muted" }, "steps")),
        card("Policy versions and staleness", policyTable(o.policy),
          h("span", { class: "muted" }, `current v${o.policy.current}`)),
        card("Reward by policy version", rewardByVersion(o.policy.versions),
          h("span", { class: "muted" }, `mean ± std per version · last ${fmtNum(o.policy.sample)} trajectories`)),
        card("Captures", captures(st)),
      ),
      card("Recent trajectories", recentBox, h("a", { href: "#/trajectories" }, "all →")));
    await recent(recentBox);
  }

  load().catch((e) => { if (alive) replace(body, h("div", { class: "error-box" }, e.message)); });
  const unsub = subscribe(null, () => { load().catch(() => {}); }, 2000);
  const timer = setInterval(() => load().catch(() => {}), 15000);
  return () => { alive = false; unsub(); clearInterval(timer); };
}
