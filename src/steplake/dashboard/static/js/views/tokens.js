// Token view of one step: decoded tokens (ids on hover), logprob shading, the prefix shared with the
// previous step and the fork point.
import { getJSON } from "../api.js";
import { h, replace, fmtFloat, plural } from "../dom.js";

const CHUNK = 3000;

function shown(text) {
  // Make whitespace visible without changing the text itself.
  return text.replace(/\n/g, "↵\n").replace(/\t/g, "→\t");
}

function tok(text, id, pos, kind, logprob) {
  const span = h("span", { class: ["tok", kind, text.trim() === "" ? "ws" : null], dataset: { id, pos } });
  span.textContent = shown(text);
  let title = `#${pos} · id ${id}`;
  if (logprob !== undefined && logprob !== null) {
    const p = Math.exp(logprob);
    title += ` · logprob ${fmtFloat(logprob, 4)} · p ${fmtFloat(p, 3)}`;
    // low probability = stronger shade
    span.style.backgroundColor = `rgba(234, 88, 12, ${Math.min(0.85, (1 - p) * 0.85).toFixed(3)})`;
    span.dataset.logprob = String(logprob);
  }
  span.title = title;
  return span;
}

function tokenRun(texts, ids, start, kind, logprobs) {
  const box = h("span", { class: "tok-run" });
  const renderRange = (from, to) => {
    const frag = document.createDocumentFragment();
    for (let i = from; i < to; i++) frag.appendChild(tok(texts[i] ?? `<${ids[i]}>`, ids[i], start + i, kind, logprobs ? logprobs[i] : undefined));
    return frag;
  };
  box.appendChild(renderRange(0, Math.min(ids.length, CHUNK)));
  if (ids.length > CHUNK) {
    const more = h("button", { class: "btn btn-small", type: "button", onclick: () => { more.replaceWith(renderRange(CHUNK, ids.length)); } },
      `show ${ids.length - CHUNK} more tokens`);
    box.appendChild(more);
  }
  return box;
}

function promptView(step, prev, texts, ids) {
  const L = Math.min(step.shared_prefix_len || 0, ids.length);
  const parts = [];
  if (prev && L > 0) {
    const sharedBox = h("span", { class: "shared-wrap" });
    const toggle = h("button", { class: "shared-toggle", type: "button", dataset: { shared: L }, onclick: () => {
      toggle.replaceWith(h("span", { class: "shared-block", title: `shared with step ${prev.step_index}` }, tokenRun(texts.slice(0, L), ids.slice(0, L), 0, "shared")));
    } }, `⋯ ${plural(L, "token")} shared with step ${prev.step_index} (show)`);
    sharedBox.appendChild(toggle);
    parts.push(sharedBox);
  } else if (L > 0) {
    parts.push(tokenRun(texts.slice(0, L), ids.slice(0, L), 0, "shared"));
  }
  if (step.continuity === "fork" || step.continuity === "realigned") {
    parts.push(h("span", { class: ["fork-mark", "fm-" + step.continuity], dataset: { pos: L }, title: `${step.continuity} at token ${L}` },
      (step.continuity === "fork" ? "FORK at token " : "REALIGNED at token ") + L));
  }
  parts.push(tokenRun(texts.slice(L), ids.slice(L), L, "prompt"));
  return parts;
}

export function tokenView(step, prev) {
  const box = h("div", { class: "token-view" }, h("div", { class: "muted small" }, "Decoding tokens…"));
  getJSON("/dashboard/tokens", { step_id: step.step_id }).then((res) => {
    const respIds = res.response_ids;
    replace(box,
      h("div", { class: "token-legend" },
        h("span", {}, res.tokenizer ? "decoded with " + res.tokenizer : "no tokenizer available: ids shown as <id>"),
        h("span", { class: "legend-item" }, h("span", { class: "swatch k-shared" }), "shared prefix"),
        h("span", { class: "legend-item" }, h("span", { class: "swatch k-prompt" }), "new prompt tokens"),
        h("span", { class: "legend-item" }, h("span", { class: "swatch k-response" }), "response (darker = lower probability)"),
        h("span", { class: "muted" }, "hover a token for its id and logprob"),
        res.truncated ? h("span", { class: "badge b-warn" }, "truncated") : null),
      h("div", { class: "tokens mono", dataset: { testid: "tokens" } },
        h("div", { class: "tok-section" }, h("div", { class: "tok-label" }, `prompt · ${plural(res.prompt_ids.length, "token")}`), promptView(step, prev, res.prompt, res.prompt_ids)),
        h("div", { class: "tok-section" }, h("div", { class: "tok-label" }, `response · ${plural(respIds.length, "token")} (${step.token_source})`),
          tokenRun(res.response, respIds, 0, "response", res.response_logprobs)),
      ));
  }).catch((e) => replace(box, h("div", { class: "error-box" }, e.message)));
  return box;
}
