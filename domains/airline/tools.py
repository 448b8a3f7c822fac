"""Tools of the airline domain, with tau-bench's names, arguments and JSON outputs.

Every writer checks all of its preconditions before its first write, so a refused call leaves the view
untouched even when it is run outside the env's transaction (as gold replay does). New ids depend only on
the current state, so replaying gold actions and an agent's identical calls produce identical records.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable
from datetime import date as Date
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from apigen_envs.db import DBView
from apigen_envs.errors import ToolError
from apigen_envs.tools import ToolSet

from .models import (
    Airport,
    Cabin,
    Certificate,
    DateAvailable,
    DirectFlight,
    Flight,
    FlightInfo,
    FlightType,
    GiftCard,
    Insurance,
    Passenger,
    PassengerInfo,
    Payment,
    PaymentInfo,
    Reservation,
    ReservationFlight,
    SeatsByCabin,
    User,
)

NOW = "2024-05-15T15:00:00"
"""The fixed current time of the domain (EST), as tau-bench fixes it."""
FIRST_RESERVATION_ID = "HATHAT"
"""The first id handed to a new reservation; later ones count up from it in base 36."""
FIRST_CERTIFICATE_NUMBER = 3221322
"""Certificates sent by the agent are numbered from here, per user."""
INSURANCE_PER_PASSENGER = 30
BAG_FEE = 50
MAX_PASSENGERS = 5
MAX_GIFT_CARDS = 3

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BINARY = MappingProxyType(
    {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
    }
)
_UNARY = MappingProxyType({ast.USub: operator.neg, ast.UAdd: operator.pos})
_MAX_EXPRESSION = 500


def next_id(current: str) -> str:
    """The base-36 successor of an upper-case alphanumeric id of fixed width (``HATHAT`` -> ``HATHAU``)."""
    digits = [_ID_ALPHABET.index(c) for c in current]
    for i in range(len(digits) - 1, -1, -1):
        digits[i] += 1
        if digits[i] < len(_ID_ALPHABET):
            break
        digits[i] = 0
    return "".join(_ID_ALPHABET[d] for d in digits)


def new_reservation_id(db: DBView) -> str:
    """The first unused id counting up from :data:`FIRST_RESERVATION_ID` (a function of the state)."""
    candidate = FIRST_RESERVATION_ID
    while candidate in db.reservations:
        candidate = next_id(candidate)
    return candidate


def new_certificate_id(user: User) -> str:
    """The first unused ``certificate_<n>`` id in a user's profile, counting from a fixed number."""
    number = FIRST_CERTIFICATE_NUMBER
    while f"certificate_{number}" in user.payment_methods:
        number += 1
    return f"certificate_{number}"


def evaluate(expression: str) -> float:
    """Evaluate plain arithmetic safely: numbers, + - * /, parentheses and unary signs only.

    Args:
        expression: Text such as ``"2 * (350 - 122)"``.

    Returns:
        The value.

    Raises:
        ToolError: For anything that is not plain arithmetic, or a division by zero.

    """
    if len(expression) > _MAX_EXPRESSION:
        raise ToolError(f"expression is too long (at most {_MAX_EXPRESSION} characters)")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"invalid expression: {expression!r}") from None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](walk(node.operand))
        raise ToolError("only numbers, + - * /, parentheses and unary minus are allowed")

    try:
        value = walk(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, RecursionError):
        raise ToolError("the expression is too large to evaluate") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ToolError("the result is not a finite number")
    return value


def _parse_date(text: str) -> Date:
    try:
        return Date.fromisoformat(text)
    except ValueError:
        raise ToolError(f"invalid date {text!r}; use the format 'YYYY-MM-DD'") from None


def _clock(text: str) -> str:
    """A scheduled time without its next-day marker ('01:30:00+1' -> '01:30:00')."""
    return text.split("+", 1)[0]


def _seats(seats: SeatsByCabin, cabin: Cabin, delta: int) -> SeatsByCabin:
    return seats.evolve(**{cabin: seats.of(cabin) + delta})


