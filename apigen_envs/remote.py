"""RemoteEnv: an env served by ``apigen-envs serve`` that looks like a local :class:`~apigen_envs.env.ToolUseEnv`.

``reset``/``step`` return the same types as the local env (observations as tuples of OpenAI dicts, info
with a :class:`~apigen_envs.verify.RewardInfo`), raise the same errors (``InvalidActionError`` for a
malformed action, ``EnvStateError`` for a step after the end) and expose the attributes that agent loops
read (``done``, ``messages``, ``reward_info``, ``task`` when the server revealed it), so the same agents and
``apigen_envs.testing.run_episode`` run against it unchanged. ``areset``/``astep`` are the async twins.

The client keeps the conversation and asks each step only for the messages it does not have yet
(``?since=N``), so a long episode does not transfer the whole conversation on every step.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

from apigen_envs.env import Observation
from apigen_envs.episode import Episode, Termination
from apigen_envs.errors import DomainNotFoundError, EnvStateError, InfrastructureError, InvalidActionError
from apigen_envs.messages import AssistantMessage, Message, message_from_openai
from apigen_envs.task import Task
from apigen_envs.verify import RewardInfo

try:  # openai >= 3 ships httpx2; older stacks have httpx with the same API.
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed stack
    import httpx  # type: ignore[no-redef]


class RemoteEnvError(InfrastructureError, RuntimeError):
    """The env server refused a request or could not be reached (an infrastructure failure: ``env_error``).

    Attributes:
        status: The HTTP status (None when no answer came back).

    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def action_payload(action: Any) -> dict[str, Any]:
    """The JSON body of a step: an OpenAI assistant message.

    Args:
        action: An :class:`AssistantMessage`, an OpenAI assistant dict, or a str (text to the user).

    Raises:
        InvalidActionError: For any other type.

    """
    if isinstance(action, AssistantMessage):
        body = action.to_openai()
        if action.content is None:
            # to_openai() writes "" for servers that reject null; keep None so the record matches a local run.
            body["content"] = None
        if action.usage is not None:
            body["usage"] = action.usage.model_dump()
        return body
    if isinstance(action, str):
        return {"role": "assistant", "content": action}
    if isinstance(action, dict):
        return action
    raise InvalidActionError(
        f"an action must be an AssistantMessage, an OpenAI assistant dict or a str; got {type(action).__name__}"
    )


def _fresh(observation: Observation) -> Observation:
    """Copies of the kept messages (callers may modify observations, as with the local env's)."""
    out = []
    for message in observation:
        copy = dict(message)
        if copy.get("tool_calls"):
            copy["tool_calls"] = [{**tc, "function": dict(tc.get("function") or {})} for tc in copy["tool_calls"]]
        out.append(copy)
    return tuple(out)


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:500]
    if isinstance(detail, list):  # FastAPI's validation errors: name the first field and reason
        first = detail[0] if detail else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        detail = f"{loc}: {first.get('msg', 'invalid')}" if loc else first.get("msg", "invalid")
    message = f"env server answered {response.status_code}: {detail}"
    status = response.status_code
    if status == 422:
        raise InvalidActionError(message)
    if status == 409:
        raise EnvStateError(message)
    if status == 404 and "session" not in str(detail):
        raise DomainNotFoundError(message)
    raise RemoteEnvError(message, status)


