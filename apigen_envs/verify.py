"""Episode scoring: final DB changes against the gold changes, and required outputs.

Gold changes are computed once per task by replaying the task's gold actions on a fresh view, the way
the profile runs calls (see :mod:`apigen_envs.semantics`), then cached. Scoring reads the episode's view
and messages and never writes anything. Rows compare by canonical JSON, so ``50`` and ``50.0`` differ as
they do in both peers' state hashes; an episode neither side ended (``max_turns``) scores 0, as in both
peers; required outputs are matched where the profile's peer matches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from pydantic import BaseModel, ConfigDict

from apigen_envs.db import DBView, Snapshot, diff_rows, fingerprint_texts
from apigen_envs.messages import AssistantMessage
from apigen_envs.semantics import OutputMatching, Semantics
from apigen_envs.task import Task
from apigen_envs.tools import ToolSet, execute

SCORED_TERMINATIONS: frozenset[str] = frozenset({"user_stop", "transfer", "out_of_scope", "terminal_tool"})
"""Endings that are scored on the final state. ``max_turns`` and ``invalid_action`` score 0 (the episode
counts, as a failure); infrastructure endings are not scored at all."""


class RewardInfo(BaseModel):
    """The reward and its breakdown.

    Attributes:
        reward: 1.0 when every check in the task's reward basis passed, else 0.0.
        db_match: Whether the episode's DB changes equal the gold changes (None when not scored on DB).
        outputs: Required output -> whether it appeared in the agent's messages.
        changed_rows: How many rows the episode changed.
        gold_rows: How many rows the gold actions change.
        matched_rows: Rows whose final value equals the gold value (for shaped rewards).
        fingerprint: Hash of the episode's final changes.
        gold_fingerprint: Hash of the gold changes.
        note: Why the reward is 0 regardless of the state (e.g. the episode hit ``max_turns``).

    """

    model_config = ConfigDict(frozen=True)

    reward: float
    db_match: bool | None = None
    outputs: dict[str, bool] = {}
    changed_rows: int = 0
    gold_rows: int = 0
    matched_rows: int = 0
    fingerprint: str = ""
    gold_fingerprint: str = ""
    note: str | None = None

    @property
    def shaped(self) -> float:
        """A dense score in [0, 1]: mean of the fraction of gold rows matched (penalising extra rows) and
        the fraction of outputs found. Documented as a shaping signal, not the task's success criterion.
        """
        parts: list[float] = []
        if self.db_match is not None:
            denom = max(self.gold_rows, self.changed_rows)
            parts.append(1.0 if denom == 0 else self.matched_rows / denom)
        if self.outputs:
            parts.append(sum(self.outputs.values()) / len(self.outputs))
        return sum(parts) / len(parts) if parts else self.reward


@dataclass(frozen=True, slots=True)
class GoldOutcome:
    """What replaying a task's gold actions produced.

    Attributes:
        changes: {table: {key: record or None}} after the gold actions.
        fingerprint: Hash of ``changes``.
        texts: ``changes`` as canonical JSON texts (what scoring compares).
        results: Per action, ``(ok, text)``: the tool's output or its error message.
        diff: ``changes`` as rows with before/after values (see :func:`apigen_envs.db.diff_rows`).

    """

    changes: Mapping[str, Mapping[str, Any]]
    fingerprint: str
    results: tuple[tuple[bool, str], ...]
    diff: tuple[dict[str, Any], ...] = ()
    texts: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    @property
    def errors(self) -> list[tuple[int, str]]:
        """(index, message) of gold actions that raised a tool error."""
        return [(i, text) for i, (ok, text) in enumerate(self.results) if not ok]


def replay(tools: ToolSet, view: DBView, actions: Iterable[Any], *, atomic: bool = True) -> list[tuple[bool, str]]:
    """Run actions (objects with ``name`` and ``arguments``) on a view, collecting each outcome.

    Args:
        tools: The domain's tools.
        view: The view to run on (it is written to).
        actions: The actions to run in order.
        atomic: Undo the writes of a failing call (the profile's rule; peers keep partial writes).

    Returns:
        Per action, (ok, output text or error message). Failing calls do not stop the replay.

    """
    results: list[tuple[bool, str]] = []
    for action in actions:
        outcome = execute(tools, view, action.name, action.arguments, atomic=atomic)
        results.append((not outcome.error, outcome.content))
    return results


def outputs_found(
    outputs: Iterable[str], messages: Iterable[Any], matching: OutputMatching = "any_text"
) -> dict[str, bool]:
    """Check which required outputs appear in the agent's text, with the peers' rule.

    Matching is case-insensitive and ignores commas in the agent's text (both peers). Under
    ``"replies"`` (tau-bench) only the agent's plain replies count, turns without tool calls, since
    tau-bench's agent turns text beside a tool call into the call alone; under ``"any_text"`` (tau2) any
    assistant text counts, including text sent beside a tool call.

    Args:
        outputs: Required output strings.
        messages: The conversation; only assistant text is read.
        matching: Which assistant turns count.

    Returns:
        Output -> found.

    """
    texts = [
        m.content.lower().replace(",", "")
        for m in messages
        if isinstance(m, AssistantMessage)
        and m.content is not None
        and (m.content.strip() if matching == "any_text" else not m.tool_calls)
    ]
    return {out: any(out.lower() in t for t in texts) for out in outputs}


class Verifier:
    """Scores episodes of one domain under one semantics profile; holds the per-task gold cache.

    Args:
        snapshot: The domain's base DB.
        tools: The domain's tools.
        semantics: The profile (atomic replay, output matching).

    """

    def __init__(self, snapshot: Snapshot, tools: ToolSet, semantics: Semantics) -> None:
        self._snapshot = snapshot
        self._tools = tools
        self._semantics = semantics
        self._gold: dict[str, GoldOutcome] = {}
        self._lock = Lock()

    def gold(self, task: Task) -> GoldOutcome:
        """The gold outcome of a task, computed on first use and cached."""
        cached = self._gold.get(task.id)
        if cached is not None:
            return cached
        view = self._snapshot.view()
        results = replay(self._tools, view, task.actions, atomic=self._semantics.atomic_calls)
        changes, texts = view.changes(), view.change_texts()
        outcome = GoldOutcome(
            changes, fingerprint_texts(texts), tuple(results), tuple(diff_rows(self._snapshot, changes)), texts
        )
        with self._lock:
            self._gold.setdefault(task.id, outcome)
        return self._gold[task.id]

    def score(self, task: Task, view: DBView, messages: Iterable[Any], termination: str | None = None) -> RewardInfo:
        """Score an episode. Reads only; never writes.

        Args:
            task: The task.
            view: The episode's DB view.
            messages: The episode's conversation.
            termination: How the episode ended; endings outside :data:`SCORED_TERMINATIONS` get reward 0
                with the breakdown still filled in (None scores the state as if the episode ended now).

        Returns:
            The reward with its breakdown.

        """
        gold = self.gold(task)
        passed = True
        db_match: bool | None = None
        texts = view.change_texts()
        changed = sum(len(rows) for rows in texts.values())
        gold_rows = sum(len(rows) for rows in gold.texts.values())
        matched = sum(
            1
            for name, rows in texts.items()
            for key, text in rows.items()
            if key in gold.texts.get(name, {}) and gold.texts[name][key] == text
        )
        same_state = texts == gold.texts
        if "db" in task.reward_basis:
            db_match = same_state
            passed = db_match
        found: dict[str, bool] = {}
        if "outputs" in task.reward_basis and task.outputs:
            found = outputs_found(task.outputs, messages, self._semantics.output_matching)
            passed = passed and all(found.values())
        note = None
        if termination is not None and termination not in SCORED_TERMINATIONS:
            passed, note = False, f"not scored: the episode ended by {termination}"
        return RewardInfo(
            reward=1.0 if passed else 0.0,
            db_match=db_match,
            outputs=found,
            changed_rows=changed,
            gold_rows=gold_rows,
            matched_rows=matched,
            # Equal change texts hash alike: the gold hash is already known.
            fingerprint=gold.fingerprint if same_state else fingerprint_texts(texts),
            gold_fingerprint=gold.fingerprint,
            note=note,
        )
