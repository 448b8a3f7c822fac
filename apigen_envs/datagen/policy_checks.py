"""Domain policy rules as Python predicates over an execution trace.

Tools already refuse what is impossible (cancelling a delivered order); these rules catch what the tools
allow but the policy forbids, mostly across actions ("B is invalid given A's change"): a write before the
user was identified, a return and a cancellation of the same order, a certificate for an ineligible user.
Each violation names the rule it breaks, so the feedback to the proposer is specific.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen.trace import ExecutionTrace, TraceStep


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule.

    Attributes:
        rule: The rule's name.
        message: What exactly is wrong.
        step: Index of the offending action, when one is to blame.

    """

    rule: str
    message: str
    step: int | None = None

    def __str__(self) -> str:
        where = f" (action {self.step})" if self.step is not None else ""
        return f"[{self.rule}]{where} {self.message}"


Check = Callable[[ExecutionTrace], Iterable[Violation]]


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A named policy predicate.

    Attributes:
        name: Short identifier shown in failures.
        description: The policy clause in one sentence.
        check: Yields the violations found in a trace.

    """

    name: str
    description: str
    check: Check


def check_policy(trace: ExecutionTrace, rules: Iterable[PolicyRule]) -> list[Violation]:
    """Run every rule over a trace.

    Args:
        trace: The executed blueprint.
        rules: The domain's rules.

    Returns:
        All violations, in rule order.

    """
    return [v for rule in rules for v in rule.check(trace)]


def _get(view: Any, table: str, key: Any) -> Any:
    if not isinstance(key, str):
        return None
    try:
        return view[table].get(key)
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------- retail
_RETAIL_ORDER_WRITES = (
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "exchange_delivered_order_items",
    "return_delivered_order_items",
)
_RETAIL_AUTH = ("find_user_id_by_email", "find_user_id_by_name_zip")


def _retail_owner(step: TraceStep) -> str | None:
    if step.name == "modify_user_address":
        return step.args.get("user_id")
    order = _get(step.before, "orders", step.args.get("order_id"))
    return order.user_id if order is not None else None


def _retail_authenticated(trace: ExecutionTrace) -> Iterable[Violation]:
    known: set[str] = set()
    for step in trace.steps:
        if not step.ok:
            continue
        if step.name in _RETAIL_AUTH:
            known.add(str(step.result()))
        elif step.name == "get_user_details":
            known.add(str(step.args.get("user_id")))
        elif step.mutates:
            owner = _retail_owner(step)
            if owner is not None and owner not in known:
                yield Violation(
                    "retail.authenticate_first",
                    f"{step.name} changes data of user {owner} before the user was identified "
                    "(find_user_id_by_email / find_user_id_by_name_zip / get_user_details)",
                    step.index,
                )


def _retail_one_user(trace: ExecutionTrace) -> Iterable[Violation]:
    owners: dict[str, int] = {}
    for step in trace.writes():
        owner = _retail_owner(step)
        if owner is not None:
            owners.setdefault(owner, step.index)
    if trace.user_id is not None:
        for owner, index in owners.items():
            if owner != trace.user_id:
                yield Violation(
                    "retail.own_data_only",
                    f"the request changes data of user {owner}, not of the caller {trace.user_id}",
                    index,
                )
    elif len(owners) > 1:
        yield Violation("retail.own_data_only", f"one conversation changes data of several users: {sorted(owners)}")


def _retail_status(trace: ExecutionTrace) -> Iterable[Violation]:
    exact_pending = ("cancel_pending_order", "modify_pending_order_items")
    for step in trace.writes():
        order = _get(step.before, "orders", step.args.get("order_id"))
        if order is None:
            continue
        not_pending = order.status != "pending" if step.name in exact_pending else "pending" not in order.status
        if step.name.startswith(("cancel_pending", "modify_pending")) and not_pending:
            yield Violation(
                "retail.pending_only", f"{step.name} on order {order.order_id} in status {order.status!r}", step.index
            )
        elif step.name.endswith("delivered_order_items") and order.status != "delivered":
            yield Violation(
                "retail.delivered_only",
                f"{step.name} on order {order.order_id} in status {order.status!r}",
                step.index,
            )


def _retail_order_sequences(trace: ExecutionTrace) -> Iterable[Violation]:
    item_changes: dict[str, int] = {}
    cancelled: dict[str, int] = {}
    after_sale: dict[str, tuple[str, int]] = {}
    for step in trace.writes():
        order_id = step.args.get("order_id")
        if not isinstance(order_id, str):
            continue
        if order_id in cancelled and step.name in _RETAIL_ORDER_WRITES:
            yield Violation(
                "retail.no_change_after_cancel",
                f"{step.name} on order {order_id} after it was cancelled by action {cancelled[order_id]}",
                step.index,
            )
        if step.name == "modify_pending_order_items":
            if order_id in item_changes:
                yield Violation(
                    "retail.items_modified_once",
                    f"items of order {order_id} modified twice (actions {item_changes[order_id]} and {step.index})",
                    step.index,
                )
            item_changes.setdefault(order_id, step.index)
        if step.name in ("exchange_delivered_order_items", "return_delivered_order_items"):
            if order_id in after_sale:
                first, at = after_sale[order_id]
                yield Violation(
                    "retail.one_return_or_exchange",
                    f"order {order_id} gets {step.name} after {first} (action {at}); only one is allowed",
                    step.index,
                )
            after_sale.setdefault(order_id, (step.name, step.index))
        if step.name == "cancel_pending_order":
            cancelled.setdefault(order_id, step.index)
    for order_id, index in cancelled.items():
        if order_id in after_sale:
            yield Violation(
                "retail.return_cancel_conflict",
                f"order {order_id} is both cancelled (action {index}) and returned/exchanged "
                f"(action {after_sale[order_id][1]})",
                index,
            )


def _retail_payment_methods(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        method_id = step.args.get("payment_method_id")
        order = _get(step.before, "orders", step.args.get("order_id"))
        if method_id is None or order is None:
            continue
        user = _get(step.before, "users", order.user_id)
        if user is None or method_id not in user.payment_methods:
            yield Violation(
                "retail.own_payment_method",
                f"payment method {method_id} does not belong to user {order.user_id}",
                step.index,
            )
            continue
        if step.name == "return_delivered_order_items":
            original = order.payment_history[0].payment_method_id if order.payment_history else None
            if method_id != original and user.payment_methods[method_id].source != "gift_card":
                yield Violation(
                    "retail.refund_to_original_or_gift_card",
                    f"refund of order {order.order_id} goes to {method_id}, neither the original method "
                    f"{original} nor a gift card",
                    step.index,
                )


RETAIL_RULES: tuple[PolicyRule, ...] = (
    PolicyRule(
        "retail.authenticate_first",
        "Identify the user (by email, or name and zip) before changing any of their data.",
        _retail_authenticated,
    ),
    PolicyRule("retail.own_data_only", "Only act on the data of the user in the conversation.", _retail_one_user),
    PolicyRule(
        "retail.pending_only",
        "Only pending orders can be cancelled or modified (items and cancellation: exactly 'pending').",
        _retail_status,
    ),
    PolicyRule(
        "retail.items_modified_once",
        "Items of a pending order can be modified once; a cancelled order is not changed again; an order is "
        "returned or exchanged at most once, and never both cancelled and returned.",
        _retail_order_sequences,
    ),
    PolicyRule(
        "retail.own_payment_method",
        "Payment methods must be the user's own; refunds go to the original method or a gift card.",
        _retail_payment_methods,
    ),
)
"""Retail policy predicates (see ``domains/retail/policy.md``)."""


# ---------------------------------------------------------------------------------------------- airline
_AIRLINE_NOW = datetime(2024, 5, 15, 15, 0, 0)
_AIRLINE_RES_WRITES = (
    "cancel_reservation",
    "update_reservation_baggages",
    "update_reservation_flights",
    "update_reservation_passengers",
)


def _airline_now() -> datetime:
    try:
        from apigen_envs.domains.airline.tools import NOW
    except ImportError:
        return _AIRLINE_NOW
    return datetime.fromisoformat(NOW)


def _flight_states(view: Any, reservation: Any) -> list[str]:
    states = []
    for segment in reservation.flights:
        flight = _get(view, "flights", segment.flight_number)
        state = flight.dates.get(segment.date) if flight is not None else None
        states.append(getattr(state, "status", "unknown"))
    return states


def _airline_ownership(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        if step.name in _AIRLINE_RES_WRITES:
            reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
            owner = reservation.user_id if reservation is not None else None
        else:
            owner = step.args.get("user_id")
        if trace.user_id is not None and owner is not None and owner != trace.user_id:
            yield Violation(
                "airline.own_reservations_only",
                f"{step.name} acts for user {owner}, not for the caller {trace.user_id}",
                step.index,
            )


def _airline_basic_economy(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_flights"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        if reservation is None or reservation.cabin != "basic_economy":
            continue
        old = {(s.flight_number, s.date) for s in reservation.flights}
        new = {(f.get("flight_number"), f.get("date")) for f in step.args.get("flights", []) if isinstance(f, dict)}
        if old != new:
            yield Violation(
                "airline.basic_economy_flights_fixed",
                f"flights of basic economy reservation {reservation.reservation_id} are changed",
                step.index,
            )


def _airline_cancellation(trace: ExecutionTrace) -> Iterable[Violation]:
    now = _airline_now()
    for step in trace.calls("cancel_reservation"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        if reservation is None:
            continue
        states = _flight_states(step.before, reservation)
        if any(s in ("flying", "landed") for s in states):
            yield Violation(
                "airline.cancel_rules",
                f"reservation {reservation.reservation_id} has a segment already flown; it cannot be cancelled",
                step.index,
            )
            continue
        try:
            booked = datetime.fromisoformat(reservation.created_at)
        except ValueError:
            booked = None
        recent = booked is not None and now - booked <= timedelta(hours=24)
        by_airline = "cancelled" in states
        covered = reservation.cabin == "business" or reservation.insurance == "yes"
        if not (recent or by_airline or covered):
            yield Violation(
                "airline.cancel_rules",
                f"reservation {reservation.reservation_id} is {reservation.cabin} without insurance, booked more "
                "than 24 hours ago and no flight was cancelled by the airline",
                step.index,
            )


def _airline_passenger_count(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_passengers"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        given = step.args.get("passengers", [])
        if reservation is not None and len(given) != len(reservation.passengers):
            yield Violation(
                "airline.passenger_count_fixed",
                f"reservation {reservation.reservation_id} goes from {len(reservation.passengers)} to "
                f"{len(given)} passengers",
                step.index,
            )


def _airline_writes_after_cancel(trace: ExecutionTrace) -> Iterable[Violation]:
    cancelled: dict[str, int] = {}
    for step in trace.writes():
        rid = step.args.get("reservation_id")
        if not isinstance(rid, str):
            continue
        if rid in cancelled:
            yield Violation(
                "airline.no_change_after_cancel",
                f"{step.name} on reservation {rid} after it was cancelled by action {cancelled[rid]}",
                step.index,
            )
        if step.name == "cancel_reservation":
            cancelled.setdefault(rid, step.index)


def _airline_certificates(trace: ExecutionTrace) -> Iterable[Violation]:
    sent = trace.calls("send_certificate")
    if len(sent) > 1:
        yield Violation("airline.certificate_rules", "more than one certificate in one conversation", sent[1].index)
    for step in sent:
        user = _get(step.before, "users", step.args.get("user_id"))
        if user is None:
            continue
        looked_up = []
        for earlier in trace.steps[: step.index]:
            if earlier.ok and earlier.name == "get_reservation_details":
                reservation = _get(step.before, "reservations", earlier.args.get("reservation_id"))
                if reservation is not None and reservation.user_id == user.user_id:
                    looked_up.append(reservation)
        eligible_member = user.membership in ("silver", "gold")
        limit = 0
        for reservation in looked_up:
            states = _flight_states(step.before, reservation)
            if not (eligible_member or reservation.insurance == "yes" or reservation.cabin == "business"):
                continue
            per_passenger = 100 if "cancelled" in states else 50 if "delayed" in states else 0
            limit = max(limit, per_passenger * len(reservation.passengers))
        amount = step.args.get("amount", 0)
        if limit == 0:
            yield Violation(
                "airline.certificate_rules",
                f"certificate for {user.user_id} without a checked complaint: no looked-up reservation of an "
                "eligible user (silver/gold, insured or business) has a cancelled or delayed flight",
                step.index,
            )
        elif isinstance(amount, int | float) and amount > limit:
            yield Violation(
                "airline.certificate_rules",
                f"certificate of {amount} exceeds the allowed {limit} (100 per passenger for a cancelled flight, "
                "50 for a delay)",
                step.index,
            )


AIRLINE_RULES: tuple[PolicyRule, ...] = (
    PolicyRule("airline.own_reservations_only", "Act only for the user in the conversation.", _airline_ownership),
    PolicyRule(
        "airline.basic_economy_flights_fixed",
        "Flights of a basic economy reservation cannot be changed.",
        _airline_basic_economy,
    ),
    PolicyRule(
        "airline.cancel_rules",
        "Cancel only within 24 hours of booking, after an airline cancellation, or with business cabin or "
        "insurance; never once a segment has been flown.",
        _airline_cancellation,
    ),
    PolicyRule(
        "airline.passenger_count_fixed",
        "The number of passengers of a reservation cannot change.",
        _airline_passenger_count,
    ),
    PolicyRule(
        "airline.no_change_after_cancel", "A cancelled reservation is not changed again.", _airline_writes_after_cancel
    ),
    PolicyRule(
        "airline.certificate_rules",
        "At most one certificate, only for an eligible user's checked complaint about a cancelled (100 per "
        "passenger) or delayed (50 per passenger) flight.",
        _airline_certificates,
    ),
)
"""Airline policy predicates (see the airline policy)."""


# ---------------------------------------------------------------------------------------------- mock
def _mock_owner(step: TraceStep) -> str | None:
    account_id = step.args.get("from_account_id") or step.args.get("account_id")
    account = _get(step.before, "accounts", account_id)
    return account.customer_id if account is not None else None


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


MOCK_RULES: tuple[PolicyRule, ...] = (
    PolicyRule("mock.identify_first", "Identify the customer before any change.", _mock_identified),
    PolicyRule("mock.own_accounts_only", "Act only on the caller's own accounts.", _mock_own_accounts),
    PolicyRule("mock.closed_is_final", "A closed account is not touched again.", _mock_closed),
)
"""Mock bank policy predicates."""

DOMAIN_RULES: Mapping[str, tuple[PolicyRule, ...]] = MappingProxyType(
    {"retail": RETAIL_RULES, "airline": AIRLINE_RULES, "mock": MOCK_RULES}
)
"""Domain name -> its policy rules."""


def rules_for(domain: str) -> tuple[PolicyRule, ...]:
    """The policy rules of a domain (none for a domain without a rule set).

    Args:
        domain: The domain name.

    Returns:
        The rules.

    """
    return DOMAIN_RULES.get(domain, ())
