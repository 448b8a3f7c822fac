"""The tool-calling agent's options for small models: schema-constrained replies, the ID reminder, the ground check."""

from __future__ import annotations

import argparse
import json

import pytest

from apigen_envs.baselines.tool_calling import (
    GROUND_CHECK_RETRIES,
    ID_REMINDER,
    RESPOND,
    ToolCallingAgent,
    response_format_for,
    tool_call_schema,
    ungrounded_arguments,
)
from apigen_envs.cli import build_parser
from apigen_envs.cli_helpers import _agent_options, build_agent, is_local_model
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient, ScriptedLLM
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from apigen_envs.protocols import AgentContext

TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "find_user_id_by_email",
            "description": "Find a user id.",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string", "description": "The email."}},
                "required": ["email"],
                "additionalProperties": False,
            },
        },
    },
)


def _context() -> AgentContext:
    return AgentContext(system_prompt="POLICY", tools=TOOLS, seed=4)


def test_schema_has_one_variant_per_tool_plus_respond():
    schema = tool_call_schema(TOOLS)
    names = [v["properties"]["name"]["enum"][0] for v in schema["anyOf"]]
    assert names == ["find_user_id_by_email", RESPOND]
    args = schema["anyOf"][0]["properties"]["arguments"]
    assert args == {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}
    assert response_format_for(TOOLS)["type"] == "json_object"


def test_constrained_agent_sends_schema_and_reads_both_reply_kinds():
    call = json.dumps({"name": "find_user_id_by_email", "arguments": {"email": "a@b.c"}})
    say = json.dumps({"name": RESPOND, "arguments": {"content": "What is your email?"}})
    llm = ScriptedLLM([call, say])
    agent = ToolCallingAgent(llm, constrain=True)
    first = agent.act([UserMessage(content="Hi")], _context())
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("find_user_id_by_email", {"email": "a@b.c"})]
    assert llm.requests[0].response_format == response_format_for(TOOLS)
    assert "Reply with exactly one JSON object" in llm.requests[0].messages[0]["content"]
    second = agent.act([UserMessage(content="Hi")], _context())
    assert second.content == "What is your email?" and not second.tool_calls
    # The free-text path is unchanged: no response_format, no format note.
    free = ScriptedLLM(["Hello!"])
    assert ToolCallingAgent(free).act([UserMessage(content="Hi")], _context()).content == "Hello!"
    assert free.requests[0].response_format is None and free.requests[0].messages[0]["content"] == "POLICY"


def test_constrained_request_over_http_carries_the_schema():
    say = json.dumps({"name": RESPOND, "arguments": {"content": "Could you give me your email?"}})
    with ScriptedServer([say]) as server:
        client = OpenAIClient(LLMConfig(model="scripted", base_url=server.base_url), api_key="x")
        reply = ToolCallingAgent(client, constrain=True).act([UserMessage(content="Hi")], _context())
        body = server.requests[0]
    assert reply.content == "Could you give me your email?"
    assert body["response_format"]["schema"]["anyOf"][0]["properties"]["name"]["enum"] == ["find_user_id_by_email"]


def test_id_reminder_until_the_first_tool_call():
    llm = ScriptedLLM(["ok"], cycle=True)
    agent = ToolCallingAgent(llm, id_reminder=ID_REMINDER)
    agent.act([UserMessage(content="Cancel my order")], _context())
    assert llm.requests[0].messages[-1] == {"role": "system", "content": ID_REMINDER}
    acted = [
        UserMessage(content="a@b.c"),
        AssistantMessage(tool_calls=(ToolCall(id="1", name="find_user_id_by_email", arguments={"email": "a@b.c"}),)),
        ToolMessage(tool_call_id="1", name="find_user_id_by_email", content="u1"),
    ]
    agent.act(acted, _context())
    assert all(m["content"] != ID_REMINDER for m in llm.requests[1].messages)


def test_cli_switches_default_to_the_local_model_only():
    assert is_local_model("http://127.0.0.1:8123/v1", "local")
    assert not is_local_model("https://api.example.com/v1", "gpt-x") and not is_local_model(None, "local")
    args = build_parser().parse_args(["run"])
    assert args.constrain == "auto" and args.id_reminder == "auto"
    agent, config = build_agent(args, "http://127.0.0.1:8123/v1", "local")
    assert agent.constrain and agent.id_reminder == ID_REMINDER and config["constrain"] is True
    agent, config = build_agent(args, "https://api.example.com/v1", "gpt-x")
    assert not agent.constrain and agent.id_reminder is None and config["constrain"] is False
    forced = argparse.Namespace(**{**vars(args), "constrain": "on", "id_reminder": "off"})
    agent, _ = build_agent(forced, "https://api.example.com/v1", "gpt-x")
    assert agent.constrain and agent.id_reminder is None


