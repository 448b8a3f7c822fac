"""Task families of the template proposers: refusals verified by a named rule and a required fact,
hand-offs, and coherent recombination."""

from __future__ import annotations

import random

import pytest

from apigen_envs import load_domain
from apigen_envs.datagen.phase1 import Phase1Pipeline
from apigen_envs.datagen.policy_checks import AIRLINE_RULES, RETAIL_RULES
from apigen_envs.datagen.proposers import proposal_from_task
from apigen_envs.datagen.recombine import combine
from apigen_envs.datagen.trace import execute
from apigen_envs.datagen.validate import check_execution, check_policy_stage, check_triviality, draft_task
from apigen_envs.domains.airline import templates as airline_templates
from apigen_envs.domains.retail import templates as retail_templates


@pytest.fixture(scope="module")
def retail():
    return load_domain("retail")


@pytest.fixture(scope="module")
def airline():
    return load_domain("airline")


def _first(domain, templates, intent: str):
    for seed in range(200):
        task = templates.propose(domain.snapshot, random.Random(seed), intent)
        if task is not None:
            return task
    raise AssertionError(f"no {intent} task")


def _policy(domain, rules, proposal):
    trace = execute(domain.snapshot, domain.tools, proposal.actions, proposal.user_id)
    return check_policy_stage(trace, rules, proposal)


@pytest.mark.parametrize(
    ("intent", "rule"),
    [
        ("refuse_cancel_shipped", "retail.pending_only"),
        ("refuse_return_pending", "retail.pending_only"),
        ("refuse_refund_elsewhere", "retail.own_payment_method"),
    ],
)
def test_retail_refusals_name_the_rule_that_forbids_them(retail, intent, rule) -> None:
    task = _first(retail, retail_templates, intent)
    assert task.provenance["refusal"]["rule"] == rule and task.outputs
    proposal = proposal_from_task(task, "template")
    result = _policy(retail, RETAIL_RULES, proposal)
    assert result.passed and rule in result.details["refused_by"]
    # The same refusal naming a rule that does not forbid the call fails the stage.
    wrong = dict(task.provenance["refusal"], rule="retail.cancel_reason")
    bad = proposal_from_task(task.model_copy(update={"provenance": {**task.provenance, "refusal": wrong}}), "t")
    failed = _policy(retail, RETAIL_RULES, bad)
    assert not failed.passed and "does not forbid" in failed.reasons[-1]
    # Triviality: with the required fact the do-nothing agent fails; without it, it passes, so rejected.
    assert check_triviality(draft_task(proposal, "retail"), retail.snapshot, retail.tools).passed
    silent = proposal_from_task(task.model_copy(update={"outputs": ()}), "template")
    rejected = check_triviality(draft_task(silent, "retail"), retail.snapshot, retail.tools)
    assert not rejected.passed and "refusal with no required output" in rejected.reasons[0]


@pytest.mark.parametrize(
    "intent",
    [
        "refuse_cancel",
        "refuse_basic_economy_change",
        "refuse_remove_bag",
        "refuse_add_passenger",
        "refuse_compensation",
    ],
)
def test_airline_refusals_are_forbidden_by_their_rule(airline, intent) -> None:
    task = _first(airline, airline_templates, intent)
    proposal = proposal_from_task(task, "template")
    result = _policy(airline, AIRLINE_RULES, proposal)
    assert result.passed, result.reasons
    assert task.provenance["refusal"]["rule"] in result.details["refused_by"]
    assert not any(airline.tools[a.name].mutates for a in task.actions)


def test_a_refusal_that_writes_is_rejected(retail) -> None:
    task = _first(retail, retail_templates, "refuse_cancel_shipped")
    writing = _first(retail, retail_templates, "modify_user_address")
    mixed = task.model_copy(update={"actions": (*task.actions, writing.actions[-1])})
    mixed = mixed.model_copy(update={"user_id": writing.user_id})
    result = _policy(retail, RETAIL_RULES, proposal_from_task(mixed, "template"))
    assert not result.passed and any("write(s)" in r for r in result.reasons)


def test_handoff_blueprints_cannot_require_outputs(retail) -> None:
    task = _first(retail, retail_templates, "write_then_transfer")
    assert task.actions[-1].name == "transfer_to_human_agents" and not task.outputs
    ok, _ = check_execution(proposal_from_task(task, "template"), retail.snapshot, retail.tools)
    assert ok.passed
    asking = task.model_copy(update={"outputs": ("Transfer successful",)})
    bad, _ = check_execution(proposal_from_task(asking, "template"), retail.snapshot, retail.tools)
    assert not bad.passed and "ends the conversation" in bad.reasons[-1]


