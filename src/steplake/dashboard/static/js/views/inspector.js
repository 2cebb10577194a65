// Inspector: one trajectory as a conversation, step by step, with a token view per step and curation.
import { getJSON } from "../api.js";
import { h, replace, fmtNum, fmtFloat, fmtTime, shortId, badge, pretty, plural } from "../dom.js";
import { subscribe } from "../live.js";
import { curationForm, historyList, feedbackBox, tagChips, modal } from "../curation.js";
import { tokenView } from "./tokens.js";

function contentText(content) {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p === "object")
      ? (typeof p.text === "string" ? p.text : (p.type ? `[${p.type}]` : pretty(p))) : String(p)).join("");
  }
  return pretty(content);
}

function argsText(args) {
  if (typeof args === "string") {
    try { return pretty(JSON.parse(args)); } catch (e) { return args; }
  }
  return pretty(args);
}

function toolCalls(calls) {
  if (!Array.isArray(calls) || !calls.length) return null;
  return h("div", { class: "tool-calls" }, calls.map((c) => {
    const fn = (c && c.function) || c || {};
    return h("div", { class: "tool-call" },
      h("div", { class: "tool-head" }, h("span", { class: "tool-icon" }, "ƒ"), h("b", { class: "mono" }, String(fn.name ?? "(unnamed)")),
        c && c.id ? h("span", { class: "muted mono small" }, " " + String(c.id)) : null),
      h("pre", { class: "tool-args" }, argsText(fn.arguments ?? fn.input ?? c.input ?? "")));
  }));
}

function message(m) {
  const role = String((m && m.role) || "?");
  return h("div", { class: ["msg", "role-" + role.replace(/[^a-z_]/gi, "")] },
    h("div", { class: "msg-role" }, role, m && m.name ? h("span", { class: "muted" }, " " + String(m.name)) : null,
      m && m.tool_call_id ? h("span", { class: "muted mono small" }, " ← " + String(m.tool_call_id)) : null),
    contentText(m && m.content) ? h("div", { class: "msg-text" }, contentText(m.content)) : null,
    m && m.reasoning_content ? h("details", { class: "reasoning" }, h("summary", {}, "reasoning"), h("div", { class: "msg-text" }, String(m.reasoning_content))) : null,
    toolCalls(m && m.tool_calls));
}

function sharedMessageCount(prev, cur) {
  if (!prev || !Array.isArray(prev.messages) || !Array.isArray(cur.messages)) return 0;
  let n = 0;
  while (n < prev.messages.length && n < cur.messages.length
    && JSON.stringify(prev.messages[n]) === JSON.stringify(cur.messages[n])) n++;
  return n;
}

function tokenCount(step, side) {
  const n = step[side + "_len"];
  return typeof n === "number" ? n : (step[side + "_ids"] || []).length;
}

async function stepsOf(id) {
  // Steps without their token ids (fields=meta): a long trajectory stays light; the token view loads ids.
  let items = [];
  let cursor = null;
  do {
    const page = await getJSON("/steps", { trajectory_id: id, fields: "meta", limit: 1000, cursor });
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 20000);
  return items.sort((a, b) => a.step_index - b.step_index);
}

function continuityBanner(step, prev) {
  const c = step.continuity;
  if (c !== "fork" && c !== "realigned") return null;
  const parentLen = prev ? tokenCount(prev, "prompt") + tokenCount(prev, "response") : null;
  const L = step.shared_prefix_len ?? 0;
  const text = c === "fork"
    ? `This prompt does not extend step ${prev ? prev.step_index : "?"}. It shares ${L} of ${parentLen === null || parentLen === undefined ? "?" : plural(parentLen, "token")} of the previous prompt + response, then diverges (re-rendered template, dropped reasoning, edited history…).`
    : `The prompt re-tokenizes the last ${parentLen !== null ? plural(parentLen - L, "token") : "? tokens"} of step ${prev ? prev.step_index : "?"}; the shared prefix is ${plural(L, "token")}.`;
  return h("div", { class: ["banner", "banner-" + c], dataset: { continuity: c } }, h("b", {}, c === "fork" ? "Fork." : "Realigned."), " ", text);
}

