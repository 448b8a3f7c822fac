"""The oracle agent: replays a task's gold actions, then states its required outputs.

It is privileged (``privileged = True``: the runner hands it ``context.task``, gold included, which no other
agent gets) and exists to check that tasks are solvable and that the env, tools and verifier agree: on a
well-formed task it scores 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from apigen_envs.messages import AssistantMessage, Message, ToolCall, ToolMessage
from apigen_envs.protocols import AgentContext


@dataclass(frozen=True)
class OracleAgent:
    """Replays gold actions one per step, then reports the required outputs and says goodbye.

    Attributes:
        name: Name recorded on episodes.
        privileged: Always True: the runner gives only privileged agents the task.

    """

    name: str = "oracle"
    privileged: ClassVar[bool] = True

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Next gold action, or the closing message once all were issued."""
        if context.task is None:
            raise ValueError("the oracle agent needs context.task")
        done = sum(1 for m in conversation if isinstance(m, ToolMessage))
        actions = context.task.actions
        if done < len(actions):
            action = actions[done]
            return AssistantMessage(
                tool_calls=(ToolCall(id=f"oracle_{done}", name=action.name, arguments=dict(action.arguments)),)
            )
        outputs = ", ".join(context.task.outputs)
        text = f"All done. {outputs}." if outputs else "All done."
        return AssistantMessage(content=text)

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act`."""
        return self.act(conversation, context)
