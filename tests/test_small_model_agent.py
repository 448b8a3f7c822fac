"""The tool-calling agent's options for small models: schema-constrained replies and the ID reminder."""

from __future__ import annotations

import argparse
import json

from apigen_envs.baselines.tool_calling import (
    ID_REMINDER,
    RESPOND,
    ToolCallingAgent,
    response_format_for,
    tool_call_schema,
)
from apigen_envs.cli import build_parser
from apigen_envs.cli_helpers import build_agent, is_local_model
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
