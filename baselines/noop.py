"""The do-nothing agent: never calls a tool. A task it passes is trivial and should not be used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from apigen_envs.messages import AssistantMessage, Message
from apigen_envs.protocols import AgentContext


@dataclass(frozen=True)
class NoopAgent:
    """Politely declines every request without acting."""

    name: str = "noop"
    reply: str = "I'm sorry, I can't help with that."

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Always the same text reply, never a tool call."""
        return AssistantMessage(content=self.reply)

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act`."""
        return self.act(conversation, context)