// How the step's prompt was built (--prompt-mode): "tokens" (rendered or bridged from the sampled ids) or
// "chat" with the reason it did not take the token path; steps from before prompt modes show nothing.
function promptMode(step) {
  const prov = step.provenance || {};
  const mode = prov.prompt_mode;
  if (typeof mode !== "string") return null;
  const reason = typeof prov.prompt_mode_reason === "string" ? prov.prompt_mode_reason : "";
  const label = mode === "tokens" ? `tokens${prov.prompt_build ? " · " + prov.prompt_build : ""}` : mode;
  const title = mode === "tokens" ? `prompt built from token ids (${prov.prompt_build || "?"}, renderer ${prov.renderer || "?"})` : `chat mode: ${reason || "no reason recorded"}`;
  return h("span", { class: "prompt-mode", dataset: { promptMode: mode }, title },
    badge(label, mode === "tokens" ? "good" : "warn"),
    mode !== "tokens" && reason ? h("span", { class: "prompt-reason" }, reason) : null);
}

function conversation(step, prev) {
  const shared = sharedMessageCount(prev, step);
  const msgs = Array.isArray(step.messages) ? step.messages : [];
  const resp = step.response || {};
  return h("div", { class: "conversation" },
    h("div", { class: "section-label" }, "State · prompt messages"),
    shared ? h("details", { class: "shared-msgs" }, h("summary", {}, `${shared} earlier message(s) unchanged from step ${prev.step_index}`),
      msgs.slice(0, shared).map(message)) : null,
    msgs.slice(shared).map(message),
    !msgs.length ? h("div", { class: "muted small" }, "No chat messages recorded (token-in/token-out step).") : null,
    h("div", { class: "section-label" }, "Action · response"),
    h("div", { class: "msg role-assistant action" },
      h("div", { class: "msg-role" }, "assistant", step.finish_reason ? h("span", { class: "muted" }, " · " + String(step.finish_reason)) : null),
      resp.reasoning ? h("details", { class: "reasoning" }, h("summary", {}, "reasoning"), h("div", { class: "msg-text" }, String(resp.reasoning))) : null,
      contentText(resp.content) ? h("div", { class: "msg-text" }, contentText(resp.content)) : null,
      toolCalls(resp.tool_calls),
      !resp.content && !resp.tool_calls && !resp.reasoning ? h("div", { class: "muted small" }, "No response message recorded.") : null));
}

function kvTable(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("div", { class: "muted small" }, "none");
  return h("table", { class: "table kv-table" }, h("tbody", {}, entries.map(([k, v]) => h("tr", {},
    h("th", { class: "mono" }, k), h("td", { class: "mono" }, typeof v === "string" ? v : pretty(v))))));
}

function details(step, onChanged) {
  const cur = step.curation || {};
  const facts = {
    step_id: step.step_id, parent_step_id: step.parent_step_id, continuity: step.continuity,
    shared_prefix_len: step.shared_prefix_len, token_source: step.token_source, model: step.model,
    finish_reason: step.finish_reason, latency_ms: step.latency_ms, policy_version: step.policy_version,
    reward: step.reward, created_at: fmtTime(step.created_at),
  };
  const prov = step.provenance || {};
  if (prov.prompt_mode) {
    facts.prompt_mode = prov.prompt_mode;
    if (prov.prompt_mode_reason) facts.prompt_mode_reason = prov.prompt_mode_reason;
  }
  return h("div", { class: "details-grid" },
    h("div", {}, h("h3", {}, "Step"), kvTable(facts)),
    h("div", {}, h("h3", {}, "Metadata"), kvTable(step.metadata)),
    h("div", {}, h("h3", {}, "Provenance"), kvTable(step.provenance)),
    h("div", {}, h("h3", {}, "Sampling and usage"), kvTable({ ...(step.sampling || {}), ...(step.usage ? { usage: step.usage } : {}) })),
    h("div", {}, h("h3", {}, "Step curation"),
      h("div", {}, badge(cur.quality || "unreviewed", "q-" + (cur.quality || "unreviewed")), " ",
        cur.trainable === false ? badge("not trainable", "bad") : badge("trainable", "good"), " ", tagChips(cur.tags)),
      cur.note ? h("div", { class: "note-text" }, cur.note) : null,
      h("button", { class: "btn", type: "button", name: "curate-step", onclick: async () => {
        const history = await historyList(step.step_id);
        const close = modal("Curate step " + shortId(step.step_id, 20), h("div", {},
          curationForm({ target: { step_ids: [step.step_id] }, current: cur, onDone: () => { close(); onChanged(); } }),
          h("h3", {}, "Feedback on this step"), feedbackBox({ step_id: step.step_id }),
          h("h3", {}, "Curation history of this step"), history));
      } }, "Curate step…")),
    step.tools ? h("div", {}, h("h3", {}, "Tools offered"), h("pre", { class: "json" }, pretty(step.tools))) : null);
}

