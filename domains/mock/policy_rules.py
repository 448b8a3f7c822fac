"""Mock bank policy predicates for phase 1 (the tiny test domain)."""

from __future__ import annotations

from collections.abc import Iterable

from apigen_envs.datagen.policy_checks import PolicyRule, Violation, get_row
from apigen_envs.datagen.trace import ExecutionTrace, TraceStep


def _mock_owner(step: TraceStep) -> str | None:
    account_id = step.args.get("from_account_id") or step.args.get("account_id")
    account = get_row(step.before, "accounts", account_id)
    return account["customer_id"] if account is not None else None


def _mock_identified(trace: ExecutionTrace) -> Iterable[Violation]:
    known: set[str] = set()
    for step in trace.steps:
        if not step.ok:
            continue
        if step.name == "find_customer_by_email":
            known.add(str(step.result()))
        elif step.name == "get_customer_details":
            known.add(str(step.args.get("customer_id")))
        elif step.mutates:
            owner = _mock_owner(step)
            if owner is not None and owner not in known:
                yield Violation(
                    "mock.identify_first", f"{step.name} on {owner}'s account before identifying them", step.index
                )


def _mock_own_accounts(trace: ExecutionTrace) -> Iterable[Violation]:
    if trace.user_id is None:
        return
    for step in trace.writes():
        owner = _mock_owner(step)
        if owner is not None and owner != trace.user_id:
            yield Violation(
                "mock.own_accounts_only",
                f"{step.name} acts on an account of {owner}, not of the caller {trace.user_id}",
                step.index,
            )


def _mock_closed(trace: ExecutionTrace) -> Iterable[Violation]:
    closed: dict[str, int] = {}
    for step in trace.writes():
        touched = [step.args.get(k) for k in ("account_id", "from_account_id", "to_account_id")]
        for account_id in touched:
            if isinstance(account_id, str) and account_id in closed:
                yield Violation(
                    "mock.closed_is_final",
                    f"{step.name} touches account {account_id} closed by action {closed[account_id]}",
                    step.index,
                )
        if step.name == "close_account":
            closed.setdefault(str(step.args.get("account_id")), step.index)


RULES: tuple[PolicyRule, ...] = (
    PolicyRule("mock.identify_first", "Identify the customer before any change.", _mock_identified),
    PolicyRule("mock.own_accounts_only", "Act only on the caller's own accounts.", _mock_own_accounts),
    PolicyRule("mock.closed_is_final", "A closed account is not touched again.", _mock_closed),
)
"""Mock bank policy predicates."""
