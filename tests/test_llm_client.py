import asyncio
import time

import pytest

from apigen_envs.errors import LLMError
from apigen_envs.fake_server import Fault, ScriptedServer
from apigen_envs.llm import (
    Completion,
    LLMClient,
    LLMConfig,
    LLMRequest,
    OpenAIClient,
    ScriptedLLM,
    arun_plan,
    build_assistant_message,
    parse_text_tool_calls,
    run_plan,
    tool_names_of,
)
from apigen_envs.messages import AssistantMessage, Usage

TOOLS = [
    {"type": "function", "function": {"name": "get_order", "description": "d", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "cancel_order", "description": "d", "parameters": {"type": "object"}}},
]
NAMES = {"get_order", "cancel_order"}
USER = [{"role": "user", "content": "hello"}]


def fast(server: ScriptedServer, **kw) -> OpenAIClient:
    settings = {"model": "m", "base_url": server.base_url, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return OpenAIClient(LLMConfig(**(settings | kw)))


# ----------------------------------------------------------------------------- config
def test_config_public_has_no_secrets(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    cfg = LLMConfig(
        model="m",
        base_url="http://user:pw@localhost:8000/v1?token=abc",
        api_key_env="MY_KEY",
        extra_body={"api_key": "zzz", "top_k": 5},
    )
    public = cfg.public()
    text = repr(public)
    assert "sk-secret-123" not in text and "pw" not in text and "abc" not in text and "zzz" not in text
    assert public["base_url"] == "http://localhost:8000/v1"
    assert public["extra_body"]["top_k"] == 5
    assert public["model"] == "m"
    with pytest.raises(ValueError):
        LLMConfig(model="m", max_retries=-1)
    with pytest.raises(ValueError):
        LLMConfig(model="m", temperature=0.1, unknown=1)


def test_no_network_at_construction_and_missing_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = OpenAIClient(LLMConfig(model="gpt-x"))
    assert isinstance(client, LLMClient)
    with pytest.raises(LLMError, match=r"\$OPENAI_API_KEY"):
        client.complete(USER)


def test_local_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(["hi"]) as server:
        assert fast(server).complete(USER).message.content == "hi"


# ----------------------------------------------------------------------------- success path
def test_usage_seed_temperature_and_options_reach_server():
    with ScriptedServer(["hello there, how can I help?"]) as server:
        client = fast(server, temperature=0.3, max_tokens=64, tool_choice="auto", extra_body={"top_k": 4})
        out = client.complete(USER, tools=TOOLS, seed=42, response_format={"type": "json_object"})
        req = server.requests[0]
    assert req["seed"] == 42
    assert req["temperature"] == 0.3 and req["max_tokens"] == 64 and req["tool_choice"] == "auto"
    assert req["top_k"] == 4 and req["response_format"] == {"type": "json_object"}
    assert [t["function"]["name"] for t in req["tools"]] == ["get_order", "cancel_order"]
    assert out.message.usage is not None and out.message.usage.completion_tokens > 0
    assert out.usage == out.message.usage
    assert out.attempts == 1 and out.finish_reason == "stop" and out.latency_s >= 0


def test_complete_takes_the_request_itself():
    request = LLMRequest(USER, tools=TOOLS, seed=7, temperature=0.4, response_format={"type": "json_object"})
    with ScriptedServer(["ok", "ok"]) as server:
        client = fast(server)
        client.complete(request)
        asyncio.run(client.acomplete(request, seed=8))  # keywords override the request's fields
        sent = server.requests
    assert [r["seed"] for r in sent] == [7, 8] and all(r["temperature"] == 0.4 for r in sent)
    assert all(r["response_format"] == {"type": "json_object"} for r in sent) and all(r["tools"] for r in sent)
    llm = ScriptedLLM(["a"])
    llm.complete(request)
    assert llm.requests[0].seed == 7 and llm.requests[0].tools == tuple(TOOLS)
    assert LLMRequest.of(USER, {"seed": 3}) == LLMRequest(USER, seed=3)
    assert LLMRequest.of(request, {}) is request


def test_temperature_override_and_null_assistant_content_sent_as_empty():
    with ScriptedServer(["ok"]) as server:
        fast(server).complete(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "y"},
            ],
            temperature=0.9,
        )
        req = server.requests[0]
    assert req["temperature"] == 0.9
    assert req["messages"][1]["content"] == ""
    assert "seed" not in req and "tools" not in req


def test_native_tool_calls_parsed():
    reply = {
        "content": None,
        "tool_calls": [
            {"id": "a", "function": {"name": "get_order", "arguments": '{"order_id": "#1"}'}},
            {"id": "b", "function": {"name": "not_a_tool", "arguments": "{broken"}},
        ],
    }
    with ScriptedServer([reply]) as server:
        msg = fast(server).complete(USER, tools=TOOLS).message
    assert msg.tool_calls[0].arguments == {"order_id": "#1"}
    # Native calls keep unknown names and raw arguments: the env answers them with an error.
    assert msg.tool_calls[1].name == "not_a_tool" and msg.tool_calls[1].arguments == "{broken"


