// Batch builder: recipe, channel, filters and size; a dry-run preview; export with a manifest; download.
import { api, postJSON } from "../api.js";
import { h, replace, fmtNum, fmtFloat, shortId, badge, pretty, safeHref, toast } from "../dom.js";

const RECIPES = ["grpo", "rloo", "reinforce_pp", "ppo", "dpo", "sft"];
const STATE_KEY = "steplake.batch-builder";

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

function saved() { try { return JSON.parse(sessionStorage.getItem(STATE_KEY) || "{}"); } catch (e) { return {}; } }

function form(onPreview, onExport) {
  const st = saved();
  const channel = h("input", { class: "input", name: "channel", value: st.channel || "train" });
  const recipe = h("select", { class: "input", name: "recipe" }, h("option", { value: "" }, "(none: rewards only)"), RECIPES.map((r) => h("option", { value: r }, r)));
  recipe.value = st.recipe ?? "grpo";
  const layout = h("select", { class: "input", name: "layout" }, ["step", "trajectory"].map((l) => h("option", { value: l }, l)));
  layout.value = st.layout || "step";
  const groups = h("input", { class: "input", name: "groups", type: "number", min: 1, max: 4096, value: st.groups || 8 });
  const trainableOnly = h("input", { type: "checkbox", name: "trainable_only", checked: st.trainable_only ?? true });
  const rewardPresent = h("input", { type: "checkbox", name: "reward_present", checked: st.reward_present ?? true });
  const dropZero = h("input", { type: "checkbox", name: "drop_zero_variance", checked: st.drop_zero_variance ?? false });
  const maxStale = h("input", { class: "input", name: "max_staleness", type: "number", min: 0, value: st.max_staleness ?? "" });
  const minReward = h("input", { class: "input", name: "min_reward", type: "number", step: "any", value: st.min_reward ?? "" });
  const qualityNot = h("input", { class: "input", name: "quality_not_in", placeholder: "bad", value: st.quality_not_in ?? "" });
  const qualityIn = h("input", { class: "input", name: "quality_in", placeholder: "any", value: st.quality_in ?? "" });
  const format = h("select", { class: "input", name: "format" }, ["jsonl", "parquet", "hf"].map((f) => h("option", { value: f }, f)));
  const err = h("div", { class: "form-error", role: "alert" });

  function request() {
    const list = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
    const filters = { trainable_only: trainableOnly.checked, reward_present: rewardPresent.checked, drop_zero_variance: dropZero.checked };
    if (maxStale.value !== "") filters.max_staleness = Number(maxStale.value);
    if (minReward.value !== "") filters.min_reward = Number(minReward.value);
    if (qualityNot.value.trim()) filters.quality_not_in = list(qualityNot.value);
    if (qualityIn.value.trim()) filters.quality_in = list(qualityIn.value);
    const body = { channel: channel.value.trim() || "train", groups: Number(groups.value) || 1, layout: layout.value, filters };
    if (recipe.value) body.recipe = recipe.value;
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify({ channel: body.channel, recipe: recipe.value, layout: layout.value, groups: body.groups,
        trainable_only: trainableOnly.checked, reward_present: rewardPresent.checked, drop_zero_variance: dropZero.checked,
        max_staleness: maxStale.value, min_reward: minReward.value, quality_not_in: qualityNot.value, quality_in: qualityIn.value }));
    } catch (e) { /* private mode */ }
    return body;
  }
  const el = h("form", { class: "card batch-form", onsubmit: (ev) => { ev.preventDefault(); err.textContent = ""; onPreview(request(), err); } },
    h("div", { class: "form-grid4" },
      field("Channel", channel), field("Recipe", recipe), field("Layout", layout, "trajectory: one row per clean trajectory"),
      field("Groups", groups, "size of the batch, in groups")),
    h("div", { class: "form-grid4" },
      field("Max staleness", maxStale, "policy versions behind"), field("Min reward", minReward),
      field("Quality not in", qualityNot, "comma-separated"), field("Quality in", qualityIn, "comma-separated")),
    h("div", { class: "checks" },
      h("label", {}, trainableOnly, " trainable only"), h("label", {}, rewardPresent, " reward present"),
      h("label", {}, dropZero, " drop zero-variance groups")),
    err,
    h("div", { class: "form-actions" },
      h("button", { class: "btn btn-primary", type: "submit", name: "preview" }, "Preview (dry run)"),
      h("span", { class: "spacer" }),
      field("Export format", format),
      h("button", { class: "btn", type: "button", name: "export", onclick: () => { err.textContent = ""; onExport({ ...request(), format: format.value }, err); } }, "Export")));
  return el;
}

function summaryTiles(sum) {
  const t = (label, v) => h("div", { class: "tile small" }, h("div", { class: "tile-label" }, label), h("div", { class: "tile-value" }, v));
  return h("div", { class: "tiles" },
    t("groups", fmtNum(sum.n_groups)), t("trajectories", fmtNum(sum.n_trajectories)), t("steps", fmtNum(sum.n_steps)),
    t("tokens", fmtNum(sum.n_tokens)), t("response tokens", fmtNum(sum.n_response_tokens)),
    t("reward mean", fmtFloat(sum.reward_mean)), t("policy versions", (sum.policy_versions || []).map((v) => "v" + v).join(", ") || "–"));
}

