from __future__ import annotations

import pytest
from pydantic import ValidationError

from apigen_envs.messages import (
    TOO_DEEP_ARGUMENTS,
    AssistantMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    message_from_openai,
)


def test_round_trip_openai_format():
    msgs = [
        UserMessage(content="hi"),
        AssistantMessage(content="", tool_calls=(ToolCall(id="1", name="f", arguments={"a": 1}),)),
        ToolMessage(tool_call_id="1", name="f", content="ok"),
        AssistantMessage(content="done"),
    ]
    for msg in msgs:
        back = message_from_openai(msg.to_openai())
        assert back.to_openai() == msg.to_openai()


def test_bad_arguments_kept_raw_and_bad_messages_rejected():
    msg = message_from_openai(
        {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{oops"}}]}
    )
    assert msg.tool_calls[0].arguments == "{oops"
    with pytest.raises(ValidationError):
        message_from_openai({"role": "wizard", "content": "x"})
    with pytest.raises(ValidationError):
        message_from_openai({"role": "user"})


def _deep_text(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _deep_dict(depth: int) -> dict:
    value: dict = {"a": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [100, 999, 1_000, 50_000])
def test_arguments_nested_at_any_depth_never_crash_parsing_or_writing(depth):
    from apigen_envs.llm import build_assistant_message, coerce_arguments, parse_text_tool_calls

    text = _deep_text(depth)
    msg = message_from_openai(
        {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": text}}]}
    )
    (call,) = msg.tool_calls
    assert isinstance(call.arguments, str) and "nested deeper than" in call.arguments
    assert AssistantMessage.model_validate_json(msg.model_dump_json()) == msg  # the record stays writable
    coerced = coerce_arguments(text)  # parsed, or kept raw: never a RecursionError
    assert "nested deeper than" in ToolCall(id="1", name="f", arguments=coerced).arguments
    built = build_assistant_message(
        None, [{"id": "1", "function": {"name": "f", "arguments": text}}], None, msg.usage or _usage()
    )
    assert "nested deeper than" in built.tool_calls[0].arguments
    found, _ = parse_text_tool_calls(f'{{"name": "f", "arguments": {text}}}', ["f"])  # no RecursionError either
    assert all("nested deeper than" in c.arguments for c in found)


def _usage():
    from apigen_envs.messages import Usage

    return Usage()


def test_tool_call_arguments_that_json_cannot_write_become_a_marker():
    deep = ToolCall(id="1", name="f", arguments=_deep_dict(300))
    assert deep.arguments == TOO_DEEP_ARGUMENTS
    odd = ToolCall(id="1", name="f", arguments={"when": {1, 2}})
    assert odd.arguments == "<tool arguments dropped: a set value, which is not JSON>"
    fine = ToolCall(id="1", name="f", arguments={"a": [1, {"b": None}], "c": _deep_dict(20)})
    assert isinstance(fine.arguments, dict) and fine.to_openai()["function"]["arguments"].startswith('{"a"')
    # Brackets inside strings are not nesting.
    assert ToolCall(id="1", name="f", arguments='{"text": "' + "[" * 500 + '"}').arguments.startswith('{"text"')


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("", "neither text nor tool calls"),
        (AssistantMessage(content="  "), "neither text nor tool calls"),
        ({"role": "user", "content": "x"}, "role 'user'"),
        ({"role": "assistant", "content": 3}, "malformed"),
        ({"role": "assistant", "tool_calls": "f()"}, "tool_calls must be a list"),
        ({"role": "assistant", "tool_calls": [None]}, "tool call 0 must be an object"),
        ({"role": "assistant", "tool_calls": [{"function": "f"}]}, "tool call 0 must be an object"),
        (3.5, "got float"),
        (None, "got NoneType"),
    ],
)
def test_to_assistant_message_turns_every_unusable_action_into_one_error(action, reason):
    from apigen_envs.errors import InvalidActionError
    from apigen_envs.messages import to_assistant_message

    with pytest.raises(InvalidActionError, match=reason):
        to_assistant_message(action)
