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
setup, not of the agent: ``agent_error`` means the policy's model server failed (an
:class:`~apigen_envs.errors.InfrastructureError`), never that the policy misbehaved. ``invalid_action`` (the
policy produced a turn that cannot be executed, or its code raised) counts against the agent with reward 0."""

INFRA_TERMINATIONS: frozenset[str] = frozenset({"env_error", "agent_error", "user_error", "infra_error"})
"""Terminations that say nothing about the agent's skill; metrics leave these episodes out."""

UNSCORED_TERMINATIONS: frozenset[str] = INFRA_TERMINATIONS | {"invalid_action"}
"""Terminations the verifier does not score: infrastructure failures (left out) and invalid actions (reward 0)."""

EPISODE_SCHEMA_VERSION = 1


class RunSettings(BaseModel):
    """What a collection run was set up with: everything that changes its episodes (the resume key).

    Two runs with equal settings produce the same episode for the same task and trial, so a resumed run
    may skip what the file already holds; a run with other settings must not be merged into that file.

    Attributes:
        agent: Agent name.
        model: The agent's model, when it has one.
        temperature: The agent's sampling temperature, when recorded.
        agent_options: Agent switches that change its episodes (``constrain``, ``id_reminder``,
            ``ground_check``), when set.
        user: User simulator name.
        user_model: The user simulator's model, when it has one.
        user_temperature: The user simulator's temperature, when recorded.
        base_seed: The run seed episode seeds derive from.
        max_turns: Agent steps per episode.
        semantics: The domain's semantics profile (None where the domain names none).
        data: Fingerprint of the domain's data source and task set.

    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    model: str | None = None
    temperature: float | None = None
    agent_options: dict[str, bool] = Field(default_factory=dict)
    user: str
    user_model: str | None = None
    user_temperature: float | None = None
    base_seed: int
    max_turns: int
    semantics: str | None = None
    data: str


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
        privileged: The agent was shown the task's gold (the oracle, or an env server that revealed the task).
        attempts: Runs of this job it took (above 1 when infrastructure failures were retried).
        run_settings: The collection run's settings (the resume key); None outside the collector.

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
    privileged: bool = False
    attempts: int = 1
    run_settings: RunSettings | None = None

    @property
    def is_infra_failure(self) -> bool:
        """True when the episode failed for reasons outside the agent (left out of metrics)."""
        return self.termination in INFRA_TERMINATIONS

    @property
    def passed(self) -> bool:
        """True when the verifier gave full reward."""
        return self.reward >= 1.0