class RemoteEnv:
    """A client for one episode at a time on an env server.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000``.
        domain: Domain to open.
        token: Bearer token (None: ``$APIGEN_SERVER_TOKEN`` if set).
        split: Restrict tasks to one split.
        max_turns: Agent steps before truncation.
        user: User simulator spec (``{"kind": "scripted"}`` or ``{"kind": "llm", "model": ...}``).
        reveal_task: Ask the server for the task record (for privileged agents such as the oracle; the
            server must allow it).
        agent: Agent name recorded on the Episode.
        agent_config: Agent settings recorded on the Episode.
        timeout_s: Per-request timeout (LLM user turns can be slow).

    """

    def __init__(
        self,
        base_url: str,
        *,
        domain: str = "mock",
        token: str | None = None,
        split: str | None = None,
        max_turns: int = 30,
        user: dict[str, Any] | None = None,
        reveal_task: bool = False,
        agent: str = "remote",
        agent_config: dict[str, Any] | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        import os

        from apigen_envs.server import TOKEN_ENV

        self.base_url = base_url.rstrip("/")
        self.domain = domain
        self.split = split
        self.max_turns = max_turns
        self.user_spec = dict(user or {"kind": "scripted"})
        self.reveal_task = reveal_task
        self.agent = agent
        self.agent_config = dict(agent_config or {})
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout_s
        self._client: Any = None
        self._aclient: Any = None
        self.session_id: str | None = None
        self._reset_state()

    def __repr__(self) -> str:
        # No headers: the token must not show up in logs or tracebacks.
        return f"RemoteEnv(base_url={self.base_url!r}, domain={self.domain!r}, session_id={self.session_id!r})"

    def _reset_state(self) -> None:
        self._obs: tuple[dict[str, Any], ...] = ()
        self._info: dict[str, Any] = {}
        self._done = False
        self._termination: Termination | None = None
        self._reward_info: RewardInfo | None = None
        self._task: Task | None = None

    # ----------------------------------------------------------------- http plumbing
    def _sync(self) -> Any:
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
        return self._client

    def _async(self) -> Any:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
        return self._aclient

    def _request(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self._sync().request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise RemoteEnvError(f"cannot reach the env server at {self.base_url}: {exc}") from None
        _raise_for(response)
        return response.json() if response.content else None

    async def _arequest(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = await self._async().request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise RemoteEnvError(f"cannot reach the env server at {self.base_url}: {exc}") from None
        _raise_for(response)
        return response.json() if response.content else None

    # ----------------------------------------------------------------- translation
    def _create_body(self, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        options = options or {}
        unknown = set(options) - {"task_id", "task_index"}
        if unknown:
            raise ValueError(f"unsupported reset options {sorted(unknown)}; use task_id or task_index")
        return {
            "domain": self.domain,
            "split": self.split,
            "seed": seed,
            "max_turns": self.max_turns,
            "user": self.user_spec,
            "agent": self.agent,
            "agent_config": self.agent_config,
            "reveal_task": self.reveal_task,
            **options,
        }

    def _info_from(self, wire: dict[str, Any]) -> dict[str, Any]:
        info = {k: v for k, v in wire.items() if v is not None}
        if wire.get("reward_info") is not None:
            info["reward_info"] = RewardInfo.model_validate(wire["reward_info"])
            self._reward_info = info["reward_info"]
        if "termination" in info:
            self._termination = info["termination"]
        if "task" in info:
            self._task = Task.model_validate(info.pop("task"))
        return info

    def _after_reset(self, data: dict[str, Any]) -> tuple[Observation, dict[str, Any]]:
        self.session_id = data["session_id"]
        self._obs = tuple(data["observation"])
        self._info = self._info_from(data["info"])
        self._done = bool(data.get("done"))
        return _fresh(self._obs), dict(self._info)

    def _after_step(self, data: dict[str, Any]) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        # A server that ignores ``since`` sends everything, with no observation_start: start 0 covers both.
        start = int(data.get("observation_start") or 0)
        self._obs = self._obs[:start] + tuple(data["observation"])
        info = self._info_from(data["info"])
        self._done = data["terminated"] or data["truncated"]
        return _fresh(self._obs), float(data["reward"]), data["terminated"], data["truncated"], info

    def _step_path(self) -> str:
        if self.session_id is None:
            raise EnvStateError("step() called before reset()")
        if self._done:
            raise EnvStateError("the episode has ended; call reset() to start a new one")
        return f"/sessions/{self.session_id}/step?since={len(self._obs)}"

    # ----------------------------------------------------------------- sync API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode on the server (deleting this client's previous session).

        Args:
            seed: Episode seed.
            options: ``{"task_id": str}`` or ``{"task_index": int}``.

        Returns:
            (observation, info) as from :meth:`ToolUseEnv.reset`.

        """
        body = self._create_body(seed, options)
        self._drop_session()
        self._reset_state()
        return self._after_reset(self._request("POST", "/sessions", body))

    def step(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Take one agent turn on the server.

        Args:
            action: An :class:`AssistantMessage`, an OpenAI assistant dict, or a str.

        Returns:
            (observation, reward, terminated, truncated, info) as from :meth:`ToolUseEnv.step`.

        Raises:
            InvalidActionError: When the server rejects the action (422).
            EnvStateError: Before ``reset`` or after the end (409).
            RemoteEnvError: Other refusals (unknown session, auth) and connection failures.

        """
        path = self._step_path()
        return self._after_step(self._request("POST", path, action_payload(action)))

    def episode(self) -> Episode:
        """The Episode record of the current session."""
        if self.session_id is None:
            raise EnvStateError("no session; call reset() first")
        return Episode.model_validate(self._request("GET", f"/sessions/{self.session_id}/episode"))

    def _drop_session(self) -> None:
        if self.session_id is not None and self._client is not None:
            # Already reaped or deleted: nothing to free.
            with contextlib.suppress(RemoteEnvError):
                self._request("DELETE", f"/sessions/{self.session_id}")
        self.session_id = None

    def close(self) -> None:
        """Delete the session on the server and close the HTTP client."""
        self._drop_session()
        if self._client is not None:
            self._client.close()
            self._client = None

    # ----------------------------------------------------------------- async API
    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Async twin of :meth:`reset`."""
        body = self._create_body(seed, options)
        await self._adrop_session()
        self._reset_state()
        return self._after_reset(await self._arequest("POST", "/sessions", body))

    async def astep(self, action: Any) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Async twin of :meth:`step`."""
        path = self._step_path()
        return self._after_step(await self._arequest("POST", path, action_payload(action)))

    async def aepisode(self) -> Episode:
        """Async twin of :meth:`episode`."""
        if self.session_id is None:
            raise EnvStateError("no session; call reset() first")
        return Episode.model_validate(await self._arequest("GET", f"/sessions/{self.session_id}/episode"))

    async def _adrop_session(self) -> None:
        if self.session_id is not None and self._aclient is not None:
            with contextlib.suppress(RemoteEnvError):
                await self._arequest("DELETE", f"/sessions/{self.session_id}")
        self.session_id = None

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        await self._adrop_session()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        if self._client is not None:
            self.close()

    def __enter__(self) -> RemoteEnv:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> RemoteEnv:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- state, as ToolUseEnv exposes it
    @property
    def done(self) -> bool:
        """Whether the episode has ended."""
        return self._done

    @property
    def observation(self) -> Observation:
        """The latest observation (OpenAI dicts)."""
        return _fresh(self._obs)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The conversation so far as typed messages (parsed from the latest observation)."""
        return tuple(message_from_openai(m) for m in self._obs)

    @property
    def termination(self) -> Termination | None:
        """Why the episode ended, once it has."""
        return self._termination

    @property
    def reward_info(self) -> RewardInfo | None:
        """The final reward breakdown, once the episode has ended."""
        return self._reward_info

    @property
    def task(self) -> Task:
        """The task, when the session was opened with ``reveal_task=True``."""
        if self._task is None:
            raise EnvStateError("the task is not known here; open the session with reveal_task=True")
        return self._task

    @property
    def system_prompt(self) -> str:
        """The agent's system prompt from the last reset."""
        return str(self._info.get("system_prompt", ""))

    @property
    def tool_schemas(self) -> tuple[dict[str, Any], ...]:
        """OpenAI tool schemas from the last reset."""
        return tuple(self._info.get("tools", ()))
