"""A scripted OpenAI-compatible HTTP server for offline tests and throughput benchmarks.

:class:`ScriptedServer` listens on 127.0.0.1 and answers ``POST /v1/chat/completions`` and
``GET /v1/models`` like an OpenAI-compatible server would, so the real ``openai`` client path (HTTP,
JSON, retries, timeouts) is exercised without any network access. It runs its own asyncio event loop
in a background thread with a minimal HTTP/1.1 parser (keep-alive, Content-Length and chunked bodies),
so it can hold hundreds of concurrent requests while each waits on the configured latency.

Replies are scripted: a list replayed in order (or cycled), or a handler called with each request's
JSON body. Each reply is one of:

* a ``str`` (assistant text),
* a ``dict`` in OpenAI assistant-message form (``{"content": ..., "tool_calls": [...]}``), or a full
  ``chat.completion`` body when it has a ``"choices"`` key (sent unchanged),
* an :class:`~apigen_envs.messages.AssistantMessage`,
* a :class:`Fault` (HTTP error status with headers, a delay, a dropped connection, a malformed body,
  an empty ``choices`` list),
* an exception instance (answered as HTTP 500 with its message).

Only the standard library is used, so the server also works where ``openai`` is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import pydantic_core

from apigen_envs.messages import AssistantMessage
from apigen_envs.text import json_bytes

FaultKind = Literal["http", "drop", "malformed", "empty_choices", "delay"]
"""What a :class:`Fault` does to one request."""

_REASONS = MappingProxyType(
    {
        200: "OK",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        408: "Request Timeout",
        409: "Conflict",
        413: "Payload Too Large",
        422: "Unprocessable Entity",
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
)

# Requests larger than this are refused; chat prompts are far smaller, and it bounds memory per socket.
_MAX_BODY = 64 * 1024 * 1024
_MAX_HEADER = 64 * 1024


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure the server injects into one request (build one with the class methods).

    Attributes:
        kind: ``"http"`` (error status), ``"drop"`` (close the socket without answering),
            ``"malformed"`` (200 with a body that is not valid JSON), ``"empty_choices"`` (200 with
            ``"choices": []``) or ``"delay"`` (sleep, then answer ``then``).
        status: HTTP status for ``"http"`` faults.
        headers: Extra response headers (e.g. ``Retry-After``).
        message: Error message placed in the OpenAI-style error body.
        delay_s: Seconds to wait before answering (``"delay"``) or before failing (others).
        then: The reply sent after a ``"delay"`` fault's wait.

    """

    kind: FaultKind
    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str = "scripted fault"
    delay_s: float = 0.0
    then: Any = "ok"

    @classmethod
    def http(cls, status: int, message: str = "scripted error", headers: Mapping[str, str] | None = None) -> Fault:
        """An HTTP error response.

        Args:
            status: The status code (e.g. 400, 429, 500, 503).
            message: The error message in the body.
            headers: Extra headers.

        Returns:
            The fault.

        """
        return cls("http", status=status, message=message, headers=dict(headers or {}))

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None) -> Fault:
        """HTTP 429, optionally with a ``Retry-After`` header (seconds).

        Args:
            retry_after: The header value; left out when None.

        Returns:
            The fault.

        """
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return cls("http", status=429, message="rate limited", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx server error.

        Args:
            status: The status code.

        Returns:
            The fault.

        """
        return cls("http", status=status, message="internal server error")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering.

        Returns:
            The fault.

        """
        return cls("drop")

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a truncated, invalid JSON body.

        Returns:
            The fault.

        """
        return cls("malformed")

    @classmethod
    def empty_choices(cls) -> Fault:
        """Answer 200 with a well-formed completion whose ``choices`` list is empty.

        Returns:
            The fault.

        """
        return cls("empty_choices")

    @classmethod
    def delay(cls, seconds: float, then: Any = "ok") -> Fault:
        """Wait before answering (longer than the client timeout to provoke a timeout).

        Args:
            seconds: The wait.
            then: The reply sent afterwards, if the client is still there.

        Returns:
            The fault.

        """
        return cls("delay", delay_s=seconds, then=then)


Handler = Callable[[dict[str, Any]], Any] | Callable[[dict[str, Any]], Awaitable[Any]]
"""``(request_json) -> reply``, sync or ``async def``."""


def _approx_tokens(text: str) -> int:
    # A stable, cheap stand-in for a tokenizer: about four characters per token.
    return max(1, len(text) // 4) if text else 0


def _message_dict(reply: Any) -> dict[str, Any]:
    """Turn a scripted reply (str, assistant dict, AssistantMessage) into an OpenAI assistant message."""
    if isinstance(reply, AssistantMessage):
        return reply.to_openai()
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}
    if isinstance(reply, Mapping):
        out: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
        calls = []
        for i, tc in enumerate(reply.get("tool_calls") or ()):
            fn = tc.get("function", tc)
            args = fn.get("arguments", {})
            calls.append(
                {
                    "id": tc.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": fn.get("name", ""),
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
            )
        if calls:
            out["tool_calls"] = calls
        return out
    raise TypeError(f"unsupported scripted reply type {type(reply).__name__}")


def completion_body(reply: Any, request: Mapping[str, Any], number: int) -> dict[str, Any]:
    """Build a ``chat.completion`` JSON body for a scripted reply.

    Args:
        reply: A str, an assistant-message dict, an AssistantMessage, or a full body (dict with
            ``"choices"``, returned unchanged).
        request: The request body (its model name is echoed; its prompt sizes the fake usage).
        number: A sequence number for the completion id.

    Returns:
        The response body.

    Raises:
        TypeError: For an unsupported reply type.

    """
    if isinstance(reply, Mapping) and "choices" in reply:
        return dict(reply)
    message = _message_dict(reply)
    prompt = "".join(
        m.get("content") or "" if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
        for m in request.get("messages") or ()
        if isinstance(m, Mapping)
    )
    completion = (message.get("content") or "") + "".join(
        tc["function"]["name"] + tc["function"]["arguments"] for tc in message.get("tool_calls", ())
    )
    usage = {"prompt_tokens": _approx_tokens(prompt), "completion_tokens": _approx_tokens(completion)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model") or "scripted"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }


class _BadRequest(Exception):
    """The HTTP request could not be parsed; answered with the given status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error_body(status: int, message: str) -> bytes:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


class ScriptedServer:
    """A scripted OpenAI-compatible server on 127.0.0.1 (see the module docstring for reply kinds).

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with ScriptedServer(["Hello!"]) as server:
            client = OpenAIClient(LLMConfig(model="m", base_url=server.base_url))

    Args:
        replies: Replies served in order (or cycled when ``cycle`` is True).
        handler: Called with each chat request's JSON body to produce the reply; overrides ``replies``.
        cycle: Restart ``replies`` from the first when they run out; otherwise a request past the last
            reply is answered with HTTP 400 "scripted replies exhausted".
        latency_s: Fixed wait before every chat reply (concurrent requests wait concurrently).
        host: Interface to bind; loopback by default and it should stay so.
        port: Port to bind; 0 picks a free one.
        models: Model ids listed by ``GET /v1/models``.
        record: Keep every request's body and headers (:attr:`requests`, :attr:`request_headers`). A
            benchmark serving millions of requests turns it off: memory stays flat and the collector
            of a long run has no growing list to walk.

    """

    def __init__(
        self,
        replies: Iterable[Any] = (),
        *,
        handler: Handler | None = None,
        cycle: bool = False,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] = ("scripted",),
        record: bool = True,
    ) -> None:
        self._replies = tuple(replies)
        if handler is None and not self._replies:
            raise ValueError("ScriptedServer needs replies or a handler")
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self._handler = handler
        self._cycle = cycle
        self.latency_s = latency_s
        self._host = host
        self._port = port
        self._models = tuple(models)
        self._record = record
        self._lock = threading.Lock()
        self._next_reply = 0
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._count = 0
        self._counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._bound_port: int | None = None
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ScriptedServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving in a background thread; returns once the socket is bound.

        Raises:
            RuntimeError: When already started, or when the socket cannot be bound.

        """
        if self._thread is not None:
            raise RuntimeError("ScriptedServer is already running")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="scripted-llm-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if self._startup_error is not None or self._bound_port is None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError(f"ScriptedServer could not start on {self._host}:{self._port}: {self._startup_error}")

    def stop(self) -> None:
        """Stop serving, close open connections and join the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve_connection, self._host, self._port, backlog=4096, limit=_MAX_HEADER * 2
                )
            )
            self._bound_port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    # ------------------------------------------------------------------ public state
    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._bound_port is None:
            raise RuntimeError("ScriptedServer is not started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this server, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def request_count(self) -> int:
        """How many chat-completion requests arrived (faulted ones included)."""
        with self._lock:
            return self._count

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers (names lower-cased) of the chat-completion requests received, in arrival order.

        Tests use it to check what credentials a client sent (e.g. that a key never reached this server).
        """
        with self._lock:
            return list(self._headers)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of the JSON bodies of the chat-completion requests received, in arrival order."""
        with self._lock:
            return list(self._requests)

    # ------------------------------------------------------------------ HTTP
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except _BadRequest as exc:
                    await self._send(writer, exc.status, _error_body(exc.status, str(exc)), keep_alive=False)
                    return
                if request is None:
                    return
                method, path, headers, body = request
                keep_alive = headers.get("connection", "").lower() != "close"
                if not await self._dispatch(writer, method, path, body, keep_alive, headers):
                    return
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest(400, "incomplete request head") from None
            return None  # the client closed an idle keep-alive connection
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, f"malformed request line {lines[0][:100]!r}")
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, f"malformed header line {line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest(400, "invalid Content-Length") from None
            if length < 0 or length > _MAX_BODY:
                raise _BadRequest(413, "request body too large")
            body = await reader.readexactly(length) if length else b""
        return method.upper(), target.split("?", 1)[0], headers, body

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "invalid chunk size") from None
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                raise _BadRequest(413, "request body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        keep_alive: bool,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        head.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _dispatch(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: bytes,
        keep_alive: bool,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Answer one request. Returns False when the connection must be closed."""
        route = path.rstrip("/")
        if route in ("/v1/models", "/models"):
            if method != "GET":
                await self._send(writer, 405, _error_body(405, "use GET"), keep_alive=keep_alive)
                return True
            data = {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": "scripted"} for m in self._models],
            }
            await self._send(writer, 200, json.dumps(data).encode(), keep_alive=keep_alive)
            return True
        if route not in ("/v1/chat/completions", "/chat/completions"):
            await self._send(writer, 404, _error_body(404, f"no route for {method} {path}"), keep_alive=keep_alive)
            return True
        if method != "POST":
            await self._send(writer, 405, _error_body(405, "use POST"), keep_alive=keep_alive)
            return True
        try:
            # pydantic's Rust parser: the request body (messages and tool schemas) is most of this server's
            # CPU per request, and in benchmarks the server shares the machine with the client it serves.
            request = pydantic_core.from_json(body or b"null")
        except ValueError:
            try:  # what the Rust parser refuses and json accepts: lone surrogate escapes, NaN spellings
                request = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                request = None
        if not isinstance(request, dict):
            await self._send(writer, 400, _error_body(400, "request body must be a JSON object"), keep_alive=keep_alive)
            return True
        number = next(self._counter)
        with self._lock:
            self._count += 1
            if self._record:
                self._requests.append(request)
                self._headers.append(dict(headers or {}))
        if request.get("stream"):
            await self._send(writer, 400, _error_body(400, "streaming is not supported"), keep_alive=keep_alive)
            return True
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        try:
            reply = await self._next(request)
        except Exception as exc:  # a failing handler is a 500, so the client's error path is exercised
            reply = exc
        return await self._answer(writer, reply, request, number, keep_alive)

    async def _next(self, request: dict[str, Any]) -> Any:
        if self._handler is not None:
            reply = self._handler(request)
            if inspect.isawaitable(reply):
                reply = await reply
            return reply
        with self._lock:
            index = self._next_reply
            self._next_reply += 1
        if index >= len(self._replies):
            if not self._cycle:
                return Fault.http(400, f"scripted replies exhausted after {len(self._replies)} replies")
            index %= len(self._replies)
        return self._replies[index]

    async def _answer(
        self, writer: asyncio.StreamWriter, reply: Any, request: dict[str, Any], number: int, keep_alive: bool
    ) -> bool:
        if isinstance(reply, BaseException):
            message = f"{type(reply).__name__}: {reply}"
            await self._send(writer, 500, _error_body(500, message), keep_alive=keep_alive)
            return True
        if isinstance(reply, Fault):
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.kind == "delay":
                return await self._answer(writer, reply.then, request, number, keep_alive)
            if reply.kind == "drop":
                writer.transport.abort()
                return False
            if reply.kind == "malformed":
                await self._send(writer, 200, b'{"id": "chatcmpl-broken", "choices": [{"mess', keep_alive=keep_alive)
                return True
            if reply.kind == "empty_choices":
                data = completion_body("", request, number) | {"choices": []}
                await self._send(writer, 200, json.dumps(data).encode(), keep_alive=keep_alive)
                return True
            await self._send(
                writer,
                reply.status,
                _error_body(reply.status, reply.message),
                keep_alive=keep_alive,
                headers=reply.headers,
            )
            return True
        try:
            data = completion_body(reply, request, number)
        except TypeError as exc:
            await self._send(writer, 500, _error_body(500, str(exc)), keep_alive=keep_alive)
            return True
        await self._send(writer, 200, json_bytes(data), keep_alive=keep_alive)
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Serve fixed replies until stdin closes: ``python -m apigen_envs.fake_server --latency 0.05``.

    Benchmarks run the server this way, in a process of its own, so it does not share the client's GIL.
    The first line printed is the base URL.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit code.

    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m apigen_envs.fake_server", description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat reply")
    parser.add_argument("--reply", action="append", help="assistant text, cycled (repeatable)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="keep request bodies (off: flat memory)")
    args = parser.parse_args(argv)
    replies = args.reply or ["All set, goodbye."]
    with ScriptedServer(replies, cycle=True, latency_s=args.latency, port=args.port, record=args.record) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or exits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
