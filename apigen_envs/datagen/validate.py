"""Rule-based validation stages of a proposal: format, execution, policy, triviality, de-duplication.

Each stage returns a :class:`StageResult` with its own pass/fail reasons, so statistics and the feedback
sent back to the proposer say exactly which check failed and why.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apigen_envs.datagen.policy_checks import PolicyRule, check_policy
from apigen_envs.datagen.proposers import Proposal
from apigen_envs.datagen.trace import ExecutionTrace, execute
from apigen_envs.db import Snapshot
from apigen_envs.errors import ToolCallError
from apigen_envs.messages import AssistantMessage
from apigen_envs.semantics import Semantics
from apigen_envs.task import Task, UserScenario
from apigen_envs.tools import ToolSet
from apigen_envs.verify import Verifier

STAGES: tuple[str, ...] = ("format", "execution", "policy", "triviality", "dedup", "committee")
"""Validation stages in the order they run."""

_NOOP_REPLY = "I'm sorry, I can't help with that."
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class StageResult:
    """The outcome of one stage.

    Attributes:
        stage: Stage name (see :data:`STAGES`).
        passed: Whether the proposal passed.
        reasons: Why it failed (empty when it passed).
        details: Extra data kept in provenance (diff size, votes...).

    """

    stage: str
    passed: bool
    reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def check_format(proposal: Proposal, tools: ToolSet) -> StageResult:
    """Schema, known tools and argument validation (via each tool's ``validate``).

    Args:
        proposal: The proposal.
        tools: The domain's tools.

    Returns:
        The stage result; each bad action gets its own reason.

    """
    reasons = []
    if not proposal.instruction.strip():
        reasons.append("the instruction is empty")
    if not proposal.actions and not proposal.outputs:
        reasons.append("no actions and no outputs: nothing to check")
    for i, action in enumerate(proposal.actions):
        if action.name not in tools:
            try:
                tools[action.name]
            except ToolCallError as exc:
                reasons.append(f"action {i}: {exc}")
            continue
        try:
            tools[action.name].validate(action.arguments)
        except ToolCallError as exc:
            reasons.append(f"action {i}: {exc}")
    for out in proposal.outputs:
        if not isinstance(out, str) or not out.strip():
            reasons.append(f"output {out!r} is empty")
    return StageResult("format", not reasons, tuple(reasons))


def _flatten_text(value: Any) -> str:
    return value.lower().replace(",", "") if isinstance(value, str) else ""


def output_derivable(output: str, trace: ExecutionTrace) -> bool:
    """Whether a required output can be read off the tool results (text or equal number).

    Args:
        output: The required output.
        trace: The executed actions.

    Returns:
        True when some successful step's output contains it.

    """
    needle = output.lower().replace(",", "").strip()
    texts = [_flatten_text(s.output) for s in trace.steps if s.ok]
    if any(needle in t for t in texts):
        return True
    try:
        target = float(needle)
    except ValueError:
        return False
    return any(abs(float(n) - target) < 0.005 for t in texts for n in _NUMBER.findall(t))


def check_execution(
    proposal: Proposal, snapshot: Snapshot, tools: ToolSet, semantics: Semantics | None = None
) -> tuple[StageResult, ExecutionTrace]:
    """Replay the actions on a fresh view: no errors, a DB change or requested outputs, derivable outputs.

    Tools refuse only what the peer's tools refuse, so passing this stage says the calls can be made, not
    that the policy allows them: that is the policy stage's job.

    Args:
        proposal: The proposal (already format-checked).
        snapshot: The base DB.
        tools: The domain's tools.
        semantics: The domain's profile (calls replay as its gold replay runs them; default ``apigen``).

    Returns:
        The stage result (with the diff in ``details``) and the trace for the policy stage.

    """
    sem = semantics or Semantics.named("apigen")
    trace = execute(snapshot, tools, proposal.actions, proposal.user_id, atomic=sem.atomic_calls)
    # The observation's "Error: " prefix says nothing the reason does not; the message is what matters.
    reasons = [f"action {s.index} ({s.name}) failed: {s.output.removeprefix('Error: ')}" for s in trace.errors]
    diff = trace.final.diff()
    if not reasons:
        if not diff and not proposal.outputs:
            reasons.append("the actions change nothing in the DB and no outputs are requested")
        for out in proposal.outputs:
            if not output_derivable(out, trace):
                reasons.append(f"output {out!r} does not appear in any tool result")
    return StageResult("execution", not reasons, tuple(reasons), {"changed_rows": len(diff)}), trace


def check_policy_stage(trace: ExecutionTrace, rules: Sequence[PolicyRule]) -> StageResult:
    """Run the domain's policy predicates over the trace.

    Args:
        trace: The executed blueprint.
        rules: The domain's rules.

    Returns:
        The stage result; each reason names the violated rule.

    """
    violations = check_policy(trace, rules)
    return StageResult(
        "policy",
        not violations,
        tuple(str(v) for v in violations),
        {"rules_checked": [r.name for r in rules], "violated": sorted({v.rule for v in violations})},
    )


def draft_task(proposal: Proposal, domain: str, task_id: str = "candidate") -> Task:
    """The proposal as a Task (scenario from the template when it has one).

    Args:
        proposal: The proposal.
        domain: The domain name.
        task_id: The id to give it.

    Returns:
        The task.

    """
    raw_scenario = proposal.extra.get("scenario")
    if isinstance(raw_scenario, dict):
        scenario = UserScenario.model_validate({**raw_scenario, "instruction": proposal.instruction})
    else:
        scenario = UserScenario(instruction=proposal.instruction, persona=proposal.persona)
    return Task(
        id=task_id,
        domain=domain,
        user_id=proposal.user_id,
        scenario=scenario,
        actions=proposal.actions,
        outputs=proposal.outputs,
    )


def check_triviality(task: Task, snapshot: Snapshot, tools: ToolSet, semantics: Semantics | None = None) -> StageResult:
    """The do-nothing agent (no tool calls, one apologetic reply) must fail the task, scored for real.

    Args:
        task: The candidate task.
        snapshot: The base DB.
        tools: The domain's tools.
        semantics: The domain's profile (gold replay and output matching; default ``apigen``).

    Returns:
        The stage result.

    """
    verifier = Verifier(snapshot, tools, semantics or Semantics.named("apigen"))
    # Scored as an episode the user ended, the way a do-nothing agent's episode ends.
    info = verifier.score(task, snapshot.view(), [AssistantMessage(content=_NOOP_REPLY)], "user_stop")
    if info.reward > 0:
        return StageResult("triviality", False, ("the do-nothing agent passes: no DB change and no output to give",))
    return StageResult("triviality", True)


def action_key(actions: Iterable[Any], tools: ToolSet | None = None) -> str:
    """A normalised, order-independent key of the actions (thinking and hand-offs left out).

    Args:
        actions: The actions.
        tools: When given, arguments are coerced through the tool's validation first (``50`` == ``50.0``).

    Returns:
        A canonical JSON string.

    """
    items = []
    for action in actions:
        if action.name in ("think", "transfer_to_human_agents"):
            continue
        args = dict(action.arguments)
        if tools is not None and action.name in tools:
            with contextlib.suppress(ToolCallError):
                args = tools[action.name].validate(args)
        items.append(json.dumps([action.name, _plain(args)], sort_keys=True, default=str))
    return json.dumps(sorted(items))


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_ENTITY = re.compile(r"[#\w.@-]*\d[#\w.@-]*")


def normalise_instruction(text: str) -> str:
    """Lower-case, single-spaced instruction text."""
    return " ".join(text.lower().split())


class Deduplicator:
    """Rejects a blueprint with the same normalised action set as an accepted one, or a near-identical
    instruction about the same entities (ids, amounts, emails).

    Args:
        tools: Used to normalise arguments.
        similarity: Instruction similarity (0..1) above which two instructions about the same entities
            count as duplicates.

    """

    def __init__(self, tools: ToolSet | None = None, similarity: float = 0.9) -> None:
        self.tools = tools
        self.similarity = similarity
        self._actions: dict[str, str] = {}
        self._by_entities: dict[frozenset[str], list[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._actions)

    def check(self, task: Task) -> StageResult:
        """Compare a candidate with the accepted blueprints (does not add it).

        Args:
            task: The candidate.

        Returns:
            The stage result.

        """
        key = action_key(task.actions, self.tools)
        if task.actions and key in self._actions:
            return StageResult("dedup", False, (f"same actions as accepted blueprint {self._actions[key]}",))
        text = normalise_instruction(task.instruction)
        entities = frozenset(_ENTITY.findall(text))
        for other_text, other_id in self._by_entities.get(entities, ()):
            ratio = difflib.SequenceMatcher(None, text, other_text).ratio()
            if ratio >= self.similarity:
                return StageResult(
                    "dedup", False, (f"instruction {ratio:.0%} identical to accepted blueprint {other_id}",)
                )
        return StageResult("dedup", True)

    def add(self, task: Task) -> None:
        """Record an accepted blueprint."""
        if task.actions:
            self._actions.setdefault(action_key(task.actions, self.tools), task.id)
        text = normalise_instruction(task.instruction)
        self._by_entities.setdefault(frozenset(_ENTITY.findall(text)), []).append((text, task.id))
