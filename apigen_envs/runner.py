"""The episode runner: the one turn loop behind every way of running an episode, and the one rule for outcomes.

An episode is a step machine, :func:`episode_plan`: a generator that yields what it needs carried out (reset
the env, ask the policy for a turn, step the env, record the episode) and decides every outcome. Drivers only
carry the requests out: :func:`run_episode` synchronously, :func:`arun_episode` awaiting each request, and
:class:`~apigen_envs.rl.AsyncEnvBatch` gathering the policy requests of many episodes into one batched call.
The collector, Ray workers, RL group rollouts, ``AsyncEnvBatch``, ``EnvStepReward``, the trainer adapters,
``testing.run_episode`` and ``play`` all run episodes this way, so an episode means the same everywhere.

The rule for outcomes:

* What the policy produced that cannot be executed counts against it (``invalid_action``, reward 0, kept in
  metrics): an empty turn, a message of another role, a malformed message, an action that is neither an
  assistant message, an OpenAI assistant dict nor a string, and any exception the policy's own code raises.
* What can be executed but is wrong is answered by the env with an error tool message and the episode goes
  on: an unknown tool, invalid or wrongly typed arguments, broken JSON, arguments nested at any depth.
* Only failures outside the policy are infrastructure, recorded and left out of metrics (the collector
  retries them): ``agent_error`` when the policy's model server gave up (an
  :class:`~apigen_envs.errors.InfrastructureError`), ``user_error`` when the user simulator failed, and
  ``env_error`` when the env's own code failed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from apigen_envs.episode import Episode, Termination
from apigen_envs.errors import EnvStateError, InfrastructureError, InvalidActionError
from apigen_envs.messages import AssistantMessage, Message, Usage, to_assistant_message
from apigen_envs.protocols import AgentContext


# ============================================================================================ requests
@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the env; the driver sends back ``(observation, info)``.

    Attributes:
        seed: Episode seed.
        options: Reset options (``{"task_id": ...}`` or ``{"task_index": ...}``).

    """

    seed: int | None
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Act:
    """Ask the policy for its next turn; the driver sends back whatever the policy returned.

    Attributes:
        conversation: The messages so far, as the agent sees them.
        context: System prompt, tools, seed and (for privileged agents only) the task.

    """

    conversation: tuple[Message, ...]
    context: AgentContext


@dataclass(frozen=True, slots=True)
class Step:
    """Step the env with a well-formed assistant turn; the driver sends back the env's step result.

    Attributes:
        action: The turn.

    """

    action: AssistantMessage


@dataclass(frozen=True, slots=True)
class Record:
    """Build the episode record; the driver sends back the :class:`~apigen_envs.episode.Episode`.

    Attributes:
        fields: Episode fields to set (agent, usage, trial...).
        ending: ``(termination, error)`` when the runner ended the episode itself; an env that cannot be
            ended from outside (a remote one) gets it written over its own record.

    """

    fields: dict[str, Any]
    ending: tuple[Termination, str] | None = None


Request = Reset | Act | Step | Record
"""What an episode plan yields."""

EpisodePlan = Generator[Request, Any, Episode]
"""An episode as a step machine: yields requests, receives their results, returns the record."""


# ============================================================================================ the rule
def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception for episode records: ``Type: message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def policy_failure(exc: BaseException) -> Termination:
    """How an exception raised while getting the policy's turn ends the episode.

    Args:
        exc: What the policy (or the model server behind it) raised.

    Returns:
        ``agent_error`` for an :class:`~apigen_envs.errors.InfrastructureError` (the model server gave up),
        ``invalid_action`` for anything else: the policy's own code failed, which counts against it.

    """
    return "agent_error" if isinstance(exc, InfrastructureError) else "invalid_action"


