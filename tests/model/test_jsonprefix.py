"""The JSON prefix automaton behind constrained tool calls (no model needed)."""

from __future__ import annotations

import json

import pytest

from steplake.model.jsonprefix import JsonPrefix

CALC = {"type": "object", "properties": {"expression": {"type": "string"}, "n": {"type": "integer"},
                                         "unit": {"enum": ["c", "f"]}}, "required": ["expression"]}


def run(text: str, schema: object = None) -> tuple[bool, bool]:
    p = JsonPrefix(schema)
    return p.feed_bytes(text.encode()), p.done


@pytest.mark.parametrize("text", [
    '{}', '{"a": 1}', '{"a": [1, 2.5e-3, "x\\u00e9", true, false, null], "b": {"c": -0.5E+10}}',
    '{"a": "caf\u00e9 \\"quoted\\""}', '{"a": []}',
])
def test_complete_objects_are_accepted(text: str) -> None:
    assert run(text) == (True, True)
    json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 01}', '{"a": 1,}', '{"a"  : 1}', ' {}', '{"a": "x\ny"}', '[1]',
                                  '{"a": tru1}', '{"a": 1}}'])
def test_invalid_or_trailing_bytes_are_refused(text: str) -> None:
    ok, _ = run(text)
    assert not ok


def test_prefixes_are_accepted_but_not_done() -> None:
    assert run('{"a": [1, {"b": "x') == (True, False)


def test_schema_keys_types_required_and_enum() -> None:
    assert run('{"expression": "37*3"}', CALC) == (True, True)
    assert run('{"n": 3, "unit": "f", "expression": "x"}', CALC) == (True, True)
    assert not run("{}", CALC)[0]  # required key missing
    assert not run('{"n": 3.5', CALC)[0]  # integer
    assert not run('{"foo": 1', CALC)[0]  # unknown key
    assert not run('{"unit": "k"', CALC)[0]  # enum
    assert not run('{"expression": "1", "expression"', CALC)[0]  # duplicate key


def test_accepts_does_not_change_the_state_and_string_forbid() -> None:
    p = JsonPrefix(string_forbid=b"}")
    assert p.feed_bytes(b'{"a": "')
    assert not p.accepts(b"x}")
    assert p.accepts(b'x"}')
    assert p.feed_bytes(b'\\u007d"}') and p.done