function excludedTable(excluded) {
  const rows = Object.entries(excluded || {});
  if (!rows.length) return h("div", { class: "muted small" }, "Nothing excluded.");
  return h("table", { class: "table compact", id: "excluded-table" }, h("thead", {}, h("tr", {}, h("th", {}, "reason"), h("th", {}, "count"))),
    h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "num" }, fmtNum(v))))));
}

function groupsTable(groups) {
  if (!groups.length) return h("div", { class: "empty" }, "No ready group matches: nothing would be served now.");
  const rows = [];
  for (const g of groups) {
    g.trajectories.forEach((t, i) => {
      const tokens = (t.steps || []).reduce((a, s) => a + (s.prompt_ids || []).length + (s.response_ids || []).length, 0);
      rows.push(h("tr", { dataset: { trajectoryId: t.trajectory_id, advantage: t.advantage ?? "" }, class: i === 0 ? "group-start" : null },
        h("td", { class: "mono" }, i === 0 ? shortId(g.group_id, 16) : ""),
        h("td", { class: "mono" }, h("a", { href: "#/t/" + encodeURIComponent(t.trajectory_id) }, shortId(t.trajectory_id, 22))),
        h("td", { class: "num" }, fmtFloat(t.reward)),
        h("td", { class: ["num", "advantage", t.advantage > 0 ? "pos" : t.advantage < 0 ? "neg" : null] }, t.advantage === null || t.advantage === undefined ? "–" : fmtFloat(t.advantage, 4)),
        h("td", { class: "num" }, fmtNum((t.steps || []).length)),
        h("td", { class: "num" }, fmtNum(tokens)),
        h("td", {}, badge(t.quality || "unreviewed", "q-" + (t.quality || "unreviewed")))));
    });
  }
  return h("table", { class: "table compact", id: "preview-table" },
    h("thead", {}, h("tr", {}, ["group", "trajectory", "reward", "advantage", "steps", "tokens", "quality"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows));
}

function pairsTable(pairs) {
  if (!pairs || !pairs.length) return null;
  return h("section", { class: "card" }, h("h2", {}, `DPO pairs (${pairs.length})`), h("pre", { class: "json" }, pretty(pairs.slice(0, 50))));
}

function exportResult(res) {
  const href = safeHref(res.download_url);
  return h("section", { class: "card", id: "export-result" },
    h("div", { class: "card-head" }, h("h2", {}, "Export " + String(res.export_id ?? "")),
      href ? h("a", { class: "btn btn-primary", href, download: "", dataset: { testid: "download" } }, "Download") : h("span", { class: "muted" }, "no download link")),
    h("dl", { class: "kv" }, h("dt", {}, "path"), h("dd", { class: "mono" }, String(res.path ?? "–")),
      h("dt", {}, "format"), h("dd", {}, String((res.manifest && res.manifest.format) || "–")),
      h("dt", {}, "content hash"), h("dd", { class: "mono" }, String((res.manifest && res.manifest.content_hash) || "–"))),
    res.manifest && res.manifest.counts ? h("div", { class: "tiles" }, Object.entries(res.manifest.counts).map(([k, v]) =>
      h("div", { class: "tile small" }, h("div", { class: "tile-label" }, k.replace(/_/g, " ")), h("div", { class: "tile-value" }, fmtNum(v))))) : null,
    h("h3", {}, "Manifest"), h("pre", { class: "json", id: "export-manifest" }, pretty(res.manifest)));
}

export function render(root) {
  const out = h("div", { class: "batch-out" });
  async function preview(body, err) {
    replace(out, h("div", { class: "loading" }, "Previewing…"));
    try {
      const res = await postJSON("/batches", { ...body, dry_run: true });
      replace(out,
        h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Preview"),
          h("span", { class: "muted" }, `dry run · recipe ${res.recipe || "none"} · layout ${res.layout} · nothing leased`)),
        summaryTiles(res.summary || {})),
        h("div", { class: "grid-side" },
          h("section", { class: "card" }, h("h2", {}, "Groups and advantages"), groupsTable(res.groups || [])),
          h("section", { class: "card" }, h("h2", {}, "Excluded, and why"), excludedTable(res.excluded),
            h("h3", {}, "Summary"), h("pre", { class: "json" }, pretty(res.summary)))),
        pairsTable(res.pairs));
    } catch (e) { replace(out); err.textContent = e.message; }
  }
  async function doExport(body, err) {
    replace(out, h("div", { class: "loading" }, "Exporting…"));
    const req = { format: body.format, channel: body.channel, filters: body.filters };
    if (body.recipe) req.recipe = body.recipe;
    try {
      const res = await api("/exports", { method: "POST", body: req });
      replace(out, exportResult(res));
      toast("Export written.", "ok");
    } catch (e) {
      replace(out);
      err.textContent = e.status === 404 || e.status === 405 ? "This server has no export endpoint (POST /api/v1/exports)." : e.message;
    }
  }
  replace(root, h("div", { class: "page-head" }, h("h1", {}, "Batch builder"),
    h("span", { class: "muted" }, "Preview what a trainer would get (no lease), then export it with a manifest.")),
  form(preview, doExport), out);
  return null;
}
