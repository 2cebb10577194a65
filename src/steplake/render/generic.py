"""The generic renderer: any Hugging Face chat template, with a bridge of its own.

``render`` applies the tokenizer's chat template (with the generation prompt) and encodes the text.
Messages reach the template in one of two conventions:

- ``hermes`` (templates that know nothing of tools, like SmolLM2's ChatML): tools are described in the
  system message, an assistant call is written ``<tool_call>{...}</tool_call>`` in its text and tool results
  become ``<tool_response>`` user turns (the embedded model's convention, ``steplake.model.chat``), so a
  full render here equals the prompt the embedded model's chat route builds;
- ``native`` (templates that take ``tools``, ``tool_calls`` and the ``tool`` role themselves).

``bridge`` keeps the sampled turn as it was sampled: it appends the template's end-of-turn token only when
the sample did not end with a stop token, then the text the template puts after an assistant turn's end
of turn, the new messages and the generation prompt, encoded. That text is found by rendering a fixed
stand-in conversation ending with an assistant turn with and without the new messages: when the longer
render does not start with the shorter one the template is not prefix-stable (it rewrites earlier turns,
e.g. drops earlier reasoning) and ``bridge`` raises ``RenderError`` (the caller renders in full instead).

Where the bridge equals a full render and where not (tests/render): equal when the template is
prefix-stable, the sample ended with the end-of-turn token (or the bridge added it), and the sampled ids are
the tokenizer's own encoding of their text (re-rendering the history re-encodes the text). It differs when
the model sampled a non-canonical tokenization (constrained decoding often does), when the sampled text
does not render back to itself (a call written with other spacing), or when the template rewrites history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import BadRequestError, RenderError
from ..types import Json
from .base import Parsed
from .hermes import parse_hermes

STAND_IN: list[Json] = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                        {"role": "assistant", "content": "A"}]
TEXT_PARTS = ("text", "input_text", "output_text")


def _content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type") in TEXT_PARTS and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequestError(f"{where}.content[{j}]: the renderer takes only text parts, not {kind!r}",
                                      code="invalid_messages")
        return "".join(out)
    raise BadRequestError(f"{where}.content must be a string, a list of text parts or null", code="invalid_messages")


def native_messages(messages: Sequence[Json]) -> list[Json]:
    """Messages for a template that takes tools itself: content as text, the rest as sent."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            role = m.get("role") if isinstance(m, dict) else None
            raise BadRequestError(f"messages[{i}].role {role!r} cannot be rendered", code="invalid_messages")
        msg = {**m, "content": _content(m.get("content"), f"messages[{i}]")}
        if msg["role"] == "developer":
            msg["role"] = "system"
        out.append(msg)
    return out


class TemplateRenderer:
    """A tokenizer's chat template with the generic bridge (see the module docstring)."""

    def __init__(self, tokenizer: Any, name: str | None = None, convention: str | None = None) -> None:
        self.tok = tokenizer
        template = getattr(tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise RenderError("the tokenizer has no chat template")
        self.convention = convention or ("native" if "tool" in template else "hermes")
        self.name = name or f"generic-{self.convention}"
        # the text around a call's JSON body, for forcing a call (gateway/forced.py); unknown for templates
        # that write calls themselves
        hermes = self.convention == "hermes"
        self.call_syntax: tuple[str, str] | None = ("<tool_call>", "</tool_call>") if hermes else None
        eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        unk = getattr(tokenizer, "unk_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        chosen = eot if isinstance(eot, int) and eot >= 0 and eot != unk else eos
        if not isinstance(chosen, int):
            raise RenderError("the tokenizer has neither <|im_end|> nor an end-of-sequence token")
        self.eot_id: int = chosen
        self.eot_text: str = str(tokenizer.convert_ids_to_tokens(self.eot_id))
        self.stop_ids = frozenset(i for i in (self.eot_id, eos) if isinstance(i, int))
        self._bases: dict[bytes, str] = {}  # the stand-in's text per tools (a template render less per bridge)

    # text --------------------------------------------------------------------------------------------
    def template_messages(self, messages: Sequence[Json], tools: Sequence[Json] | None) -> list[Json]:
        if self.convention == "hermes":
            from ..model.chat import to_template_messages  # no torch: the message convention only

            return list(to_template_messages(list(messages), tools))
        return native_messages(messages)

    def text(self, messages: Sequence[Json], tools: Sequence[Json] | None, generation_prompt: bool) -> str:
        msgs = self.template_messages(messages, tools)
        extra: dict[str, Any] = {"tools": list(tools)} if tools and self.convention == "native" else {}
        return str(self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt,
                                                **extra))

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tok.encode(text, add_special_tokens=False)]

    # the protocol ------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        return self.encode(self.text(messages, tools, True))

    def glue(self, new_messages: Sequence[Json], tools: Sequence[Json] | None) -> str:
        """The text after an assistant turn's end-of-turn token up to the next generation prompt."""
        if not new_messages:
            raise RenderError("nothing to bridge: no new messages")
        if any(m.get("role") == "assistant" for m in new_messages):
            raise RenderError("the new messages hold an assistant turn the model did not sample")
        base = self.stand_in(tools)
        full = self.text([*STAND_IN, *new_messages], tools, True)
        if not full.startswith(base):
            raise RenderError(f"chat template {self.name} is not prefix-stable: adding messages rewrites the "
                              "turns before them")
        cut = base.rfind(self.eot_text)
        if cut < 0 or "A" not in base[:cut]:
            raise RenderError(f"chat template {self.name} writes no {self.eot_text!r} after an assistant turn")
        return base[cut + len(self.eot_text):] + full[len(base):]

    def stand_in(self, tools: Sequence[Json] | None) -> str:
        """The stand-in conversation's text without a generation prompt, rendered once per tools list."""
        key = orjson.dumps(tools or [])
        got = self._bases.get(key)
        if got is None:
            if len(self._bases) >= 64:
                self._bases.clear()
            got = self._bases[key] = self.text(STAND_IN, tools, False)
        return got

    def bridge(self, prev_prompt_ids: Sequence[int], prev_response_ids: Sequence[int],
               new_messages: Sequence[Json], tools: Sequence[Json] | None) -> list[int]:
        head = [] if prev_response_ids and prev_response_ids[-1] in self.stop_ids else [self.eot_id]
        return head + self.encode(self.glue(new_messages, tools))

    def parse(self, ids: Sequence[int], text: str | None = None) -> Parsed:
        if text is None:
            text = str(self.tok.decode([i for i in ids if i not in self.stop_ids], skip_special_tokens=False))
        return parse_hermes(text)


__all__ = ["TemplateRenderer", "native_messages", "STAND_IN"]