function stepCard(step, prev, onChanged, openTab) {
  const body = h("div", { class: "step-body" });
  const tabs = {};
  const show = (name) => {
    for (const [k, b] of Object.entries(tabs)) b.classList.toggle("active", k === name);
    if (name === "conversation") replace(body, conversation(step, prev));
    else if (name === "tokens") replace(body, tokenView(step, prev));
    else replace(body, details(step, onChanged));
  };
  for (const name of ["conversation", "tokens", "details"]) {
    tabs[name] = h("button", { class: "tab", type: "button", dataset: { tab: name }, onclick: () => show(name) }, name);
  }
  const np = tokenCount(step, "prompt");
  const nr = tokenCount(step, "response");
  const card = h("section", { class: ["card", "step", "step-" + step.continuity], id: "step-" + step.step_index, dataset: { stepId: step.step_id, continuity: step.continuity } },
    h("div", { class: "step-head" },
      h("span", { class: "step-index" }, "Step " + step.step_index),
      badge(step.continuity, step.continuity),
      promptMode(step),
      h("span", { class: "facts" },
        `v${step.policy_version}`, " · ", step.latency_ms != null ? `${fmtFloat(step.latency_ms, 0)} ms` : "– ms", " · ",
        `${fmtNum(np)} prompt + ${fmtNum(nr)} response tokens`,
        step.reward != null ? ` · reward ${fmtFloat(step.reward)}` : "",
        (step.curation && step.curation.trainable === false) ? h("span", {}, " · ", badge("not trainable", "bad")) : null),
      h("span", { class: "tabs" }, Object.values(tabs))),
    continuityBanner(step, prev),
    body);
  show(openTab || "conversation");
  return card;
}

