"""Gymnasium spaces for conversations: observations are OpenAI-format messages, actions assistant turns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

_ROLES = frozenset({"system", "user", "assistant", "tool"})


class MessagesSpace(gym.Space[tuple[dict[str, Any], ...]]):
    """The space of conversations: tuples of OpenAI chat-format message dicts."""

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """Conversations cannot be flattened to arrays."""
        return False

    def contains(self, x: Any) -> bool:
        """A tuple or list of dicts each with a known ``role``."""
        return isinstance(x, tuple | list) and all(isinstance(m, dict) and m.get("role") in _ROLES for m in x)

    def sample(self, mask: Any = None, probability: Any = None) -> tuple[dict[str, Any], ...]:
        """A short random user/assistant exchange (for API checks only)."""
        words = ("order", "refund", "flight", "address", "help", "please")
        text = " ".join(self.np_random.choice(words, size=4))
        return ({"role": "user", "content": text},)

    def __repr__(self) -> str:
        return "MessagesSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MessagesSpace)


class AssistantActionSpace(gym.Space[dict[str, Any]]):
    """The space of assistant turns, as OpenAI-format assistant message dicts.

    ``step`` also accepts :class:`~apigen_envs.messages.AssistantMessage` objects and plain strings; this
    space describes the dict form.

    Args:
        tool_names: Names the agent may call (used by :meth:`sample`).
        seed: Seed for sampling.

    """

    def __init__(self, tool_names: Sequence[str] = (), seed: int | np.random.Generator | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.tool_names = tuple(tool_names)

    @property
    def is_np_flattenable(self) -> bool:
        """Assistant turns cannot be flattened to arrays."""
        return False

    def contains(self, x: Any) -> bool:
        """An assistant dict with text and/or well-formed tool calls."""
        if not isinstance(x, dict) or x.get("role", "assistant") != "assistant":
            return False
        calls = x.get("tool_calls") or []
        if not isinstance(calls, list):
            return False
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return False
        return bool(calls) or isinstance(x.get("content"), str)

    def sample(self, mask: Any = None, probability: Any = None) -> dict[str, Any]:
        """A random text reply or a random (probably invalid) tool call."""
        if self.tool_names and self.np_random.random() < 0.5:
            name = str(self.np_random.choice(self.tool_names))
            return {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": name, "arguments": json.dumps({})}}
                ],
            }
        return {"role": "assistant", "content": "How can I help you today?"}

    def __repr__(self) -> str:
        return f"AssistantActionSpace({len(self.tool_names)} tools)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AssistantActionSpace) and other.tool_names == self.tool_names
