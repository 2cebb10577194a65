// One EventSource for the whole page; views subscribe to kinds and get debounced callbacks.

const listeners = new Set();
let source = null;
let state = "connecting";
const stateListeners = new Set();

function setState(s) {
  if (s === state) return;
  state = s;
  for (const fn of stateListeners) fn(s);
}

export function liveState() { return state; }
export function onLiveState(fn) { stateListeners.add(fn); fn(state); return () => stateListeners.delete(fn); }

const KINDS = ["step", "trajectory", "group", "curation", "reward", "batch", "policy", "feedback"];

export function connectLive(onAuthLost) {
  if (source) source.close();
  source = new EventSource("/api/v1/events", { withCredentials: true });
  setState("connecting");
  source.onopen = () => setState("live");
  source.onerror = async () => {
    setState("reconnecting");
    try {
      const r = await fetch("/api/v1/session", { credentials: "same-origin" });
      const s = await r.json();
      if (s.keys_required && !s.authenticated) { source.close(); setState("signed out"); onAuthLost(); }
    } catch (e) { /* server down: EventSource retries by itself */ }
  };
  for (const kind of KINDS) {
    source.addEventListener(kind, (ev) => {
      let data = null;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      for (const l of listeners) if (!l.kinds || l.kinds.has(kind)) l.push(kind, data);
    });
  }
}

export function disconnectLive() { if (source) source.close(); source = null; setState("off"); }

// subscribe(kinds, fn, ms): fn(events) at most every ms milliseconds with the events gathered meanwhile.
export function subscribe(kinds, fn, ms = 500) {
  const l = { kinds: kinds ? new Set(kinds) : null, pending: [], timer: null, last: 0 };
  l.push = (kind, data) => {
    l.pending.push({ kind, data });
    if (l.timer) return;
    const wait = Math.max(0, ms - (Date.now() - l.last));
    l.timer = setTimeout(() => {
      l.timer = null; l.last = Date.now();
      const evs = l.pending; l.pending = [];
      try { fn(evs); } catch (e) { console.error(e); }
    }, wait);
  };
  listeners.add(l);
  return () => { listeners.delete(l); if (l.timer) clearTimeout(l.timer); };
}
