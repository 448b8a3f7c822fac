"""The envs as an HTTP service: one session per episode, the same messages and Episode records as in Python.

``create_app(settings)`` builds a FastAPI app; ``apigen-envs serve`` runs it with uvicorn on 127.0.0.1.
Routes (all JSON; OpenAPI spec at ``/openapi.json``):

* ``POST /sessions``: start an episode (domain, task, seed, max_turns, user simulator) and return the
  session id, the first observation and the info (tools, system prompt);
* ``POST /sessions/{id}/step``: one assistant message in OpenAI format -> observation, reward,
  terminated, truncated, info (with the reward breakdown once the episode ended); ``?since=N`` returns
  only the messages from index N on (``observation_start`` says where they begin), so a client that keeps
  the conversation does not receive all of it again every step;
* ``GET /sessions/{id}/episode``: the :class:`~apigen_envs.episode.Episode` record;
* ``DELETE /sessions/{id}``; ``GET /domains``; ``GET /healthz``.

Sessions run on the env's async API, so a slow LLM user simulator in one session does not hold up
the others. Idle sessions are reaped after ``idle_timeout_s``; at most ``max_sessions`` live at once, and
each holds at most ``max_session_bytes`` of conversation (a step past it ends the episode and is answered
413). An optional bearer token guards every route but ``/healthz``; the token is never logged or echoed.

Hostile or broken clients get a 4xx, never a 500 and never a held socket: request headers must arrive
within ``header_timeout_s`` and bodies within ``body_timeout_s`` (else 408 and the connection is closed),
connections past ``max_connections`` are refused with 503, bodies that are not UTF-8 get 400 and JSON
nested deeper than :data:`MAX_JSON_DEPTH` gets 422. Text from clients is made encodable where it enters
(lone UTF-16 surrogates become U+FFFD), so every answer, ``GET /episode`` included, can be encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from apigen_envs.episode import Episode, Termination
from apigen_envs.errors import ApigenError, DomainNotFoundError, EnvStateError, InvalidActionError
from apigen_envs.protocols import UserSimulator
from apigen_envs.text import clean_json, clean_text, json_depth, may_nest_deeper, model_json
from apigen_envs.verify import RewardInfo

TOKEN_ENV = "APIGEN_SERVER_TOKEN"
"""Environment variable holding the bearer token (preferred over ``--token``, which shows in ``ps``)."""

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_MAX_SESSION_BYTES = 8 * 1024 * 1024

MAX_JSON_DEPTH = 64
"""Request bodies nested deeper than this are refused with 422 (a step's arguments start four levels down)."""

MAX_SEED = 2**63 - 1
"""Largest seed accepted (seeds reach numpy and OpenAI-compatible servers, which take unsigned 64-bit values)."""

# A lone surrogate can only reach a UTF-8 JSON body as a \uD800-\uDFFF escape (raw surrogate bytes are not
# UTF-8); bodies without one need no repair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

# Paths served without a token: liveness probes must work before credentials are set up.
_OPEN_PATHS = frozenset({"/healthz"})


# ---------------------------------------------------------------------------------------------- wire models
class UserSpec(BaseModel):
    """Which user simulator a session uses.

    Attributes:
        kind: ``"scripted"`` (deterministic, answers from the task) or ``"llm"`` (a model plays the user).
        strategy: LLM user strategy (``llm``, ``react``, ``verify``, ``reflection``).
        model: Model name for the LLM user (default: the server's ``--user-model``).
        base_url: OpenAI-compatible server for the LLM user (only when the server allows client URLs).
        api_key: The key for ``base_url``, brought by the client (only with ``base_url``: the server's own
            key is never sent to a URL a client chose). Never recorded or echoed.
        temperature: Sampling temperature of the LLM user.

    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scripted", "llm"] = "scripted"
    strategy: Literal["llm", "react", "verify", "reflection"] = "llm"
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = Field(default=None, max_length=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)


class CreateSessionRequest(BaseModel):
    """Body of ``POST /sessions``.

    Attributes:
        domain: Domain name (``mock``, ``retail``, ``airline``).
        task_id: Run this task.
        task_index: Run the task at this index of the (split-filtered) task list.
        split: Restrict tasks to one split.
        seed: Episode seed (task draw when no task is named, and the user simulator); 0 to 2**63 - 1.
        max_turns: Agent steps before truncation.
        user: The user simulator.
        agent: Agent name recorded on the Episode.
        agent_config: Agent settings recorded on the Episode.
        reveal_task: Put the task (instruction, gold actions) in ``info["task"]``; for privileged
            agents such as the oracle only. Refused (403) unless the server allows it
            (``ServerSettings.allow_reveal_task``); recorded on the episode as ``privileged``.

    """

    model_config = ConfigDict(extra="forbid")

    domain: str = "mock"
    task_id: str | None = None
    task_index: int | None = Field(default=None, ge=0)
    split: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    max_turns: int = Field(default=30, ge=1, le=1000)
    user: UserSpec = Field(default_factory=UserSpec)
    agent: str = "remote"
    agent_config: dict[str, Any] = Field(default_factory=dict)
    reveal_task: bool = False


class FunctionCall(BaseModel):
    """The ``function`` part of an OpenAI tool call."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(BaseModel):
    """One OpenAI-format tool call."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class UsageIn(BaseModel):
    """Token usage the agent spent on this turn (optional; summed on the Episode)."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class AssistantAction(BaseModel):
    """Body of ``POST /sessions/{id}/step``: one assistant message in OpenAI chat format."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    usage: UsageIn | None = None


class EnvInfo(BaseModel):
    """The ``info`` dict of reset and step results (fields beyond ``task_id``/``turn`` appear when relevant).

    Attributes:
        task_id: The task.
        turn: Agent steps taken.
        domain: Domain name (reset only).
        tools: OpenAI tool schemas (reset only).
        system_prompt: The agent's system prompt (reset only).
        task: The task record when ``reveal_task`` was asked for (reset only).
        termination: Why the episode ended, once it has.
        reward_info: The reward breakdown, once the episode ended.
        error: Infrastructure error text, if any.

    """

    model_config = ConfigDict(extra="allow")

    task_id: str
    turn: int = 0
    domain: str | None = None
    tools: list[dict[str, Any]] | None = None
    system_prompt: str | None = None
    task: dict[str, Any] | None = None
    termination: Termination | None = None
    reward_info: RewardInfo | None = None
    error: str | None = None


class SessionCreated(BaseModel):
    """Answer of ``POST /sessions``: the session id and the reset result."""

    session_id: str
    observation: list[dict[str, Any]]
    info: EnvInfo
    done: bool = False


class StepResult(BaseModel):
    """Answer of ``POST /sessions/{id}/step``: the Gymnasium step tuple as named fields.

    Attributes:
        observation: The conversation, or with ``?since=N`` only its messages from index N on.
        observation_start: Index in the conversation of ``observation[0]`` (0 without ``since``).
        reward: The reward (non-zero only at the end).
        terminated: The episode ended.
        truncated: The episode was cut at ``max_turns``.
        info: Turn, and once ended the termination and reward breakdown.

    """

    observation: list[dict[str, Any]]
    observation_start: int = 0
    reward: float
    terminated: bool
    truncated: bool
    info: EnvInfo


class DomainInfo(BaseModel):
    """One entry of ``GET /domains``."""

    name: str
    tools: list[str]
    tasks: int
    splits: dict[str, int]


class Health(BaseModel):
    """Answer of ``GET /healthz``."""

    status: Literal["ok"] = "ok"
    sessions: int
    max_sessions: int


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer raised by the service itself."""

    detail: str


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ServerSettings:
    """How the service runs.

    Attributes:
        token: Bearer token required on every route but ``/healthz`` (None: no auth).
        idle_timeout_s: Sessions untouched this long are deleted.
        max_sessions: Live sessions allowed at once (``POST /sessions`` answers 429 beyond).
        max_body_bytes: Larger request bodies are refused with 413.
        max_session_bytes: Conversation a session may hold (UTF-8 bytes of message text and tool-call
            arguments); the step that would pass it is refused with 413 and ends the episode
            (``invalid_action``, counted against the agent).
        header_timeout_s: A connection's request headers must arrive within this (from connecting, or from
            the previous response), else it is closed: slow clients cannot hold sockets open.
        body_timeout_s: A request body must arrive within this once its headers have, else 408 and close.
        keep_alive_s: Idle keep-alive connections are closed after this.
        max_connections: Open connections allowed at once; more are answered 503 and closed at once.
        max_header_bytes: Largest request head (request line and headers); larger ones get 400.
        reap_interval_s: How often idle sessions are looked for.
        data_dir: Domain data directory (tau2 / tau-bench layout), as for ``load_domain``.
        semantics: Semantics profile of every domain served (default: the data's own).
        domains: Domains clients may open (None: every built-in domain).
        user_model: Default model of LLM user simulators.
        user_base_url: Default OpenAI-compatible server of LLM user simulators.
        api_key_env: Environment variable with the key for the LLM user's server.
        allow_client_base_url: Let clients point the LLM user at a server of their choice (off by
            default: it would let any client make this host send requests anywhere).
        allow_reveal_task: Let clients ask for the task record, gold included (``reveal_task``); off by
            default, so an agent under evaluation cannot read the answer.

    """

    token: str | None = None
    idle_timeout_s: float = 600.0
    max_sessions: int = 1024
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections: int = 2048
    max_header_bytes: int = 16 * 1024
    reap_interval_s: float = 5.0
    data_dir: str | None = None
    semantics: str | None = None
    domains: tuple[str, ...] | None = None
    user_model: str = "local"
    user_base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    allow_client_base_url: bool = False
    allow_reveal_task: bool = False

    def __repr__(self) -> str:
        # The token must never reach logs, even through a debug print of the settings.
        return f"ServerSettings(token={'<set>' if self.token else None}, max_sessions={self.max_sessions})"


UserFactory = Callable[[UserSpec, ServerSettings], UserSimulator]
"""Builds a session's user simulator from the request's spec (tests plug in their own)."""


def default_user_factory(spec: UserSpec, settings: ServerSettings) -> UserSimulator:
    """The scripted user, or an :class:`~apigen_envs.simulators.llm_user.LLMUser` on an OpenAI-compatible server.

    With a client-chosen ``base_url`` the requests carry the client's ``api_key`` or no key at all, never the
    server's (``$api_key_env``): otherwise any client could have the server send its key anywhere.

    Raises:
        PermissionError: When the request names a base URL and the server does not allow it.
        ValueError: When the request brings an API key without naming the URL it is for.

    """
    if spec.kind == "scripted":
        from apigen_envs.simulators.scripted_user import ScriptedUser

        return ScriptedUser()
    if spec.base_url and not settings.allow_client_base_url:
        raise PermissionError("this server does not accept a user base_url from clients (--allow-client-base-url)")
    if spec.api_key is not None and not spec.base_url:
        raise ValueError("user.api_key is only used with user.base_url (the server's own server uses its own key)")
    from apigen_envs.llm import LLMConfig, OpenAIClient
    from apigen_envs.simulators.llm_user import LLMUser

    config = LLMConfig(
        model=spec.model or settings.user_model,
        base_url=spec.base_url or settings.user_base_url,
        api_key_env=settings.api_key_env,
        temperature=spec.temperature if spec.temperature is not None else 0.0,
    )
    if spec.base_url:
        key = spec.api_key.get_secret_value() if spec.api_key is not None else ""
        return LLMUser(OpenAIClient(config, api_key=key), strategy=spec.strategy)
    return LLMUser(OpenAIClient(config), strategy=spec.strategy)


# ---------------------------------------------------------------------------------------------- sessions
@dataclass
class Session:
    """One live episode held by the service."""

    id: str
    env: Any
    request: CreateSessionRequest
    user_name: str
    user_config: dict[str, Any]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    agent_usage: tuple[int, int] = (0, 0)
    size: int = 0

    def touch(self) -> None:
        """Mark the session as used now (idle reaping counts from here)."""
        self.last_used = time.monotonic()


class SessionStore:
    """Live sessions with a size limit and idle reaping (one per app; not shared across processes)."""

    def __init__(self, max_sessions: int, idle_timeout_s: float) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> Session:
        """The session, or a 404-mapped error."""
        session = self._sessions.get(session_id)
        if session is None:
            raise _HTTPError(404, f"unknown session {session_id!r} (never created, deleted, or reaped when idle)")
        return session

    def add(self, session: Session) -> None:
        """Register a session (the caller checked :meth:`has_room`)."""
        self._sessions[session.id] = session

    def has_room(self) -> bool:
        """Whether one more session fits, after reaping idle ones."""
        if len(self._sessions) >= self.max_sessions:
            self.reap()
        return len(self._sessions) < self.max_sessions

    def remove(self, session_id: str) -> bool:
        """Delete a session; True when it existed."""
        return self._sessions.pop(session_id, None) is not None

    def reap(self, now: float | None = None) -> list[str]:
        """Delete sessions idle longer than the timeout (skipping ones mid-step); returns their ids."""
        now = time.monotonic() if now is None else now
        stale = [
            sid for sid, s in self._sessions.items() if now - s.last_used > self.idle_timeout_s and not s.lock.locked()
        ]
        for sid in stale:
            self._sessions.pop(sid, None)
        return stale


class _HTTPError(Exception):
    """An error answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = clean_text(message)  # it may quote client or model text
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------- ASGI guards
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


async def _send_json(send: Callable[[Any], Awaitable[None]], status: int, body: bytes, extra: list[Any]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Bearer-token check and request-body checks, in front of every route.

    The body is read here, within ``body_timeout_s`` (408 otherwise) and at most ``max_body_bytes`` (413,
    on the declared ``Content-Length`` or, for chunked bodies, on the bytes received), then checked before
    any route parses it: not UTF-8 -> 400, JSON nested deeper than :data:`MAX_JSON_DEPTH` -> 422, and lone
    UTF-16 surrogate escapes are replaced by U+FFFD (so nothing a client sends can make an answer, or the
    session's Episode, unencodable). Clean bodies (nearly all) pass after a few byte scans, unparsed.
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, max_body_bytes: int, body_timeout_s: float | None = None
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def _authorised(self, scope: MutableMapping[str, Any]) -> bool:
        if self._token is None or scope.get("path") in _OPEN_PATHS:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                # Constant-time comparison: response timing must not reveal the token prefix.
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Check the token and the body, then pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await _send_json(
                send, 401, b'{"detail":"missing or invalid bearer token"}', [(b"www-authenticate", b"Bearer")]
            )
            return
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                await _send_json(send, 400, b'{"detail":"invalid Content-Length"}', [_CLOSE])
                return
            if too_big:
                await _send_json(send, 413, self._too_big(), [_CLOSE])
                return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            detail = f'{{"detail":"request body not received within {self.body_timeout_s:g} s"}}'
            await _send_json(send, 408, detail.encode(), [_CLOSE])
            return
        if body is None:
            return  # the client went away
        if len(body) > self.max_body_bytes:
            await _send_json(send, 413, self._too_big(), [_CLOSE])
            return
        checked = _checked_body(body)
        if isinstance(checked, tuple):
            status, detail = checked
            await _send_json(send, status, json.dumps({"detail": detail}).encode(), [])
            return
        if checked is not body:
            headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(checked)).encode())]}
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": checked, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Callable[[], Awaitable[Any]]) -> bytes | None:
        """The whole body (stopping just past the size limit), or None when the client disconnected."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body_bytes or not message.get("more_body", False):
                return b"".join(chunks)

    def _too_big(self) -> bytes:
        return f'{{"detail":"request body larger than {self.max_body_bytes} bytes"}}'.encode()


_CLOSE = (b"connection", b"close")  # the body may be partly unread: the connection cannot be reused


def _checked_body(body: bytes) -> bytes | tuple[int, str]:
    """The body, repaired if it holds lone surrogate escapes, or ``(status, reason)`` to refuse it."""
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return 400, f"request body is not valid UTF-8 (byte {exc.start})"
    surrogates = _SURROGATE_ESCAPE.search(body) is not None
    if not surrogates and not may_nest_deeper(body, MAX_JSON_DEPTH):
        return body
    try:
        value = json.loads(body)
    except RecursionError:
        return 422, f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return body  # not JSON: the route answers 422 with its own reason
    if json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return 422, f"request JSON is nested deeper than {MAX_JSON_DEPTH} levels"
    if not surrogates:
        return body
    return json.dumps(clean_json(value), ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------- app
def _failure(env: Any, exc: Exception) -> _HTTPError:
    """502 when the user simulator (an upstream LLM) failed, 500 for a defect in the env itself."""
    if env.termination == "user_error":
        return _HTTPError(502, f"the user simulator failed: {type(exc).__name__}: {exc}")
    return _HTTPError(500, f"internal env error: {type(exc).__name__}: {exc}")


def _dump_info(info: dict[str, Any]) -> EnvInfo:
    return EnvInfo.model_validate(info)


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def messages_size(messages: Any) -> int:
    """The size a session counts for OpenAI-format messages: UTF-8 bytes of their text and call arguments.

    Args:
        messages: OpenAI chat-format message dicts.

    Returns:
        The size in bytes (an estimate of what the session holds, not of its Python objects).

    """
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += _text_bytes(content)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                total += _text_bytes(arguments)
            elif arguments is not None:
                total += _text_bytes(json.dumps(arguments, ensure_ascii=False))
            total += _text_bytes(str(function.get("name", "")))
    return total


def _answer(model: BaseModel, status: int = 200) -> Any:
    """A JSON response for a record, encodable whatever text it holds (see :func:`~apigen_envs.text.model_json`)."""
    from fastapi import Response

    try:
        body = model_json(model)
    except ValueError as exc:
        raise _HTTPError(500, f"the answer could not be serialised: {exc}") from None
    return Response(content=body, status_code=status, media_type="application/json")


def create_app(settings: ServerSettings | None = None, *, user_factory: UserFactory | None = None) -> Any:
    """Build the FastAPI app.

    Args:
        settings: Service settings (defaults: no token, 1,024 sessions, 10 min idle timeout, 1 MiB bodies).
        user_factory: Builds each session's user simulator (default: :func:`default_user_factory`).

    Returns:
        The ASGI app: the FastAPI instance (``.app``) behind the token / size guard.

    """
    from fastapi import FastAPI, Query, Request, Response
    from fastapi.responses import JSONResponse

    from apigen_envs import __version__
    from apigen_envs.env import ToolUseEnv
    from apigen_envs.messages import Usage
    from apigen_envs.registry import list_domains, load_domain

    settings = settings or ServerSettings()
    make_user = user_factory or default_user_factory
    store = SessionStore(settings.max_sessions, settings.idle_timeout_s)
    allowed = settings.domains or tuple(list_domains())

    async def reaper() -> None:
        while True:
            await asyncio.sleep(settings.reap_interval_s)
            store.reap()

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 429)
    }
    app = FastAPI(
        title="apigen-envs",
        version=__version__,
        description="Multi-turn tool-use environments (retail, airline, mock) as an HTTP service.",
        lifespan=lifespan,
        responses=error_responses,
    )
    app.state.store = store
    app.state.settings = settings

    @app.exception_handler(_HTTPError)
    async def _http_error(_: Request, exc: _HTTPError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    def domain_of(name: str) -> Any:
        if name not in allowed:
            raise _HTTPError(404, f"unknown or disabled domain {name!r}; available: {list(allowed)}")
        try:
            return load_domain(name, settings.data_dir, settings.semantics)
        except ApigenError as exc:
            raise _HTTPError(404 if isinstance(exc, DomainNotFoundError) else 500, str(exc)) from None

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness and load: number of live sessions."""
        return Health(sessions=len(store), max_sessions=store.max_sessions)

    @app.get("/domains", response_model=list[DomainInfo], tags=["service"])
    async def domains() -> list[DomainInfo]:
        """The domains this service can open, with tools and task counts."""
        out = []
        for name in allowed:
            try:
                domain = load_domain(name, settings.data_dir, settings.semantics)
            except ApigenError:
                continue  # a domain whose data is missing is simply not offered
            out.append(
                DomainInfo(
                    name=name,
                    tools=list(domain.tools.names),
                    tasks=len(domain.tasks),
                    splits={k: len(v) for k, v in domain.splits.items()},
                )
            )
        return out

    @app.post("/sessions", response_model=SessionCreated, status_code=201, tags=["sessions"])
    async def create_session(body: CreateSessionRequest) -> Any:
        """Start an episode and return its first observation (the user's opening message)."""
        if body.task_id is not None and body.task_index is not None:
            raise _HTTPError(422, "give task_id or task_index, not both")
        if body.reveal_task and not settings.allow_reveal_task:
            raise _HTTPError(403, "this server does not reveal tasks (start it with --allow-reveal-task)")
        if not store.has_room():
            raise _HTTPError(429, f"the server holds its maximum of {store.max_sessions} sessions; delete some")
        domain = domain_of(body.domain)
        try:
            user = make_user(body.user, settings)
        except PermissionError as exc:
            raise _HTTPError(403, str(exc)) from None
        except ValueError as exc:
            raise _HTTPError(422, str(exc)) from None
        if hasattr(user, "nudges"):
            # The LLM customer's stop-guard nudge follows the domain's profile (off in the peer profiles).
            user.nudges = bool(getattr(domain.semantics, "user_nudges", False))
        try:
            env = ToolUseEnv(domain, user=user, split=body.split, max_turns=body.max_turns)
        except DomainNotFoundError as exc:  # unknown split
            raise _HTTPError(404, str(exc)) from None
        except ValueError as exc:
            raise _HTTPError(422, str(exc)) from None
        options: dict[str, Any] = {}
        if body.task_id is not None:
            options["task_id"] = body.task_id
        elif body.task_index is not None:
            options["task_index"] = body.task_index
        try:
            obs, info = await env.areset(seed=body.seed, options=options)
        except DomainNotFoundError as exc:
            raise _HTTPError(404, str(exc)) from None
        except IndexError as exc:
            raise _HTTPError(422, str(exc)) from None
        except Exception as exc:
            raise _failure(env, exc) from None
        if body.reveal_task:
            info["task"] = env.task.model_dump(mode="json")
        public = getattr(user, "public", None)
        session = Session(
            id=secrets.token_urlsafe(16),
            env=env,
            request=body,
            user_name=getattr(user, "name", type(user).__name__),
            user_config=public() if callable(public) else body.user.model_dump(exclude_none=True, exclude={"api_key"}),
            size=messages_size(obs),
        )
        store.add(session)
        created = SessionCreated(session_id=session.id, observation=list(obs), info=_dump_info(info), done=env.done)
        return _answer(created, 201)

    @app.post("/sessions/{session_id}/step", response_model=StepResult, tags=["sessions"])
    async def step(
        session_id: str,
        action: AssistantAction,
        since: int | None = Query(
            default=None, ge=0, description="Return only the messages from this index on (the client has the rest)."
        ),
    ) -> Any:
        """Take one agent turn: tool calls run against the episode's DB; text goes to the user."""
        session = store.get(session_id)
        async with session.lock:
            session.touch()
            env = session.env
            if env.done:
                raise _HTTPError(409, "the episode has ended; read /episode or delete the session")
            before = len(env.messages)
            if since is not None and since > before:
                raise _HTTPError(422, f"since={since} is past the {before} messages of the conversation")
            payload = action.model_dump(exclude_none=True)
            incoming = messages_size([payload])
            if session.size + incoming > settings.max_session_bytes:
                reason = (
                    f"the session would hold more than its limit of {settings.max_session_bytes} bytes of "
                    f"conversation ({session.size} held, {incoming} in this step); the episode has ended"
                )
                env.end("invalid_action", reason)
                raise _HTTPError(413, reason)
            usage = payload.pop("usage", None)
            if usage:
                p, c = session.agent_usage
                session.agent_usage = (p + usage["prompt_tokens"], c + usage["completion_tokens"])
            try:
                obs, reward, terminated, truncated, info = await env.astep(payload)
            except InvalidActionError as exc:
                raise _HTTPError(422, f"malformed action: {exc}") from None
            except EnvStateError as exc:
                raise _HTTPError(409, str(exc)) from None
            except Exception as exc:
                raise _failure(env, exc) from None
            finally:
                session.touch()
            session.size += messages_size(obs[before:])
        start = since or 0
        result = StepResult(
            observation=list(obs[start:]),
            observation_start=start,
            reward=float(reward),
            terminated=terminated,
            truncated=truncated,
            info=_dump_info(info),
        )
        return _answer(result)

    @app.get("/sessions/{session_id}/episode", response_model=Episode, tags=["sessions"])
    async def episode(session_id: str) -> Any:
        """The Episode record of the session (normally read once the episode has ended)."""
        session = store.get(session_id)
        session.touch()
        p, c = session.agent_usage
        req = session.request
        record = session.env.to_episode(
            agent=req.agent,
            agent_config=req.agent_config,
            user=session.user_name,
            user_config=session.user_config,
            agent_usage=Usage(prompt_tokens=p, completion_tokens=c),
            privileged=req.reveal_task,
        )
        return _answer(record)

    @app.delete(
        "/sessions/{session_id}", status_code=204, response_class=Response, response_model=None, tags=["sessions"]
    )
    async def delete(session_id: str) -> Response:
        """Forget a session."""
        if not store.remove(session_id):
            raise _HTTPError(404, f"unknown session {session_id!r}")
        return Response(status_code=204)

    return GuardMiddleware(
        app, token=settings.token, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )


# ---------------------------------------------------------------------------------------------- running
def resolve_token(cli_token: str | None) -> str | None:
    """The token from ``--token``, else ``$APIGEN_SERVER_TOKEN``, else None (empty strings count as unset)."""
    token = cli_token if cli_token else os.environ.get(TOKEN_ENV)
    return token or None


def timed_h11_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """The h11 protocol of uvicorn, with a deadline for request headers and a cap on open connections.

    uvicorn has no header timeout: a client that sends a request head one byte at a time (or a byte now and
    then after a response, which also stops the keep-alive timer) holds its socket forever, and enough of
    them exhaust the process's file handles. Its ``limit_concurrency`` only refuses requests, after their
    headers arrived, so it does not help either.

    Args:
        header_timeout_s: Seconds allowed for a request head, counted from connecting or from the previous
            response; a connection past it is answered 408 and closed.
        max_connections: Open connections allowed; one more is answered 503 and closed at once.

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.

    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        """H11Protocol that closes connections whose request head is slower than the deadline."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_RAW_503)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the head is complete; the body has its own deadline (GuardMiddleware)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                # h11 cannot answer a request it has not parsed; the raw bytes are a complete response.
                self.transport.write(_RAW_408)
                self.transport.close()

    return TimedH11Protocol


_RAW_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_RAW_503 = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def uvicorn_config(app: Any, settings: ServerSettings, **kwargs: Any) -> Any:
    """The ``uvicorn.Config`` for an app, with the settings' limits on slow and numerous clients.

    Args:
        app: The ASGI app.
        settings: Its settings (``header_timeout_s``, ``keep_alive_s``, ``max_connections``,
            ``max_header_bytes``; the body deadline is enforced by the app's :class:`GuardMiddleware`).
        **kwargs: Further ``uvicorn.Config`` arguments (host, port, log_level, ...).

    Returns:
        The config.

    """
    import uvicorn

    return uvicorn.Config(
        app,
        http=timed_h11_protocol(settings.header_timeout_s, settings.max_connections),
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        server_header=False,
        **kwargs,
    )


class ServerThread:
    """Run an app with uvicorn on 127.0.0.1 in a background thread (for tests, notebooks and ``play``).

    Args:
        app: The ASGI app.
        host: Interface to bind (loopback by default).
        port: Port (0 picks a free one).
        settings: The limits on slow and numerous clients (see :func:`uvicorn_config`; default settings
            when None).

    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, settings: ServerSettings | None = None
    ) -> None:
        import socket

        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it every response (headers and body sent apart) waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn_config(app, settings or ServerSettings(), log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="apigen-server", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving and wait until the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the env server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serve_in_thread(settings: ServerSettings | None = None, **kwargs: Any) -> Iterator[ServerThread]:
    """Serve :func:`create_app` on a free loopback port for the duration of a ``with`` block.

    Args:
        settings: Service settings.
        **kwargs: Passed to :func:`create_app` (``user_factory``).

    Yields:
        The running server (``.base_url``).

    """
    with ServerThread(create_app(settings, **kwargs), settings=settings) as server:
        yield server


def run_server(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (what ``apigen-envs serve`` calls).

    Args:
        settings: Service settings.
        host: Interface; keep the loopback default unless a token is set and the network is trusted.
        port: Port.
        log_level: uvicorn log level (request headers, and so the token, are never logged).

    """
    import uvicorn

    uvicorn.Server(uvicorn_config(create_app(settings), settings, host=host, port=port, log_level=log_level)).run()
