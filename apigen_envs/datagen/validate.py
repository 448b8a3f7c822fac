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
from apigen_envs.datagen.trace import ExecutionTrace, TraceStep, execute
from apigen_envs.db import Snapshot
from apigen_envs.errors import ToolCallError
from apigen_envs.messages import AssistantMessage
from apigen_envs.semantics import Semantics
from apigen_envs.task import Action, Task, UserScenario
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
        terminal = [s for s in trace.steps if s.name in tools and tools[s.name].terminal]
        if proposal.outputs and terminal:
            # A hand-off ends the conversation, and a replayed gold run states the outputs after its last
            # call, so they would never be said.
            reasons.append(
                f"outputs are required, but {terminal[0].name} ends the conversation: a blueprint that hands "
                "over to a person cannot also require the agent to state facts"
            )
    return StageResult("execution", not reasons, tuple(reasons), {"changed_rows": len(diff)}), trace


def check_policy_stage(
    trace: ExecutionTrace, rules: Sequence[PolicyRule], proposal: Proposal | None = None
) -> StageResult:
    """Run the domain's policy predicates over the trace (and, for a refusal, over what was refused).

    A refusal blueprint (``proposal.extra["refusal"]``: the rule's name and the calls the customer pushes
    for) must make no write itself, and the named rule must forbid the refused calls: they are judged as if
    the agent had made them after the gold actions (never executed, so a tool that refuses them itself does
    not hide a rule that does not). A domain without predicates cannot check refusals and rejects them.

    Args:
        trace: The executed blueprint.
        rules: The domain's rules.
        proposal: The proposal (for its refusal, if any).

    Returns:
        The stage result; each reason names the violated rule.

    """
    violations = check_policy(trace, rules)
    reasons = [str(v) for v in violations]
    details: dict[str, Any] = {
        "rules_checked": [r.name for r in rules],
        "violated": sorted({v.rule for v in violations}),
    }
    refusal = refusal_of(proposal) if proposal is not None else None
    if refusal is not None:
        rule, forbidden = refusal
        details["refusal_rule"] = rule
        if trace.writes():
            reasons.append(
                f"[refusal] the gold actions of a refusal make {len(trace.writes())} write(s); expected none"
            )
        fired = refused_rules(trace, forbidden, rules)
        details["refused_by"] = sorted(fired)
        if rule not in fired:
            known = [r.name for r in rules]
            if rule not in known:
                reasons.append(f"[refusal] unknown rule {rule!r}; this domain's rules: {known or 'none'}")
            else:
                reasons.append(
                    f"[refusal] rule {rule!r} does not forbid the refused call(s); "
                    f"they break {sorted(fired) or 'no rule'}"
                )
    return StageResult("policy", not reasons, tuple(reasons), details)


def refusal_of(proposal: Proposal) -> tuple[str, tuple[Action, ...]] | None:
    """The (rule, refused calls) of a refusal proposal, or None for any other proposal.

    Raises:
        ValueError: When the refusal spec is malformed (no rule or no refused call).

    """
    raw = proposal.extra.get("refusal")
    if raw is None:
        prov = proposal.extra.get("template_provenance")
        raw = prov.get("refusal") if isinstance(prov, dict) else None
    if raw is None:
        return None
    rule = raw.get("rule") if isinstance(raw, dict) else None
    calls = raw.get("forbidden") if isinstance(raw, dict) else None
    if not isinstance(rule, str) or not isinstance(calls, list | tuple) or not calls:
        raise ValueError(f"a refusal needs a rule name and the refused calls, got {raw!r}")
    return rule, tuple(a if isinstance(a, Action) else Action.model_validate(a) for a in calls)


def refused_rules(trace: ExecutionTrace, forbidden: Sequence[Action], rules: Sequence[PolicyRule]) -> set[str]:
    """Names of the rules (and of their violations) that forbid ``forbidden`` after the trace's gold actions.

    The refused calls are appended to the trace as successful writes on the final state without running
    them, so the predicates judge the request itself.

    Args:
        trace: The executed gold actions.
        forbidden: The calls the customer pushes for.
        rules: The domain's rules.

    Returns:
        Rule names and violation names.

    """
    steps = list(trace.steps)
    for action in forbidden:
        steps.append(TraceStep(len(steps), action, True, "", True, trace.final, trace.final))
    extended = ExecutionTrace(tuple(steps), trace.final, trace.user_id)
    start = len(trace.steps)
    fired: set[str] = set()
    for rule in rules:
        for violation in rule.check(extended):
            if violation.step is None or violation.step >= start:
                fired.update((rule.name, violation.rule))
    return fired


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
    provenance: dict[str, Any] = {}
    refusal = refusal_of(proposal)
    if refusal is not None:
        provenance["refusal"] = {"rule": refusal[0], "forbidden": [a.model_dump() for a in refusal[1]]}
    return Task(
        id=task_id,
        domain=domain,
        user_id=proposal.user_id,
        scenario=scenario,
        actions=proposal.actions,
        outputs=proposal.outputs,
        provenance=provenance,
    )


def check_triviality(task: Task, snapshot: Snapshot, tools: ToolSet, semantics: Semantics | None = None) -> StageResult:
    """The do-nothing agent (no tool calls, one apologetic reply) must fail the task, scored for real.

    A refusal's right outcome is no write, so what separates it from doing nothing is what the agent must
    say: a refusal passes this stage when it requires an output fact the do-nothing reply lacks (a refusal
    whose only check is "nothing changed" is exactly what the do-nothing agent achieves, and is rejected
    with a reason saying so).

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
    refusal = "refusal" in task.provenance
    if info.reward > 0:
        reason = (
            "a refusal with no required output: the do-nothing agent passes it; require the fact the agent "
            "must state (or a write the customer settles for)"
            if refusal
            else "the do-nothing agent passes: no DB change and no output to give"
        )
        return StageResult("triviality", False, (reason,))
    return StageResult("triviality", True, details={"refusal": True} if refusal else {})


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
