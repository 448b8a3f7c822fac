"""Encodable text: lone surrogates become U+FFFD once, where text enters; clean text is left alone."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apigen_envs.messages import (
    MAX_ARGUMENT_DEPTH,
    TOO_DEEP_ARGUMENTS,
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    message_from_openai,
)
from apigen_envs.text import TooDeepError, clean_json, clean_text, json_bytes, json_depth, may_nest_deeper

LONE = json.loads('"hi \\ud83d there"')  # what a JSON escape without its pair decodes to


def test_clean_text_replaces_lone_surrogates_and_joins_pairs():
    assert clean_text(LONE) == "hi \ufffd there"
    assert clean_text("\udc00x\ud83d\ude00y\ud83d") == "\ufffdx\U0001f600y\ufffd"
    for clean in ("", "ascii", "Grüße 😀 日本"):
        assert clean_text(clean) is clean


@given(st.text())
def test_clean_text_always_encodes_and_keeps_valid_text(text):
    out = clean_text(text)
    out.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        assert len(out) <= len(text)
    else:
        assert out is text


def test_clean_json_copies_only_what_changed():
    clean = {"a": ["x", 1, {"b": None}], "c": 2.5}
    assert clean_json(clean) is clean
    dirty = {"k\udc00": ["ok", LONE], "same": {"x": 1}}
    out = clean_json(dirty)
    assert out == {"k\ufffd": ["ok", "hi \ufffd there"], "same": {"x": 1}}
    assert out["same"] is dirty["same"]
    json.dumps(out, ensure_ascii=False).encode("utf-8")


def test_depth_limits():
    deep: object = 1
    for _ in range(50):
        deep = [deep]
    assert json_depth(deep, 100) == 50
    assert json_depth(deep, 10) == 11
    with pytest.raises(TooDeepError):
        clean_json(deep, 10)
    assert not may_nest_deeper("[[1]]", 2) and may_nest_deeper(b"[[[1]]]", 2)
    very_deep: list = []
    for _ in range(100_000):  # iterative: no RecursionError however deep
        very_deep = [very_deep]
    assert json_depth(very_deep, 64) == 65


def test_every_message_field_from_a_model_or_client_is_encodable():
    messages = [
        SystemMessage(content=LONE),
        UserMessage(content=LONE),
        AssistantMessage(content=LONE, tool_calls=(ToolCall(id=LONE, name=LONE, arguments={LONE: [LONE]}),)),
        AssistantMessage(tool_calls=(ToolCall(id="c", name="t", arguments='{"x": "' + LONE + '"}'),)),
        ToolMessage(tool_call_id=LONE, name=LONE, content=LONE),
        message_from_openai(
            {
                "role": "assistant",
                "content": LONE,
                "tool_calls": [{"id": "c1", "function": {"name": "t", "arguments": '{"q": "\\ud83d"}'}}],
            }
        ),
    ]
    for message in messages:
        text = message.model_dump_json()
        text.encode("utf-8")
        assert "\ufffd" in text
    assert messages[-1].tool_calls[0].arguments == {"q": "\ufffd"}


def test_arguments_nested_too_deep_are_dropped_not_recursed_into():
    nested: dict = {"leaf": 1}
    for _ in range(MAX_ARGUMENT_DEPTH + 1):
        nested = {"x": nested}
    assert ToolCall(id="c", name="t", arguments=nested).arguments == TOO_DEEP_ARGUMENTS
    text = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert ToolCall(id="c", name="t", arguments=text).arguments == TOO_DEEP_ARGUMENTS
    message = message_from_openai(
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "t", "arguments": text}}]}
    )
    assert message.tool_calls[0].arguments == TOO_DEEP_ARGUMENTS
    shallow = {"passengers": [{"name": "A", "dob": "1990-01-01"}], "payment": {"id": "p", "amount": 1}}
    assert ToolCall(id="c", name="t", arguments=shallow).arguments == shallow


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_clean_json_output_always_serialises_and_clean_values_come_back_as_is(value):
    out = clean_json(value, 64)
    json.dumps(out, ensure_ascii=False).encode("utf-8")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        assert out is not value
    else:
        assert out is value


def test_json_bytes_is_compact_and_keeps_a_lone_surrogate_as_its_escape():
    assert json_bytes({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    raw = json_bytes({"a": "x\ud800"})
    assert raw == b'{"a":"x\\ud800"}' and json.loads(raw) == {"a": "x\ud800"}
    with pytest.raises(TypeError):
        json_bytes({"a": object()})