function rewardPanel(t, rewards) {
  const comps = Object.entries(t.reward_components || {});
  return h("div", { class: "reward-panel" },
    h("div", { class: "big-number", dataset: { reward: t.reward ?? "" } }, fmtFloat(t.reward)),
    comps.length ? h("table", { class: "table compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "component"), h("th", {}, "value"), h("th", {}, "version"))),
      h("tbody", {}, comps.map(([name, c]) => h("tr", {},
        h("td", { class: "mono" }, name),
        h("td", { class: "num" }, fmtFloat(c && typeof c === "object" ? c.value : c)),
        h("td", { class: "muted" }, c && typeof c === "object" ? String(c.version ?? "") : "")))))
      : h("div", { class: "muted small" }, "No reward components."),
    rewards.length ? h("details", { class: "small" }, h("summary", {}, plural(rewards.length, "reward record")),
      h("pre", { class: "json" }, pretty(rewards))) : null);
}

export function render(root, params) {
  const id = params.id;
  let alive = true;
  const openTabs = {};
  async function load() {
    const [t, steps, rewards] = await Promise.all([
      getJSON("/trajectories/" + encodeURIComponent(id), { steps: false }),
      stepsOf(id),
      getJSON("/rewards", { trajectory_id: id }).then((r) => r.items).catch(() => []),
    ]);
    if (!alive) return;
    for (const el of root.querySelectorAll(".step")) {
      const active = el.querySelector(".tab.active");
      if (active) openTabs[el.dataset.stepId] = active.dataset.tab;
    }
    const cur = t.curation || {};
    const pv = t.policy_versions || [];
    const header = h("div", { class: "card traj-head" },
      h("div", { class: "traj-title" },
        h("a", { href: "#/trajectories", class: "muted" }, "← Trajectories"),
        h("h1", { class: "mono" }, t.trajectory_id),
        badge(t.status, t.status),
        cur.trainable === false ? badge("not trainable", "bad") : null,
        badge(cur.quality || "unreviewed", "q-" + (cur.quality || "unreviewed")), tagChips(cur.tags)),
      h("dl", { class: "kv inline" },
        h("dt", {}, "channel"), h("dd", {}, t.channel),
        h("dt", {}, "group"), h("dd", { class: "mono" }, h("a", { href: "#/trajectories?group_id=" + encodeURIComponent(t.group_id) }, shortId(t.group_id, 24))),
        h("dt", {}, "agent"), h("dd", {}, t.metadata && t.metadata.agent != null ? String(t.metadata.agent) : "–"),
        h("dt", {}, "steps"), h("dd", {}, String(t.n_steps)),
        h("dt", {}, "tokens"), h("dd", {}, fmtNum(t.n_tokens)),
        h("dt", {}, "policy"), h("dd", {}, pv.length ? (pv[0] === pv[1] ? "v" + pv[0] : `v${pv[0]}–v${pv[1]}`) : "–"),
        h("dt", {}, "continuity"), h("dd", {}, t.n_fork ? badge(plural(t.n_fork, "fork"), "fork") : null, t.n_realigned ? badge(`${t.n_realigned} realigned`, "realigned") : null, !t.n_fork && !t.n_realigned ? badge("clean", "clean") : null),
        h("dt", {}, "created"), h("dd", {}, fmtTime(t.created_at)),
        h("dt", {}, "completed"), h("dd", {}, fmtTime(t.completed_at))),
      cur.note ? h("div", { class: "note-text" }, "note: ", cur.note) : null,
      steps.length > 1 ? h("div", { class: "step-strip", "aria-label": "steps" }, h("span", { class: "muted small" }, "jump to step"),
        steps.map((s) => h("button", { type: "button", class: ["strip-step", "k-" + s.continuity], title: `step ${s.step_index}: ${s.continuity}`,
          onclick: () => { const el = document.getElementById("step-" + s.step_index); if (el) el.scrollIntoView({ behavior: "smooth", block: "start" }); } },
        String(s.step_index)))) : null);
    const stepsBox = h("div", { class: "steps" }, steps.length ? steps.map((s, i) => stepCard(s, i ? steps[i - 1] : null, reload,
      openTabs[s.step_id] || (params.tab && params.step === s.step_id ? params.tab : null))) : h("div", { class: "card empty" }, "No steps yet."));
    const side = h("aside", { class: "side" },
      h("section", { class: "card" }, h("h2", {}, "Reward"), rewardPanel(t, rewards)),
      h("section", { class: "card" }, h("h2", {}, "Curate trajectory"),
        curationForm({ target: { trajectory_ids: [t.trajectory_id] }, current: cur, onDone: reload })),
      h("section", { class: "card" }, h("h2", {}, "Feedback"), feedbackBox({ trajectory_id: t.trajectory_id })),
      h("section", { class: "card" }, h("h2", {}, "Curation history"), await historyList(t.trajectory_id)),
      h("section", { class: "card" }, h("h2", {}, "Metadata"), kvTable(t.metadata)));
    if (!alive) return;
    const scrollY = window.scrollY;
    replace(root, header, h("div", { class: "inspector" }, stepsBox, side));
    window.scrollTo(0, scrollY);
  }
  function editing() {
    const a = document.activeElement;
    return a && root.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName) && a.value !== "" && a.type !== "checkbox";
  }
  function reload() { load().catch((e) => replace(root, h("div", { class: "error-box" }, e.message))); }
  reload();
  const unsub = subscribe(["step", "trajectory", "curation", "reward", "feedback"], (evs) => {
    const mine = evs.some((e) => {
      const d = e.data || {};
      return d.trajectory_id === id || (Array.isArray(d.trajectory_ids) && d.trajectory_ids.includes(id))
        || (e.kind === "curation" && Array.isArray(d.step_ids) && d.step_ids.length);
    });
    if (mine && !editing()) reload();
  }, 700);
  return () => { alive = false; unsub(); };
}
