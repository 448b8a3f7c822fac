"""Task blueprints: what the simulated user wants and the ground truth that scores an episode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

RewardBasis = Literal["db", "outputs"]
"""What an episode is scored on: the final DB changes, the required outputs, or both."""


class Action(BaseModel):
    """One ground-truth tool call of a blueprint (``kwargs`` is accepted as tau-bench v1 spells it)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("arguments", "kwargs"))


class UserScenario(BaseModel):
    """What the simulated user knows and wants.

    ``instruction`` is the full instruction for the user simulator; the other fields are the structured
    parts tau2 keeps apart (reason for calling, what the user knows and does not know, behaviour notes).
    """

    model_config = ConfigDict(frozen=True)

    instruction: str
    persona: str | None = None
    reason_for_call: str | None = None
    known_info: str | None = None
    unknown_info: str | None = None
    task_instructions: str | None = None


class Task(BaseModel):
    """A task blueprint: user intent, gold actions, required outputs and provenance.

    An episode passes when the DB changes it made equal the changes the gold actions make (when ``"db"``
    is in ``reward_basis``) and every required output appears in the agent's messages (when ``"outputs"``
    is in it).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    domain: str
    split: str = "test"
    user_id: str | None = None
    scenario: UserScenario
    actions: tuple[Action, ...] = ()
    outputs: tuple[str, ...] = ()
    reward_basis: tuple[RewardBasis, ...] = ("db", "outputs")
    nl_assertions: tuple[str, ...] = ()
    description: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def instruction(self) -> str:
        """The user simulator's instruction."""
        return self.scenario.instruction
