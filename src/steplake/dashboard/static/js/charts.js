// Small SVG charts built with createElementNS (no library, no HTML strings).
import { h, s, fmtNum, fmtFloat, plural } from "./dom.js";

const W = 560;
const H = 170;
const PAD = { l: 40, r: 8, t: 10, b: 22 };

function axisY(max, plotH) {
  const out = [];
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + plotH - f * plotH;
    out.push(s("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid" }));
    out.push(s("text", { x: PAD.l - 6, y: y, "text-anchor": "end", "dominant-baseline": "middle", class: "tick" },
      fmtNum(Math.round(max * f * 100) / 100)));
  }
  return out;
}

function clock(t) {
  const d = new Date(t * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

// points: [{t, steps, forks}] ; values are per bucket; perMinute scales to a rate.
export function timeSeries(points, perMinute) {
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const rates = points.map((p) => p.steps * perMinute);
  const max = Math.max(1, ...rates);
  const bw = plotW / Math.max(1, points.length);
  const bars = points.map((p, i) => {
    const v = rates[i];
    const bh = (v / max) * plotH;
    const fh = ((p.forks * perMinute) / max) * plotH;
    const x = PAD.l + i * bw;
    const g = s("g", {},
      s("rect", { x: x + 0.5, y: PAD.t + plotH - bh, width: Math.max(1, bw - 1), height: bh, class: p.estimated ? "bar bar-est" : "bar" }),
      fh > 0 ? s("rect", { x: x + 0.5, y: PAD.t + plotH - fh, width: Math.max(1, bw - 1), height: fh, class: "bar-fork" }) : null,
      s("title", {}, p.estimated ? `${clock(p.t)}  ≈${fmtFloat(v, 1)} steps/min (estimated from the step sequence)`
        : `${clock(p.t)}  ${fmtFloat(v, 1)} steps/min  (${plural(p.steps, "step")}, ${plural(p.forks, "fork")}, ${plural(p.tokens, "token")})`));
    return g;
  });
  const labels = [];
  const every = Math.max(1, Math.ceil(points.length / 6));
  points.forEach((p, i) => {
    if (i % every === 0) labels.push(s("text", { x: PAD.l + i * bw + bw / 2, y: H - 6, "text-anchor": "middle", class: "tick" }, clock(p.t)));
  });
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "steps per minute" },
    ...axisY(max, plotH), ...bars, ...labels);
}

export function histogram(hist) {
  const bins = hist.bins || [];
  if (!bins.length) return h("div", { class: "empty" }, "No rewards yet.");
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const max = Math.max(1, ...bins.map((b) => b.count));
  const bw = plotW / bins.length;
  const bars = bins.map((b, i) => {
    const bh = (b.count / max) * plotH;
    return s("g", {},
      s("rect", { x: PAD.l + i * bw + 0.5, y: PAD.t + plotH - bh, width: Math.max(1, bw - 1), height: bh, class: "bar bar-reward" }),
      s("title", {}, `[${fmtFloat(b.lo)}, ${fmtFloat(b.hi)}): ${b.count}`));
  });
  const labels = [
    s("text", { x: PAD.l, y: H - 6, "text-anchor": "start", class: "tick" }, fmtFloat(hist.min, 2)),
    s("text", { x: W - PAD.r, y: H - 6, "text-anchor": "end", class: "tick" }, fmtFloat(hist.max, 2)),
  ];
  if (hist.mean !== null && hist.max > hist.min) {
    const x = PAD.l + ((hist.mean - hist.min) / (hist.max - hist.min)) * plotW;
    labels.push(s("line", { x1: x, x2: x, y1: PAD.t, y2: PAD.t + plotH, class: "mean-line" }, s("title", {}, "mean " + fmtFloat(hist.mean, 3))));
  }
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "reward distribution" },
    ...axisY(max, plotH), ...bars, ...labels);
}

// rows: [{label, count, kind?}] → horizontal bars relative to the largest (or `total`).
export function hbars(rows, total) {
  const max = Math.max(1, total || 0, ...rows.map((r) => r.count));
  return h("div", { class: "hbars" }, rows.map((r) => h("div", { class: "hbar-row", dataset: { stage: r.label } },
    h("span", { class: "hbar-label" }, r.label),
    h("span", { class: "hbar-track" },
      h("span", { class: ["hbar-fill", r.kind ? "k-" + r.kind : null], style: { width: (100 * r.count / max).toFixed(2) + "%" } })),
    h("span", { class: "hbar-value" }, fmtNum(r.count),
      total ? h("span", { class: "muted" }, " " + (100 * r.count / Math.max(1, total)).toFixed(0) + "%") : null))));
}

// parts: [{label, count, kind}] → one stacked bar with a legend.
export function stacked(parts) {
  const total = parts.reduce((a, p) => a + p.count, 0);
  return h("div", { class: "stacked" },
    h("div", { class: "stacked-bar" }, parts.filter((p) => p.count > 0).map((p) =>
      h("span", { class: ["seg", "k-" + p.kind], style: { width: (100 * p.count / Math.max(1, total)) + "%" }, title: `${p.label}: ${p.count}` }))),
    h("div", { class: "legend" }, parts.map((p) => h("span", { class: "legend-item" },
      h("span", { class: ["swatch", "k-" + p.kind] }), p.label + " ", h("b", {}, fmtNum(p.count)),
      h("span", { class: "muted" }, total ? ` (${(100 * p.count / total).toFixed(1)}%)` : "")))));
}

// versions: [{version, reward: {n, mean, std, se}}] → mean reward per policy version (oldest left), a dot per
// version with a ±std bar; versions without a reward are left out. The reward curve of a training loop.
export function rewardByVersion(versions) {
  const pts = versions.filter((v) => v.reward && v.reward.n > 0).sort((a, b) => a.version - b.version);
  if (!pts.length) return h("div", { class: "empty" }, "No rewarded trajectories yet.");
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  let lo = Math.min(...pts.map((p) => p.reward.mean - p.reward.std));
  let hi = Math.max(...pts.map((p) => p.reward.mean + p.reward.std));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const y = (v) => PAD.t + plotH - ((v - lo) / (hi - lo)) * plotH;
  const step = plotW / pts.length;
  const x = (i) => PAD.l + step * i + step / 2;
  const ticks = [0, 0.5, 1].map((f) => {
    const v = lo + f * (hi - lo);
    return [s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: PAD.l - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle", class: "tick" }, fmtFloat(v, 2))];
  }).flat();
  const line = s("polyline", { class: "reward-line", points: pts.map((p, i) => `${x(i)},${y(p.reward.mean)}`).join(" ") });
  const marks = pts.map((p, i) => s("g", { class: "reward-point", dataset: { version: p.version } },
    s("line", { x1: x(i), x2: x(i), y1: y(p.reward.mean - p.reward.std), y2: y(p.reward.mean + p.reward.std), class: "reward-err" }),
    s("circle", { cx: x(i), cy: y(p.reward.mean), r: 3.5, class: "reward-dot" }),
    s("title", {}, `v${p.version}: mean ${fmtFloat(p.reward.mean, 3)} ± ${fmtFloat(p.reward.std, 3)} (${plural(p.reward.n, "trajectory", "trajectories")})`)));
  const every = Math.max(1, Math.ceil(pts.length / 10));
  const labels = pts.map((p, i) => (i % every === 0
    ? s("text", { x: x(i), y: H - 6, "text-anchor": "middle", class: "tick" }, "v" + p.version) : null)).filter(Boolean);
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "reward by policy version" },
    ...ticks, line, ...marks, ...labels);
}
