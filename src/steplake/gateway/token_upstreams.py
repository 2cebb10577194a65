"""Token prompts to each kind of upstream: the token path builds one ``/v1/completions`` request (prompt ids,
``return_token_ids``, logprobs, sampling fields; see ``token_chat.completion_body``) and reads one
``/v1/completions`` answer. vLLM and the embedded model take it as it is; SGLang and llama.cpp get their
native token routes, mapped both ways here:

- SGLang ``POST /generate``: ``{input_ids, sampling_params: {max_new_tokens, temperature, top_p, top_k,
  min_p, stop, n, sampling_seed, penalties...}, return_logprob, top_logprobs_num, stream}`` → ``{text,
  output_ids, meta_info: {finish_reason: {type, matched}, prompt_tokens, completion_tokens,
  output_token_logprobs: [[logprob, id, text], ...]}}``. Streamed: one
  such object a ``data:`` line (text cumulative; ids and logprobs cumulative or incremental, told apart by
  ``completion_tokens``), then ``[DONE]``.
- llama.cpp ``POST /completion``: ``{prompt: [ids], n_predict, n_probs, return_tokens: true, cache_prompt,
  temperature, top_p, top_k, min_p, seed, stop, repeat_penalty, ...}`` → ``{content, tokens, stop_type:
  eos|word|limit, stopping_word, tokens_predicted, tokens_evaluated, completion_probabilities: [{id,
  logprob, ...}]}``. Streamed: ``data:`` lines with ``content`` and ``tokens`` deltas, the last with
  ``stop: true`` (no ``[DONE]``).

``n`` > 1 is n requests of one choice each (each its own ``seed`` + i when a seed is given), not streamed.

Either answer becomes a ``/v1/completions`` answer or chunk (``choices[].text``, ``token_ids``,
``prompt_token_ids`` = the ids sent, ``logprobs.token_logprobs``, ``finish_reason`` ``stop``/``length``,
``usage``), so the rest of the token path does not know which server sampled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..types import Json
from ..upstreams.base import Upstream, UpstreamFailure
from ..upstreams.openai_compat import UpstreamClient, sse_events
from .shape import stream_payload

NATIVE_KINDS = ("sglang", "llamacpp")
ROUTES = {"sglang": "/generate", "llamacpp": "/completion"}
_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
             "repetition_penalty")


def native_body(kind: str, cb: Json) -> Json:
    """The native request for a ``/v1/completions`` token request ``cb``."""
    stream = bool(cb.get("stream"))
    k = int(cb.get("logprobs") or 0)
    if kind == "sglang":
        sp: Json = {key: cb[key] for key in _SAMPLING if cb.get(key) is not None}
        if cb.get("max_tokens") is not None:
            sp["max_new_tokens"] = cb["max_tokens"]
        for src, dst in (("stop", "stop"), ("n", "n"), ("seed", "sampling_seed"), ("logit_bias", "logit_bias")):
            if cb.get(src) is not None:
                sp[dst] = cb[src]
        out: Json = {"input_ids": cb["prompt"], "sampling_params": sp, "return_logprob": True,
                     "logprob_start_len": -1, "stream": stream}
        if k:
            out["top_logprobs_num"] = k
        return out
    body: Json = {"prompt": cb["prompt"], "n_predict": cb.get("max_tokens") if cb.get("max_tokens") is not None else -1,
                  "n_probs": max(k, 1), "return_tokens": True, "cache_prompt": True, "stream": stream}
    for key in _SAMPLING:
        if cb.get(key) is not None:
            body["repeat_penalty" if key == "repetition_penalty" else key] = cb[key]
    if cb.get("seed") is not None:
        body["seed"] = cb["seed"]
    if cb.get("stop") is not None:
        body["stop"] = [cb["stop"]] if isinstance(cb["stop"], str) else cb["stop"]
    if isinstance(cb.get("logit_bias"), dict):
        body["logit_bias"] = [[int(t), v] for t, v in cb["logit_bias"].items() if str(t).lstrip("-").isdigit()]
    return body


# ---- whole answers -----------------------------------------------------------------------------------------

def _ids(v: Any, what: str) -> list[int]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise UpstreamFailure(502, f"upstream answered no token ids ({what})")
    return v


def _meta(d: Json) -> Json:
    m = d.get("meta_info")
    return m if isinstance(m, dict) else {}


def _sglang_finish(meta: Json) -> tuple[str, Any]:
    fr = meta.get("finish_reason")
    kind = fr.get("type") if isinstance(fr, dict) else fr
    if kind == "abort":
        msg = fr.get("message") if isinstance(fr, dict) else None
        raise UpstreamFailure(502, f"upstream aborted the generation: {msg or 'no reason given'}")
    return ("length" if kind == "length" else "stop"), (fr.get("matched") if isinstance(fr, dict) else None)


def _sglang_logprobs(meta: Json) -> list[float] | None:
    lps = meta.get("output_token_logprobs")
    if not isinstance(lps, list):
        return None
    return [e[0] if isinstance(e, list) and e else e for e in lps]


def _choice(index: int, text: str, ids: list[int], prompt: list[int], lps: list[Any] | None, finish: str | None,
            stop_reason: Any = None) -> Json:
    return {"index": index, "text": text, "token_ids": ids, "prompt_token_ids": prompt,
            "logprobs": {"tokens": [f"token_id:{t}" for t in ids], "token_logprobs": lps} if lps is not None else None,
            "finish_reason": finish, "stop_reason": stop_reason}


def _completion(model: Any, choices: list[Json], prompt: list[int]) -> Json:
    n_out = sum(len(c["token_ids"]) for c in choices)
    return {"id": "cmpl-" + str(time.time_ns()), "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": n_out, "total_tokens": len(prompt) + n_out}}


def completion_of(kind: str, items: list[Json], cb: Json) -> Json:
    """Native whole answers (one a choice) → a ``/v1/completions`` answer."""
    prompt: list[int] = cb["prompt"]
    choices = []
    for i, d in enumerate(items):
        if kind == "sglang":
            meta = _meta(d)
            finish, matched = _sglang_finish(meta)
            choices.append(_choice(i, str(d.get("text") or ""), _ids(d.get("output_ids"), "output_ids"), prompt,
                                   _sglang_logprobs(meta), finish, matched))
        else:
            probs = d.get("completion_probabilities")
            lps = [p.get("logprob") for p in probs if isinstance(p, dict)] if isinstance(probs, list) else None
            choices.append(_choice(i, str(d.get("content") or ""), _ids(d.get("tokens"), "tokens"), prompt,
                                   lps if lps and all(v is not None for v in lps) else None,
                                   "length" if d.get("stop_type") == "limit" else "stop",
                                   d.get("stopping_word") or None))
    return _completion(cb.get("model"), choices, prompt)


async def post_completion(client: UpstreamClient, up: Upstream, cb: Json) -> Json:
    """POST a token request to ``up`` on its token route; the answer as ``/v1/completions`` answers it."""
    kind = up.effective_kind
    if kind not in NATIVE_KINDS:
        return await client.post_json(up, "/completions", cb)
    seed = cb.get("seed")
    reqs = [{**cb, "n": None, "seed": seed + i if isinstance(seed, int) and i else seed}
            for i in range(int(cb.get("n") or 1))]
    got = await asyncio.gather(*(client.post_json(up, ROUTES[kind], native_body(kind, r), at_root=True)
                                 for r in reqs))
    return completion_of(kind, list(got), cb)


# ---- streams -----------------------------------------------------------------------------------------------

async def open_completion_stream(client: UpstreamClient, up: Upstream, cb: Json) -> aiohttp.ClientResponse:
    """Open a streamed token request on ``up``'s token route (read it with ``completion_events``)."""
    kind = up.effective_kind
    if kind not in NATIVE_KINDS:
        return await client.open_stream(up, "/completions", cb)
    if int(cb.get("n") or 1) > 1:
        raise UpstreamFailure(400, f"n > 1 is not streamed on the token path of a {kind} upstream (ask without "
                                   "stream)")
    return await client.open_stream(up, ROUTES[kind], native_body(kind, cb), at_root=True)


