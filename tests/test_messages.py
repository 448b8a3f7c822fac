from __future__ import annotations

import pytest
from pydantic import ValidationError

from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage, message_from_openai


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