def build_tools(airports: Iterable[Airport] = (), *, seat_accounting: bool = True) -> ToolSet:
    """Build the airline ToolSet.

    Args:
        airports: The airports ``list_all_airports`` reports (those the DB's flights serve).
        seat_accounting: Give seats back when a reservation is cancelled or its flights change. tau2-bench
            only takes seats at booking; either way gold replay and agents see the same rules.

    Returns:
        A fresh ToolSet (no state shared between domains).

    """
    tools = ToolSet()
    airport_list = tuple(airports)

    # ------------------------------------------------------------------ lookups
    def get_user(db: DBView, user_id: str) -> User:
        user = db.users.get(user_id)
        if user is None:
            raise ToolError(f"user {user_id} not found")
        return user

    def get_reservation(db: DBView, reservation_id: str) -> Reservation:
        reservation = db.reservations.get(reservation_id)
        if reservation is None:
            raise ToolError(f"reservation {reservation_id} not found")
        return reservation

    def get_flight(db: DBView, flight_number: str) -> Flight:
        flight = db.flights.get(flight_number)
        if flight is None:
            raise ToolError(f"flight {flight_number} not found")
        return flight

    def bookable(flight: Flight, day: str, cabin: Cabin, passengers: int) -> DateAvailable:
        state = flight.dates.get(day)
        if state is None:
            raise ToolError(f"flight {flight.flight_number} does not operate on {day}")
        if not isinstance(state, DateAvailable):
            raise ToolError(f"flight {flight.flight_number} is not available on {day} (status: {state.status})")
        if state.available_seats.of(cabin) < passengers:
            raise ToolError(
                f"not enough {cabin} seats on flight {flight.flight_number} on {day}: "
                f"{state.available_seats.of(cabin)} left, {passengers} needed"
            )
        return state

    def direct(db: DBView, origin: str, destination: str, day: str, leave_after: str | None = None) -> list[Any]:
        found = []
        for flight in db.flights.lookup("route", (origin, destination)):
            state = flight.dates.get(day)
            if not isinstance(state, DateAvailable):
                continue
            if leave_after is not None and flight.scheduled_departure_time_est < leave_after:
                continue
            found.append((flight, state))
        found.sort(key=lambda pair: pair[0].flight_number)
        return found

    def as_direct(flight: Flight, state: DateAvailable, day: str | None) -> DirectFlight:
        return DirectFlight(
            flight_number=flight.flight_number,
            origin=flight.origin,
            destination=flight.destination,
            scheduled_departure_time_est=flight.scheduled_departure_time_est,
            scheduled_arrival_time_est=flight.scheduled_arrival_time_est,
            date=day,
            available_seats=state.available_seats,
            prices=state.prices,
        )

    def adjust_seats(db: DBView, changes: dict[tuple[str, str], dict[str, int]]) -> None:
        """Apply seat deltas {(flight, date): {cabin: delta}}; dates no longer bookable are left alone."""
        by_flight: dict[str, dict[str, dict[str, int]]] = {}
        for (number, day), deltas in changes.items():
            by_flight.setdefault(number, {})[day] = deltas
        for number, days in sorted(by_flight.items()):
            flight = db.flights.get(number)
            if flight is None:
                continue
            dates = dict(flight.dates)
            touched = False
            for day, deltas in days.items():
                state = dates.get(day)
                if not isinstance(state, DateAvailable) or not any(deltas.values()):
                    continue
                seats = state.available_seats
                for cabin, delta in deltas.items():
                    seats = _seats(seats, cabin, delta)  # type: ignore[arg-type]
                dates[day] = state.evolve(available_seats=seats)
                touched = True
            if touched:
                db.flights.put(flight.evolve(dates=dates))

    def charge_for_update(user: User, payment_id: str, amount: int) -> tuple[User, Payment | None]:
        """Check and apply a charge (or refund when negative) for a change to an existing reservation."""
        method = user.payment_methods.get(payment_id)
        if method is None:
            raise ToolError(f"payment method {payment_id} not found in the user's profile")
        if isinstance(method, Certificate):
            raise ToolError("a certificate cannot be used to pay for a change to a reservation")
        if isinstance(method, GiftCard):
            if method.amount < amount:
                raise ToolError(f"gift card {payment_id} balance is not enough: {method.amount} < {amount}")
            methods = dict(user.payment_methods)
            methods[payment_id] = method.evolve(amount=round(method.amount - amount, 2))
            user = user.evolve(payment_methods=methods)
        return user, (Payment(payment_id=payment_id, amount=amount) if amount != 0 else None)

    def check_modifiable(reservation: Reservation) -> None:
        if reservation.status == "cancelled":
            raise ToolError(f"reservation {reservation.reservation_id} is cancelled")

    # ------------------------------------------------------------------ tools
    @tools.tool(mutates=True)
    def book_reservation(
        db: DBView,
        user_id: str,
        origin: str,
        destination: str,
        flight_type: FlightType,
        cabin: Cabin,
        flights: list[FlightInfo],
        passengers: list[PassengerInfo],
        payment_methods: list[PaymentInfo],
        total_baggages: int,
        nonfree_baggages: int,
        insurance: Insurance,
    ) -> Reservation:
        """Book a new reservation for a user and charge its price to the user's saved payment methods.

        The price is the cabin fare of every flight times the number of passengers, plus 30 dollars per
        passenger for insurance, plus 50 dollars per non-free bag. The amounts in payment_methods must add
        up to exactly that price. Gift cards and certificates must hold enough balance; a certificate is
        used up by the booking even if part of it stays unspent.

        Args:
            user_id: The id of the user making the booking, such as 'sara_doe_496'.
            origin: IATA code of the trip's origin airport, such as 'SFO'.
            destination: IATA code of the trip's destination airport, such as 'JFK'.
            flight_type: 'one_way' or 'round_trip'.
            cabin: The cabin class for every flight: 'basic_economy', 'economy' or 'business'.
            flights: Every flight segment of the trip, in order, each with flight number and date.
            passengers: Everyone travelling (at most five), each with first name, last name and date of birth.
            payment_methods: The saved payment methods to charge and how much to charge each.
            total_baggages: The total number of checked bags on the reservation.
            nonfree_baggages: How many of those bags are paid for (50 dollars each).
            insurance: 'yes' to buy travel insurance (30 dollars per passenger), otherwise 'no'.

        """
        user = get_user(db, user_id)
        if not flights:
            raise ToolError("at least one flight is required")
        if not passengers:
            raise ToolError("at least one passenger is required")
        if len(passengers) > MAX_PASSENGERS:
            raise ToolError(f"a reservation can have at most {MAX_PASSENGERS} passengers")
        if not payment_methods:
            raise ToolError("at least one payment method is required")
        if total_baggages < 0 or nonfree_baggages < 0 or nonfree_baggages > total_baggages:
            raise ToolError("baggage counts must satisfy 0 <= nonfree_baggages <= total_baggages")
        seen = set()
        for info in flights:
            key = (info.flight_number, info.date)
            if key in seen:
                raise ToolError(f"flight {info.flight_number} on {info.date} is listed twice")
            seen.add(key)
        segments: list[ReservationFlight] = []
        total = 0
        for info in flights:
            flight = get_flight(db, info.flight_number)
            state = bookable(flight, info.date, cabin, len(passengers))
            price = state.prices.of(cabin)
            segments.append(
                ReservationFlight(
                    origin=flight.origin,
                    destination=flight.destination,
                    flight_number=flight.flight_number,
                    date=info.date,
                    price=price,
                )
            )
            total += price * len(passengers)
        if segments[0].origin != origin:
            raise ToolError(f"the first flight leaves from {segments[0].origin}, not from the origin {origin}")
        if flight_type == "one_way" and segments[-1].destination != destination:
            raise ToolError(f"the last flight arrives at {segments[-1].destination}, not at {destination}")
        if flight_type == "round_trip" and destination not in {s.destination for s in segments}:
            raise ToolError(f"no flight of this round trip arrives at the destination {destination}")
        if insurance == "yes":
            total += INSURANCE_PER_PASSENGER * len(passengers)
        total += BAG_FEE * nonfree_baggages

        kinds = {"credit_card": 0, "gift_card": 0, "certificate": 0}
        methods = dict(user.payment_methods)
        for pay in payment_methods:
            method = methods.get(pay.payment_id)
            if method is None:
                raise ToolError(f"payment method {pay.payment_id} not found in the user's profile")
            if pay.amount < 0:
                raise ToolError("payment amounts cannot be negative")
            kinds[method.source] += 1
            if isinstance(method, GiftCard | Certificate) and method.amount < pay.amount:
                raise ToolError(f"not enough balance on {pay.payment_id}: {method.amount} < {pay.amount}")
        if len({p.payment_id for p in payment_methods}) != len(payment_methods):
            raise ToolError("each payment method may appear only once")
        if kinds["certificate"] > 1 or kinds["credit_card"] > 1 or kinds["gift_card"] > MAX_GIFT_CARDS:
            raise ToolError("a booking may use at most one certificate, one credit card and three gift cards")
        paid = sum(p.amount for p in payment_methods)
        if paid != total:
            raise ToolError(f"payment amounts do not add up: the total price is {total}, but {paid} was given")

        for pay in payment_methods:
            method = methods[pay.payment_id]
            if isinstance(method, GiftCard):
                methods[pay.payment_id] = method.evolve(amount=round(method.amount - pay.amount, 2))
            elif isinstance(method, Certificate):
                del methods[pay.payment_id]
        reservation = Reservation(
            reservation_id=new_reservation_id(db),
            user_id=user.user_id,
            origin=origin,
            destination=destination,
            flight_type=flight_type,
            cabin=cabin,
            flights=tuple(segments),
            passengers=tuple(Passenger(**p.model_dump()) for p in passengers),
            payment_history=tuple(Payment(payment_id=p.payment_id, amount=p.amount) for p in payment_methods),
            created_at=NOW,
            total_baggages=total_baggages,
            nonfree_baggages=nonfree_baggages,
            insurance=insurance,
        )
        adjust_seats(db, {(s.flight_number, s.date): {cabin: -len(passengers)} for s in segments})
        db.reservations.put(reservation)
        db.users.put(
            user.evolve(payment_methods=methods, reservations=(*user.reservations, reservation.reservation_id))
        )
        return reservation

    @tools.tool
    def calculate(db: DBView, expression: str) -> str:
        """Calculate an arithmetic expression and return the result rounded to two decimals.

        Args:
            expression: The expression, using numbers, + - * /, parentheses and spaces, such as '2 * (120 + 30)'.

        """
        return str(round(evaluate(expression), 2))

    @tools.tool(mutates=True)
    def cancel_reservation(db: DBView, reservation_id: str) -> Reservation:
        """Cancel a whole reservation and refund every payment on it to the original payment methods.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.

        """
        reservation = get_reservation(db, reservation_id)
        check_modifiable(reservation)
        refunds = tuple(Payment(payment_id=p.payment_id, amount=-p.amount) for p in reservation.payment_history)
        updated = reservation.evolve(payment_history=(*reservation.payment_history, *refunds), status="cancelled")
        if seat_accounting:
            n = len(reservation.passengers)
            adjust_seats(db, {(s.flight_number, s.date): {reservation.cabin: n} for s in reservation.flights})
        db.reservations.put(updated)
        return updated

    @tools.tool
    def get_reservation_details(db: DBView, reservation_id: str) -> Reservation:
        """Look up a reservation: flights, passengers, cabin, baggage, insurance and payments.

        Args:
            reservation_id: The reservation id, such as '8JX2WO'.

        """
        return get_reservation(db, reservation_id)

    @tools.tool
    def get_user_details(db: DBView, user_id: str) -> User:
        """Look up a user's profile: name, contact, membership, saved payment methods, saved passengers and
        reservation ids.

        Args:
            user_id: The user id, such as 'sara_doe_496'.

        """
        return get_user(db, user_id)

    @tools.tool
    def list_all_airports(db: DBView) -> list[Airport]:
        """List every airport the airline flies to, with its IATA code and city."""
        return list(airport_list)

    @tools.tool
    def search_direct_flight(db: DBView, origin: str, destination: str, date: str) -> list[DirectFlight]:
        """Find nonstop flights between two airports that can still be booked on a date.

        Args:
            origin: IATA code of the departure airport, such as 'JFK'.
            destination: IATA code of the arrival airport, such as 'LAX'.
            date: The departure date as 'YYYY-MM-DD', such as '2024-05-20'.

        """
        _parse_date(date)
        return [as_direct(flight, state, None) for flight, state in direct(db, origin, destination, date)]

    @tools.tool
    def search_onestop_flight(
        db: DBView, origin: str, destination: str, date: str
    ) -> list[tuple[DirectFlight, DirectFlight]]:
        """Find bookable connections with exactly one stop between two airports, leaving on a date.

        The second flight leaves the connecting airport after the first one lands (on the next day when
        the first lands after midnight).

        Args:
            origin: IATA code of the departure airport, such as 'JFK'.
            destination: IATA code of the final arrival airport, such as 'LAX'.
            date: The departure date of the first flight as 'YYYY-MM-DD', such as '2024-05-20'.

        """
        first_day = _parse_date(date)
        results = []
        legs = sorted(db.flights.lookup("origin", origin), key=lambda f: f.flight_number)
        for first in legs:
            state = first.dates.get(date)
            if not isinstance(state, DateAvailable) or first.destination in (origin, destination):
                continue
            overnight = "+1" in first.scheduled_arrival_time_est
            day2 = (first_day + timedelta(days=1)).isoformat() if overnight else date
            for second, state2 in direct(
                db, first.destination, destination, day2, leave_after=_clock(first.scheduled_arrival_time_est)
            ):
                results.append((as_direct(first, state, date), as_direct(second, state2, day2)))
        return results

    @tools.tool(mutates=True)
    def send_certificate(db: DBView, user_id: str, amount: int) -> str:
        """Add a travel certificate worth a number of dollars to a user's profile, as compensation. Only do
        this when the policy allows it.

        Args:
            user_id: The id of the user to compensate, such as 'sara_doe_496'.
            amount: The certificate's value in whole dollars, greater than zero.

        """
        user = get_user(db, user_id)
        if amount <= 0:
            raise ToolError("the certificate amount must be positive")
        certificate_id = new_certificate_id(user)
        methods = dict(user.payment_methods)
        methods[certificate_id] = Certificate(source="certificate", id=certificate_id, amount=float(amount))
        db.users.put(user.evolve(payment_methods=methods))
        return f"Certificate {certificate_id} added to user {user_id} with amount {amount}."

    @tools.tool
    def think(db: DBView, thought: str) -> str:
        """Write down a thought, for reasoning or keeping notes. It neither fetches information nor changes
        anything.

        Args:
            thought: The thought.

        """
        return ""

    @tools.tool(terminal=True)
    def transfer_to_human_agents(db: DBView, summary: str) -> str:
        """Hand the user over to a human agent, with a summary of the issue. Do this only when the user asks
        for a human, or when the request cannot be handled within the policy with the tools available.

        Args:
            summary: A short summary of the user's issue.

        """
        return "Transfer successful"

    @tools.tool(mutates=True)
    def update_reservation_baggages(
        db: DBView, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
    ) -> Reservation:
        """Change the number of checked bags on a reservation; new non-free bags cost 50 dollars each,
        charged to a saved credit card or gift card.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            total_baggages: The new total number of checked bags on the reservation.
            nonfree_baggages: The new number of paid bags on the reservation.
            payment_id: A payment method id from the user's profile, such as 'credit_card_7815826' or
                'gift_card_7815826'.

        """
        reservation = get_reservation(db, reservation_id)
        check_modifiable(reservation)
        user = get_user(db, reservation.user_id)
        if total_baggages < 0 or nonfree_baggages < 0 or nonfree_baggages > total_baggages:
            raise ToolError("baggage counts must satisfy 0 <= nonfree_baggages <= total_baggages")
        if total_baggages < reservation.total_baggages:
            raise ToolError("checked bags can be added but not removed")
        price = BAG_FEE * max(0, nonfree_baggages - reservation.nonfree_baggages)
        user, payment = charge_for_update(user, payment_id, price)
        history = reservation.payment_history if payment is None else (*reservation.payment_history, payment)
        updated = reservation.evolve(
            total_baggages=total_baggages, nonfree_baggages=nonfree_baggages, payment_history=history
        )
        db.reservations.put(updated)
        db.users.put(user)
        return updated

    @tools.tool(mutates=True)
    def update_reservation_flights(
        db: DBView, reservation_id: str, cabin: Cabin, flights: list[FlightInfo], payment_id: str
    ) -> Reservation:
        """Change the flights and/or the cabin of a reservation, paying or refunding the fare difference
        through a saved credit card or gift card.

        Segments kept in the same cabin keep the price paid for them; new segments, and all segments when
        the cabin changes, are priced at today's fare.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            cabin: The cabin class for the whole reservation: 'basic_economy', 'economy' or 'business'.
            flights: Every flight segment of the updated reservation, in order, each with flight number and
                date; include unchanged segments too.
            payment_id: A payment method id from the user's profile, such as 'credit_card_7815826' or
                'gift_card_7815826'.

        """
        reservation = get_reservation(db, reservation_id)
        check_modifiable(reservation)
        user = get_user(db, reservation.user_id)
        if not flights:
            raise ToolError("at least one flight is required")
        n = len(reservation.passengers)
        old = {(s.flight_number, s.date): s for s in reservation.flights}
        new_keys = [(f.flight_number, f.date) for f in flights]
        if len(set(new_keys)) != len(new_keys):
            raise ToolError("a flight is listed twice")
        if reservation.cabin == "basic_economy" and set(new_keys) != set(old):
            raise ToolError("flights of a basic economy reservation cannot be changed")
        segments: list[ReservationFlight] = []
        total = 0
        for info in flights:
            flight = get_flight(db, info.flight_number)
            kept = old.get((flight.flight_number, info.date))
            if kept is not None and cabin == reservation.cabin:
                segments.append(kept)
                total += kept.price * n
                continue
            state = bookable(flight, info.date, cabin, n)
            segment = ReservationFlight(
                origin=flight.origin,
                destination=flight.destination,
                flight_number=flight.flight_number,
                date=info.date,
                price=state.prices.of(cabin),
            )
            segments.append(segment)
            total += segment.price * n
        if segments[0].origin != reservation.origin:
            raise ToolError(f"the trip must still start at {reservation.origin}")
        if reservation.flight_type == "one_way" and segments[-1].destination != reservation.destination:
            raise ToolError(f"the trip must still end at {reservation.destination}")
        total -= sum(s.price for s in reservation.flights) * n
        user, payment = charge_for_update(user, payment_id, total)
        history = reservation.payment_history if payment is None else (*reservation.payment_history, payment)
        updated = reservation.evolve(flights=tuple(segments), cabin=cabin, payment_history=history)
        if seat_accounting:
            deltas: dict[tuple[str, str], dict[str, int]] = {}
            for s in reservation.flights:
                deltas.setdefault((s.flight_number, s.date), {}).setdefault(reservation.cabin, 0)
                deltas[(s.flight_number, s.date)][reservation.cabin] += n
            for s in segments:
                deltas.setdefault((s.flight_number, s.date), {}).setdefault(cabin, 0)
                deltas[(s.flight_number, s.date)][cabin] -= n
            adjust_seats(db, deltas)
        db.reservations.put(updated)
        db.users.put(user)
        return updated

    @tools.tool(mutates=True)
    def update_reservation_passengers(db: DBView, reservation_id: str, passengers: list[PassengerInfo]) -> Reservation:
        """Replace the passenger details of a reservation; the number of passengers cannot change.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            passengers: Every passenger of the reservation, in order, each with first name, last name and date
                of birth.

        """
        reservation = get_reservation(db, reservation_id)
        check_modifiable(reservation)
        if len(passengers) != len(reservation.passengers):
            raise ToolError(
                f"the number of passengers cannot change: the reservation has {len(reservation.passengers)}, "
                f"{len(passengers)} were given"
            )
        updated = reservation.evolve(passengers=tuple(Passenger(**p.model_dump()) for p in passengers))
        db.reservations.put(updated)
        return updated

    @tools.tool
    def get_flight_status(db: DBView, flight_number: str, date: str) -> str:
        """Get the status of a flight on a date: 'available', 'on time', 'delayed', 'flying', 'landed' or
        'cancelled'.

        Args:
            flight_number: The flight number, such as 'HAT001'.
            date: The date as 'YYYY-MM-DD', such as '2024-05-15'.

        """
        state = get_flight(db, flight_number).dates.get(date)
        if state is None:
            raise ToolError(f"flight {flight_number} does not operate on {date}")
        return state.status

    return tools


def index_keys() -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    """The secondary indexes the tools look up: (table, name, key function)."""
    return (
        ("flights", "route", lambda f: (f.origin, f.destination)),
        ("flights", "origin", lambda f: f.origin),
    )


__all__ = ["NOW", "build_tools", "evaluate", "index_keys", "new_certificate_id", "new_reservation_id", "next_id"]
