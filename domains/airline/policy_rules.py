"""Airline policy predicates for phase 1 (see ``policy.md``): the rules a blueprint must not break.

Each predicate reads an execution trace (rows as plain JSON dicts) and yields the violations it finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen.policy_checks import PolicyRule, Violation, dict_items, get_row
from apigen_envs.datagen.trace import ExecutionTrace, TraceStep

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
        flight = get_row(view, "flights", segment["flight_number"])
        state = flight["dates"].get(segment["date"]) if flight is not None else None
        states.append(state.get("status", "unknown") if isinstance(state, dict) else "unknown")
    return states


def _segments(view: Any, flights: Any) -> list[tuple[Any, Any, Any, Any]]:
    """(flight number, date, origin, destination) of each listed flight (origin and destination from the DB)."""
    out = []
    for info in dict_items(flights):
        number, day = info.get("flight_number"), info.get("date")
        flight = get_row(view, "flights", number)
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
            reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
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
        reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
        if reservation is None or reservation["cabin"] != "basic_economy":
            continue
        old = {(s["flight_number"], s["date"]) for s in reservation["flights"]}
        new = {(f.get("flight_number"), f.get("date")) for f in dict_items(step.args.get("flights"))}
        if old != new:
            yield Violation(
                "airline.basic_economy_flights_fixed",
                f"flights of basic economy reservation {reservation['reservation_id']} are changed",
                step.index,
            )


def _airline_trip_kept(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("update_reservation_flights"):
        reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
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
        keys = [(f.get("flight_number"), f.get("date")) for f in dict_items(step.args.get("flights"))]
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
        user = get_row(step.before, "users", step.args.get("user_id"))
        payments = dict_items(step.args.get("payment_methods"))
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
        reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
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
        reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
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
        reservation = get_row(step.before, "reservations", step.args.get("reservation_id"))
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
            reservation = get_row(step.before, "reservations", rid)
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
        user = get_row(step.before, "users", user_id)
        if user is None:
            continue
        looked_up = []
        for earlier in trace.steps[: step.index]:
            if earlier.ok and earlier.name == "get_reservation_details":
                reservation = get_row(step.before, "reservations", earlier.args.get("reservation_id"))
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


RULES: tuple[PolicyRule, ...] = (
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
