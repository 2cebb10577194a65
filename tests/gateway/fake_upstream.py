"""A small, fast, vLLM-shaped fake upstream for fault injection, attribution tests and the benchmark.

Token ids follow a toy "chat template": each message renders as ``[1000 + role] + utf-8 bytes + [1]`` and
the generation prompt is ``[1002]``; an answer's ids are its utf-8 bytes plus ``1`` (end of turn) when it
stops. So re-sent history is an exact extension (continuity ``clean``), like a well-behaved template.

Magic markers in the last message pick a behaviour: ``[[500]]``, ``[[429]]``, ``[[kill]]`` (stream half
of the answer then drop the connection), ``[[slow]]`` (sleep 3 s), ``[[noids]]`` (no token ids),
``[[badids]]`` (one id fewer than usage says), ``[[drip]]`` (0.2 s between streamed chunks). Names queued in
``wrong_shape`` make the next chat calls answer valid JSON of the wrong shape (``misshape``). vLLM's developer
routes used by a policy reload (``/pause``, ``/collective_rpc``, ...) answer like vLLM's, or 404 with
``dev_mode = False`` (a vLLM started without ``VLLM_SERVER_DEV_MODE=1``); every call lands in ``dev_calls``.
Native token routes: SGLang's ``POST /generate`` (``input_ids``; streamed with cumulative ``text``,
``output_ids`` and logprobs, or incremental ids with ``sglang_incremental``) and llama.cpp's ``POST
/completion`` (``prompt: [ids]``; streamed deltas, the last with ``stop: true`` and no ``[DONE]``); both
answer ``gen<seed or prompt length>`` in the toy vocabulary. ``/v1/completions`` answers ``done<i>``, or the
call a forced-call constraint (``structured_outputs``) allows.
Run alone: ``python tests/gateway/fake_upstream.py --port 8123``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import orjson
from aiohttp import web

ROLES = {"system": 0, "user": 1, "assistant": 2, "tool": 3, "developer": 0}
EOT = 1


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def render(messages: list[dict[str, Any]]) -> list[int]:
    ids: list[int] = []
    for m in messages:
        body = text_of(m.get("content"))
        for tc in m.get("tool_calls") or []:
            body += "<tool_call>" + orjson.dumps(
                {"name": tc["function"]["name"], "arguments": orjson.loads(tc["function"]["arguments"] or "{}")},
                option=orjson.OPT_SORT_KEYS).decode() + "</tool_call>"
        ids += [1000 + ROLES.get(m.get("role", "user"), 1), *body.encode(), EOT]
    return ids + [1002]


def logprob(i: int) -> float:
    return -0.05 * ((i % 7) + 1)


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reloaded: list[str] = []
        self.reload_fails: str | None = None  # set: /update_weights_from_disk answers 400 with this message
        self.reload_calls: list[str] = []  # every reload asked for, failed ones included
        self.dev_mode = True  # False: vLLM's developer routes answer 404
        self.dev_calls: list[str] = []  # "<route> <argument>" for each developer route called
        self.health_status = 200
        self.record = True
        self.wrong_shape: list[str] = []  # queued: each chat call pops one and answers it (see misshape)
        self._shape: str | None = None
        self.auth: str | None = None
        self.detokenize_calls = 0
        self.sglang_incremental = False  # streamed /generate: ids and logprobs as deltas (else cumulative)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/generate", self.sglang_generate)
        app.router.add_post("/completion", self.llamacpp_completion)
        app.router.add_post("/update_weights_from_disk", self.reload)
        app.router.add_post("/detokenize", self.detokenize)
        for route in ("/pause", "/collective_rpc", "/reset_prefix_cache", "/update_weight_version", "/resume"):
            app.router.add_post(route, self.dev_route)
        return app

    async def dev_route(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        arg = (body.get("kwargs") or {}).get("weights_path") or body.get("new_version") or request.query.get("mode")
        self.dev_calls.append(f"{request.path} {arg}")
        if not self.dev_mode:
            return web.json_response({"detail": "Not Found"}, status=404)
        if request.path == "/collective_rpc":
            self.reload_calls.append(arg)
            if self.reload_fails is not None:
                return web.json_response({"error": {"message": self.reload_fails, "type": "InternalServerError",
                                                    "code": 500}}, status=500)
            self.reloaded.append(arg)
            return web.json_response({"results": [None]})
        return web.json_response({"success": True})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=self.health_status)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "fake"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def detokenize(self, request: web.Request) -> web.Response:
        """vLLM's wire: ``{"tokens": [ids]}`` → ``{"prompt": text}`` in the toy template's vocabulary (ids < 256
        are bytes, ``1`` ends a turn, ``1000 + role`` opens one); other ids → 400."""
        self.detokenize_calls += 1
        ids = (await request.json()).get("tokens")
        names = {EOT: "<|eot|>", **{1000 + r: f"<|{name}|>" for name, r in ROLES.items() if name != "developer"}}
        if not isinstance(ids, list) or any(not isinstance(i, int) or (i not in names and not 0 <= i < 256)
                                            for i in ids):
            return web.json_response({"error": {"message": "token id outside the vocabulary", "type":
                                                "BadRequestError", "code": 400}}, status=400)
        raw = b"".join(names[i].encode() if i in names else bytes([i]) for i in ids)
        return web.json_response({"prompt": raw.decode("utf-8", "replace")})

    async def reload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.reload_calls.append(body["model_path"])
        if self.reload_fails is not None:
            return web.json_response({"success": False, "message": self.reload_fails}, status=400)
        self.reloaded.append(body["model_path"])
        return web.json_response({"success": True, "message": "reloaded"})

    async def _fault(self, marker: str) -> web.Response | None:
        if "[[500]]" in marker:
            return web.json_response({"error": {"message": "boom", "type": "InternalServerError", "code": 500}},
                                     status=500)
        if "[[429]]" in marker:
            return web.json_response({"error": {"message": "slow down", "type": "RateLimitError", "code": 429}},
                                     status=429)
        if "[[slow]]" in marker:
            await asyncio.sleep(3)
        return None

    def _answer(self, body: dict[str, Any], i: int) -> tuple[str, list[dict[str, Any]] | None, str]:
        msgs = body.get("messages") or []
        last = text_of(msgs[-1].get("content")) if msgs else ""
        tc = body.get("tool_choice")
        if body.get("tools") and (tc == "required" or isinstance(tc, dict)):
            name = tc["function"]["name"] if isinstance(tc, dict) else body["tools"][0]["function"]["name"]
            call = {"id": f"call_{len(msgs)}_{i}", "type": "function",
                    "function": {"name": name, "arguments": '{"expression": "37*3"}'}}
            return "", [call], "tool_calls"
        text = f"echo{i if i else ''}: {last[-40:]}"
        mt = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(mt, int) and mt < len(text.encode()):
            return text.encode()[:mt].decode("utf-8", "ignore"), None, "length"
        return text, None, "stop"

    @staticmethod
    def _ids(text: str, calls: list[dict[str, Any]] | None, finish: str) -> list[int]:
        body = text
        for c in calls or []:
            body += "<tool_call>" + orjson.dumps(
                {"name": c["function"]["name"], "arguments": orjson.loads(c["function"]["arguments"])},
                option=orjson.OPT_SORT_KEYS).decode() + "</tool_call>"
        return [*body.encode(), *([EOT] if finish in ("stop", "tool_calls") else [])]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.auth = request.headers.get("Authorization")
        if self.record:
            self.requests.append(body)
        msgs = body.get("messages") or []
        marker = text_of(msgs[-1].get("content")) if msgs else ""
        fault = await self._fault(marker)
        if fault is not None:
            return fault
        self._shape = self.wrong_shape.pop(0) if self.wrong_shape else None
        prompt = render(msgs)
        n = body.get("n") or 1
        answers = [self._answer(body, i) for i in range(n)]
        ids = [self._ids(*a) for a in answers]
        if "[[badids]]" in marker:
            ids = [x[:-1] for x in ids]
        with_ids = body.get("return_token_ids") and "[[noids]]" not in marker
        if body.get("stream"):
            return await self._stream_chat(request, body, prompt, answers, ids, with_ids, "[[kill]]" in marker,
                                           "[[drip]]" in marker)
        choices = []
        for i, ((text, calls, finish), tids) in enumerate(zip(answers, ids, strict=True)):
            msg: dict[str, Any] = {"role": "assistant", "content": text or None, "reasoning_content": None}
            if calls:
                msg["tool_calls"] = calls
            ch: dict[str, Any] = {"index": i, "message": msg, "finish_reason": finish, "stop_reason": None,
                                  "logprobs": None}
            if body.get("logprobs"):
                ch["logprobs"] = {"content": [{"token": f"t{t}", "logprob": logprob(j), "bytes": None,
                                               "top_logprobs": []} for j, t in enumerate(tids)]}
            if with_ids:
                ch["token_ids"] = tids
            choices.append(ch)
        out: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                               "model": body.get("model"), "choices": choices, "system_fingerprint": "fp_fake",
                               "usage": {"prompt_tokens": len(prompt),
                                         "completion_tokens": sum(len(x) for x in ids) + ("[[badids]]" in marker),
                                         "total_tokens": 0},
                               "kv_transfer_params": None}
        if with_ids:
            out["prompt_token_ids"] = prompt
        misshape(out, self._shape)
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _stream_chat(self, request: web.Request, body: dict[str, Any], prompt: list[int],
                           answers: list[Any], ids: list[list[int]], with_ids: bool, kill: bool,
                           drip: bool = False) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}

        async def send(obj: dict[str, Any]) -> None:
            misshape(obj, self._shape)
            await resp.write(b"data: " + orjson.dumps(obj) + b"\n\n")
        for i, ((text, calls, finish), tids) in enumerate(zip(answers, ids, strict=True)):
            parts = _stream_parts(text, calls, tids)
            for k, (delta, part_ids) in enumerate(parts):
                ch: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": None, "logprobs": None}
                if with_ids:
                    ch["token_ids"] = part_ids
                if body.get("logprobs"):
                    off = sum(len(p[1]) for p in parts[:k])
                    ch["logprobs"] = {"content": [{"token": f"t{t}", "logprob": logprob(off + j)}
                                                  for j, t in enumerate(part_ids)]}
                chunk = {**base, "choices": [ch]}
                if with_ids and i == 0 and k == 0:
                    chunk["prompt_token_ids"] = prompt
                await send(chunk)
                if drip:
                    await asyncio.sleep(0.2)
                if kill and k >= len(parts) // 2:
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
            await send({**base, "choices": [{"index": i, "delta": {}, "finish_reason": finish, "stop_reason": None,
                                             **({"token_ids": []} if with_ids else {})}]})
        so = body.get("stream_options") or {}
        if so.get("include_usage"):
            await send({**base, "choices": [], "usage": {"prompt_tokens": len(prompt),
                                                         "completion_tokens": sum(len(x) for x in ids),
                                                         "total_tokens": 0}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def sglang_generate(self, request: web.Request) -> web.StreamResponse:
        return await sglang_generate(self, request)

    async def llamacpp_completion(self, request: web.Request) -> web.StreamResponse:
        return await llamacpp_completion(self, request)

    async def completions(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if self.record:
            self.requests.append(body)
        p = body.get("prompt")
        prompt = p if isinstance(p, list) and all(isinstance(x, int) for x in p) else list(str(p).encode())
        fault = await self._fault(str(p))
        if fault is not None:
            return fault
        n = body.get("n") or 1
        mt = body.get("max_tokens") or 16
        choices = []
        for i in range(n):
            text = (forced_text(body) or f"done{i}")[:mt]
            tids = [*text.encode(), *([EOT] if len(text) < mt else [])]
            ch: dict[str, Any] = {"index": i, "text": text, "finish_reason": "stop" if len(text) < mt else "length",
                                  "logprobs": None, "stop_reason": None}
            if body.get("logprobs"):
                ch["logprobs"] = {"tokens": [f"t{t}" for t in tids],
                                  "token_logprobs": [logprob(j) for j in range(len(tids))],
                                  "top_logprobs": None, "text_offset": list(range(len(tids)))}
            if body.get("return_token_ids"):
                ch["token_ids"] = tids
                ch["prompt_token_ids"] = prompt
            choices.append(ch)
        out = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
               "choices": choices, "usage": {"prompt_tokens": len(prompt),
                                             "completion_tokens": sum(len(c.get("token_ids") or []) for c in choices),
                                             "total_tokens": 0}}
        return web.Response(body=orjson.dumps(out), content_type="application/json")


def forced_text(body: dict[str, Any]) -> str | None:
    """A forced call on ``/v1/completions`` (vLLM's ``structured_outputs.structural_tag``, gateway/forced.py):
    the call its first tag allows, with the chat route's forced arguments; None when nothing is forced."""
    tag = (body.get("structured_outputs") or {}).get("structural_tag")
    if not isinstance(tag, str):
        return None
    fmt = orjson.loads(tag)["format"]
    head, _, tail = (fmt["elements"][0] if fmt.get("type") == "or" else fmt)["elements"]
    return f'{head["value"]}{{"expression": "37*3"}}{tail["value"]}'


def _native_sample(prompt: list[int], max_new: Any, seed: Any) -> tuple[str, list[int], bool]:
    """The toy answer of the native routes: its text, ids, and whether it stopped (else cut by the limit)."""
    text = f"gen{seed if isinstance(seed, int) else len(prompt)}"
    mt = max_new if isinstance(max_new, int) and max_new >= 0 else 1 << 20
    stopped = len(text) < mt
    text = text[:mt]
    return text, [*text.encode(), *([EOT] if stopped else [])], stopped


async def _sse(request: web.Request, events: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for e in events:
        await resp.write(b"data: " + e + b"\n\n")
    await resp.write_eof()
    return resp


def _sglang_generate(body: dict[str, Any]) -> tuple[list[int], str, list[int], bool]:
    ids = body["input_ids"]
    sp = body.get("sampling_params") or {}
    text, out, stopped = _native_sample(ids, sp.get("max_new_tokens"), sp.get("sampling_seed"))
    return ids, text, out, stopped


def _sglang_meta(prompt: list[int], out: list[int], stopped: bool | None, lp: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"id": "fake", "prompt_tokens": len(prompt), "completion_tokens": len(out),
                            "finish_reason": None if stopped is None else (
                                {"type": "stop", "matched": EOT} if stopped else {"type": "length", "length": len(out)})}
    if lp:
        meta["output_token_logprobs"] = [[logprob(j), t, None] for j, t in enumerate(out)]
    return meta


async def sglang_generate(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if fake.record:
        fake.requests.append(body)
    if not isinstance(body.get("input_ids"), list):
        return web.json_response({"error": {"message": "input_ids required", "code": 400}}, status=400)
    prompt, text, out, stopped = _sglang_generate(body)
    lp = bool(body.get("return_logprob"))
    if not body.get("stream"):
        return web.json_response({"text": text, "output_ids": out, "meta_info": _sglang_meta(prompt, out, stopped, lp)})
    events = []
    for k in range(3, len(out) + 3, 3):
        part = out[:k]
        meta = _sglang_meta(prompt, part, stopped if k >= len(out) else None, lp)
        ids = part
        if fake.sglang_incremental:
            ids = part[k - 3:]
            if lp:
                meta["output_token_logprobs"] = meta["output_token_logprobs"][k - 3:]
        events.append(orjson.dumps({"text": bytes(t for t in part if EOT < t < 256).decode(), "output_ids": ids,
                                    "meta_info": meta}))
    return await _sse(request, [*events, b"[DONE]"])


async def llamacpp_completion(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if fake.record:
        fake.requests.append(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, list):
        return web.json_response({"error": {"message": "prompt must be token ids here", "code": 400}}, status=400)
    text, out, stopped = _native_sample(prompt, body.get("n_predict"), body.get("seed"))
    probs = [{"id": t, "token": chr(t) if t < 256 else "", "logprob": logprob(j), "bytes": [], "top_logprobs": []}
             for j, t in enumerate(out)] if body.get("n_probs") else None
    last = {"content": "", "tokens": [], "stop": True, "stop_type": "eos" if stopped else "limit",
            "stopping_word": "", "tokens_predicted": len(out), "tokens_evaluated": len(prompt), "model": "fake"}
    if not body.get("stream"):
        whole = {**last, "content": text, "tokens": out if body.get("return_tokens") else []}
        if probs is not None:
            whole["completion_probabilities"] = probs
        return web.json_response(whole)
    events = []
    for k in range(0, len(out), 2):
        ev: dict[str, Any] = {"content": bytes(t for t in out[k:k + 2] if EOT < t < 256).decode(), "stop": False,
                              "tokens": out[k:k + 2] if body.get("return_tokens") else []}
        if probs is not None:
            ev["completion_probabilities"] = probs[k:k + 2]
        events.append(orjson.dumps(ev))
    return await _sse(request, [*events, orjson.dumps(last)])


def misshape(obj: dict[str, Any], shape: str | None) -> None:
    """Valid JSON of the wrong shape: ``message_str`` (a choice's message is a string), ``function_str`` (a tool
    call's function is a string), ``delta_list`` (a streamed delta is a list), ``usage_deep`` (``usage`` nested
    100 levels: more than a step can store)."""
    if shape == "usage_deep" and "usage" in obj:
        obj["usage"] = {"deep": orjson.loads(b"[" * 100 + b"]" * 100)}
    for ch in obj.get("choices") or []:
        part = ch.get("message") if "message" in ch else ch.get("delta")
        if shape == "message_str" and "message" in ch:
            ch["message"] = "not an object"
        elif shape == "delta_list" and "delta" in ch:
            ch["delta"] = [ch["delta"]]
        elif shape == "function_str" and isinstance(part, dict):
            for tc in part.get("tool_calls") or []:
                tc["function"] = "calc(37*3)"


def _stream_parts(text: str, calls: list[dict[str, Any]] | None, tids: list[int]) -> list[tuple[dict[str, Any], list[int]]]:
    parts: list[tuple[dict[str, Any], list[int]]] = [({"role": "assistant", "content": ""}, [])]
    if calls:
        c = calls[0]
        args = c["function"]["arguments"]
        parts.append(({"tool_calls": [{"index": 0, "id": c["id"], "type": "function",
                                       "function": {"name": c["function"]["name"], "arguments": ""}}]}, []))
        half = len(args) // 2
        parts.append(({"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]}, tids[: len(tids) // 2]))
        parts.append(({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}, tids[len(tids) // 2:]))
        return parts
    raw = text.encode()
    pos = 0
    for k in range(0, len(raw), 4):
        piece = raw[k:k + 4]
        parts.append(({"content": piece.decode("utf-8", "ignore")}, tids[pos:pos + len(piece)]))
        pos += len(piece)
    if pos < len(tids):
        parts.append(({"content": ""}, tids[pos:]))
    return parts


class FakeUpstreamThread:
    """Runs a FakeUpstream on 127.0.0.1:port in a background thread with its own event loop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.fake = FakeUpstream()
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(self.fake.app(), access_log=None, shutdown_timeout=0.5)
        self.loop.run_until_complete(self._runner.setup())
        self.loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> FakeUpstreamThread:
        self.thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    fake = FakeUpstream()
    fake.record = False
    web.run_app(fake.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