def test_text_tool_call_fallback_through_http():
    text = '```json\n{"name": "get_order", "arguments": {"order_id": "#1"}}\n```'
    with ScriptedServer([text, text]) as server:
        client = fast(server)
        with_tools = client.complete(USER, tools=TOOLS)
        without_tools = client.complete(USER)
    assert with_tools.message.tool_calls[0].name == "get_order"
    assert with_tools.raw_content == text
    assert without_tools.message.tool_calls == () and without_tools.message.content == text


def test_empty_reply_becomes_empty_text():
    with ScriptedServer([{"content": None}]) as server:
        msg = fast(server).complete(USER, tools=TOOLS).message
    assert msg.content == "" and msg.tool_calls == () and msg.is_empty


# ----------------------------------------------------------------------------- retries
def test_429_retry_after_is_honoured():
    with ScriptedServer([Fault.rate_limit(0.4), "ok"]) as server:
        client = fast(server)
        started = time.perf_counter()
        out = client.complete(USER)
        elapsed = time.perf_counter() - started
    assert out.message.content == "ok" and out.attempts == 2
    assert elapsed >= 0.4  # backoff alone would be <= 0.05 s


def test_500_then_success():
    with ScriptedServer([Fault.server_error(), Fault.server_error(502), "fine"]) as server:
        out = fast(server).complete(USER)
        assert server.request_count == 3
    assert out.message.content == "fine" and out.attempts == 3


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        (Fault.drop(), "connection error"),
        (Fault.malformed(), "malformed reply"),
        (Fault.empty_choices(), "no choices"),
        (Fault.server_error(503), "HTTP 503"),
        (Fault.rate_limit(), "HTTP 429"),
    ],
)
def test_retryable_faults_recover_or_give_up(fault, needle):
    with ScriptedServer([fault, "recovered"]) as server:
        assert fast(server).complete(USER).message.content == "recovered"
    with ScriptedServer([fault], cycle=True) as server:
        client = fast(server, max_retries=2)
        with pytest.raises(LLMError) as info:
            client.complete(USER)
        assert server.request_count == 3
    message = str(info.value)
    assert needle in message and "3 attempt(s)" in message and server.base_url in message
    assert info.value.attempts == 3 and info.value.retryable


def test_timeout_retries_then_gives_up():
    with ScriptedServer([Fault.delay(1.0)], cycle=True) as server:
        client = fast(server, timeout_s=0.2, max_retries=1)
        started = time.perf_counter()
        with pytest.raises(LLMError, match=r"timed out after 0.2s") as info:
            client.complete(USER)
        assert time.perf_counter() - started < 1.5
    assert info.value.attempts == 2


def test_non_retryable_400_fails_at_once():
    with ScriptedServer([Fault.http(400, "bad request body"), "never"]) as server:
        with pytest.raises(LLMError) as info:
            fast(server, max_retries=5).complete(USER)
        assert server.request_count == 1
    assert info.value.status == 400 and not info.value.retryable
    assert "bad request body" in str(info.value) and "not retryable" in str(info.value)


def test_connection_refused_is_llm_error():
    with ScriptedServer(["x"]) as server:
        url = server.base_url
    client = OpenAIClient(LLMConfig(model="m", base_url=url, max_retries=1, backoff_base_s=0.01))
    with pytest.raises(LLMError, match="connection error"):
        client.complete(USER)


async def test_async_retries_and_seed():
    with ScriptedServer(
        [Fault.rate_limit(0.2), Fault.server_error(), '{"name": "cancel_order", "arguments": {}}']
    ) as s:
        client = fast(s)
        started = time.perf_counter()
        out = await client.acomplete(USER, tools=TOOLS, seed=11)
        assert time.perf_counter() - started >= 0.2
        assert [r["seed"] for r in s.requests] == [11, 11, 11]
        await client.aclose()
    assert out.attempts == 3 and out.message.tool_calls[0].name == "cancel_order"


async def test_async_gives_up_with_llm_error():
    with ScriptedServer([Fault.http(401, "invalid key")]) as server, pytest.raises(LLMError, match="HTTP 401"):
        await fast(server).acomplete(USER)


def test_async_client_per_event_loop():
    with ScriptedServer(["a", "b"]) as server:
        client = fast(server)
        first = asyncio.run(client.acomplete(USER))
        second = asyncio.run(client.acomplete(USER))  # a new loop must not reuse the old loop's pool
    assert (first.message.content, second.message.content) == ("a", "b")