def step_failure(exc: BaseException) -> Termination:
    """How an exception raised by the env while it took a well-formed turn ends the episode.

    The env ends user-simulator failures itself (``user_error``); this decides the rest.

    Args:
        exc: What the env raised.

    Returns:
        ``invalid_action`` when the env still refused the turn (a remote env's 422), ``env_error`` otherwise.

    """
    return "invalid_action" if isinstance(exc, InvalidActionError) else "env_error"


def _name(obj: Any, default: str) -> str:
    return str(getattr(obj, "name", None) or type(obj).__name__ or default)


def agent_context(
    env: Any, info: Mapping[str, Any], *, seed: int | None, privileged: bool, extra: Mapping[str, Any] | None = None
) -> AgentContext:
    """The context an agent gets: the task (and so its gold) only when the agent is privileged.

    Args:
        env: The env, after reset.
        info: The reset info (system prompt and tool schemas).
        seed: Episode seed.
        privileged: Whether the agent may read the task (the oracle).
        extra: Free-form settings (the agent config).

    Returns:
        The context.

    """
    task = None
    if privileged:
        try:
            task = env.task
        except EnvStateError:  # a remote env that did not reveal the task: the agent finds out itself
            task = None
    return AgentContext(
        system_prompt=str(info["system_prompt"]),
        tools=tuple(info["tools"]),
        task=task,
        seed=seed,
        extra=dict(extra or {}),
    )


def _end(env: Any, termination: Termination, exc: BaseException) -> tuple[Termination, str]:
    error = describe_error(exc)
    end = getattr(env, "end", None)
    if end is not None:
        end(termination, error)
    return termination, error


def episode_plan(
    env: Any,
    agent: Any,
    *,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    trial: int = 0,
    fields: Mapping[str, Any] | None = None,
) -> EpisodePlan:
    """One episode as a step machine (see the module docstring for the rule it applies).

    Args:
        env: A :class:`~apigen_envs.env.ToolUseEnv`, or anything with the same reset/step surface (a
            :class:`~apigen_envs.remote.RemoteEnv`).
        agent: The policy (see :func:`as_agent`); only its ``name``, ``privileged`` flag and config are read here.
        seed: Episode seed (reaches the user simulator and ``context.seed``).
        options: Reset options.
        trial: Trial index recorded on the episode.
        fields: Episode fields to record (``agent_config`` also becomes ``context.extra``).

    Yields:
        The requests for the driver.

    Returns:
        The episode.

    Raises:
        Exception: Whatever the reset raised when the env never started (an unknown task, a bad option).

    """
    record = dict(fields or {})
    privileged = bool(getattr(agent, "privileged", False))
    ending: tuple[Termination, str] | None = None
    usage = Usage()
    saw_task = False
    try:
        _, info = yield Reset(seed, dict(options or {}))
    except Exception:
        if not env.done:
            raise  # nothing started, so there is no episode to record
        info = None  # the user simulator failed on its opening message; the env recorded it
    if info is not None:
        context = agent_context(env, info, seed=seed, privileged=privileged, extra=record.get("agent_config"))
        saw_task = context.task is not None
        while not env.done and ending is None:
            try:
                raw = yield Act(tuple(env.messages), context)
            except Exception as exc:
                ending = _end(env, policy_failure(exc), exc)
                break
            spent = getattr(raw, "usage", None)
            if isinstance(spent, Usage):
                usage = usage + spent
            try:
                action = to_assistant_message(raw)
            except Exception as exc:  # noqa: BLE001 - whatever reading the turn raised, the turn was unusable
                ending = _end(env, "invalid_action", exc)
                break
            try:
                yield Step(action)
            except Exception as exc:
                if not env.done:  # a user-simulator failure ended the episode inside the env already
                    ending = _end(env, step_failure(exc), exc)
    record.setdefault("agent_usage", usage)
    record["privileged"] = saw_task
    episode: Episode = yield Record({"trial": trial, **record}, ending)
    return episode


