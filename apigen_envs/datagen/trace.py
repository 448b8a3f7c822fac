"""The execution trace of a blueprint: each gold action with its outcome and the DB before and after it.

Policy predicates read traces to catch cross-action violations ("B is invalid given A's change"), so each
step keeps a copy-on-write fork of the view taken before and after it (O(writes) each, never O(DB)).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from apigen_envs.db import DBView, Snapshot
from apigen_envs.task import Action
from apigen_envs.tools import ToolSet
from apigen_envs.verify import replay


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One executed action.

    Attributes:
        index: Position in the action list.
        action: The action.
        ok: False when the tool raised a business or call error.
        output: The tool's output text, or its error message.
        mutates: Whether the tool is a writer.
        before: The DB as the action saw it.
        after: The DB right after the action.

    """

    index: int
    action: Action
    ok: bool
    output: str
    mutates: bool
    before: DBView
    after: DBView

    @property
    def name(self) -> str:
        """The tool name."""
        return self.action.name

    @property
    def args(self) -> dict[str, Any]:
        """The call's arguments."""
        return self.action.arguments

    def result(self) -> Any:
        """The output parsed as JSON when it is JSON, else the text."""
        try:
            return json.loads(self.output)
        except (json.JSONDecodeError, TypeError):
            return self.output


@dataclass(frozen=True, slots=True)
class ExecutionTrace:
    """All steps of one replay plus the final view.

    Attributes:
        steps: The executed actions in order.
        final: The view after the last action.
        user_id: The blueprint's user, when known (rules about ownership use it).

    """

    steps: tuple[TraceStep, ...]
    final: DBView
    user_id: str | None = None

    def __iter__(self) -> Iterator[TraceStep]:
        return iter(self.steps)

    @property
    def errors(self) -> list[TraceStep]:
        """Steps whose tool call failed."""
        return [s for s in self.steps if not s.ok]

    def writes(self) -> list[TraceStep]:
        """Successful steps of writer tools."""
        return [s for s in self.steps if s.ok and s.mutates]

    def calls(self, *names: str) -> list[TraceStep]:
        """Successful steps calling one of ``names``."""
        return [s for s in self.steps if s.ok and s.name in names]


def execute(
    snapshot: Snapshot,
    tools: ToolSet,
    actions: Sequence[Action],
    user_id: str | None = None,
    *,
    atomic: bool = True,
) -> ExecutionTrace:
    """Replay actions one by one on a fresh view, keeping the state around every step.

    Calls run exactly as the verifier's gold replay runs them (:func:`apigen_envs.verify.replay`), so the
    final view is the gold state: unknown tools and invalid arguments become failed steps, never
    exceptions, and a failed writer's partial writes are undone only when calls are atomic.

    Args:
        snapshot: The base DB.
        tools: The domain's tools.
        actions: The gold actions.
        user_id: The blueprint's user.
        atomic: Undo the writes of a failing call (the semantics profile's ``atomic_calls``).

    Returns:
        The trace.

    """
    view = snapshot.view()
    steps = []
    for index, action in enumerate(actions):
        before = view.fork()
        ((ok, output),) = replay(tools, view, [action], atomic=atomic)
        mutates = action.name in tools and tools[action.name].mutates
        steps.append(TraceStep(index, action, ok, output, mutates, before, view.fork()))
    return ExecutionTrace(tuple(steps), view, user_id)
