"""A byte-level JSON prefix automaton, optionally following a JSON schema.

``JsonPrefix(schema)`` accepts bytes one at a time (``feed``) and answers whether the bytes seen so far
are still the beginning of one JSON value of the schema's shape; ``done`` turns true when the value is
complete (no trailing bytes are accepted after that). Constrained decoding copies the automaton for
each candidate token and feeds the token's bytes (``accepts``).

Deliberate restrictions (they keep a small model from wandering; the output is still plain JSON):
whitespace is a single space, never two in a row (no newlines or tabs outside strings); numbers are at
most 24 characters; object keys come from ``properties`` when the schema lists them (each at most
once), and ``}`` is refused until every ``required`` key is present. Understood schema parts: ``type``
(string or list), ``properties``, ``required``, ``additionalProperties`` (as a schema),
``items``, ``enum``, ``const``, ``anyOf`` / ``oneOf`` (union of their types, shapes not followed).
Anything else (``$ref``, ``pattern``, ``minItems``, ...) is ignored: any value of the right type passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_ALL_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
_SPACE = 0x20
_QUOTE = 0x22
_BACKSLASH = 0x5C
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_MAX_NUMBER_LEN = 24


@dataclass(eq=False)
class SchemaNode:
    """A compiled schema: what a value may look like."""

    types: frozenset[str] = _ALL_TYPES
    props: dict[str, SchemaNode] | None = None  # restricted keys (JSON-escaped forms as keys)
    required: frozenset[str] = frozenset()
    extra: SchemaNode | None = None  # schema of keys not in props (props None: any key)
    items: SchemaNode | None = None
    choices: tuple[bytes, ...] | None = None  # enum/const: exact JSON texts
    key_bytes: dict[bytes, str] = field(default_factory=dict)


ANY = SchemaNode()


def compile_schema(schema: Any) -> SchemaNode:
    """Compile a JSON schema (dict) into a ``SchemaNode``; anything unusable means "any value"."""
    if not isinstance(schema, dict):
        return ANY
    if "const" in schema:
        return SchemaNode(choices=(json.dumps(schema["const"]).encode(),))
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return SchemaNode(choices=tuple(json.dumps(v).encode() for v in schema["enum"]))
    node = SchemaNode(types=_schema_types(schema))
    props = schema.get("properties")
    if isinstance(props, dict) and props:
        node.props = {}
        for name, sub in props.items():
            escaped = json.dumps(str(name))[1:-1]
            node.props[escaped] = compile_schema(sub)
            node.key_bytes[escaped.encode()] = escaped
        req = schema.get("required")
        if isinstance(req, list):
            node.required = frozenset(json.dumps(str(r))[1:-1] for r in req) & node.props.keys()
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        node.extra = compile_schema(extra)
    if isinstance(schema.get("items"), dict):
        node.items = compile_schema(schema["items"])
    return node


def _schema_types(schema: dict[str, Any]) -> frozenset[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return frozenset({t}) & _ALL_TYPES or _ALL_TYPES
    if isinstance(t, list):
        return frozenset(x for x in t if isinstance(x, str)) & _ALL_TYPES or _ALL_TYPES
    union = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(union, list) and union:
        out: set[str] = set()
        for sub in union:
            out |= compile_schema(sub).types if isinstance(sub, dict) and "enum" not in sub else _ALL_TYPES
        return frozenset(out)
    if "properties" in schema:
        return frozenset({"object"})
    if "items" in schema:
        return frozenset({"array"})
    return _ALL_TYPES


# Frames are tuples; the first item names the kind. The stack is copied shallowly per candidate token.
# ("value", node)                         expecting a value
# ("obj", phase, node, seen, key)          phase: start | colon | after | next
# ("key", accum, esc, node)               inside an object key string
# ("arr", phase, node)                    phase: start | after
# ("str", esc)                            inside a string value (esc: 0, 1 after backslash, 2..5 hex)
# ("num", phase, int_only, length)
# ("lit", remaining)                      true / false / null
# ("choice", accum, options)              enum / const


class JsonPrefix:
    """Incremental validator of one JSON value (by default an object) given as bytes."""

    __slots__ = ("stack", "done", "prev_ws", "string_forbid")

    def __init__(self, schema: Any = None, *, root_object: bool = True, string_forbid: bytes = b"") -> None:
        node = compile_schema(schema) if not isinstance(schema, SchemaNode) else schema
        if root_object and node.choices is None:
            node = _as_object(node)
        self.stack: list[tuple[Any, ...]] = [("value", node)]
        self.done = False
        self.prev_ws = False
        self.string_forbid = frozenset(string_forbid)

    def copy(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.stack = list(self.stack)
        other.done = self.done
        other.prev_ws = self.prev_ws
        other.string_forbid = self.string_forbid
        return other

    def accepts(self, data: bytes) -> bool:
        """Whether ``data`` may follow what was fed so far (the automaton itself is unchanged)."""
        probe = self.copy()
        return probe.feed_bytes(data)

    def feed_bytes(self, data: bytes) -> bool:
        return bool(data) and all(self.feed(b) for b in data)

    def feed(self, b: int) -> bool:
        if self.done:
            return False
        top = self.stack[-1]
        return bool(_HANDLERS[top[0]](self, top, b))

    # -- helpers used by the handlers --------------------------------------------------------------
    def _ws(self) -> bool:
        if self.prev_ws:
            return False
        self.prev_ws = True
        return True

    def _complete(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.done = True

    def _start_value(self, node: SchemaNode, b: int) -> bool:
        if node.choices is not None:
            accum = bytes((b,))
            opts = tuple(o for o in node.choices if o.startswith(accum))
            if not opts:
                return False
            self.stack.append(("choice", accum, opts))
            return self._maybe_finish_choice()
        t = node.types
        if b == 0x7B and "object" in t:
            self.stack.append(("obj", "start", _as_object(node), frozenset(), None))
        elif b == 0x5B and "array" in t:
            self.stack.append(("arr", "start", node))
        elif b == _QUOTE and "string" in t:
            self.stack.append(("str", 0))
        elif (b == 0x2D or b in _DIGITS) and ("number" in t or "integer" in t):
            int_only = "number" not in t
            phase = "minus" if b == 0x2D else ("zero" if b == 0x30 else "int")
            self.stack.append(("num", phase, int_only, 1))
        elif b == 0x74 and "boolean" in t:
            self.stack.append(("lit", b"rue"))
        elif b == 0x66 and "boolean" in t:
            self.stack.append(("lit", b"alse"))
        elif b == 0x6E and "null" in t:
            self.stack.append(("lit", b"ull"))
        else:
            return False
        return True

    def _maybe_finish_choice(self) -> bool:
        _, accum, opts = self.stack[-1]
        if accum in opts and not any(len(o) > len(accum) for o in opts):
            self._complete()
        return True


def _as_object(node: SchemaNode) -> SchemaNode:
    if node.types == frozenset({"object"}):
        return node
    return SchemaNode(types=frozenset({"object"}), props=node.props, required=node.required,
                      extra=node.extra, key_bytes=node.key_bytes)


def _value(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    if b == _SPACE:
        return len(p.stack) > 1 and p._ws()  # no whitespace before the root value
    p.prev_ws = False
    p.stack.pop()
    return p._start_value(top[1], b)


def _required_met(node: SchemaNode, seen: frozenset[str]) -> bool:
    return node.required <= seen


def _keys_left(node: SchemaNode, seen: frozenset[str]) -> bool:
    return node.props is None or node.extra is not None or len(seen) < len(node.props)


def _obj(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    _, phase, node, seen, key = top
    if b == _SPACE:
        return p._ws()
    p.prev_ws = False
    if phase in ("start", "next") and b == _QUOTE:
        if phase == "next" or _keys_left(node, seen):
            p.stack.append(("key", b"", 0, node))
            return True
        return False
    if phase in ("start", "after") and b == 0x7D:
        if _required_met(node, seen):
            p._complete()
            return True
        return False
    if phase == "after" and b == 0x2C and _keys_left(node, seen):
        p.stack[-1] = ("obj", "next", node, seen, None)
        return True
    if phase == "colon" and b == 0x3A:
        sub = (node.props or {}).get(key) or node.extra or ANY
        p.stack[-1] = ("obj", "after", node, seen, None)
        p.stack.append(("value", sub))
        return True
    return False


def _key(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    _, accum, esc, node = top
    p.prev_ws = False
    parent = p.stack[-2]
    seen: frozenset[str] = parent[3]
    restricted = node.props is not None and node.extra is None
    if b == _QUOTE and esc == 0:
        name = accum.decode("utf-8", errors="replace")
        if name in seen or (restricted and accum not in node.key_bytes):
            return False
        p.stack.pop()
        p.stack[-1] = ("obj", "colon", node, seen | {name}, name)
        return True
    new_esc = _string_step(esc, b)
    if new_esc < 0:
        return False
    new = accum + bytes((b,))
    if restricted and not any(k.startswith(new) and node.key_bytes[k] not in seen for k in node.key_bytes):
        return False
    p.stack[-1] = ("key", new, new_esc, node)
    return True


def _string_step(esc: int, b: int) -> int:
    """Next escape state inside a string (not at a closing quote), or -1 when ``b`` is not allowed."""
    if esc == 0:
        if b == _BACKSLASH:
            return 1
        return -1 if b < 0x20 else 0
    if esc == 1:
        if b in _ESCAPES:
            return 0
        return 2 if b == 0x75 else -1
    if b not in _HEX:
        return -1
    return 0 if esc == 5 else esc + 1


def _str(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    esc = top[1]
    p.prev_ws = False
    if b == _QUOTE and esc == 0:
        p._complete()
        return True
    new_esc = _string_step(esc, b)
    if new_esc < 0 or (esc == 0 and b in p.string_forbid):
        return False
    if new_esc != esc:
        p.stack[-1] = ("str", new_esc)
    return True


_NUM_NEXT: dict[str, dict[str, str]] = {
    "minus": {"0": "zero", "d": "int"},
    "zero": {".": "dot", "e": "e"},
    "int": {"0": "int", "d": "int", ".": "dot", "e": "e"},
    "dot": {"0": "frac", "d": "frac"},
    "frac": {"0": "frac", "d": "frac", "e": "e"},
    "e": {"0": "exp", "d": "exp", "+": "esign"},
    "esign": {"0": "exp", "d": "exp"},
    "exp": {"0": "exp", "d": "exp"},
}
_NUM_FINAL = frozenset({"zero", "int", "frac", "exp"})


def _num_class(b: int) -> str:
    if b == 0x30:
        return "0"
    if b in _DIGITS:
        return "d"
    if b in (0x65, 0x45):
        return "e"
    if b in (0x2B, 0x2D):
        return "+"
    return "." if b == 0x2E else "?"


def _num(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    _, phase, int_only, length = top
    cls = _num_class(b)
    nxt = _NUM_NEXT[phase].get(cls)
    if nxt is not None and int_only and nxt in ("dot", "e"):
        nxt = None
    if nxt is not None:
        if length >= _MAX_NUMBER_LEN:
            return False
        p.prev_ws = False
        p.stack[-1] = ("num", nxt, int_only, length + 1)
        return True
    if phase not in _NUM_FINAL:
        return False
    p._complete()
    return p.feed(b)


def _lit(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    rest: bytes = top[1]
    if b != rest[0]:
        return False
    p.prev_ws = False
    if len(rest) == 1:
        p._complete()
    else:
        p.stack[-1] = ("lit", rest[1:])
    return True


def _arr(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    _, phase, node = top
    if b == _SPACE:
        return p._ws()
    if b == 0x5D:
        p.prev_ws = False
        p._complete()
        return True
    if phase == "after":
        if b != 0x2C:
            return False
        p.prev_ws = False
        p.stack.append(("value", node.items or ANY))
        return True
    p.stack[-1] = ("arr", "after", node)
    p.stack.append(("value", node.items or ANY))
    return p.feed(b)


def _choice(p: JsonPrefix, top: tuple[Any, ...], b: int) -> bool:
    _, accum, opts = top
    new = accum + bytes((b,))
    left = tuple(o for o in opts if o.startswith(new))
    if left:
        p.prev_ws = False
        p.stack[-1] = ("choice", new, left)
        return p._maybe_finish_choice()
    if accum in opts:
        p._complete()
        return p.feed(b)
    return False


_HANDLERS = {"value": _value, "obj": _obj, "key": _key, "str": _str, "num": _num, "lit": _lit,
             "arr": _arr, "choice": _choice}

__all__ = ["JsonPrefix", "SchemaNode", "compile_schema"]
