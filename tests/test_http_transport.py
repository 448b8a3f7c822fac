"""Every transport (aiohttp, httpx, the openai client) gives the same parsed results and the same errors."""

import asyncio
import gc
import re
import warnings

import pytest

from apigen_envs.errors import LLMError
from apigen_envs.fake_server import Fault, ScriptedServer
from apigen_envs.http_transport import TRANSPORTS, AsyncTransport, SyncTransport, async_transport, sync_transport
from apigen_envs.llm import LLMConfig, OpenAIClient

TOOLS = [
    {"type": "function", "function": {"name": "get_order", "description": "d", "parameters": {"type": "object"}}},
]
USER = [{"role": "user", "content": "hello \u00e9"}]

REPLIES = [
    "plain text reply",
    {
        "content": None,
        "tool_calls": [{"id": "a", "function": {"name": "get_order", "arguments": '{"order_id": "#1"}'}}],
    },
    {"content": "two", "tool_calls": [{"id": "b", "function": {"name": "nope", "arguments": "{broken"}}]},
    '```json\n{"name": "get_order", "arguments": {"order_id": "#2"}}\n```',
    {"content": None},
    {"content": "lone \ud83d surrogate"},
    {
        "id": "x",
        "model": "other-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "full"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    },
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage"}, "finish_reason": "stop"}]},
]


def client_for(server: ScriptedServer, transport: str, **kw) -> OpenAIClient:
    settings = {"model": "m", "base_url": server.base_url, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    return OpenAIClient(LLMConfig(**(settings | {"transport": transport} | kw)))


def summary(completion):
    message = completion.message
    return (
        message.content,
        [(c.id, c.name, c.arguments) for c in message.tool_calls],
        message.usage,
        completion.finish_reason,
        completion.attempts,
        completion.raw_content,
        completion.model,
    )


def run_all(transport: str, *, use_async: bool) -> list:
    with ScriptedServer(REPLIES, cycle=True) as server:
        client = client_for(server, transport)

        async def many():
            out = [summary(await client.acomplete(USER, tools=TOOLS, seed=1)) for _ in REPLIES]
            await client.aclose()
            return out

        if use_async:
            return asyncio.run(many())
        out = [summary(client.complete(USER, tools=TOOLS, seed=1)) for _ in REPLIES]
        client.close()
        return out


@pytest.mark.parametrize("use_async", [False, True])
def test_parsed_results_identical_across_transports(use_async):
    results = {t: run_all(t, use_async=use_async) for t in TRANSPORTS}
    assert results["aiohttp"] == results["openai"]
    assert results["httpx"] == results["openai"]
    first = results["openai"]
    assert first[0][0] == "plain text reply" and first[1][1][0][2] == {"order_id": "#1"}
    assert first[6][2].prompt_tokens == 7 and first[6][3] == "length" and first[6][6] == "other-model"


def test_same_request_body_on_every_transport():
    bodies = {}
    for transport in TRANSPORTS:
        with ScriptedServer(["ok"], cycle=True) as server:
            client = client_for(server, transport, extra_body={"top_k": 3}, max_tokens=9)
            client.complete(USER, tools=TOOLS, seed=4, response_format={"type": "json_object"})
            asyncio.run(client.acomplete(USER, temperature=0.5))
            bodies[transport] = server.requests
            headers = server.request_headers
        assert all(h["authorization"] == "Bearer not-needed" for h in headers)
        assert all(h["content-type"].startswith("application/json") for h in headers)
    assert bodies["aiohttp"] == bodies["httpx"] == bodies["openai"]


def _error(transport: str, replies, *, use_async: bool, **kw) -> tuple[LLMError, int]:
    with ScriptedServer(replies, cycle=True) as server:
        client = client_for(server, transport, **kw)
        with pytest.raises(LLMError) as info:
            if use_async:
                asyncio.run(client.acomplete(USER))
            else:
                client.complete(USER)
        return info.value, server.request_count


def _normalise(message: str) -> str:
    # The connection error names the library's own exception (ConnectError, ServerDisconnectedError...).
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", message)
    return re.sub(r"connection error \(.*\)", "connection error (...)", message)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "replies",
    [
        [Fault.rate_limit(0)],
        [Fault.server_error(503)],
        [Fault.http(400, "bad body")],
        [Fault.http(401, "")],
        [Fault.http(422, "unprocessable")],
        [Fault.malformed()],
        [Fault.empty_choices()],
        [Fault.drop()],
        [{"choices": [{"index": 0}]}],
    ],
    ids=["429", "503", "400", "401-no-message", "422", "malformed", "empty", "drop", "no-message"],
)
def test_errors_identical_across_transports(replies, use_async):
    seen = {}
    for transport in TRANSPORTS:
        error, requests = _error(transport, replies, use_async=use_async, max_retries=2)
        seen[transport] = (_normalise(str(error)), error.status, error.attempts, error.retryable, requests)
    assert seen["aiohttp"] == seen["openai"] and seen["httpx"] == seen["openai"], seen


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("use_async", [False, True])
def test_timeout_and_refused(transport, use_async):
    error, requests = _error(transport, [Fault.delay(1.0)], use_async=use_async, timeout_s=0.2, max_retries=1)
    assert "timed out after 0.2s" in str(error) and error.attempts == 2 and requests == 2
    with ScriptedServer(["x"]) as server:
        url = server.base_url
    client = OpenAIClient(LLMConfig(model="m", base_url=url, max_retries=1, backoff_base_s=0.01, transport=transport))
    with pytest.raises(LLMError, match=r"connection error \(.+\)") as info:
        asyncio.run(client.acomplete(USER)) if use_async else client.complete(USER)
    assert info.value.attempts == 2 and info.value.retryable and info.value.status is None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_recovers_after_retryable_faults(transport):
    replies = [Fault.drop(), Fault.malformed(), Fault.rate_limit(0), Fault.server_error(502), "fine"]
    with ScriptedServer(replies) as server:
        out = asyncio.run(client_for(server, transport).acomplete(USER))
    assert out.message.content == "fine" and out.attempts == 5


def test_no_unclosed_session_warning_when_loop_ends():
    with ScriptedServer(["a", "b"], cycle=True) as server:
        client = client_for(server, "aiohttp")
        gc.collect()  # earlier tests' garbage (the openai path leaves socket transports to the collector)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert asyncio.run(client.acomplete(USER)).message.content == "a"
            assert asyncio.run(client.acomplete(USER)).message.content == "b"  # a new loop, a new session
            gc.collect()
    assert not [str(w.message) for w in caught if "nclosed" in str(w.message)]


def test_openai_is_not_imported_by_the_default_transport():
    import subprocess
    import sys

    code = (
        "import sys, asyncio\n"
        "from apigen_envs.fake_server import ScriptedServer\n"
        "from apigen_envs.llm import LLMConfig, OpenAIClient\n"
        "with ScriptedServer(['hi']) as s:\n"
        "    c = OpenAIClient(LLMConfig(model='m', base_url=s.base_url))\n"
        "    assert asyncio.run(c.acomplete([{'role': 'user', 'content': 'x'}])).message.content == 'hi'\n"
        "print('openai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_factories_and_protocols():
    async def make():
        transport = async_transport("aiohttp", "http://127.0.0.1:1/v1", max_connections=4, timeout_s=1)
        assert isinstance(transport, AsyncTransport)
        await transport.aclose()

    asyncio.run(make())
    sync = sync_transport("httpx", "http://127.0.0.1:1/v1", max_connections=None, timeout_s=1)
    assert isinstance(sync, SyncTransport)
    sync.close()
    with pytest.raises(ValueError, match="unknown HTTP transport"):
        sync_transport("openai", "http://x", max_connections=1, timeout_s=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LLMConfig(model="m", transport="curl")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])  # the openai client fails to encode it (not retried)
def test_lone_surrogate_in_a_request_is_sent(transport):
    with ScriptedServer(["ok"], cycle=True) as server:
        client = client_for(server, transport)
        message = [{"role": "user", "content": "broken \ud83d emoji"}]
        assert asyncio.run(client.acomplete(message)).message.content == "ok"
        assert server.requests[0]["messages"][0]["content"] == "broken \ud83d emoji"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_in_the_url_go_as_basic_auth(transport):
    with ScriptedServer(["hi"], cycle=True) as server:
        url = server.base_url.replace("http://", "http://user:pw@")
        client = OpenAIClient(LLMConfig(model="m", base_url=url, transport=transport))
        assert client.complete(USER).message.content == "hi"
        assert asyncio.run(client.acomplete(USER)).message.content == "hi"
        assert {h["authorization"] for h in server.request_headers} == {"Basic dXNlcjpwdw=="}