# ----------------------------------------------------------------------------- text tool-call parsing
@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_order", "arguments": {"order_id": "#1"}}',
        '[{"name": "get_order", "arguments": {"order_id": "#1"}}]',
        'Let me look.\n```json\n{"name": "get_order", "arguments": {"order_id": "#1"}}\n```',
        '```\n{"name": "get_order", "arguments": {"order_id": "#1"}}\n```',
        '{{"name": "get_order", "arguments": {{"order_id": "#1"}}}}',
        '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "#1"}}\n</tool_call>',
        '<tool_call>{"name": "get_order", "arguments": "{\\"order_id\\": \\"#1\\"}"}</tool_call>',
        '{"name": "get_order", "parameters": {"order_id": "#1"}}',
        '{"type": "function", "function": {"name": "get_order", "arguments": {"order_id": "#1"}}}',
        'I will check: {"name": "get_order", "arguments": {"order_id": "#1"}}',
    ],
)
def test_text_tool_call_variants(text):
    calls, _rest = parse_text_tool_calls(text, NAMES)
    assert len(calls) == 1
    assert calls[0].name == "get_order" and calls[0].arguments == {"order_id": "#1"}
    assert calls[0].id.startswith("call_")


def test_text_tool_calls_multiple_and_remaining_text():
    text = (
        'Checking both.\n<tool_call>{"name": "get_order", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "cancel_order", "arguments": {"order_id": "#2"}}</tool_call>'
    )
    calls, rest = parse_text_tool_calls(text, NAMES)
    assert [c.name for c in calls] == ["get_order", "cancel_order"]
    assert len({c.id for c in calls}) == 2
    assert rest == "Checking both."


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "rm_rf", "arguments": {}}',
        '[{"name": "get_order", "arguments": {}}, {"name": "rm_rf", "arguments": {}}]',
        "Your order total is {42}.",
        '{"order_id": "#1"}',
        "",
        '{"name": "get_order", "arguments": {',
    ],
)
def test_unknown_or_non_calls_are_rejected(text):
    calls, rest = parse_text_tool_calls(text, NAMES)
    assert calls == ()
    assert rest == text


def test_unparsable_arguments_kept_raw():
    calls, _ = parse_text_tool_calls('{"name": "get_order", "arguments": "{not json"}', NAMES)
    assert calls[0].arguments == "{not json"
    assert tool_names_of(TOOLS) == frozenset(NAMES)


def test_build_assistant_message_prefers_native_calls():
    msg = build_assistant_message(
        '{"name": "cancel_order", "arguments": {}}',
        [{"id": "n1", "function": {"name": "get_order", "arguments": ""}}],
        TOOLS,
        Usage(prompt_tokens=1, completion_tokens=2),
    )
    assert [c.name for c in msg.tool_calls] == ["get_order"] and msg.tool_calls[0].arguments == {}
    assert msg.usage == Usage(prompt_tokens=1, completion_tokens=2)


# ----------------------------------------------------------------------------- ScriptedLLM
def test_scripted_llm_reply_kinds_and_recording():
    llm = ScriptedLLM(
        [
            "plain",
            '{"name": "get_order", "arguments": {"order_id": "#1"}}',
            {"content": None, "tool_calls": [{"id": "t", "function": {"name": "cancel_order", "arguments": {}}}]},
            AssistantMessage(content="typed"),
            Completion(message=AssistantMessage(content="done", usage=Usage(prompt_tokens=9))),
            ValueError("scripted failure"),
            LLMError,
        ]
    )
    assert isinstance(llm, LLMClient)
    assert llm.complete(USER, seed=1).message.content == "plain"
    assert llm.complete(USER, tools=TOOLS).message.tool_calls[0].arguments == {"order_id": "#1"}
    assert llm.complete(USER, tools=TOOLS).message.tool_calls[0].id == "t"
    typed = llm.complete(USER)
    assert typed.message.content == "typed" and typed.usage.total_tokens > 0
    assert llm.complete(USER).usage.prompt_tokens == 9
    with pytest.raises(ValueError, match="scripted failure"):
        llm.complete(USER)
    with pytest.raises(LLMError):
        llm.complete(USER)
    with pytest.raises(LLMError, match="ran out"):
        llm.complete(USER)
    assert llm.calls == 8
    assert llm.requests[0].seed == 1 and llm.requests[0].messages == tuple(USER)
    assert llm.requests[1].tools is not None and llm.requests[0].tools is None


async def test_scripted_llm_callable_cycle_and_async():
    llm = ScriptedLLM(lambda messages, tools: f"{len(messages)}:{bool(tools)}")
    out = await llm.acomplete(USER, tools=TOOLS, temperature=0.5)
    assert out.message.content == "1:True" and llm.requests[0].temperature == 0.5
    cyc = ScriptedLLM(["a", "b"], cycle=True)
    assert [cyc.complete(USER).message.content for _ in range(3)] == ["a", "b", "a"]
    with pytest.raises(LLMError, match="unsupported reply"):
        ScriptedLLM([42]).complete(USER)


def test_run_plan_sync_and_async():
    def plan():
        first = yield LLMRequest(USER, seed=1)
        second = yield LLMRequest([*USER, first.message.to_openai()], seed=2)
        return first.message.content + second.message.content

    llm = ScriptedLLM(["a", "b"])
    assert run_plan(llm, plan()) == "ab"
    assert [r.seed for r in llm.requests] == [1, 2]
    assert asyncio.run(arun_plan(ScriptedLLM(["c", "d"]), plan())) == "cd"