def _call(name: str, **arguments) -> AssistantMessage:
    return AssistantMessage(tool_calls=(ToolCall(id="c", name=name, arguments=arguments),))


def test_ungrounded_arguments_finds_identifiers_nobody_wrote():
    said = [
        UserMessage(content="Hi, I'm Amelia Mitchell, zip 90210. Cancel order #W5030080 please."),
        AssistantMessage(tool_calls=(ToolCall(id="1", name="find_user_id_by_name_zip", arguments={}),)),
        ToolMessage(tool_call_id="1", name="find_user_id_by_name_zip", content="amelia_mitchell_6722"),
    ]
    grounded = _call("find_user_id_by_name_zip", first_name="amelia", last_name="Mitchell", zip="90210")
    assert ungrounded_arguments(grounded, said) == []
    # Ids from a tool result and from the customer (with or without '#'), free text unchecked.
    ok = _call("cancel_pending_order", order_id="W5030080", reason="no longer needed", user_id="amelia_mitchell_6722")
    assert ungrounded_arguments(ok, said) == []
    guessed = _call("find_user_id_by_email", email="jane.doe1234@example.com")
    assert ungrounded_arguments(guessed, said) == [("find_user_id_by_email", "email", "jane.doe1234@example.com")]
    listed = _call("return_delivered_order_items", order_id="#W5030080", item_ids=["amelia_mitchell_6722", "999"])
    assert ungrounded_arguments(listed, said) == [("return_delivered_order_items", "item_ids", "999")]
    assert ungrounded_arguments(AssistantMessage(content="Hello"), said) == []
    unparsed = AssistantMessage(tool_calls=(ToolCall(id="c", name="x", arguments="{bad"),))
    assert ungrounded_arguments(unparsed, said) == []


def test_ground_check_asks_the_model_again_then_sends_its_last_reply():
    guess = {"role": "assistant", "tool_calls": [_wire_call("find_user_id_by_email", {"email": "jane@x.com"})]}
    llm = ScriptedLLM([guess, "Could you give me your email address?"])
    agent = ToolCallingAgent(llm, ground_check=2)
    reply = agent.act([UserMessage(content="Cancel my order")], _context())
    assert reply.content == "Could you give me your email address?" and not reply.tool_calls
    assert llm.calls == 2 and "jane@x.com" in llm.requests[1].messages[-1]["content"]
    assert [r.seed for r in llm.requests] == [4, 1004]
    # The usage of both requests is on the reply.
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    # Still ungrounded after the allowed regenerations: the last reply goes through; the env executes it.
    llm = ScriptedLLM([guess], cycle=True)
    reply = ToolCallingAgent(llm, ground_check=GROUND_CHECK_RETRIES).act([UserMessage(content="Hi")], _context())
    assert reply.tool_calls[0].arguments == {"email": "jane@x.com"} and llm.calls == GROUND_CHECK_RETRIES + 1
    # Off by default: one request, the guess is sent.
    llm = ScriptedLLM([guess])
    assert ToolCallingAgent(llm).act([UserMessage(content="Hi")], _context()).tool_calls and llm.calls == 1
    with pytest.raises(ValueError, match="ground_check"):
        ToolCallingAgent(llm, ground_check=-1)


def test_ground_check_switch_follows_the_local_model():
    args = build_parser().parse_args(["run"])
    assert args.ground_check == "auto"
    agent, config = build_agent(args, "http://127.0.0.1:8123/v1", "local")
    assert agent.ground_check == GROUND_CHECK_RETRIES and config["ground_check"] is True
    assert agent.public()["ground_check"] == GROUND_CHECK_RETRIES
    agent, config = build_agent(args, "https://api.example.com/v1", "gpt-x")
    assert agent.ground_check == 0 and config["ground_check"] is False
    assert _agent_options(agent) == {"constrain": False, "id_reminder": False, "ground_check": False}


def _wire_call(name: str, arguments: dict) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
