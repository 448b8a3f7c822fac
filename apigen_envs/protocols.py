"""Pluggable parts as Protocols: any class (or object) with these methods fits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from apigen_envs.messages import AssistantMessage, Message, Usage
from apigen_envs.task import Task
from apigen_envs.text import TooDeepError, clean_json

StopReason = Literal["stop", "transfer", "out_of_scope"]
"""Why the simulated user ended the conversation."""


@dataclass(frozen=True, slots=True)
class UserTurn:
    """One reply of the user simulator.

    Attributes:
        content: What the user says (stop markers already removed).
        stop: Set when the user ends the conversation with this turn.
        usage: Tokens spent producing the turn, when an LLM was used.
        meta: Optional JSON-able record of how the turn was chosen (e.g. best-of-N candidates and scores);
            the env keeps it in the episode's ``user_trace``.

    """

    content: str
    stop: StopReason | None = None
    usage: Usage | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # The trace often quotes model text; it is made encodable here, where it enters (the content is
        # cleaned by the UserMessage it becomes).
        if self.meta:
            try:
                meta = clean_json(self.meta, MAX_TRACE_DEPTH)
            except TooDeepError:
                meta = {"dropped": f"the trace nested deeper than {MAX_TRACE_DEPTH} levels"}
            object.__setattr__(self, "meta", meta)


MAX_TRACE_DEPTH = 32
"""A user turn's ``meta`` nested deeper than this is replaced by a note (it is recorded, not interpreted)."""


@runtime_checkable
class UserSimulator(Protocol):
    """A simulated customer. Stateless across calls: everything it needs is in the arguments.

    ``conversation`` holds the messages so far as the agent sees them (user, assistant and tool messages);
    simulators read only user and assistant text. An empty conversation asks for the opening message.
    Construction must not call an LLM.
    """

    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Produce the user's next turn."""
        ...

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond`."""
        ...


@dataclass(frozen=True, slots=True)
class AgentContext:
    """What an agent gets besides the conversation.

    Attributes:
        system_prompt: The domain policy framed as a system prompt.
        tools: OpenAI tool schemas the agent may call.
        task: The task being run, gold actions and outputs included. The runner sets it only for agents
            that declare ``privileged = True`` (the oracle); every other agent gets None.
        seed: Seed for this episode, to pass to sampling.
        extra: Free-form settings (e.g. temperature) from the collector.

    """

    system_prompt: str
    tools: tuple[dict[str, Any], ...]
    task: Task | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    """A policy: given the conversation so far, produce the next assistant message.

    An agent may also set a ``privileged`` attribute; only when it is True does the runner put the task
    (and so its gold) in :attr:`AgentContext.task`. An exception raised from ``act``/``aact`` counts
    against the policy, unless it is an :class:`~apigen_envs.errors.InfrastructureError` (its model
    server gave up), which the runner records as ``agent_error`` and leaves out of metrics.
    """

    name: str

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Choose the next assistant message."""
        ...

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act`."""
        ...
