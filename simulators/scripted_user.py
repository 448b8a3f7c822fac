"""A deterministic user simulator for tests and offline runs.

It either replays fixed lines, or answers from the task: it opens with the request and who the customer is,
in the first person (:func:`~apigen_envs.simulators.customer_lines.scripted_opening`; never the raw
instruction, which would otherwise become the ``human`` turn of exported trajectories), confirms when the
agent asks a question, and stops once the agent replies without a question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from apigen_envs.messages import AssistantMessage, Message, UserMessage
from apigen_envs.protocols import UserTurn
from apigen_envs.simulators.customer_lines import scripted_opening
from apigen_envs.task import Task


@dataclass(frozen=True)
class ScriptedUser:
    """A user that needs no model.

    Attributes:
        lines: Fixed lines to say in order; after the last one the user stops. When None, the user
            answers from the task (see module docstring).
        confirm: What to say when the agent asks a question.
        max_turns: User turns before stopping regardless.
        name: Name recorded on episodes.

    """

    lines: tuple[str, ...] | None = None
    confirm: str = "Yes, please go ahead."
    max_turns: int = 10
    name: str = "scripted"
    # Openings are a pure function of the scenario and cost ~100 us of regex work each; a collector runs
    # the same tasks trial after trial with one user, so each is written once per user instance.
    _openings: dict[tuple[str, str, str | None, str | None], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Produce the next user turn (deterministic; ``seed`` is ignored)."""
        said = sum(1 for m in conversation if isinstance(m, UserMessage))
        if self.lines is not None:
            if said < len(self.lines):
                return UserTurn(self.lines[said])
            return UserTurn("", stop="stop")
        if said == 0:
            scenario = task.scenario
            key = (task.id, scenario.instruction, scenario.reason_for_call, scenario.known_info)
            opening = self._openings.get(key)
            if opening is None:
                opening = self._openings[key] = scripted_opening(task)
            return UserTurn(opening)
        if said >= self.max_turns:
            return UserTurn("", stop="stop")
        last = next((m for m in reversed(conversation) if isinstance(m, AssistantMessage) and m.content), None)
        if last is not None and last.content is not None and last.content.rstrip().endswith("?"):
            return UserTurn(self.confirm)
        return UserTurn("Thanks, that's all.", stop="stop")

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond`."""
        return self.respond(task, conversation, seed=seed)