# ============================================================================================ agents
class FunctionAgent:
    """An :class:`~apigen_envs.protocols.Agent` made from a function ``(conversation, context) -> action``.

    The function may be sync or async and may return an :class:`AssistantMessage`, an OpenAI assistant
    dict or a string (text for the user); the runner reads whatever it returns.

    Args:
        fn: The policy function.
        name: Name recorded on episodes.
        privileged: Whether the function may read ``context.task`` (the gold).

    """

    def __init__(
        self,
        fn: Callable[[Sequence[Message], AgentContext], Any],
        name: str | None = None,
        *,
        privileged: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or "function_policy"
        self.privileged = privileged

    def act(self, conversation: Sequence[Message], context: AgentContext) -> Any:
        """Call the function (it must not be async here).

        Raises:
            TypeError: When the function is async (use the async API).

        """
        result = self.fn(conversation, context)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn about it
            raise TypeError("an async policy function needs the async API (aact / arollout_group)")
        return result

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> Any:
        """Call the function, awaiting it when it is async."""
        result = self.fn(conversation, context)
        if inspect.isawaitable(result):
            result = await result
        return result


def as_agent(policy: Any) -> Any:
    """An object with ``name``, ``act`` and ``aact`` from an Agent, an object with only ``act``, or a function.

    The ``privileged`` flag of the object (or function attribute) carries over: only then does the policy
    get the task in its context.

    Args:
        policy: An :class:`~apigen_envs.protocols.Agent`, or a callable ``(conversation, context)``.

    Returns:
        The agent (an Agent is returned as is).

    Raises:
        TypeError: When ``policy`` is none of these.

    """
    if hasattr(policy, "aact"):
        return policy
    if hasattr(policy, "act"):
        return FunctionAgent(
            policy.act,
            getattr(policy, "name", None) or type(policy).__name__,
            privileged=bool(getattr(policy, "privileged", False)),
        )
    if callable(policy):
        return FunctionAgent(policy, privileged=bool(getattr(policy, "privileged", False)))
    raise TypeError(f"a policy must be an Agent or a callable (conversation, context); got {type(policy).__name__}")


# ============================================================================================ drivers
@dataclass(frozen=True, slots=True)
class Sent:
    """What a driver sends back into a plan: the request's result, or the exception it raised.

    Attributes:
        value: The result.
        error: The exception, when carrying the request out failed.

    """

    value: Any = None
    error: Exception | None = None


def advance(plan: EpisodePlan, sent: Sent) -> Request | Episode:
    """Send a result (or throw an exception) into a plan and return its next request, or its episode.

    Args:
        plan: The plan (started by the first call, with an empty :class:`Sent`).
        sent: The last request's outcome.

    Returns:
        The next request, or the finished episode.

    """
    try:
        if sent.error is not None:
            return plan.throw(sent.error)
        return plan.send(sent.value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _overlay(episode: Episode, request: Record) -> Episode:
    """A remote env's record with the runner's fields (and its own ending, when it ended the episode)."""
    update = dict(request.fields)
    # The server records a revealed task even when this agent did not read it: the record keeps either.
    update["privileged"] = bool(update.get("privileged")) or episode.privileged
    if request.ending is not None:
        update.update(termination=request.ending[0], error=request.ending[1], reward=0.0, reward_info=None)
    return episode.model_copy(update=update)


def _local_record(env: Any, request: Record) -> Episode:
    fields = dict(request.fields)
    if request.ending is not None:
        fields.setdefault("termination", request.ending[0])
    return env.to_episode(**fields)  # type: ignore[no-any-return]


async def _remote_record(env: Any, request: Record) -> Episode:
    return _overlay(await env.aepisode(), request)


def operation(env: Any, agent: Any, request: Request, *, sync: bool) -> Callable[[], Any]:
    """The call that carries one request out: the env's ``reset``/``step`` (or ``areset``/``astep``), the
    agent's ``act`` (or ``aact``), or building the record. Async calls return an awaitable.

    Args:
        env: The env.
        agent: The agent (unused for env requests).
        request: The request.
        sync: Pick the sync methods.

    Returns:
        A zero-argument callable.

    """
    if isinstance(request, Reset):
        return functools.partial(env.reset if sync else env.areset, seed=request.seed, options=request.options)
    if isinstance(request, Act):
        return functools.partial(agent.act if sync else agent.aact, request.conversation, request.context)
    if isinstance(request, Step):
        return functools.partial(env.step if sync else env.astep, request.action)
    if hasattr(env, "to_episode"):
        return functools.partial(_local_record, env, request)
    if sync:
        return lambda: _overlay(env.episode(), request)
    return functools.partial(_remote_record, env, request)


async def acarry_out(env: Any, agent: Any, request: Request) -> Sent:
    """Carry one request out, awaiting it when it is async; failures come back as :class:`Sent` errors."""
    try:
        result = operation(env, agent, request, sync=False)()
        return Sent(await result if inspect.isawaitable(result) else result)
    except Exception as exc:  # noqa: BLE001 - the plan decides what every failure means
        return Sent(error=exc)


class RunOptions(TypedDict, total=False):
    """Keyword arguments of :func:`run_episode` and :func:`arun_episode`.

    Attributes:
        task_id: The task to run (else ``options`` or the env's own draw picks it).
        options: Reset options (``{"task_index": ...}``).
        seed: Episode seed (reaches the user simulator and ``context.seed``).
        trial: Trial index recorded on the episode.
        agent_config: Settings recorded on the episode and passed as ``context.extra``.
        fields: Further Episode fields to record (``user_config``, ``run_settings``...).

    """

    task_id: str | None
    options: Mapping[str, Any] | None
    seed: int | None
    trial: int
    agent_config: Mapping[str, Any] | None
    fields: Mapping[str, Any] | None


def start(env: Any, policy: Any, run: RunOptions) -> tuple[Any, EpisodePlan]:
    """The agent and the episode plan for a run (agent and user names filled in on the record).

    Args:
        env: The env.
        policy: Anything :func:`as_agent` takes.
        run: The run's options.

    Returns:
        (agent, plan).

    """
    agent = as_agent(policy)
    options = dict(run.get("options") or {})
    if run.get("task_id") is not None:
        options["task_id"] = run["task_id"]
    record: dict[str, Any] = {"agent": _name(agent, "agent"), "agent_config": dict(run.get("agent_config") or {})}
    if getattr(env, "user", None) is not None:
        record["user"] = _name(env.user, "user")
    record.update(run.get("fields") or {})
    plan = episode_plan(env, agent, seed=run.get("seed"), options=options, trial=run.get("trial", 0), fields=record)
    return agent, plan


def run_episode(env: Any, policy: Any, **run: Unpack[RunOptions]) -> Episode:
    """Run one episode synchronously (``env.reset``/``env.step``, ``agent.act``) and return its record.

    Failures are recorded by the runner's rule (see the module docstring), never raised; only a reset that
    could not start the episode (an unknown task, bad options) raises.

    Args:
        env: The env (it is reset): a ToolUseEnv or a RemoteEnv.
        policy: An Agent, an object with ``act``, or a function ``(conversation, context) -> action``.
        **run: See :class:`RunOptions`.

    Returns:
        The episode.

    """
    agent, plan = start(env, policy, run)
    sent = Sent()
    while not isinstance(request := advance(plan, sent), Episode):
        try:
            sent = Sent(operation(env, agent, request, sync=True)())
        except Exception as exc:  # noqa: BLE001 - the plan decides what every failure means
            sent = Sent(error=exc)
    return request


async def arun_episode(env: Any, policy: Any, **run: Unpack[RunOptions]) -> Episode:
    """Async twin of :func:`run_episode` (``env.areset``/``env.astep``, ``agent.aact``), for concurrent episodes."""
    agent, plan = start(env, policy, run)
    sent = Sent()
    while not isinstance(request := advance(plan, sent), Episode):
        sent = await acarry_out(env, agent, request)
    return request
