"""The envs as an HTTP service: one session per episode, the same messages and Episode records as in Python.

``create_app(settings)`` builds a FastAPI app; ``apigen-envs serve`` runs it with uvicorn on 127.0.0.1.
Routes (all JSON; OpenAPI spec at ``/openapi.json``):

* ``POST /sessions``: start an episode (domain, task, seed, max_turns, user simulator) and return the
  session id, the first observation and the info (tools, system prompt);
* ``POST /sessions/{id}/step``: one assistant message in OpenAI format -> observation, reward,
  terminated, truncated, info (with the reward breakdown once the episode ended);
* ``GET /sessions/{id}/episode``: the :class:`~apigen_envs.episode.Episode` record;
* ``DELETE /sessions/{id}``; ``GET /domains``; ``GET /healthz``.

Sessions run on the env's async API, so a slow LLM user simulator in one session does not hold up
the others. Idle sessions are reaped after ``idle_timeout_s``; at most ``max_sessions`` live at once.
An optional bearer token guards every route but ``/healthz``; the token is never logged or echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_envs.episode import Episode, Termination
from apigen_envs.errors import ApigenError, DomainNotFoundError, EnvStateError, InvalidActionError
from apigen_envs.protocols import UserSimulator
from apigen_envs.verify import RewardInfo

TOKEN_ENV = "APIGEN_SERVER_TOKEN"
"""Environment variable holding the bearer token (preferred over ``--token``, which shows in ``ps``)."""

DEFAULT_MAX_BODY = 1024 * 1024

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
        temperature: Sampling temperature of the LLM user.

    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scripted", "llm"] = "scripted"
    strategy: Literal["llm", "react", "verify", "reflection"] = "llm"
    model: str | None = None
    base_url: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)


class CreateSessionRequest(BaseModel):
    """Body of ``POST /sessions``.

    Attributes:
        domain: Domain name (``mock``, ``retail``, ``airline``).
        task_id: Run this task.
        task_index: Run the task at this index of the (split-filtered) task list.
        split: Restrict tasks to one split.
        seed: Episode seed (task draw when no task is named, and the user simulator).
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
    seed: int | None = None
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
    """Answer of ``POST /sessions/{id}/step``: the Gymnasium step tuple as named fields."""

    observation: list[dict[str, Any]]
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
        reap_interval_s: How often idle sessions are looked for.
        data_dir: Domain data directory (tau2 / tau-bench layout), as for ``load_domain``.
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
    reap_interval_s: float = 5.0
    data_dir: str | None = None
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

    Raises:
        PermissionError: When the request names a base URL and the server does not allow it.

    """
    if spec.kind == "scripted":
        from apigen_envs.simulators.scripted_user import ScriptedUser

        return ScriptedUser()
    if spec.base_url and not settings.allow_client_base_url:
        raise PermissionError("this server does not accept a user base_url from clients (--allow-client-base-url)")
    from apigen_envs.llm import LLMConfig, OpenAIClient
    from apigen_envs.simulators.llm_user import LLMUser

    config = LLMConfig(
        model=spec.model or settings.user_model,
        base_url=spec.base_url or settings.user_base_url,
        api_key_env=settings.api_key_env,
        temperature=spec.temperature if spec.temperature is not None else 0.0,
    )
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
        self.message = message
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------- ASGI guards
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


async def _send_json(send: Callable[[Any], Awaitable[None]], status: int, body: bytes, extra: list[Any]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Bearer-token check and request-size limit, in front of every route.

    The size limit is enforced on the declared ``Content-Length`` and, for chunked bodies, on the bytes
    actually received (buffered here up to the limit), so an oversize payload is refused with 413 before
    it is parsed.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

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
        """Check the token and the body size, then pass the request on."""
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
                await _send_json(send, 400, b'{"detail":"invalid Content-Length"}', [])
                return
            if too_big:
                await _send_json(send, 413, self._too_big(), [])
                return
        if declared is not None or scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked upload): read the body here, at most the limit, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_json(send, 413, self._too_big(), [])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_big(self) -> bytes:
        return f'{{"detail":"request body larger than {self.max_body_bytes} bytes"}}'.encode()


# ---------------------------------------------------------------------------------------------- app
def _failure(env: Any, exc: Exception) -> _HTTPError:
    """502 when the user simulator (an upstream LLM) failed, 500 for a defect in the env itself."""
    if env.termination == "user_error":
        return _HTTPError(502, f"the user simulator failed: {type(exc).__name__}: {exc}")
    return _HTTPError(500, f"internal env error: {type(exc).__name__}: {exc}")


def _dump_info(info: dict[str, Any]) -> EnvInfo:
    return EnvInfo.model_validate(info)


def create_app(settings: ServerSettings | None = None, *, user_factory: UserFactory | None = None) -> Any:
    """Build the FastAPI app.

    Args:
        settings: Service settings (defaults: no token, 1,024 sessions, 10 min idle timeout, 1 MiB bodies).
        user_factory: Builds each session's user simulator (default: :func:`default_user_factory`).

    Returns:
        The ASGI app: the FastAPI instance (``.app``) behind the token / size guard.

    """
    from fastapi import FastAPI, Request, Response
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
            return load_domain(name, settings.data_dir)
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
                domain = load_domain(name, settings.data_dir)
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
    async def create_session(body: CreateSessionRequest) -> SessionCreated:
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
            user_config=public() if callable(public) else body.user.model_dump(exclude_none=True),
        )
        store.add(session)
        return SessionCreated(session_id=session.id, observation=list(obs), info=_dump_info(info), done=env.done)

    @app.post("/sessions/{session_id}/step", response_model=StepResult, tags=["sessions"])
    async def step(session_id: str, action: AssistantAction) -> StepResult:
        """Take one agent turn: tool calls run against the episode's DB; text goes to the user."""
        session = store.get(session_id)
        async with session.lock:
            session.touch()
            env = session.env
            if env.done:
                raise _HTTPError(409, "the episode has ended; read /episode or delete the session")
            payload = action.model_dump(exclude_none=True)
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
        return StepResult(
            observation=list(obs),
            reward=float(reward),
            terminated=terminated,
            truncated=truncated,
            info=_dump_info(info),
        )

    @app.get("/sessions/{session_id}/episode", response_model=Episode, tags=["sessions"])
    async def episode(session_id: str) -> Episode:
        """The Episode record of the session (normally read once the episode has ended)."""
        session = store.get(session_id)
        session.touch()
        p, c = session.agent_usage
        req = session.request
        return session.env.to_episode(
            agent=req.agent,
            agent_config=req.agent_config,
            user=session.user_name,
            user_config=session.user_config,
            agent_usage=Usage(prompt_tokens=p, completion_tokens=c),
            privileged=req.reveal_task,
        )

    @app.delete(
        "/sessions/{session_id}", status_code=204, response_class=Response, response_model=None, tags=["sessions"]
    )
    async def delete(session_id: str) -> Response:
        """Forget a session."""
        if not store.remove(session_id):
            raise _HTTPError(404, f"unknown session {session_id!r}")
        return Response(status_code=204)

    return GuardMiddleware(app, token=settings.token, max_body_bytes=settings.max_body_bytes)


# ---------------------------------------------------------------------------------------------- running
def resolve_token(cli_token: str | None) -> str | None:
    """The token from ``--token``, else ``$APIGEN_SERVER_TOKEN``, else None (empty strings count as unset)."""
    token = cli_token if cli_token else os.environ.get(TOKEN_ENV)
    return token or None


class ServerThread:
    """Run an app with uvicorn on 127.0.0.1 in a background thread (for tests, notebooks and ``play``).

    Args:
        app: The ASGI app.
        host: Interface to bind (loopback by default).
        port: Port (0 picks a free one).

    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it every response (headers and body sent apart) waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
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
    with ServerThread(create_app(settings, **kwargs)) as server:
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

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, server_header=False)
