import asyncio
import json
import socket
import time

import openai
import pytest

from apigen_envs.fake_server import Fault, ScriptedServer, completion_body
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.messages import AssistantMessage, ToolCall


def _raw_http(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_models_and_chat_with_real_openai_client():
    with ScriptedServer(["hello"], models=("m1", "m2")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["m1", "m2"]
        resp = client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}], seed=5)
        assert resp.choices[0].message.content == "hello"
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        assert server.request_count == 1
        assert server.requests[0]["seed"] == 5
        client.close()


def test_reply_kinds_and_order():
    tool_dict = {"content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    msg = AssistantMessage(content="x", tool_calls=(ToolCall(id="c9", name="g", arguments={"b": 2}),))
    with ScriptedServer(["one", tool_dict, msg]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        kwargs = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        first = client.chat.completions.create(**kwargs).choices[0]
        second = client.chat.completions.create(**kwargs).choices[0]
        third = client.chat.completions.create(**kwargs).choices[0]
        assert first.message.content == "one" and first.finish_reason == "stop"
        assert second.finish_reason == "tool_calls"
        assert second.message.tool_calls[0].function.name == "f"
        assert json.loads(second.message.tool_calls[0].function.arguments) == {"a": 1}
        assert third.message.tool_calls[0].id == "c9"
        with pytest.raises(openai.BadRequestError, match="exhausted"):
            client.chat.completions.create(**kwargs)
        client.close()


def test_cycle_and_handler():
    with ScriptedServer(["a", "b"], cycle=True) as server:
        client = OpenAIClient(LLMConfig(model="m", base_url=server.base_url))
        texts = [client.complete([{"role": "user", "content": "x"}]).message.content for _ in range(5)]
        assert texts == ["a", "b", "a", "b", "a"]

    async def handler(request):
        return f"echo {request['messages'][-1]['content']}"

    with ScriptedServer(handler=handler) as server:
        client = OpenAIClient(LLMConfig(model="m", base_url=server.base_url))
        assert client.complete([{"role": "user", "content": "ping"}]).message.content == "echo ping"


def test_handler_exception_is_http_500():
    def handler(request):
        raise RuntimeError("boom")

    with ScriptedServer(handler=handler) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="boom"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        client.close()


def test_raw_http_edge_cases():
    with ScriptedServer(["ok"], cycle=True) as server:
        port = server.port
        # Unknown route, bad JSON body, wrong method, keep-alive with two requests on one socket.
        assert b" 404 " in _raw_http(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bad = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{x}"
        assert b" 400 " in _raw_http(port, bad)
        assert b" 405 " in _raw_http(port, b"GET /v1/chat/completions HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert b" 400 " in _raw_http(port, b"garbage\r\n\r\n")
        body = json.dumps({"model": "m", "messages": []}).encode()
        one = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        last = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
            len(body),
            body,
        )
        answer = _raw_http(port, one + last)
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        chunked = (
            b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        assert b"HTTP/1.1 200 OK" in _raw_http(port, chunked)


def test_faults_seen_by_raw_openai_client():
    faults = [Fault.rate_limit(3), Fault.server_error(503), Fault.empty_choices(), Fault.drop(), Fault.malformed()]
    with ScriptedServer(faults) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=2)
        kwargs = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**kwargs)
        assert info.value.response.headers["retry-after"] == "3"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**kwargs)
        assert client.chat.completions.create(**kwargs).choices == []
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(**kwargs)
        with pytest.raises(ValueError):
            client.chat.completions.create(**kwargs)
        client.close()


def test_constructor_validation_and_lifecycle():
    with pytest.raises(ValueError):
        ScriptedServer()
    with pytest.raises(ValueError):
        ScriptedServer(["x"], latency_s=-1)
    server = ScriptedServer(["x"])
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_completion_body_passthrough_and_bad_type():
    full = {"choices": [], "id": "x"}
    assert completion_body(full, {}, 1) == full
    with pytest.raises(TypeError):
        completion_body(42, {}, 1)


async def test_concurrent_requests_overlap():
    latency, n = 0.05, 256
    with ScriptedServer(["ok"], cycle=True, latency_s=latency) as server:
        client = OpenAIClient(LLMConfig(model="m", base_url=server.base_url, timeout_s=30))
        started = time.perf_counter()
        results = await asyncio.gather(*(client.acomplete([{"role": "user", "content": str(i)}]) for i in range(n)))
        elapsed = time.perf_counter() - started
        await client.aclose()
        assert all(r.message.content == "ok" for r in results)
        assert server.request_count == n
        # Serial handling would take n * latency = 12.8 s; a generous bound that still proves overlap.
        assert elapsed < n * latency / 4, elapsed
