"""Domain policy rules as Python predicates over an execution trace.

Tools refuse only what the peer's tools refuse (see :mod:`apigen_envs.semantics`), and the peers leave
the policy to the agent: a tool books six passengers, removes checked bags or changes the flights of a
basic economy reservation when asked. These predicates are where the policy lives for blueprints: every
rule a tool used to enforce (and the peers' tools enforce under one profile but not the other) is here,
so the policy stage rejects a blueprint that breaks it whatever the semantics profile. They also catch
what no tool could see, mostly across actions ("B is invalid given A's change"): a write before the user
was identified, a return and a cancellation of the same order, a certificate for an ineligible user.
Each violation names the rule it breaks, so the feedback to the proposer is specific.

Rows are plain JSON dicts (see :mod:`apigen_envs.db`); the predicates read them and never write.
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


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict elements of a list argument (anything else in it is the format stage's problem)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


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
_RETAIL_CANCEL_REASONS = ("no longer needed", "ordered by mistake")
_RETAIL_SWAPS = ("modify_pending_order_items", "exchange_delivered_order_items")


def _retail_owner(step: TraceStep) -> str | None:
    if step.name == "modify_user_address":
        return step.args.get("user_id")
    order = _get(step.before, "orders", step.args.get("order_id"))
    return order["user_id"] if order is not None else None


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
        status = order["status"]
        not_pending = status != "pending" if step.name in exact_pending else "pending" not in status
        if step.name.startswith(("cancel_pending", "modify_pending")) and not_pending:
            yield Violation(
                "retail.pending_only", f"{step.name} on order {order['order_id']} in status {status!r}", step.index
            )
        elif step.name.endswith("delivered_order_items") and status != "delivered":
            yield Violation(
                "retail.delivered_only", f"{step.name} on order {order['order_id']} in status {status!r}", step.index
            )


def _retail_cancel_reason(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("cancel_pending_order"):
        reason = step.args.get("reason")
        if reason not in _RETAIL_CANCEL_REASONS:
            yield Violation(
                "retail.cancel_reason",
                f"order {step.args.get('order_id')} is cancelled for {reason!r}; the only reasons are "
                f"{' and '.join(repr(r) for r in _RETAIL_CANCEL_REASONS)}",
                step.index,
            )


def _retail_items(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        if step.name not in (*_RETAIL_SWAPS, "return_delivered_order_items"):
            continue
        order = _get(step.before, "orders", step.args.get("order_id"))
        if order is None:
            continue
        item_ids = step.args.get("item_ids")
        item_ids = item_ids if isinstance(item_ids, list) else []
        owned = [item["item_id"] for item in order["items"]]
        missing = sorted({i for i in item_ids if item_ids.count(i) > owned.count(i)}, key=str)
        if not item_ids or missing:
            what = f"items {missing} are not (that many times) in it" if missing else "no item is listed"
            yield Violation("retail.items_in_order", f"{step.name} on order {order['order_id']}: {what}", step.index)
            continue
        if step.name not in _RETAIL_SWAPS:
            continue
        new_ids = step.args.get("new_item_ids")
        new_ids = new_ids if isinstance(new_ids, list) else []
        if len(new_ids) != len(item_ids):
            yield Violation(
                "retail.same_product_variant",
                f"{step.name} on order {order['order_id']} swaps {len(item_ids)} items for {len(new_ids)}",
                step.index,
            )
            continue
        for item_id, new_id in zip(item_ids, new_ids, strict=True):
            item = next(i for i in order["items"] if i["item_id"] == item_id)
            product = _get(step.before, "products", item["product_id"])
            variant = product["variants"].get(new_id) if product is not None and isinstance(new_id, str) else None
            if new_id == item_id:
                problem = "is the same item"
            elif variant is None:
                problem = f"is not a variant of the same product ({item['name']})"
            elif not variant["available"]:
                problem = "is not available"
            else:
                continue
            yield Violation(
                "retail.same_product_variant",
                f"{step.name} on order {order['order_id']}: new item {new_id} for {item_id} {problem}; each item "
                "can only become another available variant of the same product",
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
        user = _get(step.before, "users", order["user_id"])
        if user is None or method_id not in user["payment_methods"]:
            yield Violation(
                "retail.own_payment_method",
                f"payment method {method_id} does not belong to user {order['user_id']}",
                step.index,
            )
            continue
        method = user["payment_methods"][method_id]
        history = order["payment_history"]
        if step.name == "return_delivered_order_items":
            original = history[0]["payment_method_id"] if history else None
            if method_id != original and method["source"] != "gift_card":
                yield Violation(
                    "retail.refund_to_original_or_gift_card",
                    f"refund of order {order['order_id']} goes to {method_id}, neither the original method "
                    f"{original} nor a gift card",
                    step.index,
                )
        elif step.name == "modify_pending_order_payment":
            if len(history) != 1 or history[0]["transaction_type"] != "payment":
                yield Violation(
                    "retail.payment_change_rules",
                    f"the payment of order {order['order_id']} is changed, but it has {len(history)} transactions, "
                    "not exactly one payment",
                    step.index,
                )
            elif history[0]["payment_method_id"] == method_id:
                yield Violation(
                    "retail.payment_change_rules",
                    f"order {order['order_id']} is already paid with {method_id}; the new method must differ",
                    step.index,
                )
            elif method["source"] == "gift_card" and method["balance"] < history[0]["amount"]:
                yield Violation(
                    "retail.gift_card_balance",
                    f"gift card {method_id} holds {method['balance']}, less than the order total "
                    f"{history[0]['amount']}",
                    step.index,
                )
        elif step.name in _RETAIL_SWAPS and method["source"] == "gift_card":
            due = _price_difference(step, order)
            if due is not None and method["balance"] < due:
                yield Violation(
                    "retail.gift_card_balance",
                    f"gift card {method_id} holds {method['balance']}, less than the price difference {due:.2f}",
                    step.index,
                )


def _price_difference(step: TraceStep, order: Mapping[str, Any]) -> float | None:
    """New minus old price of an item swap, or None when an item or variant is unknown."""
    item_ids, new_ids = step.args.get("item_ids"), step.args.get("new_item_ids")
    if not (isinstance(item_ids, list) and isinstance(new_ids, list)) or len(item_ids) != len(new_ids):
        return None
    diff = 0.0
    for item_id, new_id in zip(item_ids, new_ids, strict=True):
        item = next((i for i in order["items"] if i["item_id"] == item_id), None)
        product = _get(step.before, "products", item["product_id"]) if item is not None else None
        variant = product["variants"].get(new_id) if product is not None and isinstance(new_id, str) else None
        if item is None or variant is None:
            return None
        diff += variant["price"] - item["price"]
    return round(diff, 2)


RETAIL_RULES: tuple[PolicyRule, ...] = (
    PolicyRule(
        "retail.authenticate_first",
        "Identify the user (by email, or name and zip) before changing any of their data.",
        _retail_authenticated,
    ),
    PolicyRule("retail.own_data_only", "Only act on the data of the user in the conversation.", _retail_one_user),
    PolicyRule(
        "retail.pending_only",
        "Only pending orders can be cancelled or modified (items and cancellation: exactly 'pending'); only "
        "delivered orders can be returned or exchanged.",
        _retail_status,
    ),
    PolicyRule(
        "retail.cancel_reason",
        "A cancellation's reason is 'no longer needed' or 'ordered by mistake', nothing else.",
        _retail_cancel_reason,
    ),
    PolicyRule(
        "retail.items_in_order",
        "Items to change, exchange or return are items of the order; each new item is another available "
        "variant of the same product.",
        _retail_items,
    ),
    PolicyRule(
        "retail.items_modified_once",
        "Items of a pending order can be modified once; a cancelled order is not changed again; an order is "
        "returned or exchanged at most once, and never both cancelled and returned.",
        _retail_order_sequences,
    ),
    PolicyRule(
        "retail.own_payment_method",
        "Payment methods must be the user's own; refunds go to the original method or a gift card; a payment "
        "change needs exactly one payment and a different method; a gift card must cover what it pays.",
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
_AIRLINE_MAX_PASSENGERS = 5
_AIRLINE_PAYMENT_LIMITS = MappingProxyType({"certificate": 1, "credit_card": 1, "gift_card": 3})
_AIRLINE_FLOWN = ("flying", "landed")


def _airline_now() -> datetime:
    try:
        from apigen_envs.domains.airline.tools import NOW
    except ImportError:
        return _AIRLINE_NOW
    return datetime.fromisoformat(NOW)


def _flight_states(view: Any, reservation: Mapping[str, Any]) -> list[str]:
    states = []
    for segment in reservation["flights"]:
        flight = _get(view, "flights", segment["flight_number"])
        state = flight["dates"].get(segment["date"]) if flight is not None else None
        states.append(state.get("status", "unknown") if isinstance(state, dict) else "unknown")
    return states


def _segments(view: Any, flights: Any) -> list[tuple[Any, Any, Any, Any]]:
    """(flight number, date, origin, destination) of each listed flight (origin and destination from the DB)."""
    out = []
    for info in _dicts(flights):
        number, day = info.get("flight_number"), info.get("date")
        flight = _get(view, "flights", number)
        out.append((number, day, *((flight["origin"], flight["destination"]) if flight else (None, None))))
    return out


def _trip_problem(segments: list[tuple[Any, Any, Any, Any]], origin: Any, destination: Any, flight_type: Any) -> str:
    """Why the segments do not make the trip (empty when they do)."""
    if not segments:
        return "it has no flight"
    if segments[0][2] != origin:
        return f"the first flight leaves from {segments[0][2]}, not from the origin {origin}"
    if flight_type == "round_trip":
        if destination not in {s[3] for s in segments}:
            return f"no flight of the round trip arrives at the destination {destination}"
        if segments[-1][3] != origin:
            return f"the round trip ends at {segments[-1][3]}, not back at {origin}"
    elif segments[-1][3] != destination:
        return f"the last flight arrives at {segments[-1][3]}, not at the destination {destination}"
    return ""


def _airline_ownership(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        if step.name in _AIRLINE_RES_WRITES:
            reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
            owner = reservation["user_id"] if reservation is not None else None
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
        if reservation is None or reservation["cabin"] != "basic_economy":
            continue
        old = {(s["flight_number"], s["date"]) for s in reservation["flights"]}
        new = {(f.get("flight_number"), f.get("date")) for f in _dicts(step.args.get("flights"))}
        if old != new:
            yield Violation(
                "airline.basic_economy_flights_fixed",
                f"flights of basic economy reservation {reservation['reservation_id']} are changed",
                step.index,
            )


def _airline_trip_kept(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_flights"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        if reservation is None:
            continue
        segments = _segments(step.before, step.args.get("flights"))
        problem = _trip_problem(segments, reservation["origin"], reservation["destination"], reservation["flight_type"])
        if problem:
            yield Violation(
                "airline.trip_endpoints_kept",
                f"reservation {reservation['reservation_id']} ({reservation['flight_type']} "
                f"{reservation['origin']}-{reservation['destination']}) is changed so that {problem}",
                step.index,
            )


def _airline_flight_once(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("book_reservation", "update_reservation_flights"):
        keys = [(f.get("flight_number"), f.get("date")) for f in _dicts(step.args.get("flights"))]
        repeated = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        for number, day in repeated:
            yield Violation(
                "airline.flight_listed_once",
                f"{step.name} lists flight {number} on {day} more than once",
                step.index,
            )


def _airline_booking(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("book_reservation"):
        args = step.args
        passengers = args.get("passengers")
        count = len(passengers) if isinstance(passengers, list) else 0
        if not 1 <= count <= _AIRLINE_MAX_PASSENGERS:
            yield Violation(
                "airline.booking_rules",
                f"the booking has {count} passengers; a reservation has 1 to {_AIRLINE_MAX_PASSENGERS}",
                step.index,
            )
        segments = _segments(step.before, args.get("flights"))
        problem = _trip_problem(segments, args.get("origin"), args.get("destination"), args.get("flight_type"))
        if problem:
            yield Violation(
                "airline.booking_rules",
                f"the {args.get('flight_type')} booking {args.get('origin')}-{args.get('destination')} does not "
                f"make the trip: {problem}",
                step.index,
            )
        yield from _baggage_counts(step, args.get("total_baggages"), args.get("nonfree_baggages"))


def _baggage_counts(step: TraceStep, total: Any, nonfree: Any) -> Iterable[Violation]:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (total, nonfree))
    if not numbers or not 0 <= nonfree <= total:
        yield Violation(
            "airline.baggage_counts",
            f"{step.name} sets {total} checked bags of which {nonfree} paid; counts must satisfy 0 <= paid <= total",
            step.index,
        )


def _airline_payment_limits(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("book_reservation"):
        user = _get(step.before, "users", step.args.get("user_id"))
        payments = _dicts(step.args.get("payment_methods"))
        if not payments:
            yield Violation("airline.payment_limits", "the booking names no payment method", step.index)
        ids = [p.get("payment_id") for p in payments]
        for payment_id in sorted({i for i in ids if ids.count(i) > 1}, key=str):
            yield Violation(
                "airline.payment_limits", f"payment method {payment_id} is listed more than once", step.index
            )
        for payment in payments:
            amount = payment.get("amount")
            if not isinstance(amount, int | float) or amount < 0:
                yield Violation(
                    "airline.payment_limits",
                    f"payment method {payment.get('payment_id')} is charged {amount!r}; amounts cannot be negative",
                    step.index,
                )
        if user is None:
            continue
        kinds: dict[str, int] = {}
        for payment_id in dict.fromkeys(ids):
            method = user["payment_methods"].get(payment_id) if isinstance(payment_id, str) else None
            if method is not None:
                kinds[method["source"]] = kinds.get(method["source"], 0) + 1
        over = [f"{kinds[k]} {k}s" for k, limit in _AIRLINE_PAYMENT_LIMITS.items() if kinds.get(k, 0) > limit]
        if over:
            yield Violation(
                "airline.payment_limits",
                f"the booking uses {', '.join(over)}; at most one certificate, one credit card and three gift "
                "cards per reservation",
                step.index,
            )


def _airline_baggage(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_baggages"):
        total, nonfree = step.args.get("total_baggages"), step.args.get("nonfree_baggages")
        problems = list(_baggage_counts(step, total, nonfree))
        yield from problems
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        if problems or reservation is None:
            continue
        if total < reservation["total_baggages"] or nonfree < reservation["nonfree_baggages"]:
            yield Violation(
                "airline.bags_only_added",
                f"reservation {reservation['reservation_id']} goes from {reservation['total_baggages']} bags "
                f"({reservation['nonfree_baggages']} paid) to {total} ({nonfree} paid); bags can be added, never "
                "removed",
                step.index,
            )


def _airline_cancellation(trace: ExecutionTrace) -> Iterable[Violation]:
    now = _airline_now()
    for step in trace.calls("cancel_reservation"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        if reservation is None:
            continue
        states = _flight_states(step.before, reservation)
        rid = reservation["reservation_id"]
        if any(s in _AIRLINE_FLOWN for s in states):
            yield Violation(
                "airline.cancel_rules",
                f"reservation {rid} has a segment already flown; it cannot be cancelled",
                step.index,
            )
            continue
        try:
            booked = datetime.fromisoformat(reservation["created_at"])
        except (TypeError, ValueError):
            booked = None
        recent = booked is not None and now - booked <= timedelta(hours=24)
        by_airline = "cancelled" in states
        covered = reservation["cabin"] == "business" or reservation["insurance"] == "yes"
        if not (recent or by_airline or covered):
            yield Violation(
                "airline.cancel_rules",
                f"reservation {rid} is {reservation['cabin']} without insurance, booked more than 24 hours ago and "
                "no flight was cancelled by the airline",
                step.index,
            )


def _airline_passenger_count(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_passengers"):
        reservation = _get(step.before, "reservations", step.args.get("reservation_id"))
        given = step.args.get("passengers")
        count = len(given) if isinstance(given, list) else 0
        if reservation is not None and count != len(reservation["passengers"]):
            yield Violation(
                "airline.passenger_count_fixed",
                f"reservation {reservation['reservation_id']} goes from {len(reservation['passengers'])} to "
                f"{count} passengers",
                step.index,
            )


def _airline_writes_after_cancel(trace: ExecutionTrace) -> Iterable[Violation]:
    cancelled: dict[str, int] = {}
    for step in trace.writes():
        rid = step.args.get("reservation_id")
        if not isinstance(rid, str) or step.name not in _AIRLINE_RES_WRITES:
            continue
        if rid in cancelled:
            yield Violation(
                "airline.no_change_after_cancel",
                f"{step.name} on reservation {rid} after it was cancelled by action {cancelled[rid]}",
                step.index,
            )
        else:
            reservation = _get(step.before, "reservations", rid)
            if reservation is not None and reservation.get("status") == "cancelled":
                yield Violation(
                    "airline.no_change_after_cancel",
                    f"{step.name} on reservation {rid}, which is cancelled",
                    step.index,
                )
        if step.name == "cancel_reservation":
            cancelled.setdefault(rid, step.index)


def _airline_certificates(trace: ExecutionTrace) -> Iterable[Violation]:
    sent = trace.calls("send_certificate")
    if len(sent) > 1:
        yield Violation("airline.certificate_rules", "more than one certificate in one conversation", sent[1].index)
    for step in sent:
        user_id = step.args.get("user_id")
        amount = step.args.get("amount", 0)
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
            yield Violation(
                "airline.certificate_amount_positive",
                f"certificate for {user_id} of {amount!r}; a certificate is worth a positive amount",
                step.index,
            )
            continue
        user = _get(step.before, "users", user_id)
        if user is None:
            continue
        looked_up = []
        for earlier in trace.steps[: step.index]:
            if earlier.ok and earlier.name == "get_reservation_details":
                reservation = _get(step.before, "reservations", earlier.args.get("reservation_id"))
                if reservation is not None and reservation["user_id"] == user_id:
                    looked_up.append(reservation)
        eligible_member = user["membership"] in ("silver", "gold")
        limit = 0
        for reservation in looked_up:
            states = _flight_states(step.before, reservation)
            if not (eligible_member or reservation["insurance"] == "yes" or reservation["cabin"] == "business"):
                continue
            per_passenger = 100 if "cancelled" in states else 50 if "delayed" in states else 0
            limit = max(limit, per_passenger * len(reservation["passengers"]))
        if limit == 0:
            yield Violation(
                "airline.certificate_rules",
                f"certificate for {user_id} without a checked complaint: no looked-up reservation of an "
                "eligible user (silver/gold, insured or business) has a cancelled or delayed flight",
                step.index,
            )
        elif amount > limit:
            yield Violation(
                "airline.certificate_rules",
                f"certificate of {amount} exceeds the allowed {limit} (100 per passenger for a cancelled flight, "
                "50 for a delay)",
                step.index,
            )


AIRLINE_RULES: tuple[PolicyRule, ...] = (
    PolicyRule("airline.own_reservations_only", "Act only for the user in the conversation.", _airline_ownership),
    PolicyRule(
        "airline.booking_rules",
        "A booking has 1 to 5 passengers, and its flights leave from the origin and reach the destination "
        "(a round trip also comes back).",
        _airline_booking,
    ),
    PolicyRule(
        "airline.payment_limits",
        "A booking uses at most one certificate, one credit card and three gift cards, each listed once with "
        "a non-negative amount.",
        _airline_payment_limits,
    ),
    PolicyRule("airline.flight_listed_once", "A flight on a date appears once in a reservation.", _airline_flight_once),
    PolicyRule(
        "airline.basic_economy_flights_fixed",
        "Flights of a basic economy reservation cannot be changed.",
        _airline_basic_economy,
    ),
    PolicyRule(
        "airline.trip_endpoints_kept",
        "Changed flights keep the reservation's origin, destination and trip type.",
        _airline_trip_kept,
    ),
    PolicyRule(
        "airline.bags_only_added",
        "Checked bags can be added, never removed; bag counts satisfy 0 <= paid <= total.",
        _airline_baggage,
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
        "airline.no_change_after_cancel",
        "A cancelled reservation is not changed (or cancelled) again.",
        _airline_writes_after_cancel,
    ),
    PolicyRule(
        "airline.certificate_rules",
        "At most one certificate, of a positive amount, only for an eligible user's checked complaint about a "
        "cancelled (100 per passenger) or delayed (50 per passenger) flight.",
        _airline_certificates,
    ),
)
"""Airline policy predicates (see the airline policy)."""


# ---------------------------------------------------------------------------------------------- mock
def _mock_owner(step: TraceStep) -> str | None:
    account_id = step.args.get("from_account_id") or step.args.get("account_id")
    account = _get(step.before, "accounts", account_id)
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
