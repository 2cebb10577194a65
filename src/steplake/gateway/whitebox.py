"""White-box token-in/token-out generation: ``POST /api/v1/generate`` (CONTRACT §2).

``{prompt_ids, sampling?, trajectory_id?, group_id?, channel?, metadata?}`` →
``{response_ids, response_logprobs, finish_reason, step_id?}``. The upstream gets a completions request
whose prompt is the token ids. With a ``trajectory_id`` the call is stored as a step (and the answer waits
for its commit, so the step can be completed or rewarded right away); without one nothing is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequestError
from ..records import ID_RE
from ..types import Json
from ..upstreams.base import Upstream
from .attribution import Attribution
from .capture import CallContext, sampling_of
from .http import json_response, read_json
from .openai import upstream_body
from .shape import check_answer
from .tokens import AnswerAcc
from .validate import check_channel, check_common, check_depth, check_metadata, check_model

if TYPE_CHECKING:
    from .core import Gateway

ALLOWED = {"prompt_ids", "sampling", "trajectory_id", "group_id", "channel", "metadata", "model"}


def check_generate(body: Json) -> None:
    unknown = set(body) - ALLOWED
    if unknown:
        raise BadRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    ids = body.get("prompt_ids")
    if not isinstance(ids, list) or not ids or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in ids):
        raise BadRequestError("'prompt_ids' must be a non-empty array of non-negative token ids")
    sampling = body.get("sampling")
    if sampling is not None:
        if not isinstance(sampling, dict):
            raise BadRequestError("'sampling' must be an object")
        check_common(sampling)
    for k in ("trajectory_id", "group_id"):
        v = body.get(k)
        if v is not None and (not isinstance(v, str) or not ID_RE.match(v)):
            raise BadRequestError(f"'{k}' must be a valid id")
    check_depth(body)
    check_model(body.get("model"))
    check_channel(body.get("channel"))
    if body.get("metadata") is not None:
        check_metadata(body["metadata"], "'metadata'")


class WhiteboxHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def generate(self, request: Request) -> Response:
        gw = self.gw
        body = await read_json(request, gw.settings.max_body_bytes)
        check_generate(body)
        sampling = dict(body.get("sampling") or {})
        sampling.pop("stream", None)
        req: Json = {**sampling, "prompt": body["prompt_ids"], "model": body.get("model"),
                     "return_token_ids": True}
        tid = body.get("trajectory_id")
        ctx: CallContext | None = None
        if tid:
            att = Attribution(trajectory_id=tid, source="whitebox", group_id=body.get("group_id"),
                              channel=body.get("channel"), metadata=body.get("metadata") or {})
            ctx = CallContext("whitebox.generate", att, None, None, sampling_of(sampling), False)

        async def post(up: Upstream) -> Json:
            return check_answer(await gw.client.post_json(up, "/completions",
                                                          upstream_body(req, up, False, completions=True)))
        up, data = await gw.call_upstream(ctx, tid, post)
        ans = AnswerAcc()
        ans.add(data, "text")
        if ans.prompt_ids is None:
            ans.prompt_ids = body["prompt_ids"]
        choices = ans.ordered()
        if not choices:
            return json_response({"response_ids": [], "response_logprobs": None, "finish_reason": None})
        ch = choices[0]
        out: Json = {"response_ids": ch.token_ids or [], "response_logprobs": ch.logprobs,
                     "finish_reason": ch.finish_reason, "text": ch.text}
        if ctx is not None:
            gw.capturer.record_exchanges(ctx, [{}])
            ids = await gw.capturer.capture(ctx, up, ans, [None], sync=True)
            if ids:
                out["step_id"] = ids[0]
        return json_response(out)


__all__ = ["WhiteboxHandlers", "check_generate"]