class _Delta:
    """What one streamed choice has sent so far (SGLang: cumulative or incremental fields)."""

    def __init__(self) -> None:
        self.text = ""
        self.ids: list[int] = []
        self.lps = 0


def _chunk(model: Any, choice: Json | None, usage: Json | None = None) -> bytes:
    out: Json = {"id": "cmpl-stream", "object": "text_completion", "created": int(time.time()), "model": model,
                 "choices": [choice] if choice is not None else []}
    if usage is not None:
        out["usage"] = usage
    return orjson.dumps(out)


def _sglang_delta(data: Json, st: _Delta, prompt: list[int], first: bool) -> Json:
    meta = _meta(data)
    total = meta.get("completion_tokens")
    ids = _ids(data.get("output_ids") or [], "output_ids")
    if isinstance(total, int) and len(ids) == total and ids[:len(st.ids)] == st.ids:
        ids = ids[len(st.ids):]  # cumulative
    st.ids += ids
    text = str(data.get("text") or "")
    delta_text = text[len(st.text):] if text.startswith(st.text) else text
    st.text = text if text.startswith(st.text) else st.text + text
    lps = _sglang_logprobs(meta) or []
    if isinstance(total, int) and len(lps) == total:
        lps = lps[st.lps:]
    st.lps += len(lps)
    fr = meta.get("finish_reason")
    finish, matched = _sglang_finish(meta) if fr else (None, None)
    ch = _choice(0, delta_text, ids, prompt, lps if lps or not ids else None, finish,
                 matched)
    if not first:
        del ch["prompt_token_ids"]
    return ch


