"""The Act agent: the ReAct agent without thoughts (one JSON action per turn)."""

from __future__ import annotations

from apigen_envs.baselines.react import ReActAgent
from apigen_envs.llm import LLMClient


class ActAgent(ReActAgent):
    """A text-only agent that writes one ``Action: {json}`` line per turn, with no thought.

    Args:
        client: The model client (called without native tools).
        name: Name recorded on episodes.
        temperature: Sampling temperature (None: ``context.extra["temperature"]`` or the client default).
        max_observation_chars: Truncate tool outputs shown to the model (None keeps them whole).

    """

    def __init__(
        self,
        client: LLMClient,
        *,
        name: str = "act",
        temperature: float | None = None,
        max_observation_chars: int | None = None,
    ) -> None:
        super().__init__(
            client,
            name=name,
            thoughts=False,
            temperature=temperature,
            max_observation_chars=max_observation_chars,
        )
