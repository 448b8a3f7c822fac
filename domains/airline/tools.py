"""Tools of the airline domain, with tau-bench's names and arguments and each peer's exact behaviour.

One implementation serves every semantics profile (:mod:`apigen_envs.semantics`). Where tau-bench v1 and
tau2-bench differ, the profile's ``tools_of`` picks the peer; the differences, each pinned by the
differential tests against the peers' own code (``tests/peers/``), are:

* error texts (v1 ``reservation not found``, tau2 ``Reservation ZFA04Y not found``; v1's
  ``get_reservation_details`` says ``user not found``);
* tau2 builds segments, passengers, payments and reservations through its record types (extra keys
  dropped, ill-typed values refused); v1 stores what the agent sent, extra keys included;
* tau2 takes seats from the flights when booking and sets the cabin when flights change; v1 does neither;
* search results: v1 merges the flight and its date entry; tau2 returns its ``DirectFlight`` records;
  v1's one-stop search shows the second flight's seats and prices of the first flight's date;
* ``list_all_airports``: v1 a code -> city object, tau2 a list of ``{iata, city}``;
* new ids: both peers hand out at most three (``HATHAT``/``HATHAU``/``HATHAV``, certificates
  ``3221322``..``3221324``); v1 then overwrites or answers nothing, tau2 refuses;
* v1 offers ``think``; tau2 offers ``get_flight_status``.

Under ``fix_peer_defects`` (``apigen``): ids count up without limit, the one-stop search uses real date
arithmetic (both peers build ``2024-05-<day+1>``, which misses padded and month-end dates), and
``list_all_airports`` lists the airports the DB's flights serve. ``seat_accounting`` (off in every
profile) takes seats when booking and changing flights and gives them back when cancelling or changing.

Tools refuse only what the peer's tool refuses: the policy (basic economy, 24-hour rule, who may
cancel, payment limits) is the agent's to follow. The docstrings are our own words.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from datetime import date as Date
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from apigen_envs.calculator import ALLOWED_CHARACTERS
from apigen_envs.calculator import calculate as arithmetic
from apigen_envs.db import DBView, copy_row, own
from apigen_envs.errors import ToolError
from apigen_envs.semantics import Semantics, call_convention
from apigen_envs.tools import ToolSet

from .models import (
    AirportCode,
    Cabin,
    Certificate,
    DirectFlight,
    FlightInfo,
    FlightType,
    Insurance,
    Passenger,
    PassengerInfo,
    Payment,
    PaymentInfo,
    Reservation,
    ReservationFlight,
)

NOW = "2024-05-15T15:00:00"
"""The fixed current time of the domain (EST), as both peers fix it."""
FIRST_RESERVATION_ID = "HATHAT"
"""The first id handed to a new reservation; later ones count up from it in base 36."""
CERTIFICATE_NUMBERS = (3221322, 3221323, 3221324)
"""The numbers the peers give new certificates (``certificate_<n>``), in order."""
BAG_FEE = 50
INSURANCE_PER_PASSENGER = 30

PEER_AIRPORTS: tuple[tuple[str, str], ...] = (
    ("SFO", "San Francisco"),
    ("JFK", "New York"),
    ("LAX", "Los Angeles"),
    ("ORD", "Chicago"),
    ("DFW", "Dallas"),
    ("DEN", "Denver"),
    ("SEA", "Seattle"),
    ("ATL", "Atlanta"),
    ("MIA", "Miami"),
    ("BOS", "Boston"),
    ("PHX", "Phoenix"),
    ("IAH", "Houston"),
    ("LAS", "Las Vegas"),
    ("MCO", "Orlando"),
    ("EWR", "Newark"),
    ("CLT", "Charlotte"),
    ("MSP", "Minneapolis"),
    ("DTW", "Detroit"),
    ("PHL", "Philadelphia"),
    ("LGA", "LaGuardia"),
)
"""The airport list both peers return, whatever the DB holds."""

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

MESSAGES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "tau-bench": MappingProxyType(
            {
                "user": "user not found",
                "reservation": "reservation not found",
                "details": "user not found",
                "flight": "flight {number} not found",
                "flight_date": "flight {number} not found on date {date}",
                "unavailable": "flight {number} not available on date {date}",
                "seats": "not enough seats on flight {number}",
                "payment": "payment method not found",
                "booking_payment": "payment method {payment} not found",
                "balance": "not enough balance in payment method {payment}",
                "sum": "payment amount does not add up, total price is {total}, but paid {paid}",
                "certificate_update": "certificate cannot be used to update reservation",
                "gift_balance": "gift card balance is not enough",
                "passengers": "number of passengers does not match",
                "chars": "invalid characters in expression",
            }
        ),
        "tau2": MappingProxyType(
            {
                "user": "User {user} not found",
                "reservation": "Reservation {reservation} not found",
                "details": "Reservation {reservation} not found",
                "flight": "Flight {number} not found",
                "flight_date": "Flight {number} not found on date {date}",
                "unavailable": "Flight {number} not available on date {date}",
                "seats": "Not enough seats on flight {number}",
                "payment": "Payment method not found",
                "booking_payment": "Payment method {payment} not found",
                "balance": "Not enough balance in payment method {payment}",
                "sum": "Payment amount does not add up, total price is {total}, but paid {paid}",
                "certificate_update": "Certificate cannot be used to update reservation",
                "gift_balance": "Gift card balance is not enough",
                "passengers": "Number of passengers does not match",
                "chars": "Invalid characters in expression",
                "too_many_reservations": "Too many reservations",
                "too_many_certificates": "Too many certificates",
            }
        ),
    }
)

_COMMON = (
    "book_reservation",
    "calculate",
    "cancel_reservation",
    "get_reservation_details",
    "get_user_details",
    "list_all_airports",
    "search_direct_flight",
    "search_onestop_flight",
    "send_certificate",
)
_UPDATES = ("update_reservation_baggages", "update_reservation_flights", "update_reservation_passengers")
TOOL_LISTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "tau-bench": (*_COMMON, "think", "transfer_to_human_agents", *_UPDATES),
        "tau2": (*_COMMON, "transfer_to_human_agents", *_UPDATES, "get_flight_status"),
        "extra": ("get_flight_status", "think"),
    }
)
"""The tools each peer offers (both 14), and our additions."""


def next_id(current: str) -> str:
    """The base-36 successor of an upper-case alphanumeric id of fixed width (``HATHAT`` -> ``HATHAU``)."""
    digits = [_ID_ALPHABET.index(c) for c in current]
    for i in range(len(digits) - 1, -1, -1):
        digits[i] += 1
        if digits[i] < len(_ID_ALPHABET):
            break
        digits[i] = 0
    return "".join(_ID_ALPHABET[d] for d in digits)


def index_keys() -> tuple[tuple[str, str, Any], ...]:
    """The secondary indexes the tools look up: (table, name, key function)."""
    return (
        ("flights", "route", lambda f: (f["origin"], f["destination"])),
        ("flights", "origin", lambda f: f["origin"]),
    )


def build_tools(semantics: Semantics | None = None, airports: Iterable[tuple[str, str]] | None = None) -> ToolSet:
    """Build the airline ToolSet for a semantics profile.

    Args:
        semantics: The profile (default ``apigen``).
        airports: (IATA code, city) of the airports the DB's flights serve, listed by ``list_all_airports``
            under ``fix_peer_defects``; the peers' fixed list otherwise.

    Returns:
        A fresh ToolSet holding the profile's tools, in the peer's order.

    """
    sem = semantics or Semantics.named("apigen")
    v1 = sem.tools_of == "tau-bench"
    text = MESSAGES[sem.tools_of]
    served = tuple(airports) if airports is not None and sem.fix_peer_defects else PEER_AIRPORTS
    tools = ToolSet(convention=call_convention(sem, "airline", "AirlineTools"))

    def fail(key: str, **fields: Any) -> ToolError:
        return ToolError(text[key].format(**fields))

    # ------------------------------------------------------------------ lookups (tau2 wording by id)
    def user_of(db: DBView, user_id: Any, *, edit: bool = False) -> dict[str, Any]:
        if user_id not in db.users:
            raise fail("user", user=user_id)
        return db.users.edit(user_id) if edit else db.users[user_id]

    def reservation_of(db: DBView, reservation_id: Any, *, edit: bool = False, key: str = "reservation") -> Any:
        if reservation_id not in db.reservations:
            raise fail(key, reservation=reservation_id)
        return db.reservations.edit(reservation_id) if edit else db.reservations[reservation_id]

    def flight_of(db: DBView, number: Any) -> dict[str, Any]:
        if number not in db.flights:
            raise fail("flight", number=number)
        return db.flights[number]

    def flight_date(db: DBView, number: Any, day: Any) -> dict[str, Any]:
        flight = flight_of(db, number)
        if day not in flight["dates"]:
            raise fail("flight_date", number=number, date=day)
        return flight["dates"][day]

    def new_reservation_id(db: DBView) -> str:
        if sem.fix_peer_defects:
            candidate = FIRST_RESERVATION_ID
            while candidate in db.reservations:
                candidate = next_id(candidate)
            return candidate
        for candidate in ("HATHAT", "HATHAU", "HATHAV"):
            if candidate not in db.reservations:
                return candidate
        if v1:  # v1 tries two more ids, then reuses the last one (overwriting that reservation)
            return "HATHAV"
        raise fail("too_many_reservations")

    def move_seats(db: DBView, segments: Iterable[tuple[str, str]], cabin: str, delta: int) -> None:
        for number, day in segments:
            state = db.flights[number]["dates"].get(day)
            if isinstance(state, dict) and state.get("status") == "available" and cabin in state["available_seats"]:
                own(db.flights.edit(number), "dates", day, "available_seats")[cabin] += delta

    def models_if_dicts(values: Any, model: Any) -> Any:
        # tau2 converts a list only when every element is a dict, and then validates each one.
        if all(isinstance(v, dict) for v in values):
            return [model(**v) for v in values]
        return values

    def charge_for_update(db: DBView, user_id: str, payment_id: Any, total: Any) -> dict[str, Any] | None:
        """Check and take an update's payment: the new payment record, or None when nothing is due."""
        user = db.users[user_id]
        if payment_id not in user["payment_methods"]:
            raise fail("payment")
        method = user["payment_methods"][payment_id]
        if method["source"] == "certificate":
            raise fail("certificate_update")
        if method["source"] == "gift_card" and method["amount"] < total:
            raise fail("gift_balance")
        if method["source"] == "gift_card":
            own(db.users.edit(user_id), "payment_methods", payment_id)["amount"] -= total
        if total == 0:
            return None
        if v1:
            return {"payment_id": payment_id, "amount": total}
        return payment_record(payment_id, total)

    def next_day(day: Any) -> str:
        if sem.fix_peer_defects:
            return (Date.fromisoformat(day) + timedelta(days=1)).isoformat()
        return f"2024-05-{int(day[-2:]) + 1}"

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
    ) -> Any:
        """Book a new reservation for a user, paying the full price with saved payment methods. The price is
        each flight's current fare in the cabin times the number of passengers, plus 30 dollars per passenger
        for insurance, plus 50 dollars per non-free bag; the payment amounts must add up to it exactly.
        Returns the new reservation.

        Args:
            user_id: The id of the user who books, such as 'sara_doe_496'.
            origin: IATA code of the trip's origin, such as 'SFO'.
            destination: IATA code of the trip's destination, such as 'JFK'.
            flight_type: 'one_way' or 'round_trip'.
            cabin: 'basic_economy', 'economy' or 'business', for every flight.
            flights: Every flight segment of the trip, in order, each with flight number and date.
            passengers: Every passenger, each with first name, last name and date of birth.
            payment_methods: The saved payment methods to charge, each with its payment id and amount.
            total_baggages: The total number of checked bags.
            nonfree_baggages: How many of those bags are paid for.
            insurance: 'yes' or 'no'.

        """
        if v1:
            return _book_v1(
                db,
                user_id,
                origin,
                destination,
                flight_type,
                cabin,
                flights,
                passengers,
                payment_methods,
                total_baggages,
                nonfree_baggages,
                insurance,
            )
        flights = models_if_dicts(flights, FlightInfo)
        passengers = models_if_dicts(passengers, Passenger)
        payment_methods = models_if_dicts(payment_methods, Payment)
        user = user_of(db, user_id)
        reservation_id = new_reservation_id(db)
        reservation = Reservation(
            reservation_id=reservation_id,
            user_id=user_id,
            origin=origin,
            destination=destination,
            flight_type=flight_type,
            cabin=cabin,
            flights=[],
            passengers=copy.deepcopy(passengers),
            payment_history=copy.deepcopy(payment_methods),
            created_at=NOW,
            total_baggages=total_baggages,
            nonfree_baggages=nonfree_baggages,
            insurance=insurance,
        )
        total: Any = 0
        taken: list[tuple[str, str]] = []
        for info in flights:
            number = info.flight_number
            flight = flight_of(db, number)
            state = flight_date(db, number, info.date)
            if state["status"] != "available":
                raise fail("unavailable", number=number, date=info.date)
            if state["available_seats"][cabin] < len(passengers):
                raise fail("seats", number=number)
            price = state["prices"][cabin]
            reservation.flights.append(
                ReservationFlight(
                    origin=flight["origin"],
                    destination=flight["destination"],
                    flight_number=number,
                    date=info.date,
                    price=price,
                )
            )
            taken.append((number, info.date))
            total += price * len(passengers)
        if insurance == "yes":
            total += INSURANCE_PER_PASSENGER * len(passengers)
        total += BAG_FEE * nonfree_baggages
        for pay in payment_methods:
            if pay.payment_id not in user["payment_methods"]:
                raise fail("booking_payment", payment=pay.payment_id)
            method = user["payment_methods"][pay.payment_id]
            if method["source"] in {"gift_card", "certificate"} and method["amount"] < pay.amount:
                raise fail("balance", payment=pay.payment_id)
        paid = sum(pay.amount for pay in payment_methods)
        if paid != total:
            raise fail("sum", total=total, paid=paid)
        user = user_of(db, user_id, edit=True)
        methods = own(user, "payment_methods")
        for pay in payment_methods:
            if methods[pay.payment_id]["source"] == "gift_card":
                method = methods[pay.payment_id] = dict(methods[pay.payment_id])
                method["amount"] -= pay.amount
            elif methods[pay.payment_id]["source"] == "certificate":
                methods.pop(pay.payment_id)
        move_seats(db, taken, cabin, -len(passengers))  # tau2 takes the seats at booking
        row = reservation.model_dump()
        db.reservations.put(reservation_id, row)
        own(user, "reservations").append(reservation_id)
        return row

    def _book_v1(
        db: DBView,
        user_id: Any,
        origin: Any,
        destination: Any,
        flight_type: Any,
        cabin: Any,
        flights: Any,
        passengers: Any,
        payment_methods: Any,
        total_baggages: Any,
        nonfree_baggages: Any,
        insurance: Any,
    ) -> Any:
        if user_id not in db.users:
            raise fail("user")
        user = db.users[user_id]
        reservation_id = new_reservation_id(db)
        reservation = {
            "reservation_id": reservation_id,
            "user_id": user_id,
            "origin": origin,
            "destination": destination,
            "flight_type": flight_type,
            "cabin": cabin,
            "flights": copy.deepcopy(flights),
            # v1 stores the agent's lists themselves; copies keep the row apart from the conversation.
            "passengers": copy_row(passengers),
            "payment_history": copy_row(payment_methods),
            "created_at": NOW,
            "total_baggages": total_baggages,
            "nonfree_baggages": nonfree_baggages,
            "insurance": insurance,
        }
        total: Any = 0
        taken: list[tuple[str, str]] = []
        for segment in reservation["flights"]:
            number = segment["flight_number"]
            if number not in db.flights:
                raise fail("flight", number=number)
            flight = db.flights[number]
            if segment["date"] not in flight["dates"]:
                raise fail("flight_date", number=number, date=segment["date"])
            state = flight["dates"][segment["date"]]
            if state["status"] != "available":
                raise fail("unavailable", number=number, date=segment["date"])
            if state["available_seats"][cabin] < len(passengers):
                raise fail("seats", number=number)
            segment["price"] = state["prices"][cabin]
            segment["origin"] = flight["origin"]
            segment["destination"] = flight["destination"]
            taken.append((number, segment["date"]))
            total += segment["price"] * len(passengers)
        if insurance == "yes":
            total += INSURANCE_PER_PASSENGER * len(passengers)
        total += BAG_FEE * nonfree_baggages
        for pay in payment_methods:
            payment_id, amount = pay["payment_id"], pay["amount"]
            if payment_id not in user["payment_methods"]:
                raise fail("booking_payment", payment=payment_id)
            method = user["payment_methods"][payment_id]
            if method["source"] in ["gift_card", "certificate"] and method["amount"] < amount:
                raise fail("balance", payment=payment_id)
        paid = sum(pay["amount"] for pay in payment_methods)
        if paid != total:
            raise fail("sum", total=total, paid=paid)
        user = db.users.edit(user_id)
        methods = own(user, "payment_methods")
        for pay in payment_methods:
            payment_id, amount = pay["payment_id"], pay["amount"]
            if methods[payment_id]["source"] == "gift_card":
                method = methods[payment_id] = dict(methods[payment_id])
                method["amount"] -= amount
            elif methods[payment_id]["source"] == "certificate":
                del methods[payment_id]
        if sem.seat_accounting:
            move_seats(db, taken, cabin, -len(passengers))
        db.reservations.put(reservation_id, reservation)
        own(user, "reservations").append(reservation_id)
        return reservation

    @tools.tool
    def calculate(db: DBView, expression: str) -> str:
        """Evaluate an arithmetic expression and return the result rounded to two decimals.

        Args:
            expression: The expression, using numbers, + - * /, parentheses and spaces, such as '2 * (120 + 30)'.

        """
        if not all(char in ALLOWED_CHARACTERS for char in expression):
            raise fail("chars")
        try:
            return arithmetic(expression)
        except Exception as exc:  # noqa: BLE001 - eval's own errors are the answer, in every profile
            raise ToolError(str(exc)) from None

    @tools.tool(mutates=True)
    def cancel_reservation(db: DBView, reservation_id: str) -> Any:
        """Cancel a whole reservation; every payment on it is refunded to the payment method it came from.
        Returns the updated reservation.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.

        """
        reservation = reservation_of(db, reservation_id, edit=True)
        refunds = []
        for paid in reservation["payment_history"]:
            if v1:
                refunds.append({"payment_id": paid["payment_id"], "amount": -paid["amount"]})
            else:
                refunds.append(payment_record(paid["payment_id"], -paid["amount"]))
        own(reservation, "payment_history").extend(refunds)
        reservation["status"] = "cancelled"
        if sem.seat_accounting:
            segments = [(s["flight_number"], s["date"]) for s in reservation["flights"]]
            move_seats(db, segments, reservation["cabin"], len(reservation["passengers"]))
        return reservation

    @tools.tool
    def get_reservation_details(db: DBView, reservation_id: str) -> Any:
        """Look up a reservation: flights, passengers, cabin, baggage, insurance and payments.

        Args:
            reservation_id: The reservation id, such as '8JX2WO'.

        """
        return reservation_of(db, reservation_id, key="details")

    @tools.tool
    def get_user_details(db: DBView, user_id: str) -> Any:
        """Look up a user's profile: name, contact, membership, saved payment methods (with balances),
        saved passengers and reservation ids.

        Args:
            user_id: The user id, such as 'sara_doe_496'.

        """
        return user_of(db, user_id)

    @tools.tool
    def list_all_airports(db: DBView) -> Any:
        """List every airport the airline flies to, with its IATA code and city."""
        if v1:
            return json.dumps(dict(served))
        return [AirportCode(iata=code, city=city).model_dump() for code, city in served]

    def direct_v2(db: DBView, day: Any, origin: Any, destination: Any, leave_after: Any = None) -> list[dict]:
        """tau2's direct-flight search: flights in table order, available on the day."""
        if origin is not None and destination is not None:
            try:
                candidates = db.flights.lookup("route", (origin, destination))
            except TypeError:  # unhashable: no flight's codes can equal it
                candidates = []
        elif origin is not None:
            try:
                candidates = db.flights.lookup("origin", origin)
            except TypeError:
                candidates = []
        else:
            candidates = [f for f in db.flights.values() if destination is None or f["destination"] == destination]
        found = []
        for flight in candidates:
            state = flight["dates"].get(day) if _hashable(day) else None
            if day not in flight["dates"] or state["status"] != "available":
                continue
            if leave_after is not None and not flight["scheduled_departure_time_est"] >= leave_after:
                continue
            found.append(
                DirectFlight(
                    flight_number=flight["flight_number"],
                    origin=flight["origin"],
                    destination=flight["destination"],
                    status="available",
                    scheduled_departure_time_est=flight["scheduled_departure_time_est"],
                    scheduled_arrival_time_est=flight["scheduled_arrival_time_est"],
                    available_seats=state["available_seats"],
                    prices=state["prices"],
                )
            )
        return found

    @tools.tool
    def search_direct_flight(db: DBView, origin: str, destination: str, date: str) -> Any:
        """Find nonstop flights between two airports that can still be booked on a date, with their seats
        left and prices per cabin.

        Args:
            origin: IATA code of the departure airport, such as 'JFK'.
            destination: IATA code of the arrival airport, such as 'LAX'.
            date: The departure date as 'YYYY-MM-DD', such as '2024-05-20'.

        """
        if v1:
            results = []
            for flight in _route(db, origin, destination):
                if date in flight["dates"] and flight["dates"][date]["status"] == "available":
                    result = {k: v for k, v in flight.items() if k != "dates"}
                    result.update(flight["dates"][date])
                    results.append(result)
            return json.dumps(results)
        return [f.model_dump() for f in direct_v2(db, date, origin, destination)]

    @tools.tool
    def search_onestop_flight(db: DBView, origin: str, destination: str, date: str) -> Any:
        """Find bookable connections with exactly one stop between two airports, leaving on a date. The
        second flight leaves the connecting airport after the first one lands (on the next day when the
        first lands after midnight).

        Args:
            origin: IATA code of the departure airport, such as 'JFK'.
            destination: IATA code of the final arrival airport, such as 'LAX'.
            date: The departure date of the first flight as 'YYYY-MM-DD', such as '2024-05-20'.

        """
        if v1:
            return json.dumps(_onestop_v1(db, origin, destination, date))
        results = []
        for first in direct_v2(db, date, origin, None):
            first.date = date
            day2 = next_day(date) if "+1" in first.scheduled_arrival_time_est else date
            leave_after = first.scheduled_arrival_time_est
            if sem.fix_peer_defects:  # compare clock times; the peers compare "01:30:00+1" as text
                leave_after = leave_after.split("+", 1)[0]
            for second in direct_v2(db, day2, first.destination, destination, leave_after):
                second.date = day2
                results.append([first, second])
        return [[a.model_dump(), b.model_dump()] for a, b in results]

    def _onestop_v1(db: DBView, origin: Any, destination: Any, day: Any) -> list[Any]:
        results = []
        try:
            firsts = db.flights.lookup("origin", origin)
        except TypeError:
            firsts = []
        for first in firsts:
            for second in _route(db, first["destination"], destination):
                day2 = next_day(day) if "+1" in first["scheduled_arrival_time_est"] else day
                if first["scheduled_arrival_time_est"] > second["scheduled_departure_time_est"]:
                    continue
                if (
                    day in first["dates"]
                    and day2 in second["dates"]
                    and first["dates"][day]["status"] == "available"
                    and second["dates"][day2]["status"] == "available"
                ):
                    leg1 = {k: v for k, v in first.items() if k != "dates"}
                    leg1.update(first["dates"][day])
                    leg1["date"] = day
                    leg2 = {k: v for k, v in second.items() if k != "dates"}
                    leg2.update(second["dates"][day2 if sem.fix_peer_defects else day])
                    leg2["date"] = day2
                    results.append([leg1, leg2])
        return results

    @tools.tool(mutates=True)
    def send_certificate(db: DBView, user_id: str, amount: int) -> str:
        """Add a travel certificate worth a number of dollars to a user's profile, as compensation.

        Args:
            user_id: The id of the user to compensate, such as 'sara_doe_496'.
            amount: The certificate's value in dollars.

        """
        user = user_of(db, user_id)
        numbers: Iterable[int] = CERTIFICATE_NUMBERS
        if sem.fix_peer_defects:
            numbers = range(CERTIFICATE_NUMBERS[0], CERTIFICATE_NUMBERS[0] + len(user["payment_methods"]) + 3)
        for number in numbers:
            payment_id = f"certificate_{number}"
            if payment_id not in user["payment_methods"]:
                if v1:
                    certificate = {"source": "certificate", "amount": amount, "id": payment_id}
                else:
                    certificate = Certificate(id=payment_id, amount=amount, source="certificate").model_dump()
                own(db.users.edit(user_id), "payment_methods")[payment_id] = certificate
                return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
        if v1:
            return "None"  # v1's tool returns None here; its env then fails to build the observation
        raise fail("too_many_certificates")

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
        for a human, or when the request cannot be handled within the policy with the tools available. The
        conversation ends after the transfer.

        Args:
            summary: A short summary of the user's issue.

        """
        return "Transfer successful"

    @tools.tool(mutates=True)
    def update_reservation_baggages(
        db: DBView, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
    ) -> Any:
        """Change the number of checked bags on a reservation. Each added non-free bag costs 50 dollars,
        charged to a saved credit card or gift card (not a certificate). Returns the updated reservation.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            total_baggages: The new total number of checked bags on the reservation.
            nonfree_baggages: The new number of paid bags on the reservation.
            payment_id: A payment method id from the user's profile, such as 'credit_card_7815826' or
                'gift_card_7815826'.

        """
        reservation = reservation_of(db, reservation_id)
        if not v1:
            user_of(db, reservation["user_id"])
        total = BAG_FEE * max(0, nonfree_baggages - reservation["nonfree_baggages"])
        if v1:
            # v1 sets the bag counts before it takes the payment (the same end state; no error in between).
            payment = charge_for_update(db, reservation["user_id"], payment_id, total)
            reservation = db.reservations.edit(reservation_id)
            reservation["total_baggages"] = total_baggages
            reservation["nonfree_baggages"] = nonfree_baggages
            if payment is not None:
                own(reservation, "payment_history").append(payment)
            return reservation
        payment = charge_for_update(db, reservation["user_id"], payment_id, total)
        reservation = db.reservations.edit(reservation_id)
        if payment is not None:
            own(reservation, "payment_history").append(payment)
        reservation["total_baggages"] = total_baggages
        reservation["nonfree_baggages"] = nonfree_baggages
        return reservation

    @tools.tool(mutates=True)
    def update_reservation_flights(
        db: DBView, reservation_id: str, cabin: Cabin, flights: list[FlightInfo], payment_id: str
    ) -> Any:
        """Change the flights and/or the cabin of a reservation, paying or refunding the fare difference
        through a saved credit card or gift card (not a certificate). Segments kept in the same cabin keep
        the price paid for them; new segments are priced at today's fare. Returns the updated reservation.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            cabin: The cabin class for the whole reservation: 'basic_economy', 'economy' or 'business'.
            flights: Every flight segment of the updated reservation, in order, each with flight number and
                date; include unchanged segments too.
            payment_id: A payment method id from the user's profile, such as 'credit_card_7815826' or
                'gift_card_7815826'.

        """
        if v1:
            return _update_flights_v1(db, reservation_id, cabin, flights, payment_id)
        flights = models_if_dicts(flights, FlightInfo)
        reservation = reservation_of(db, reservation_id)
        user_of(db, reservation["user_id"])
        n = len(reservation["passengers"])
        total: Any = 0
        segments: list[dict[str, Any]] = []
        for info in flights:
            kept = next(
                (
                    s
                    for s in reservation["flights"]
                    if s["flight_number"] == info.flight_number
                    and s["date"] == info.date
                    and cabin == reservation["cabin"]
                ),
                None,
            )
            if kept is not None:
                total += kept["price"] * n
                segments.append(copy.deepcopy(kept))
                continue
            flight = flight_of(db, info.flight_number)
            state = flight_date(db, info.flight_number, info.date)
            if state["status"] != "available":
                raise fail("unavailable", number=info.flight_number, date=info.date)
            if state["available_seats"][cabin] < n:
                raise fail("seats", number=info.flight_number)
            segment = ReservationFlight(
                flight_number=info.flight_number,
                date=info.date,
                price=state["prices"][cabin],
                origin=flight["origin"],
                destination=flight["destination"],
            ).model_dump()
            total += segment["price"] * n
            segments.append(segment)
        total -= sum(s["price"] for s in reservation["flights"]) * n
        payment = charge_for_update(db, reservation["user_id"], payment_id, total)
        old = [(s["flight_number"], s["date"]) for s in reservation["flights"]]
        old_cabin = reservation["cabin"]
        reservation = db.reservations.edit(reservation_id)
        if payment is not None:
            own(reservation, "payment_history").append(payment)
        reservation["flights"] = segments
        reservation["cabin"] = cabin
        if sem.seat_accounting:
            move_seats(db, old, old_cabin, n)
            move_seats(db, [(s["flight_number"], s["date"]) for s in segments], cabin, -n)
        return reservation

    def _update_flights_v1(db: DBView, reservation_id: Any, cabin: Any, flights: Any, payment_id: Any) -> Any:
        if reservation_id not in db.reservations:
            raise fail("reservation")
        reservation = db.reservations[reservation_id]
        n = len(reservation["passengers"])
        total: Any = 0
        flights = copy.deepcopy(flights)
        for segment in flights:
            kept = [
                s
                for s in reservation["flights"]
                if s["flight_number"] == segment["flight_number"]
                and s["date"] == segment["date"]
                and cabin == reservation["cabin"]
            ]
            if kept:
                total += kept[0]["price"] * n
                segment["price"] = kept[0]["price"]
                segment["origin"] = kept[0]["origin"]
                segment["destination"] = kept[0]["destination"]
                continue
            number = segment["flight_number"]
            if number not in db.flights:
                raise fail("flight", number=number)
            flight = db.flights[number]
            if segment["date"] not in flight["dates"]:
                raise fail("flight_date", number=number, date=segment["date"])
            state = flight["dates"][segment["date"]]
            if state["status"] != "available":
                raise fail("unavailable", number=number, date=segment["date"])
            if state["available_seats"][cabin] < n:
                raise fail("seats", number=number)
            segment["price"] = state["prices"][cabin]
            segment["origin"] = flight["origin"]
            segment["destination"] = flight["destination"]
            total += segment["price"] * n
        total -= sum(s["price"] for s in reservation["flights"]) * n
        old = [(s["flight_number"], s["date"]) for s in reservation["flights"]]
        payment = charge_for_update(db, reservation["user_id"], payment_id, total)
        reservation = db.reservations.edit(reservation_id)
        reservation["flights"] = flights
        if payment is not None:
            own(reservation, "payment_history").append(payment)
        if sem.seat_accounting:
            move_seats(db, old, reservation["cabin"], n)
            move_seats(db, [(s["flight_number"], s["date"]) for s in flights], reservation["cabin"], -n)
        return reservation

    @tools.tool(mutates=True)
    def update_reservation_passengers(db: DBView, reservation_id: str, passengers: list[PassengerInfo]) -> Any:
        """Replace the passenger details of a reservation; the number of passengers cannot change. Returns
        the updated reservation.

        Args:
            reservation_id: The reservation id, such as 'ZFA04Y'.
            passengers: Every passenger of the reservation, in order, each with first name, last name and date
                of birth.

        """
        if not v1:
            passengers = models_if_dicts(passengers, Passenger)
        reservation = reservation_of(db, reservation_id)
        if len(passengers) != len(reservation["passengers"]):
            raise fail("passengers")
        reservation = db.reservations.edit(reservation_id)
        if v1:
            reservation["passengers"] = copy_row(passengers)
        elif all(type(p) is Passenger for p in passengers):
            # The dump of a copy of a record is the dump of the record (fresh data either way): no deep copy.
            reservation["passengers"] = [p.model_dump() for p in passengers]
        else:
            reservation["passengers"] = [_dump(p) for p in copy.deepcopy(passengers)]
        return reservation

    @tools.tool
    def get_flight_status(db: DBView, flight_number: str, date: str) -> str:
        """Get the status of a flight on a date: 'available', 'on time', 'delayed', 'flying', 'landed' or
        'cancelled'.

        Args:
            flight_number: The flight number, such as 'HAT001'.
            date: The date as 'YYYY-MM-DD', such as '2024-05-15'.

        """
        return flight_date(db, flight_number, date)["status"]

    names = list(TOOL_LISTS[sem.tools_of])
    if sem.extra_tools:
        names += [n for n in TOOL_LISTS["extra"] if n not in names]
    return tools.subset(names)


def payment_record(payment_id: Any, amount: Any) -> dict[str, Any]:
    """A payment as tau2's Payment record dumps it (validated, unless the types already are its own)."""
    if type(amount) is int and type(payment_id) is str:
        return {"payment_id": payment_id, "amount": amount}
    return Payment(payment_id=payment_id, amount=amount).model_dump()


def _route(db: DBView, origin: Any, destination: Any) -> list[dict[str, Any]]:
    """Flights from ``origin`` to ``destination`` in table order (none when a code is unhashable)."""
    try:
        return db.flights.lookup("route", (origin, destination))
    except TypeError:
        return []


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _dump(value: Any) -> Any:
    # tau2 stores its Passenger objects; anything else it was given is stored (and later dumped) as it is.
    return value.model_dump() if hasattr(value, "model_dump") else value


__all__ = ["MESSAGES", "NOW", "PEER_AIRPORTS", "TOOL_LISTS", "build_tools", "index_keys", "next_id"]
