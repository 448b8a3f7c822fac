"""The Episode record: one finished conversation, as the collector writes it (one JSON line each).

Everything downstream (pass^k, reports, dataset export, RL trainers) reads Episodes. The format is a
public name: fields are only added, and ``schema_version`` is bumped on any incompatible change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_envs.messages import Message, Usage
from apigen_envs.verify import RewardInfo

Termination = Literal[
    "user_stop",
    "transfer",
    "out_of_scope",
    "terminal_tool",
    "max_turns",
    "env_error",
    "agent_error",
    "user_error",
    "infra_error",
    "invalid_action",
]
"""Why an episode ended. ``env_error``, ``agent_error``, ``user_error`` and ``infra_error`` are failures of the
setup, not of the agent; ``invalid_action`` (the policy produced no usable turn) counts against the agent."""

INFRA_TERMINATIONS: frozenset[str] = frozenset({"env_error", "agent_error", "user_error", "infra_error"})
"""Terminations that say nothing about the agent's skill; metrics leave these episodes out."""

EPISODE_SCHEMA_VERSION = 1


class Episode(BaseModel):
    """One finished episode.

    Attributes:
        schema_version: Format version of this record.
        episode_id: ``domain/task_id/trial`` (unique within a run).
        domain: Domain name.
        task_id: Task id.
        split: Task split.
        trial: Trial index (0-based) for pass^k.
        seed: Episode seed (reaches the agent and the user simulator).
        agent: Agent name.
        agent_config: Model, temperature and other agent settings.
        user: User simulator name.
        user_config: User simulator settings.
        system_prompt: The agent's system prompt.
        tools: OpenAI schemas of the tools offered.
        messages: The conversation (no system message; see ``system_prompt``).
        reward: The verifier's reward (0.0 when the episode failed for infrastructure reasons).
        reward_info: The reward breakdown (None when the episode could not be scored).
        termination: Why it ended.
        error: The error text for infrastructure failures.
        num_turns: Agent steps taken.
        agent_usage: Tokens the agent spent.
        user_usage: Tokens the user simulator spent.
        duration_s: Wall time.
        started_at: ISO timestamp.
        diff: Changed rows (table, key, before, after) at the end of the episode.
        gold_diff: The rows the task's gold actions change, in the same form.
        user_trace: Per user turn that carried one, the simulator's record of how it chose the turn.
        semantics: The semantics profile the episode followed (``apigen``, ``tau2``, ``tau-bench``, plus any
            changed options, e.g. ``tau2+seat_accounting``); None in records written before 0.2.
        versions: Package and data versions.

    """

    model_config = ConfigDict(extra="allow")

    schema_version: int = EPISODE_SCHEMA_VERSION
    episode_id: str
    domain: str
    task_id: str
    split: str | None = None
    trial: int = 0
    seed: int | None = None
    agent: str = "unknown"
    agent_config: dict[str, Any] = Field(default_factory=dict)
    user: str = "unknown"
    user_config: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    reward: float = 0.0
    reward_info: RewardInfo | None = None
    termination: Termination
    error: str | None = None
    num_turns: int = 0
    agent_usage: Usage = Field(default_factory=Usage)
    user_usage: Usage = Field(default_factory=Usage)
    duration_s: float = 0.0
    started_at: str | None = None
    diff: list[dict[str, Any]] = Field(default_factory=list)
    gold_diff: list[dict[str, Any]] = Field(default_factory=list)
    user_trace: list[dict[str, Any]] = Field(default_factory=list)
    semantics: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)

    @property
    def is_infra_failure(self) -> bool:
        """True when the episode failed for reasons outside the agent (left out of metrics)."""
        return self.termination in INFRA_TERMINATIONS

    @property
    def passed(self) -> bool:
        """True when the verifier gave full reward."""
        return self.reward >= 1.0