def test_recombination_reads_like_one_customer(retail) -> None:
    tasks = retail.task_list()
    by_user: dict[str, list] = {}
    for task in tasks:
        if task.provenance["proposer"] == "template":
            by_user.setdefault(str(task.user_id), []).append(task)
    handoff = next(t for t in tasks if t.actions and t.actions[-1].name == "transfer_to_human_agents")
    other = (
        next(
            t
            for t in tasks
            if t.user_id == handoff.user_id and t.id != handoff.id and t.provenance["proposer"] == "template"
        )
        if len(by_user.get(str(handoff.user_id), [])) > 1
        else None
    )
    pair = [handoff, other] if other is not None else next(ts[:2] for ts in by_user.values() if len(ts) > 1)
    proposal = combine(pair, retail.tools, random.Random(0))
    text = proposal.instruction
    assert proposal.extra["instruction_writer"] == "template_merge"
    for header in ("Persona:", "Reason for call:", "Known info:"):
        assert text.count(header) == 1, text
    assert pair[0].scenario.persona in text and (pair[1].scenario.persona or "") not in text.replace(
        pair[0].scenario.persona or "", ""
    )
    handoffs = [i for i, a in enumerate(proposal.actions) if a.name == "transfer_to_human_agents"]
    assert handoffs in ([], [len(proposal.actions) - 1])
    swapped = combine(list(reversed(pair)), retail.tools, random.Random(0))
    if handoffs:
        assert swapped.actions[-1].name == "transfer_to_human_agents"


def test_pipeline_records_family_and_refusal(retail) -> None:
    from apigen_envs.datagen.phase1 import Phase1Config
    from apigen_envs.datagen.proposers import TemplateProposer

    proposer = TemplateProposer(retail_templates, retail.snapshot)
    assert proposer.intents == retail_templates.CYCLE
    result = Phase1Pipeline(retail, proposer).run(Phase1Config(n=30, seed=3))
    families = {t.provenance.get("family") for t in result.tasks}
    assert "refusal" in families
    refusal = next(t for t in result.tasks if t.provenance.get("family") == "refusal")
    assert refusal.provenance["refusal"]["rule"].startswith("retail.")


def test_datagen_slot_supplies_rules_templates_and_retries(retail) -> None:
    import dataclasses

    from apigen_envs.datagen.policy_checks import PolicyRule, rules_for
    from apigen_envs.datagen.set_stats import measure, table
    from apigen_envs.domain import DatagenSpec

    assert retail.datagen is not None and retail.datagen.retries == 3
    assert retail.datagen.template_module() is retail_templates
    assert rules_for(retail) == RETAIL_RULES == rules_for("retail")
    assert load_domain("airline").datagen.retries == 5
    # A third-party domain brings its own rules as objects; one without predicates is reported as such.
    never = PolicyRule("x.never", "Nothing may be cancelled.", lambda trace: [])
    custom = dataclasses.replace(retail, datagen=DatagenSpec(templates=retail_templates, policy_rules=[never]))
    assert rules_for(custom) == (never,)
    bare = dataclasses.replace(retail, datagen=None)
    assert rules_for(bare) == ()
    stats = measure(bare, retail.task_list()[:5], score=False)
    assert stats.policy_rules is None and "none (unchecked)" in table([stats])
    assert measure(custom, retail.task_list()[:5], score=False).policy_rules == 1


def test_context_knowledge_comes_from_the_domain_slot() -> None:
    """Tool-graph hints and grounding are the domain's (its ``DatagenSpec``); datagen names no domain module."""
    import ast
    import dataclasses
    import random
    from pathlib import Path

    from apigen_envs import load_domain
    from apigen_envs.datagen.context import ContextSampler, GraphHints
    from apigen_envs.domain import DatagenSpec
    from apigen_envs.domains.retail import datagen_context

    retail = load_domain("retail")
    sampler = ContextSampler(retail)
    assert sampler.hints is datagen_context.HINTS
    context = sampler.sample(random.Random(3))
    assert context.tools[0] in datagen_context.HINTS.identify
    # A third-party spec with its own hints and grounder is used as given.
    seen: list[tuple[str, ...]] = []

    def grounder(snapshot, tools, user, writes, rng, limit):  # type: ignore[no-untyped-def]
        seen.append(tuple(writes))
        return {}, {"marker": ["from the custom grounder"]}

    hints = GraphHints(identify=("find_user_id_by_email",), profile="get_user_details")
    spec = DatagenSpec(graph_hints=hints, grounder=grounder)
    custom = ContextSampler(dataclasses.replace(retail, datagen=spec))
    assert custom.hints is hints
    assert custom.sample(random.Random(3)).candidates == {"marker": ["from the custom grounder"]} and seen
    # Without a slot: no identification start, no grounder (records the user's fields point to).
    bare = ContextSampler(dataclasses.replace(retail, datagen=None))
    assert bare.hints == GraphHints() and bare._grounder is None
    package = Path(__file__).resolve().parents[1] / "apigen_envs" / "datagen"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("apigen_envs.domains"), f"{path.name} imports {node.module}"
