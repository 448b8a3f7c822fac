"""Phase-1 validation stages, policy predicates and the tool graph."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from apigen_envs.datagen.context import ContextSampler, GraphHints, ToolGraph, policy_clauses
from apigen_envs.datagen.policy_checks import AIRLINE_RULES, MOCK_RULES, RETAIL_RULES, check_policy, rules_for
from apigen_envs.datagen.proposers import Proposal, ProposalError, parse_payload
from apigen_envs.datagen.trace import execute
from apigen_envs.datagen.validate import (
    Deduplicator,
    check_execution,
    check_format,
    check_policy_stage,
    check_triviality,
    draft_task,
    output_derivable,
)
from apigen_envs.domains.mock.datagen_context import HINTS as MOCK_HINTS
from apigen_envs.registry import load_domain
from apigen_envs.task import Action


def act(name: str, **arguments: object) -> Action:
    return Action(name=name, arguments=arguments)


IDENTIFY_ANA = act("find_customer_by_email", email="ana@example.com")


@pytest.fixture(scope="module")
def mock():
    return load_domain("mock")


def proposal(
    *actions: Action, outputs: tuple[str, ...] = (), user: str | None = "cus_ana", text: str = "Do it"
) -> Proposal:
    return Proposal(instruction=text, actions=actions, outputs=outputs, user_id=user, proposer="test")


# ---------------------------------------------------------------------------------------------- format
def test_format_accepts_valid_and_names_each_bad_action(mock) -> None:
    good = proposal(IDENTIFY_ANA, act("set_account_nickname", account_id="acc_1001", nickname="x"))
    assert check_format(good, mock.tools).passed
    bad = proposal(
        act("transfer_fund", from_account_id="a", to_account_id="b", amount=1),
        act("set_account_nickname", account_id="acc_1001"),
        act("close_account", account_id="acc_3001", reason="bored"),
    )
    result = check_format(bad, mock.tools)
    assert not result.passed
    assert len(result.reasons) == 3
    assert "unknown tool 'transfer_fund'" in result.reasons[0] and "transfer_funds" in result.reasons[0]
    assert "nickname" in result.reasons[1]
    assert "reason" in result.reasons[2]


def test_format_rejects_empty_blueprint(mock) -> None:
    result = check_format(proposal(text=" "), mock.tools)
    assert not result.passed and any("empty" in r for r in result.reasons)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json at all", "no JSON object"),
        ('{"foo": 1}', "no JSON object with an 'instruction' key"),
        ('{"instruction": "x", "actions": "none"}', "wrong schema"),
        ('{"instruction": "x", "actions": [], "extra": 1}', "wrong schema"),
        ("", "empty reply"),
    ],
)
def test_parse_payload_malformed(text: str, expected: str) -> None:
    result = parse_payload(text)
    assert isinstance(result, ProposalError)
    assert expected in result.reason


def test_parse_payload_takes_last_object_after_reasoning() -> None:
    text = 'I think {"instruction": "draft"} is weak.\n```json\n{"instruction": "final", "actions": []}\n```'
    payload = parse_payload(text)
    assert not isinstance(payload, ProposalError)
    assert payload.instruction == "final"


# ---------------------------------------------------------------------------------------------- execution
def test_execution_error_and_nothing_changed(mock) -> None:
    failing = proposal(IDENTIFY_ANA, act("close_account", account_id="acc_1001", reason="fees"))
    result, trace = check_execution(failing, mock.snapshot, mock.tools)
    assert not result.passed and "balance must be zero" in result.reasons[0]
    # The failed writer left nothing behind.
    assert trace.final.changes() == {}
    reads = proposal(IDENTIFY_ANA)
    result, _ = check_execution(reads, mock.snapshot, mock.tools)
    assert not result.passed and "change nothing" in result.reasons[0]


def test_execution_outputs_must_come_from_tool_results(mock) -> None:
    lookup = act("get_account_details", account_id="acc_1002")
    ok, trace = check_execution(proposal(lookup, outputs=("80.5",)), mock.snapshot, mock.tools)
    assert ok.passed
    assert output_derivable("80.50", trace)
    bad, _ = check_execution(proposal(lookup, outputs=("99.99",)), mock.snapshot, mock.tools)
    assert not bad.passed and "'99.99' does not appear" in bad.reasons[0]


def test_triviality_uses_the_do_nothing_agent(mock) -> None:
    change = proposal(IDENTIFY_ANA, act("set_account_nickname", account_id="acc_1001", nickname="x"))
    assert check_triviality(draft_task(change, "mock"), mock.snapshot, mock.tools).passed
    # No change and no outputs: the do-nothing agent passes, so it is trivial.
    nothing = proposal(IDENTIFY_ANA)
    result = check_triviality(draft_task(nothing, "mock"), mock.snapshot, mock.tools)
    assert not result.passed and "do-nothing" in result.reasons[0]


# ---------------------------------------------------------------------------------------------- policy
def test_mock_policy_identify_first_and_own_accounts(mock) -> None:
    unidentified = proposal(act("set_account_nickname", account_id="acc_1001", nickname="x"))
    trace = execute(mock.snapshot, mock.tools, unidentified.actions, "cus_ana")
    result = check_policy_stage(trace, MOCK_RULES)
    assert not result.passed and result.details["violated"] == ["mock.identify_first"]
    other = proposal(
        act("find_customer_by_email", email="ben@example.com"),
        act("transfer_funds", from_account_id="acc_2001", to_account_id="acc_1001", amount=5),
    )
    trace = execute(mock.snapshot, mock.tools, other.actions, "cus_ana")
    violations = check_policy(trace, MOCK_RULES)
    assert [v.rule for v in violations] == ["mock.own_accounts_only"]
    assert violations[0].step == 1


def test_mock_policy_cross_action_closed_account(mock) -> None:
    actions = (
        act("find_customer_by_email", email="chloe@example.com"),
        act("close_account", account_id="acc_3001", reason="fees"),
        act("set_account_nickname", account_id="acc_3001", nickname="old"),
    )
    trace = execute(mock.snapshot, mock.tools, actions, "cus_chloe")
    assert not trace.errors  # the tools allow it; only the policy forbids it
    violations = check_policy(trace, MOCK_RULES)
    assert [v.rule for v in violations] == ["mock.closed_is_final"]
    assert "closed by action 1" in str(violations[0])


def _retail():
    try:
        return load_domain("retail")
    except Exception as exc:  # pragma: no cover - depends on the retail helper's data
        pytest.skip(f"retail domain unavailable: {exc}")


def _airline():
    try:
        return load_domain("airline")
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"airline domain unavailable: {exc}")


def test_retail_policy_authentication_and_ownership() -> None:
    retail = _retail()
    order = next(o for o in retail.snapshot.tables["orders"].values() if o["status"] == "pending")
    cancel = act("cancel_pending_order", order_id=order["order_id"], reason="no longer needed")
    trace = execute(retail.snapshot, retail.tools, (cancel,), order["user_id"])
    assert not trace.errors
    rules = [v.rule for v in check_policy(trace, RETAIL_RULES)]
    assert rules == ["retail.authenticate_first"]
    user = retail.snapshot.tables["users"][order["user_id"]]
    identified = (act("find_user_id_by_email", email=user["email"]), cancel)
    trace = execute(retail.snapshot, retail.tools, identified, order["user_id"])
    assert check_policy(trace, RETAIL_RULES) == []
    trace = execute(retail.snapshot, retail.tools, identified, "someone_else_1")
    assert [v.rule for v in check_policy(trace, RETAIL_RULES)] == ["retail.own_data_only"]


def test_airline_policy_cancellation_rules() -> None:
    airline = _airline()
    from apigen_envs.domains.airline.tools import NOW

    now = datetime.fromisoformat(NOW)
    snapshot = airline.snapshot
    flights = snapshot.tables["flights"]

    def statuses(res):
        return [flights[s["flight_number"]]["dates"].get(s["date"], {}).get("status") for s in res["flights"]]

    def pick(predicate):
        for res in snapshot.tables["reservations"].values():
            if res.get("status") is None and predicate(res):
                return res
        pytest.skip("no matching reservation")

    def old(res):
        return now - datetime.fromisoformat(res["created_at"]) > timedelta(hours=24)

    forbidden = pick(
        lambda r: (
            r["cabin"] != "business"
            and r["insurance"] == "no"
            and old(r)
            and all(s == "available" for s in statuses(r))
        )
    )
    trace = execute(
        snapshot,
        airline.tools,
        (act("cancel_reservation", reservation_id=forbidden["reservation_id"]),),
        forbidden["user_id"],
    )
    assert not trace.errors
    assert [v.rule for v in check_policy(trace, AIRLINE_RULES)] == ["airline.cancel_rules"]
    allowed = pick(lambda r: r["insurance"] == "yes" and all(s == "available" for s in statuses(r)))
    trace = execute(
        snapshot,
        airline.tools,
        (act("cancel_reservation", reservation_id=allowed["reservation_id"]),),
        allowed["user_id"],
    )
    assert check_policy(trace, AIRLINE_RULES) == []


def test_airline_policy_certificate_needs_checked_complaint() -> None:
    airline = _airline()
    user_id = next(iter(airline.snapshot.tables["users"]))
    trace = execute(airline.snapshot, airline.tools, (act("send_certificate", user_id=user_id, amount=500),), user_id)
    assert not trace.errors
    violations = check_policy(trace, AIRLINE_RULES)
    assert [v.rule for v in violations] == ["airline.certificate_rules"]


def test_rules_registry() -> None:
    assert rules_for("retail") == RETAIL_RULES and rules_for("airline") == AIRLINE_RULES
    assert rules_for("nope") == ()
    assert all(r.description and r.name.startswith(d) for d in ("retail", "airline", "mock") for r in rules_for(d))


# ---------------------------------------------------------------------------------------------- dedup
def test_dedup_same_actions_and_near_identical_instruction(mock) -> None:
    dedup = Deduplicator(mock.tools)
    first = draft_task(
        proposal(
            IDENTIFY_ANA,
            act("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=50),
            text="You are Ana. Move $50 from acc_1001 to acc_1002.",
        ),
        "mock",
        "first",
    )
    assert dedup.check(first).passed
    dedup.add(first)
    # Same actions (amount as a float, order of keys changed): duplicate.
    same = draft_task(
        proposal(
            act("transfer_funds", amount=50.0, to_account_id="acc_1002", from_account_id="acc_1001"),
            IDENTIFY_ANA,
            text="Totally different words",
        ),
        "mock",
    )
    result = dedup.check(same)
    assert not result.passed and "same actions as accepted blueprint first" in result.reasons[0]
    reworded = draft_task(
        proposal(
            IDENTIFY_ANA,
            act("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=50),
            act("think", thought="ok"),
            text="You are Ana. Please move $50 from acc_1001 to acc_1002.",
        ),
        "mock",
    )
    assert not dedup.check(reworded).passed
    other_amount = draft_task(
        proposal(
            IDENTIFY_ANA,
            act("transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=60),
            text="You are Ana. Move $60 from acc_1001 to acc_1002.",
        ),
        "mock",
    )
    assert dedup.check(other_amount).passed


# ---------------------------------------------------------------------------------------------- context
def test_tool_graph_is_derived_from_schemas(mock) -> None:
    # Tools return plain JSON rows: without the row types nothing says what their output holds.
    assert ToolGraph.build(mock.tools).edges == ()
    # The row types alone (Account has account_id) give the edges; the bare-id lookup needs its hint.
    graph = ToolGraph.build(mock.tools, GraphHints(rows=MOCK_HINTS.rows))
    edges = {(a, b) for a, b, _ in graph.edges}
    assert ("get_account_details", "close_account") in edges
    assert ("find_customer_by_email", "get_customer_details") not in edges
    assert "think" not in graph.nodes and "transfer_to_human_agents" not in graph.nodes
    hinted = ContextSampler(mock).graph
    assert ("find_customer_by_email", "get_customer_details") in {(a, b) for a, b, _ in hinted.edges}
    assert "digraph" in hinted.to_dot() and hinted.to_dict()["writers"] == sorted(hinted.writers)


def test_retail_graph_chain() -> None:
    retail = _retail()
    graph = ContextSampler(retail).graph
    edges = {(a, b) for a, b, _ in graph.edges}
    assert ("find_user_id_by_email", "get_user_details") in edges
    assert ("get_user_details", "get_order_details") in edges
    assert ("get_order_details", "cancel_pending_order") in edges
    # The hint table removes pairs the policy forbids.
    assert ("cancel_pending_order", "modify_pending_order_items") not in edges


def test_context_sampling_is_seeded(mock) -> None:
    sampler = ContextSampler(mock)
    a, b = sampler.sample(random.Random(7)), sampler.sample(random.Random(7))
    assert a == b
    assert a.user_id in mock.snapshot.tables["customers"]
    assert set(a.tools) <= set(sampler.graph.nodes)
    assert all(c in policy_clauses(mock.policy) for c in a.policy)
    seen = {sampler.sample(random.Random(s)).weights for s in range(20)}
    assert len(seen) > 1  # sampler weights vary per proposal


def test_airline_graph_chain_from_row_types() -> None:
    airline = _airline()
    edges = {(a, b) for a, b, _ in ContextSampler(airline).graph.edges}
    assert ("get_user_details", "get_reservation_details") in edges  # User.reservations -> reservation_id
    assert ("get_reservation_details", "update_reservation_flights") in edges
    assert ("search_direct_flight", "get_flight_status") in edges  # DirectFlight.flight_number and date
    assert ("cancel_reservation", "update_reservation_flights") not in edges  # forbidden by the hints


def test_context_holds_fresh_json_of_the_users_rows() -> None:
    retail = _retail()
    sampler = ContextSampler(retail)
    user_id = next(iter(retail.snapshot.tables["users"]))
    context = sampler.sample(random.Random(3), user_id=user_id)
    row = retail.snapshot.tables["users"][user_id]
    assert context.user == row and context.user is not row  # a copy: prompts never alias the snapshot
    assert set(context.records) <= {"orders"} and all(k in row["orders"] for k in context.records.get("orders", {}))
    for key, record in context.records.get("orders", {}).items():
        assert record == retail.snapshot.tables["orders"][key] and record is not retail.snapshot.tables["orders"][key]
    name = row["name"]
    assert context.persona is None or context.persona.startswith(f"{name['first_name']} {name['last_name']}: ")
