"""The LLM layer: one client protocol, an OpenAI-compatible client with retries, and a scripted client.

Every model call in the suite (agents, user simulators, data generation) goes through :class:`LLMClient`:

* :class:`OpenAIClient` talks to any OpenAI-compatible server (hosted APIs, vLLM, SGLang, llama.cpp,
  Ollama) through the ``openai`` package. It does its own retries (exponential backoff with jitter,
  ``Retry-After`` honoured) and turns failures into :class:`~apigen_envs.errors.LLMError` with the
  server URL, HTTP status and attempt count.
* :class:`ScriptedLLM` replays configured replies in-process, for fast deterministic tests.

Both return a :class:`Completion` whose message has token usage set, and both parse tool calls the same
way: native ``tool_calls`` first, otherwise JSON tool calls that small models write into the text
(plain JSON, a list, a ```json fence, doubled braces ``{{...}}``, ``<tool_call>`` tags), accepting only
names of the tools offered.

:func:`run_plan` / :func:`arun_plan` drive a generator that yields :class:`LLMRequest` objects and
receives completions, so agents and simulators write their multi-call logic once for sync and async use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import inspect
import json
import os
import random
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict, TypeVar, Unpack, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from apigen_envs._version import __version__
from apigen_envs.errors import LLMError
from apigen_envs.http_transport import (
    AsyncTransport,
    HTTPReply,
    SyncTransport,
    TransportConnectionError,
    TransportKind,
    TransportTimeout,
    async_transport,
    close_with_loop,
    sync_transport,
)
from apigen_envs.messages import AssistantMessage, ToolCall, Usage
from apigen_envs.text import clean_text, json_bytes

T = TypeVar("T")

_OPENAI_URL = "https://api.openai.com/v1"
# Sent as the API key to servers that need none (vLLM, llama.cpp): the openai client insists on one.
_PLACEHOLDER_KEY = "not-needed"
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_SECRET_HINTS = ("key", "token", "secret", "password", "auth")
_POOLED_CONNECTIONS = 128
"""The default open-connection cap of the httpx-based clients (their pools scan every connection per request)."""


# ---------------------------------------------------------------------------------------------- config
class LLMConfig(BaseModel):
    """How to reach a model and how to sample from it.

    The API key is never stored here: ``api_key_env`` names the environment variable read at call time.
    A server that needs no key (a local llama.cpp or vLLM) gets a placeholder.

    Attributes:
        model: Model name sent with each request.
        base_url: Server base URL (``http://host:port/v1``); None uses ``$OPENAI_BASE_URL`` or OpenAI.
        api_key_env: Environment variable holding the API key.
        timeout_s: Per-request timeout in seconds.
        max_retries: Retries after the first attempt on 429/5xx/timeouts/connection errors.
        backoff_base_s: First backoff delay; doubles each retry (with jitter).
        backoff_max_s: Upper bound of one backoff delay.
        retry_after_max_s: Upper bound on a server's ``Retry-After`` wait.
        temperature: Default sampling temperature (None leaves the server's default).
        max_tokens: Completion token limit (None leaves the server's default).
        tool_choice: ``"auto"``, ``"required"``, ``"none"`` or None (not sent), used when tools are given.
        extra_body: Extra JSON fields for the request body (server-specific options).
        max_connections: HTTP connections the async client keeps per event loop. None: the transport's
            default (:meth:`connection_limit`): no limit for aiohttp, whose pool costs the same per request
            however many connections are open, and 128 for httpx and the openai client, whose pools scan
            every connection per request (measured with httpx: 428 req/s unlimited vs 814 req/s at 128 with
            512 requests in flight).
        transport: How requests travel (see :mod:`apigen_envs.http_transport`): ``"aiohttp"`` (default: its
            pool's cost per request does not grow with open connections), ``"httpx"``, or ``"openai"`` (the
            ``openai`` package's client). All three send the same body and parse replies and errors alike.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    retry_after_max_s: float = Field(default=120.0, ge=0)
    temperature: float | None = 0.0
    max_tokens: int | None = Field(default=None, gt=0)
    tool_choice: str | None = None
    extra_body: dict[str, Any] | None = None
    max_connections: int | None = Field(default=None, ge=1)
    transport: TransportKind = "aiohttp"

    def connection_limit(self) -> int | None:
        """The open-connection cap the async client uses (None: no cap).

        Returns:
            ``max_connections`` when set, else the transport's default (see ``max_connections``).
        """
        if self.max_connections is not None:
            return self.max_connections
        return None if self.transport == "aiohttp" else _POOLED_CONNECTIONS

    def resolved_base_url(self) -> str:
        """The URL requests go to: ``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL

    def public(self) -> dict[str, Any]:
        """The settings as a dict safe to record on episodes: no key, no credentials in URLs.

        Returns:
            A JSON-serialisable dict (``extra_body`` values under secret-looking names are redacted).

        """
        out = self.model_dump()
        out["base_url"] = _safe_url(self.base_url) if self.base_url else None
        if self.extra_body:
            out["extra_body"] = {
                k: "<redacted>" if any(h in k.lower() for h in _SECRET_HINTS) else v for k, v in self.extra_body.items()
            }
        return out


def _safe_url(url: str) -> str:
    """The URL without user:password and query string (either may carry a credential)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Completion:
    """One model reply.

    Attributes:
        message: The reply as an assistant message, with ``usage`` set and tool calls parsed.
        finish_reason: The server's finish reason (``"stop"``, ``"tool_calls"``, ``"length"``...).
        latency_s: Wall time of the successful attempt plus earlier attempts and waits.
        attempts: Number of HTTP attempts made (1 when the first one succeeded).
        raw_content: The text content exactly as the model wrote it (before tool-call extraction).
        model: The model name the server reported.

    """

    message: AssistantMessage
    finish_reason: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    raw_content: str | None = None
    model: str | None = None

    @property
    def usage(self) -> Usage:
        """Token usage of this call."""
        return self.message.usage or Usage()


class RequestOptions(TypedDict, total=False):
    """What a request may set besides its messages (the keyword form of :class:`LLMRequest`'s fields)."""

    tools: Sequence[dict[str, Any]] | None
    seed: int | None
    temperature: float | None
    response_format: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One model request: what :meth:`LLMClient.complete` takes and what a plan yields (see :func:`run_plan`).

    Attributes:
        messages: OpenAI chat-format messages.
        tools: OpenAI tool schemas the model may call.
        seed: Sampling seed passed to the server.
        temperature: Overrides the client's temperature.
        response_format: OpenAI ``response_format`` (e.g. a JSON schema to enforce).

    """

    messages: Sequence[dict[str, Any]]
    tools: Sequence[dict[str, Any]] | None = None
    seed: int | None = None
    temperature: float | None = None
    response_format: dict[str, Any] | None = None

    @classmethod
    def of(cls, request: LLMRequest | Sequence[dict[str, Any]], options: RequestOptions) -> LLMRequest:
        """The request a ``complete(request_or_messages, **options)`` call stands for.

        Args:
            request: A request, or bare messages.
            options: Fields to set (they override the request's own).

        Returns:
            The request.

        """
        if isinstance(request, LLMRequest):
            return dataclasses.replace(request, **options) if options else request
        return cls(request, **options)


RequestLike = LLMRequest | Sequence[dict[str, Any]]
"""What ``complete`` accepts: a request, or bare messages with the other fields as keywords."""


@runtime_checkable
class LLMClient(Protocol):
    """Anything that turns an :class:`LLMRequest` into a :class:`Completion`.

    Both methods take the request, or bare messages plus the request's other fields as keywords
    (``complete(messages, tools=..., seed=...)``); :meth:`LLMRequest.of` turns either into the request.
    """

    def complete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Ask the model for the next assistant message."""
        ...

    async def acomplete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Async twin of :meth:`complete`."""
        ...


Plan = Generator[LLMRequest, Completion, T]
"""A multi-call routine: yields requests, receives their completions, returns its result."""


def run_plan(client: LLMClient, plan: Plan[T]) -> T:
    """Run a plan synchronously, answering each yielded request with ``client.complete``.

    Args:
        client: The LLM client.
        plan: A started-or-not generator yielding :class:`LLMRequest` objects.

    Returns:
        The plan's return value.

    """
    try:
        request = next(plan)
        while True:
            completion = client.complete(request)
            request = plan.send(completion)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def arun_plan(client: LLMClient, plan: Plan[T]) -> T:
    """Async twin of :func:`run_plan` (awaits ``client.acomplete``)."""
    try:
        request = next(plan)
        while True:
            completion = await client.acomplete(request)
            request = plan.send(completion)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- parsing
def tool_names_of(tools: Iterable[Mapping[str, Any]] | None) -> frozenset[str]:
    """Names of OpenAI tool schemas (``{"type": "function", "function": {"name": ...}}`` or flat).

    Args:
        tools: The schemas.

    Returns:
        The set of names.

    """
    names = set()
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return frozenset(names)


_TAG_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_NAME_KEYS = ("name", "tool", "tool_name", "function", "action", "api")
_ARG_KEYS = ("arguments", "parameters", "args", "kwargs", "input", "tool_input", "action_input")
_DECODER = json.JSONDecoder()
_OPENER_RE = re.compile(r"[{\[]")


def scan_json(text: str) -> list[tuple[Any, int, int]]:
    """Find the JSON objects and arrays embedded in text, leftmost first, without overlaps.

    Args:
        text: Any text.

    Returns:
        ``(value, start, end)`` for each JSON object/array found.

    """
    found = []
    i = 0
    while (match := _OPENER_RE.search(text, i)) is not None:
        i = match.start()  # jump from bracket to bracket: a long reply without JSON costs one regex scan
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        except RecursionError:
            break  # nested past the recursion limit: nothing usable from here on, and rescanning is O(n^2)
        found.append((value, i, end))
        i = end
    return found


def undouble_braces(text: str) -> str:
    """Collapse doubled braces ``{{ }}`` (chat templates that escape braces teach small models to write them).

    Args:
        text: Text that may hold JSON with doubled braces.

    Returns:
        The text with ``{{`` -> ``{`` and ``}}`` -> ``}``.

    """
    return text.replace("{{", "{").replace("}}", "}")


def coerce_arguments(raw: Any) -> dict[str, Any] | str:
    """Tool-call arguments as a dict when they are (or encode) a JSON object; otherwise the raw text.

    Args:
        raw: A dict, JSON text, None, or anything else (serialised to JSON text).

    Returns:
        The dict, or the raw string the env will answer with an error observation.

    """
    if isinstance(raw, dict):
        return raw
    if raw is None:
        return {}
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except RecursionError:
            return raw  # too deep to parse: ToolCall drops it, and the env answers with an error observation
        except json.JSONDecodeError:
            try:
                value = json.loads(undouble_braces(raw))
            except (json.JSONDecodeError, RecursionError):
                return raw  # the env answers unparsable arguments with an error observation
        return value if isinstance(value, dict) else raw
    return json.dumps(raw)


def _call_id(seed_text: str, index: int) -> str:
    # Deterministic ids keep episodes reproducible; agents make them unique within a conversation.
    digest = hashlib.sha1(f"{index}:{seed_text}".encode()).hexdigest()[:12]
    return f"call_{digest}"


def _calls_from_value(value: Any, names: frozenset[str], seed_text: str, start: int) -> list[ToolCall]:
    """Tool calls described by a parsed JSON value; empty when any described call is not a known tool."""
    items: list[Any]
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        items = value["tool_calls"]
    else:
        items = [value]
    calls = []
    for item in items:
        if not isinstance(item, dict):
            return []
        if isinstance(item.get("function"), dict):
            item = item["function"]
        name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
        if name is None or name not in names:
            return []
        raw_args = next((item[k] for k in _ARG_KEYS if k in item), {})
        calls.append(
            ToolCall(id=_call_id(seed_text, start + len(calls)), name=name, arguments=coerce_arguments(raw_args))
        )
    return calls


def _calls_in(text: str, names: frozenset[str], seed_text: str) -> tuple[list[ToolCall], list[tuple[int, int]]]:
    """Calls in one block of text and the spans they occupy (tries doubled braces as a fallback)."""
    for candidate in (text, undouble_braces(text)) if "{{" in text else (text,):
        calls: list[ToolCall] = []
        spans = []
        for value, start, end in scan_json(candidate):
            found = _calls_from_value(value, names, seed_text, len(calls))
            if found:
                calls.extend(found)
                spans.append((start, end))
        if calls:
            if candidate is not text:
                spans = [(0, len(text))]  # offsets moved when braces were collapsed
            return calls, spans
    return [], []


def parse_text_tool_calls(text: str | None, tool_names: Iterable[str]) -> tuple[tuple[ToolCall, ...], str | None]:
    """Extract tool calls that a model wrote as JSON in its text.

    Recognised forms: ``<tool_call>{...}</tool_call>`` tags (Qwen), ```json fenced blocks, a bare JSON
    object or list anywhere in the text, and any of these with doubled braces ``{{...}}``. A call is
    ``{"name": ..., "arguments": {...}}`` (also ``parameters``/``args``, or OpenAI's ``{"function": ...}``
    form). Only known tool names are accepted; arguments given as JSON text are parsed and unparsable
    arguments are kept as the raw string.

    Args:
        text: The model's text.
        tool_names: Names of the tools offered.

    Returns:
        ``(calls, remaining_text)``: the calls found (empty when none) and the text without them
        (None when nothing but the calls was written).

    """
    if not text or "{" not in text:
        return (), text  # every recognised form holds a JSON object; most replies are plain text
    names = frozenset(tool_names)
    if not names:
        return (), text
    calls: list[ToolCall] = []
    cut: list[tuple[int, int]] = []
    for pattern in (_TAG_RE, _FENCE_RE):
        for match in pattern.finditer(text):
            found, _ = _calls_in(match.group(1), names, text)
            if found:
                calls.extend(found)
                cut.append(match.span())
        if calls:
            break
    if not calls:
        found, cut = _calls_in(text, names, text)
        calls.extend(found)
    if not calls:
        return (), text
    calls = [c.model_copy(update={"id": _call_id(text, i)}) for i, c in enumerate(calls)]
    remaining = text
    for start, end in sorted(cut, reverse=True):
        remaining = remaining[:start] + remaining[end:]
    remaining = re.sub(r"</?tool_call>|```[a-zA-Z0-9_-]*", "", remaining).strip()
    return tuple(calls), remaining or None


def build_assistant_message(
    content: str | None,
    tool_calls: Sequence[Mapping[str, Any]] | None,
    tools: Sequence[Mapping[str, Any]] | None,
    usage: Usage,
) -> AssistantMessage:
    """Turn a raw model reply into an :class:`AssistantMessage`.

    Native tool calls are kept whatever their names (the env answers unknown ones with an error). When
    there are none and tools were offered, calls written in the text are extracted.

    Args:
        content: The reply text (None allowed).
        tool_calls: Native calls in OpenAI form (``{"id", "function": {"name", "arguments"}}``).
        tools: The tool schemas offered in the request.
        usage: Token usage to record on the message.

    Returns:
        The assistant message; ``content`` is ``""`` when the model returned nothing at all.

    """
    calls: list[ToolCall] = []
    for i, tc in enumerate(tool_calls or ()):
        fn = tc.get("function") if isinstance(tc.get("function"), Mapping) else tc
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if not isinstance(name, str) or not name:
            continue
        raw_args = fn.get("arguments", fn.get("input", {})) if isinstance(fn, Mapping) else {}
        call_id = tc.get("id") or _call_id(f"{name}{raw_args}", i)
        calls.append(ToolCall(id=str(call_id), name=name, arguments=coerce_arguments(raw_args)))
    text = content if isinstance(content, str) else None
    if not calls and tools and text and "{" in text:
        parsed, remaining = parse_text_tool_calls(text, tool_names_of(tools))
        if parsed:
            return AssistantMessage(content=remaining, tool_calls=parsed, usage=usage)
    if not calls:
        return AssistantMessage(content=text or "", usage=usage)
    return AssistantMessage(content=text or None, tool_calls=tuple(calls), usage=usage)


def _wire_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the messages fit for strict servers: assistant content is "" rather than null."""
    out = []
    for m in messages:
        msg = dict(m)
        if msg.get("role") == "assistant" and msg.get("content") is None:
            msg["content"] = ""
        out.append(msg)
    return out


# ---------------------------------------------------------------------------------------------- errors
class LLMRequestError(LLMError):
    """An LLM request failed (after retries, or at once for a non-retryable error).

    Attributes:
        url: The server base URL (credentials removed).
        status: The last HTTP status, when the server answered.
        attempts: Attempts made.
        retryable: Whether the last failure was of a retryable kind.

    """

    def __init__(self, message: str, *, url: str, status: int | None, attempts: int, retryable: bool) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts
        self.retryable = retryable


class _MalformedReply(Exception):
    """The server answered 200 with something that is not a usable completion."""


class _HTTPStatusError(Exception):
    """A non-2xx reply through an :mod:`~apigen_envs.http_transport` transport.

    The message is built as the ``openai`` client builds its ``APIStatusError`` message (``Error code: N``,
    then `` - `` and the body's ``error.message`` when there is one), so both paths describe it alike.
    """

    def __init__(self, reply: HTTPReply) -> None:
        message = f"Error code: {reply.status}"
        try:
            body = json.loads(reply.body.decode("utf-8", "replace").strip())
        except ValueError:
            body = None
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
        super().__init__(message)
        self.message = message
        self.status = reply.status
        self.headers = reply.headers


@dataclass(frozen=True, slots=True)
class _Failure:
    retryable: bool
    description: str
    status: int | None = None
    retry_after: float | None = None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``Retry-After-Ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _classify(exc: BaseException, timeout_s: float) -> _Failure | None:
    """Describe a failed attempt; None means the exception is not an LLM failure (a bug: re-raise)."""
    # The transports' own failures first: a run that never used the openai client never imports it here.
    if isinstance(exc, TransportTimeout):
        return _Failure(True, f"timed out after {timeout_s:g}s")
    if isinstance(exc, TransportConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return _Failure(True, f"connection error{detail}")
    if isinstance(exc, _HTTPStatusError):
        return _status_failure(exc.status, exc.message, exc.headers)
    if isinstance(exc, _MalformedReply | ValueError):
        return _Failure(True, f"malformed reply ({type(exc).__name__}: {str(exc)[:200]})")
    openai = sys.modules.get("openai")
    if openai is None:
        return None  # not an openai error, since the openai client was never loaded
    if isinstance(exc, openai.APITimeoutError):
        return _Failure(True, f"timed out after {timeout_s:g}s")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return _Failure(True, f"connection error{detail}")
    if isinstance(exc, openai.APIStatusError):
        return _status_failure(
            exc.status_code, str(getattr(exc, "message", "") or exc), getattr(exc.response, "headers", None)
        )
    if isinstance(exc, openai.APIResponseValidationError | _MalformedReply | ValueError):
        return _Failure(True, f"malformed reply ({type(exc).__name__}: {str(exc)[:200]})")
    if isinstance(exc, openai.OpenAIError):
        return _Failure(False, f"{type(exc).__name__}: {str(exc)[:300]}")
    return None


def _status_failure(status: int, message: str, headers: Mapping[str, str] | None) -> _Failure:
    """An HTTP error status: 408/409/425/429 and 5xx are retryable, ``Retry-After`` is read."""
    retryable = status in _RETRYABLE_STATUS or status >= 500
    message = re.sub(r"^Error code: \d+ - ", "", message)[:300]
    return _Failure(retryable, f"HTTP {status}: {message}", status, _retry_after(headers))


# ---------------------------------------------------------------------------------------------- client
@dataclass
class _AsyncSlot:
    key: str
    client: Any


class _WireBase:
    """The chat-completions endpoint over an :mod:`~apigen_envs.http_transport` transport.

    Requests are encoded here and replies decoded here, so every transport sends the same bytes and
    :meth:`OpenAIClient._completion` parses the same dicts; a non-2xx reply raises :class:`_HTTPStatusError`
    and a body that is not JSON raises ``json.JSONDecodeError`` (a ValueError: a retryable malformed reply).
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers

    @staticmethod
    def encode(body: dict[str, Any]) -> bytes:
        # Rust encoding is a third of json.dumps' time on a request with ten tool schemas; a lone surrogate
        # left in a message goes out as its escape instead of failing the call.
        return json_bytes(body)

    @staticmethod
    def decode(reply: HTTPReply) -> dict[str, Any]:
        if not 200 <= reply.status < 300:
            raise _HTTPStatusError(reply)
        value = json.loads(reply.body)
        if not isinstance(value, dict):
            raise _MalformedReply(f"the reply is a JSON {type(value).__name__}, not an object")
        return value


class _SyncWire(_WireBase):
    def __init__(self, transport: SyncTransport, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers)
        self.transport = transport

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.decode(self.transport.post(self.url, self.encode(body), self.headers))

    def close(self) -> None:
        self.transport.close()


class _AsyncWire(_WireBase):
    def __init__(self, transport: AsyncTransport, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers)
        self.transport = transport
        self.closer: Any = None  # the generator that closes the transport with its event loop

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.decode(await self.transport.post(self.url, self.encode(body), self.headers))

    async def close(self) -> None:
        if self.closer is not None:
            await self.closer.aclose()  # runs its finally: the transport closes once
        else:
            await self.transport.aclose()


def _field(obj: Any, name: str) -> Any:
    """A field of a reply part: a dict's key (own transports) or an attribute (the openai client's models)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _chat_completion_type() -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion


def _pooled_http_client(openai: Any, max_connections: int, timeout_s: float) -> Any:
    """The openai package's default async HTTP client, with a bounded connection pool (httpx or httpx2)."""
    base = openai.DefaultAsyncHttpxClient.__mro__[1]
    httpx = sys.modules[base.__module__.split(".")[0]]
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s)


class OpenAIClient:
    """An :class:`LLMClient` over the ``openai`` package, for any OpenAI-compatible server.

    No network access and no key lookup happen at construction. The underlying ``openai.OpenAI`` /
    ``openai.AsyncOpenAI`` clients are created on first use (one async client per event loop, since
    HTTP connection pools belong to a loop) with the library's own retries off: this class retries
    429/5xx/timeouts/connection errors/malformed replies itself with exponential backoff and jitter,
    waiting at least the server's ``Retry-After``. Other 4xx errors fail at once.

    Args:
        config: Model, server and sampling settings.
        api_key: A key to use instead of ``$config.api_key_env`` ("" sends no key: a placeholder, as for
            servers that need none). For URLs chosen by someone else (an env server's client), so the
            environment's own key never goes there. Kept off the config, so it is never recorded.

    """

    def __init__(self, config: LLMConfig, *, api_key: str | None = None) -> None:
        self.config = config
        self._explicit_key = api_key
        self._lock = threading.Lock()
        self._sync: tuple[str, Any] | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncSlot] = weakref.WeakKeyDictionary()
        self._rng = random.Random()
        self._openai_host: tuple[str | None, bool] = (None, False)

    def __repr__(self) -> str:
        return f"OpenAIClient(model={self.config.model!r}, base_url={_safe_url(self.config.resolved_base_url())!r})"

    # -------------------------------------------------------------- setup
    def _api_key(self) -> str:
        if self._explicit_key is not None:
            return self._explicit_key or _PLACEHOLDER_KEY
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        url = self.config.resolved_base_url()
        if self._openai_host[0] != url:
            # Parsed once per URL: this runs on every request, and parsing cost more than the lookup above.
            self._openai_host = (url, urlsplit(url).hostname == "api.openai.com")
        if self._openai_host[1]:
            raise LLMRequestError(
                f"no API key for {_OPENAI_URL}: set ${self.config.api_key_env}, or set base_url to a local server",
                url=_OPENAI_URL,
                status=None,
                attempts=0,
                retryable=False,
            )
        return _PLACEHOLDER_KEY

    def _client_kwargs(self, key: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "api_key": key,
            "base_url": self.config.resolved_base_url(),
            "max_retries": 0,
            "timeout": self.config.timeout_s,
        }
        if self._explicit_key is not None:
            import openai

            # The openai client also sends $OPENAI_ORG_ID / $OPENAI_PROJECT_ID: the environment's account, too,
            # stays away from a URL chosen by someone else.
            kwargs["default_headers"] = {"OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()}
        return kwargs

    def _wire_headers(self, key: str) -> dict[str, str]:
        """What the ``openai`` client would send besides its own telemetry headers."""
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"apigen-envs/{__version__}",
        }
        if self._explicit_key is None:
            # As the openai client does; a URL chosen by someone else (explicit key) never gets the account.
            for name, env in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
                if value := os.environ.get(env):
                    headers[name] = value
        return headers

    def _wire_args(self, key: str) -> tuple[str, str, dict[str, str]]:
        base_url = self.config.resolved_base_url()
        headers = self._wire_headers(key)
        parts = urlsplit(base_url)
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL go as Basic auth, in place of the key, as the openai client (httpx) does.
            import base64
            from urllib.parse import unquote

            user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            base_url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        return base_url, base_url.rstrip("/") + "/chat/completions", headers

    def _sync_client(self) -> Any:
        key = self._api_key()
        with self._lock:
            if self._sync is None or self._sync[0] != key:
                if self.config.transport != "openai":
                    base_url, url, headers = self._wire_args(key)
                    cfg = self.config
                    transport = sync_transport(
                        cfg.transport, base_url, max_connections=cfg.connection_limit(), timeout_s=cfg.timeout_s
                    )
                    self._sync = (key, _SyncWire(transport, url, headers))
                else:
                    import openai

                    self._sync = (key, openai.OpenAI(**self._client_kwargs(key)))
            return self._sync[1]

    def _async_wire(self, key: str) -> _AsyncWire:
        base_url, url, headers = self._wire_args(key)
        cfg = self.config
        transport = async_transport(
            cfg.transport, base_url, max_connections=cfg.connection_limit(), timeout_s=cfg.timeout_s
        )
        return _AsyncWire(transport, url, headers)

    def _async_client(self) -> Any:
        key = self._api_key()
        loop = asyncio.get_running_loop()
        slot = self._async.get(loop)
        if self.config.transport != "openai":
            if slot is None or slot.key != key:
                slot = _AsyncSlot(key, self._async_wire(key))
                self._async[loop] = slot
            return slot.client
        import openai

        if slot is None or slot.key != key:
            kwargs = self._client_kwargs(key)
            limit = self.config.connection_limit()
            if limit is not None:
                kwargs["http_client"] = _pooled_http_client(openai, limit, self.config.timeout_s)
            slot = _AsyncSlot(key, openai.AsyncOpenAI(**kwargs))
            self._async[loop] = slot
        return slot.client

    def close(self) -> None:
        """Close the sync HTTP client (async ones close with their event loop or :meth:`aclose`)."""
        with self._lock:
            if self._sync is not None:
                self._sync[1].close()
                self._sync = None

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop."""
        slot = self._async.pop(asyncio.get_running_loop(), None)
        if slot is not None:
            await slot.client.close()

    # -------------------------------------------------------------- request
    def _request(self, request: LLMRequest) -> dict[str, Any]:
        cfg = self.config
        body: dict[str, Any] = {"model": cfg.model, "messages": _wire_messages(request.messages)}
        tools, seed, response_format = request.tools, request.seed, request.response_format
        temp = request.temperature if request.temperature is not None else cfg.temperature
        if temp is not None:
            body["temperature"] = temp
        if cfg.max_tokens is not None:
            body["max_tokens"] = cfg.max_tokens
        if tools:
            body["tools"] = list(tools)
            if cfg.tool_choice is not None:
                body["tool_choice"] = cfg.tool_choice
        if seed is not None:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        if cfg.extra_body:
            body.update(cfg.extra_body)
        return body

    def _completion(
        self, response: Any, tools: Sequence[dict[str, Any]] | None, started: float, attempts: int
    ) -> Completion:
        # One reader for both forms: the openai client's models (attributes) and the transports' dicts (keys).
        choices = _field(response, "choices")
        if not choices or not isinstance(choices, list | tuple):
            raise _MalformedReply("the reply has no choices")
        choice = choices[0]
        msg = _field(choice, "message")
        if msg is None or isinstance(msg, str | int | float | list):
            raise _MalformedReply("the first choice has no message")
        raw_calls = []
        tool_calls = _field(msg, "tool_calls")
        for tc in tool_calls if isinstance(tool_calls, list | tuple) else ():
            fn = _field(tc, "function")
            if fn is None or isinstance(fn, str | int | float | list):
                continue
            raw_calls.append(
                {"id": _field(tc, "id"), "function": {"name": _field(fn, "name"), "arguments": _field(fn, "arguments")}}
            )
        usage_obj = _field(response, "usage")
        usage = Usage(
            prompt_tokens=int(_field(usage_obj, "prompt_tokens") or 0),
            completion_tokens=int(_field(usage_obj, "completion_tokens") or 0),
        )
        # Model text is made encodable here, where it enters (a JSON "\ud83d" escape decodes to a lone surrogate).
        content = _field(msg, "content")
        content = clean_text(content) if isinstance(content, str) else None
        finish_reason = _field(choice, "finish_reason")
        model = _field(response, "model")
        return Completion(
            message=build_assistant_message(content, raw_calls, tools, usage),
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            latency_s=round(time.perf_counter() - started, 6),
            attempts=attempts,
            raw_content=content,
            model=model if isinstance(model, str) else None,
        )

    def _delay(self, attempt: int, failure: _Failure) -> float:
        cfg = self.config
        backoff = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
        backoff *= 0.5 + 0.5 * self._rng.random()  # jitter spreads out clients that failed together
        if failure.retry_after:
            # The server knows best when it can take the request again; never wait less than it asks.
            return min(failure.retry_after, cfg.retry_after_max_s)
        return backoff

    def _retry_delay(self, exc: Exception, attempt: int) -> float:
        """How long to wait before retrying after ``exc``; raises when the request must not be retried."""
        failure = _classify(exc, self.config.timeout_s)
        if failure is None:
            raise exc
        if not failure.retryable or attempt > self.config.max_retries:
            raise self._give_up(failure, attempt) from exc
        return self._delay(attempt, failure)

    def _give_up(self, failure: _Failure, attempts: int) -> LLMRequestError:
        url = _safe_url(self.config.resolved_base_url())
        what = "failed after" if failure.retryable else "failed (not retryable) after"
        return LLMRequestError(
            f"LLM request to {url} (model {self.config.model!r}) {what} {attempts} attempt(s): {failure.description}",
            url=url,
            status=failure.status,
            attempts=attempts,
            retryable=failure.retryable,
        )

    def complete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Ask the model for the next assistant message (blocking, with retries).

        Args:
            request: The request, or its messages (OpenAI chat format).
            **options: Request fields: ``tools``, ``seed``, ``temperature`` (overrides the config's),
                ``response_format`` (see :class:`LLMRequest`).

        Returns:
            The completion.

        Raises:
            LLMRequestError: When the request fails for good (an :class:`LLMError`).

        """
        request = LLMRequest.of(request, options)
        tools = request.tools
        body = self._request(request)
        client = self._sync_client()
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                # The body is already wire-ready: post() skips create()'s typed transform of messages and
                # tool schemas, which cost ~2 ms of CPU per call and capped a process at a few hundred calls/s.
                if isinstance(client, _SyncWire):
                    response = client.post(body)
                else:
                    response = client.post("/chat/completions", body=body, cast_to=_chat_completion_type())
                return self._completion(response, tools, started, attempt)
            except Exception as exc:
                time.sleep(self._retry_delay(exc, attempt))

    async def acomplete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Async twin of :meth:`complete`."""
        request = LLMRequest.of(request, options)
        tools = request.tools
        body = self._request(request)
        client = self._async_client()
        if isinstance(client, _AsyncWire) and client.closer is None:
            client.closer = await close_with_loop(client.transport)
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                if isinstance(client, _AsyncWire):
                    response = await client.post(body)
                else:
                    # The body is already wire-ready: post() skips create()'s typed transform of messages and
                    # tool schemas, which cost ~2 ms of CPU per call and capped a process at a few hundred calls/s.
                    response = await client.post("/chat/completions", body=body, cast_to=_chat_completion_type())
                return self._completion(response, tools, started, attempt)
            except Exception as exc:
                await asyncio.sleep(self._retry_delay(exc, attempt))


# ---------------------------------------------------------------------------------------------- scripted
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request received by :class:`ScriptedLLM` (for assertions in tests)."""

    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] | None
    seed: int | None
    temperature: float | None
    response_format: dict[str, Any] | None


def _fake_usage(messages: Sequence[Mapping[str, Any]], message: AssistantMessage) -> Usage:
    # About four characters per token: stable numbers for tests that check usage is summed.
    prompt = sum(len(str(m.get("content") or "")) for m in messages)
    completion = len(message.content or "") + sum(len(c.name) + len(c.arguments_json()) for c in message.tool_calls)
    return Usage(prompt_tokens=max(1, prompt // 4), completion_tokens=max(1, completion // 4))


ScriptedReply = str | dict[str, Any] | AssistantMessage | Completion | BaseException | type[BaseException]
"""What :class:`ScriptedLLM` can be told to answer."""


@dataclass
class ScriptedLLM:
    """An in-process :class:`LLMClient` that answers from a script, for unit tests.

    Replies are given in order (or cycled), or produced by a callable ``(messages, tools) -> reply``.
    A reply is a str (assistant text, parsed for text tool calls when tools are offered, like a real
    model's), a dict in OpenAI assistant-message form, an :class:`AssistantMessage`, a
    :class:`Completion`, or an exception (instance or class) to raise. Every request is recorded in
    :attr:`requests`; fake usage (about four characters per token) is set on replies without usage.

    Attributes:
        replies: The script, or a callable producing each reply.
        cycle: Restart from the first reply after the last; otherwise running out raises LLMError.
        model: Model name reported on completions.

    """

    replies: Sequence[ScriptedReply] | Callable[[Sequence[dict[str, Any]], Sequence[dict[str, Any]] | None], Any] = ()
    cycle: bool = False
    model: str = "scripted"
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.replies):
            self.replies = tuple(self.replies)

    @property
    def calls(self) -> int:
        """Number of requests received."""
        return len(self.requests)

    def _next_reply(
        self, index: int, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
    ) -> Any:
        if callable(self.replies):
            return self.replies(messages, tools)
        if index >= len(self.replies):
            if not self.cycle or not self.replies:
                raise LLMError(f"ScriptedLLM ran out of replies after {len(self.replies)} replies")
            index %= len(self.replies)
        return self.replies[index]

    def complete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Record the request and return the next scripted reply (see the class docstring)."""
        request = LLMRequest.of(request, options)
        msgs = tuple(dict(m) for m in request.messages)
        tools = request.tools
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    msgs,
                    tuple(tools) if tools is not None else None,
                    request.seed,
                    request.temperature,
                    request.response_format,
                )
            )
            index = len(self.requests) - 1
        reply = self._next_reply(index, msgs, tools)
        if inspect.isclass(reply) and issubclass(reply, BaseException):
            raise reply()
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        if isinstance(reply, AssistantMessage):
            message = reply if reply.usage is not None else reply.model_copy(update={"usage": _fake_usage(msgs, reply)})
            return Completion(message=message, finish_reason="stop", raw_content=reply.content, model=self.model)
        if isinstance(reply, str):
            content, calls = reply, None
        elif isinstance(reply, Mapping):
            content, calls = reply.get("content"), reply.get("tool_calls")
        else:
            raise LLMError(f"ScriptedLLM: unsupported reply type {type(reply).__name__}")
        draft = build_assistant_message(content, calls, tools, Usage())
        message = draft.model_copy(update={"usage": _fake_usage(msgs, draft)})
        return Completion(
            message=message,
            finish_reason="tool_calls" if message.tool_calls else "stop",
            raw_content=content if isinstance(content, str) else None,
            model=self.model,
        )

    async def acomplete(self, request: RequestLike, /, **options: Unpack[RequestOptions]) -> Completion:
        """Async twin of :meth:`complete`."""
        return self.complete(request, **options)