def _llamacpp_delta(data: Json, prompt: list[int], first: bool) -> Json:
    probs = data.get("completion_probabilities")
    lps = [p.get("logprob") for p in probs if isinstance(p, dict)] if isinstance(probs, list) else None
    ids = _ids(data.get("tokens") or [], "tokens")
    finish = ("length" if data.get("stop_type") == "limit" else "stop") if data.get("stop") else None
    ch = _choice(0, str(data.get("content") or ""), ids, prompt, lps if lps and None not in lps else None, finish,
                 data.get("stopping_word") or None)
    if not first:
        del ch["prompt_token_ids"]
    return ch


async def completion_events(resp: aiohttp.ClientResponse, up: Upstream, prompt: list[int],
                            model: str | None = None) -> AsyncIterator[bytes]:
    """The payloads of a streamed token answer (to the prompt ids ``prompt``) as ``/v1/completions`` chunks
    (the last one carries usage); ``model`` names the model in them (native answers may not)."""
    kind = up.effective_kind
    if kind not in NATIVE_KINDS:
        async for payload in sse_events(resp):
            yield payload
        return
    states: dict[int, _Delta] = {}
    async for raw in sse_events(resp):  # llama.cpp sends no [DONE]: its last chunk says stop: true
        data = stream_payload(raw)
        first = 0 not in states
        st = states.setdefault(0, _Delta())
        if kind == "sglang":
            ch = _sglang_delta(data, st, prompt, first)
        else:
            ch = _llamacpp_delta(data, prompt, first)
            st.ids += ch["token_ids"]
        yield _chunk(model, ch)
        if kind == "llamacpp" and data.get("stop") is True:
            break
    n_out = sum(len(s.ids) for s in states.values())
    yield _chunk(model, None, {"prompt_tokens": len(prompt), "completion_tokens": n_out,
                               "total_tokens": len(prompt) + n_out})


__all__ = ["NATIVE_KINDS", "ROUTES", "native_body", "completion_of", "post_completion", "open_completion_stream",
           "completion_events"]
