"""Table-driven success and error paths for every airline tool (``apigen`` profile), on a small hand-built DB.

Tools refuse only what tau2's tools refuse. What the old tools refused for the policy's sake (basic economy
flight changes, a trip that no longer starts at its origin, removing bags, six passengers, two credit
cards, a certificate of 0 dollars, writes to a cancelled reservation) is now accepted by the tool and
rejected by the datagen policy predicates: each such case is pinned below as "the tool accepts it, the
named rule catches it".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apigen_envs.datagen.policy_checks import AIRLINE_RULES, check_policy
from apigen_envs.datagen.trace import execute
from apigen_envs.domains.airline import build_snapshot, served_airports
from apigen_envs.domains.airline.tools import build_tools, next_id
from apigen_envs.errors import ToolCallError, ToolError
from apigen_envs.semantics import Semantics
from apigen_envs.task import Action


def _avail(be: int, ec: int, bu: int, prices: tuple[int, int, int] = (50, 100, 300)) -> dict[str, Any]:
    return {
        "status": "available",
        "available_seats": {"basic_economy": be, "economy": ec, "business": bu},
        "prices": dict(zip(("basic_economy", "economy", "business"), prices, strict=True)),
    }


def _flight(number: str, origin: str, dest: str, dep: str, arr: str, dates: dict[str, Any]) -> dict[str, Any]:
    return {
        "flight_number": number,
        "origin": origin,
        "destination": dest,
        "scheduled_departure_time_est": dep,
        "scheduled_arrival_time_est": arr,
        "dates": dates,
    }


def _res(rid: str, user: str, cabin: str, flights: list[tuple[str, str, str, str, int]], **kw: Any) -> dict[str, Any]:
    base = {
        "reservation_id": rid,
        "user_id": user,
        "origin": flights[0][1],
        "destination": flights[-1][2],
        "flight_type": "one_way",
        "cabin": cabin,
        "flights": [
            {"flight_number": n, "origin": o, "destination": d, "date": day, "price": p} for n, o, d, day, p in flights
        ],
        "passengers": [{"first_name": "Ana", "last_name": "Silva", "dob": "1990-01-01"}],
        "payment_history": [{"payment_id": "credit_card_1", "amount": flights[0][4]}],
        "created_at": "2024-05-10T10:00:00",
        "total_baggages": 1,
        "nonfree_baggages": 0,
        "insurance": "no",
    }
    base.update(kw)
    return base


def raw_db() -> dict[str, Any]:
    landed = {"status": "landed", "actual_departure_time_est": "x", "actual_arrival_time_est": "y"}
    return {
        "flights": {
            "HAT001": _flight(
                "HAT001",
                "JFK",
                "LAX",
                "08:00:00",
                "11:00:00",
                {
                    "2024-05-10": landed,
                    "2024-05-20": _avail(5, 5, 5),
                    "2024-05-21": _avail(0, 1, 5, (60, 120, 400)),
                    "2024-05-23": _avail(5, 5, 5, (55, 110, 330)),
                },
            ),
            "HAT002": _flight("HAT002", "LAX", "JFK", "12:00:00", "20:00:00", {"2024-05-22": _avail(5, 5, 5)}),
            "HAT003": _flight("HAT003", "JFK", "ORD", "06:00:00", "08:00:00", {"2024-05-20": _avail(5, 5, 5)}),
            "HAT004": _flight("HAT004", "ORD", "LAX", "09:00:00", "11:00:00", {"2024-05-20": _avail(5, 5, 5)}),
            "HAT005": _flight("HAT005", "ORD", "LAX", "07:00:00", "09:00:00", {"2024-05-20": _avail(5, 5, 5)}),
            "HAT006": _flight("HAT006", "JFK", "LAX", "09:00:00", "12:00:00", {"2024-05-20": {"status": "cancelled"}}),
            "HAT007": _flight("HAT007", "LAX", "ORD", "10:00:00", "16:00:00", {"2024-05-25": _avail(9, 9, 9)}),
        },
        "users": {
            "ana_silva_1": {
                "user_id": "ana_silva_1",
                "name": {"first_name": "Ana", "last_name": "Silva"},
                "address": {
                    "address1": "1 Main St",
                    "address2": None,
                    "city": "Austin",
                    "country": "USA",
                    "state": "TX",
                    "zip": "78701",
                },
                "email": "ana@example.com",
                "dob": "1990-01-01",
                "payment_methods": {
                    "credit_card_1": {
                        "source": "credit_card",
                        "id": "credit_card_1",
                        "brand": "visa",
                        "last_four": "1111",
                    },
                    "credit_card_2": {
                        "source": "credit_card",
                        "id": "credit_card_2",
                        "brand": "visa",
                        "last_four": "2222",
                    },
                    "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "amount": 80.0},
                    "certificate_1": {"source": "certificate", "id": "certificate_1", "amount": 100.0},
                },
                "saved_passengers": [],
                "membership": "gold",
                "reservations": ["RES001", "RES002", "RES003"],
            }
        },
        "reservations": {
            "RES001": _res("RES001", "ana_silva_1", "economy", [("HAT001", "JFK", "LAX", "2024-05-20", 100)]),
            "RES002": _res("RES002", "ana_silva_1", "basic_economy", [("HAT001", "JFK", "LAX", "2024-05-20", 50)]),
            "RES003": _res("RES003", "ana_silva_1", "economy", [("HAT001", "JFK", "LAX", "2024-05-10", 100)]),
        },
    }


@pytest.fixture(scope="module")
def snapshot():
    return build_snapshot(raw_db(), Path("test-db"))


@pytest.fixture(scope="module")
def tools(snapshot):
    return build_tools(None, served_airports(snapshot))


@pytest.fixture(scope="module")
def seat_tools(snapshot):
    return build_tools(Semantics.named("apigen").with_options(seat_accounting=True), served_airports(snapshot))


def seats(view, number: str, day: str, cabin: str) -> int:
    return view.flights[number]["dates"][day]["available_seats"][cabin]


def call(tools, view, name: str, **args: Any) -> Any:
    return json.loads(json.dumps(_jsonable(tools.call(view, name, args))))


def _jsonable(value: Any) -> Any:
    from apigen_envs.tools import to_jsonable

    return to_jsonable(value)


BOOK = {
    "user_id": "ana_silva_1",
    "origin": "JFK",
    "destination": "LAX",
    "flight_type": "one_way",
    "cabin": "economy",
    "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
    "passengers": [{"first_name": "Ana", "last_name": "Silva", "dob": "1990-01-01"}],
    "payment_methods": [{"payment_id": "credit_card_1", "amount": 100}],
    "total_baggages": 0,
    "nonfree_baggages": 0,
    "insurance": "no",
}


def book(**changes: Any) -> dict[str, Any]:
    return {**BOOK, **changes}


# ---------------------------------------------------------------- success paths


def test_book_reservation_state_changes(snapshot, tools):
    view = snapshot.view()
    args = book(
        insurance="yes",
        nonfree_baggages=1,
        total_baggages=2,
        payment_methods=[
            {"payment_id": "certificate_1", "amount": 100},
            {"payment_id": "gift_card_1", "amount": 30},
            {"payment_id": "credit_card_1", "amount": 50},
        ],
    )
    out = call(tools, view, "book_reservation", **args)
    assert out["reservation_id"] == "HATHAT"
    assert out["created_at"] == "2024-05-15T15:00:00"
    assert out["flights"] == [
        {"origin": "JFK", "destination": "LAX", "flight_number": "HAT001", "date": "2024-05-20", "price": 100}
    ]
    assert out["status"] is None
    user = view.users["ana_silva_1"]
    assert "certificate_1" not in user["payment_methods"]  # a certificate is used up
    assert user["payment_methods"]["gift_card_1"]["amount"] == 50.0
    assert user["reservations"][-1] == "HATHAT"
    assert seats(view, "HAT001", "2024-05-20", "economy") == 4  # tau2 takes the seats at booking
    assert snapshot.tables["users"]["ana_silva_1"]["reservations"] == ["RES001", "RES002", "RES003"]
    # ids are a function of the state: a second booking gets the next id
    assert (
        call(tools, view, "book_reservation", **book(payment_methods=[{"payment_id": "credit_card_2", "amount": 100}]))[
            "reservation_id"
        ]
        == "HATHAU"
    )


@pytest.mark.parametrize(
    ("name", "args", "check"),
    [
        ("calculate", {"expression": "2 * ((350 - 122) + (499 - 127))"}, lambda o, v: o == "1200.0"),
        ("calculate", {"expression": "-(1 + 2) / 4"}, lambda o, v: o == "-0.75"),
        ("get_user_details", {"user_id": "ana_silva_1"}, lambda o, v: o["membership"] == "gold"),
        ("get_reservation_details", {"reservation_id": "RES001"}, lambda o, v: o["cabin"] == "economy"),
        ("calculate", {"expression": "2 ** 10"}, lambda o, v: o == "1024.0"),  # eval's arithmetic, as the peers
        ("calculate", {"expression": "7 // 2"}, lambda o, v: o == "3.0"),
        ("list_all_airports", {}, lambda o, v: [a["iata"] for a in o] == ["JFK", "LAX", "ORD"]),
        (
            "search_direct_flight",
            {"origin": "JFK", "destination": "LAX", "date": "2024-05-20"},
            lambda o, v: [f["flight_number"] for f in o] == ["HAT001"] and o[0]["date"] is None,
        ),
        ("search_direct_flight", {"origin": "JFK", "destination": "LAX", "date": "2024-05-10"}, lambda o, v: o == []),
        # The peers do not validate dates: a date no flight operates on finds nothing.
        ("search_direct_flight", {"origin": "JFK", "destination": "LAX", "date": "May 20"}, lambda o, v: o == []),
        ("search_onestop_flight", {"origin": "JFK", "destination": "LAX", "date": "2024-13-01"}, lambda o, v: o == []),
        (
            "search_onestop_flight",
            {"origin": "JFK", "destination": "LAX", "date": "2024-05-20"},
            lambda o, v: (
                [[a["flight_number"], b["flight_number"]] for a, b in o] == [["HAT003", "HAT004"]]
                and o[0][0]["date"] == "2024-05-20"
            ),
        ),
        ("get_flight_status", {"flight_number": "HAT006", "date": "2024-05-20"}, lambda o, v: o == "cancelled"),
        ("get_flight_status", {"flight_number": "HAT001", "date": "2024-05-10"}, lambda o, v: o == "landed"),
        ("think", {"thought": "hmm"}, lambda o, v: o == "" and not v.changes()),
        ("transfer_to_human_agents", {"summary": "help"}, lambda o, v: o == "Transfer successful"),
        (
            "send_certificate",
            {"user_id": "ana_silva_1", "amount": 150},
            lambda o, v: (
                o == "Certificate certificate_3221322 added to user ana_silva_1 with amount 150."
                and v.users["ana_silva_1"]["payment_methods"]["certificate_3221322"]["amount"] == 150.0
            ),
        ),
        (
            "cancel_reservation",
            {"reservation_id": "RES001"},
            lambda o, v: (
                o["status"] == "cancelled"
                and o["payment_history"][-1] == {"payment_id": "credit_card_1", "amount": -100}
                and seats(v, "HAT001", "2024-05-20", "economy") == 5  # no seat accounting by default
                and "flights" not in v.changes()
            ),
        ),
        (
            "update_reservation_baggages",
            {"reservation_id": "RES001", "total_baggages": 5, "nonfree_baggages": 1, "payment_id": "gift_card_1"},
            lambda o, v: (
                o["payment_history"][-1] == {"payment_id": "gift_card_1", "amount": 50}
                and v.users["ana_silva_1"]["payment_methods"]["gift_card_1"]["amount"] == 30.0
            ),
        ),
        (
            "update_reservation_baggages",
            {"reservation_id": "RES001", "total_baggages": 2, "nonfree_baggages": 0, "payment_id": "credit_card_1"},
            lambda o, v: len(o["payment_history"]) == 1 and o["total_baggages"] == 2,
        ),
        (
            "update_reservation_flights",
            {
                "reservation_id": "RES001",
                "cabin": "business",
                "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
                "payment_id": "credit_card_1",
            },
            lambda o, v: (
                o["cabin"] == "business"
                and o["payment_history"][-1] == {"payment_id": "credit_card_1", "amount": 200}
                and seats(v, "HAT001", "2024-05-20", "business") == 5  # no seat accounting by default
                and seats(v, "HAT001", "2024-05-20", "economy") == 5
            ),
        ),
        (
            "update_reservation_flights",
            {
                "reservation_id": "RES001",
                "cabin": "economy",
                "flights": [{"flight_number": "HAT001", "date": "2024-05-21"}],
                "payment_id": "credit_card_1",
            },
            lambda o, v: o["flights"][0]["price"] == 120 and o["payment_history"][-1]["amount"] == 20,
        ),
        (
            "update_reservation_flights",
            {
                "reservation_id": "RES002",
                "cabin": "economy",
                "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
                "payment_id": "credit_card_1",
            },
            lambda o, v: o["cabin"] == "economy" and o["payment_history"][-1]["amount"] == 50,
        ),
        (
            "update_reservation_passengers",
            {"reservation_id": "RES001", "passengers": [{"first_name": "Bo", "last_name": "Li", "dob": "2000-02-02"}]},
            lambda o, v: o["passengers"] == [{"first_name": "Bo", "last_name": "Li", "dob": "2000-02-02"}],
        ),
    ],
)
def test_tool_success(snapshot, tools, name, args, check):
    view = snapshot.view()
    assert check(call(tools, view, name, **args), view)


# ---------------------------------------------------------------- error paths

# Each case: tool, arguments, the error text (tau2's wording, matched as a regular expression).
ERRORS = [
    ("get_user_details", {"user_id": "nobody"}, "^User nobody not found$"),
    ("get_reservation_details", {"reservation_id": "NOPE00"}, "^Reservation NOPE00 not found$"),
    ("get_flight_status", {"flight_number": "HAT999", "date": "2024-05-20"}, "^Flight HAT999 not found$"),
    ("get_flight_status", {"flight_number": "HAT001", "date": "2024-06-20"}, "not found on date 2024-06-20"),
    ("calculate", {"expression": "__import__('os').system('echo hi')"}, "^Invalid characters in expression$"),
    ("calculate", {"expression": "2 % 3"}, "^Invalid characters in expression$"),
    ("send_certificate", {"user_id": "ghost", "amount": 10}, "^User ghost not found$"),
    ("book_reservation", book(user_id="ghost"), "not found"),
    (
        "book_reservation",
        book(payment_methods=[{"payment_id": "credit_card_9", "amount": 100}]),
        "^Payment method credit_card_9 not found$",
    ),
    (
        "book_reservation",
        book(payment_methods=[{"payment_id": "credit_card_1", "amount": 99}]),
        "^Payment amount does not add up, total price is 100, but paid 99$",
    ),
    (
        "book_reservation",
        book(payment_methods=[{"payment_id": "gift_card_1", "amount": 100}]),
        "^Not enough balance in payment method gift_card_1$",
    ),
    ("book_reservation", book(flights=[{"flight_number": "HAT001", "date": "2024-05-10"}]), "not available"),
    ("book_reservation", book(flights=[{"flight_number": "HAT006", "date": "2024-05-20"}]), "not available"),
    (
        "book_reservation",
        book(flights=[{"flight_number": "HAT001", "date": "2024-06-01"}]),
        "^Flight HAT001 not found on date 2024-06-01$",
    ),
    ("book_reservation", book(flights=[{"flight_number": "HAT999", "date": "2024-05-20"}]), "not found"),
    (
        "book_reservation",
        book(cabin="basic_economy", flights=[{"flight_number": "HAT001", "date": "2024-05-21"}]),
        "^Not enough seats on flight HAT001$",
    ),
    ("book_reservation", book(passengers=[BOOK["passengers"][0]] * 6), "^Not enough seats on flight HAT001$"),
    ("cancel_reservation", {"reservation_id": "NOPE00"}, "^Reservation NOPE00 not found$"),
    (
        "update_reservation_flights",
        {
            "reservation_id": "RES002",
            "cabin": "basic_economy",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-21"}],
            "payment_id": "credit_card_1",
        },
        "^Not enough seats on flight HAT001$",
    ),
    (
        "update_reservation_flights",
        {
            "reservation_id": "RES001",
            "cabin": "business",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
            "payment_id": "certificate_1",
        },
        "^Certificate cannot be used to update reservation$",
    ),
    (
        "update_reservation_flights",
        {
            "reservation_id": "RES001",
            "cabin": "business",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
            "payment_id": "gift_card_1",
        },
        "^Gift card balance is not enough$",
    ),
    (
        "update_reservation_flights",
        {
            "reservation_id": "RES003",
            "cabin": "business",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-10"}],
            "payment_id": "credit_card_1",
        },
        "^Flight HAT001 not available on date 2024-05-10$",
    ),
    (
        "update_reservation_baggages",
        {"reservation_id": "RES001", "total_baggages": 3, "nonfree_baggages": 2, "payment_id": "credit_card_9"},
        "^Payment method not found$",
    ),
    (
        "update_reservation_passengers",
        {"reservation_id": "RES001", "passengers": [BOOK["passengers"][0]] * 2},
        "^Number of passengers does not match$",
    ),
]


@pytest.mark.parametrize(("name", "args", "message"), ERRORS, ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_tool_errors_leave_no_writes(snapshot, tools, name, args, message):
    view = snapshot.view()
    with pytest.raises(ToolError, match=message):
        tools.call(view, name, args)
    assert view.changes() == {}


def test_seat_accounting_gives_seats_back_when_asked(snapshot, seat_tools):
    view = snapshot.view()
    seat_tools.call(view, "cancel_reservation", {"reservation_id": "RES001"})
    assert seats(view, "HAT001", "2024-05-20", "economy") == 6
    view = snapshot.view()
    seat_tools.call(
        view,
        "update_reservation_flights",
        {
            "reservation_id": "RES001",
            "cabin": "business",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
            "payment_id": "credit_card_1",
        },
    )
    assert seats(view, "HAT001", "2024-05-20", "business") == 4
    assert seats(view, "HAT001", "2024-05-20", "economy") == 6
    # A landed date is not bookable: its seats are left alone.
    view = snapshot.view()
    seat_tools.call(view, "cancel_reservation", {"reservation_id": "RES003"})
    assert "flights" not in view.changes()


# ---------------------------------------------------------------- the policy, not the tools
RES001_FLIGHTS = {"reservation_id": "RES001", "payment_id": "credit_card_1", "cabin": "economy"}
# Each case: the actions (the tool accepts every one, as tau2's does), and the rule that rejects them.
POLICY_CASES = [
    (  # the old tool: "flights of a basic economy reservation cannot be changed"
        [
            (
                "update_reservation_flights",
                {
                    "reservation_id": "RES002",
                    "cabin": "basic_economy",
                    "flights": [{"flight_number": "HAT001", "date": "2024-05-23"}],
                    "payment_id": "credit_card_1",
                },
            )
        ],
        "airline.basic_economy_flights_fixed",
    ),
    (  # the old tool: "the trip must still start at JFK"
        [
            (
                "update_reservation_flights",
                {**RES001_FLIGHTS, "flights": [{"flight_number": "HAT002", "date": "2024-05-22"}]},
            )
        ],
        "airline.trip_endpoints_kept",
    ),
    (  # and end at its destination
        [
            (
                "update_reservation_flights",
                {**RES001_FLIGHTS, "flights": [{"flight_number": "HAT003", "date": "2024-05-20"}]},
            )
        ],
        "airline.trip_endpoints_kept",
    ),
    (  # the old tool: "at least one flight is required"
        [("update_reservation_flights", {**RES001_FLIGHTS, "flights": []})],
        "airline.trip_endpoints_kept",
    ),
    (  # the old tool: "a flight is listed twice"
        [
            (
                "update_reservation_flights",
                {**RES001_FLIGHTS, "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}] * 2},
            )
        ],
        "airline.flight_listed_once",
    ),
    (  # the old tool: "checked bags can be added but not removed"
        [
            (
                "update_reservation_baggages",
                {"reservation_id": "RES001", "total_baggages": 0, "nonfree_baggages": 0, "payment_id": "credit_card_1"},
            )
        ],
        "airline.bags_only_added",
    ),
    (  # the old tool: "baggage counts must satisfy 0 <= nonfree_baggages <= total_baggages"
        [
            (
                "update_reservation_baggages",
                {"reservation_id": "RES001", "total_baggages": 2, "nonfree_baggages": 3, "payment_id": "credit_card_1"},
            )
        ],
        "airline.baggage_counts",
    ),
    (  # the old tool: "reservation RES001 is cancelled" (insured business would pass cancel_rules; RES001 is not)
        [
            ("cancel_reservation", {"reservation_id": "RES001"}),
            ("update_reservation_passengers", {"reservation_id": "RES001", "passengers": BOOK["passengers"]}),
        ],
        "airline.no_change_after_cancel",
    ),
    ([("cancel_reservation", {"reservation_id": "RES001"})] * 2, "airline.no_change_after_cancel"),
    (  # the old tool: "the certificate amount must be positive"
        [("send_certificate", {"user_id": "ana_silva_1", "amount": 0})],
        "airline.certificate_amount_positive",
    ),
    ([("send_certificate", {"user_id": "ana_silva_1", "amount": -5})], "airline.certificate_amount_positive"),
    (  # the old tool: "a booking may use at most one certificate, one credit card and three gift cards"
        [
            (
                "book_reservation",
                book(
                    payment_methods=[
                        {"payment_id": "credit_card_1", "amount": 50},
                        {"payment_id": "credit_card_2", "amount": 50},
                    ]
                ),
            )
        ],
        "airline.payment_limits",
    ),
    (  # the old tool: "payment amounts cannot be negative"
        [
            (
                "book_reservation",
                book(
                    payment_methods=[
                        {"payment_id": "credit_card_1", "amount": 150},
                        {"payment_id": "gift_card_1", "amount": -50},
                    ]
                ),
            )
        ],
        "airline.payment_limits",
    ),
    (  # the old tool: "each payment method may appear only once"
        [
            (
                "book_reservation",
                book(
                    payment_methods=[
                        {"payment_id": "gift_card_1", "amount": 50},
                        {"payment_id": "gift_card_1", "amount": 50},
                    ]
                ),
            )
        ],
        "airline.payment_limits",
    ),
    (  # the old tool: "the first flight leaves from JFK, not from the origin ORD"
        [("book_reservation", book(origin="ORD"))],
        "airline.booking_rules",
    ),
    (  # the old tool: "no flight of this round trip arrives at the destination"
        [("book_reservation", book(flight_type="round_trip", destination="ORD"))],
        "airline.booking_rules",
    ),
    (  # the old tool: "a reservation can have at most 5 passengers" (HAT007 has the seats)
        [
            (
                "book_reservation",
                book(
                    origin="LAX",
                    destination="ORD",
                    flights=[{"flight_number": "HAT007", "date": "2024-05-25"}],
                    passengers=[BOOK["passengers"][0]] * 6,
                    payment_methods=[{"payment_id": "credit_card_1", "amount": 600}],
                ),
            )
        ],
        "airline.booking_rules",
    ),
    (  # the old tool: "at least one passenger is required"
        [("book_reservation", book(passengers=[], payment_methods=[]))],
        "airline.booking_rules",
    ),
    (  # the old tool: "at least one flight is required"
        [("book_reservation", book(flights=[], payment_methods=[]))],
        "airline.booking_rules",
    ),
    (  # the old tool: "baggage counts must satisfy 0 <= nonfree_baggages <= total_baggages"
        [
            (
                "book_reservation",
                book(
                    total_baggages=1,
                    nonfree_baggages=2,
                    payment_methods=[{"payment_id": "credit_card_1", "amount": 200}],
                ),
            )
        ],
        "airline.baggage_counts",
    ),
    (  # the old tool: "flight HAT001 on 2024-05-20 is listed twice"
        [
            (
                "book_reservation",
                book(
                    flights=[{"flight_number": "HAT001", "date": "2024-05-20"}] * 2,
                    payment_methods=[{"payment_id": "credit_card_1", "amount": 200}],
                ),
            )
        ],
        "airline.flight_listed_once",
    ),
]


@pytest.mark.parametrize(("calls", "rule"), POLICY_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(POLICY_CASES)])
def test_policy_rules_the_tools_no_longer_enforce(snapshot, tools, calls, rule):
    actions = [Action(name=name, arguments=args) for name, args in calls]
    trace = execute(snapshot, tools, actions, "ana_silva_1")
    assert not trace.errors, [s.output for s in trace.errors]  # tau2's tools accept every one of these
    assert trace.final.changes()
    violated = {v.rule for v in check_policy(trace, AIRLINE_RULES)}
    assert rule in violated, violated


COMPLIANT = [
    [
        (
            "update_reservation_flights",
            {**RES001_FLIGHTS, "flights": [{"flight_number": "HAT001", "date": "2024-05-23"}]},
        )
    ],
    [
        (
            "update_reservation_flights",  # basic economy may change cabin on the same flights
            {
                "reservation_id": "RES002",
                "cabin": "economy",
                "flights": [{"flight_number": "HAT001", "date": "2024-05-20"}],
                "payment_id": "credit_card_1",
            },
        )
    ],
    [
        (
            "update_reservation_baggages",
            {"reservation_id": "RES001", "total_baggages": 3, "nonfree_baggages": 1, "payment_id": "credit_card_1"},
        )
    ],
    [
        (
            "book_reservation",
            book(
                payment_methods=[
                    {"payment_id": "certificate_1", "amount": 50},
                    {"payment_id": "gift_card_1", "amount": 30},
                    {"payment_id": "credit_card_1", "amount": 20},
                ]
            ),
        )
    ],
    [
        (
            "book_reservation",
            book(
                flight_type="round_trip",
                flights=[
                    {"flight_number": "HAT001", "date": "2024-05-20"},
                    {"flight_number": "HAT002", "date": "2024-05-22"},
                ],
                passengers=[BOOK["passengers"][0]] * 5,
                payment_methods=[{"payment_id": "credit_card_1", "amount": 1000}],
            ),
        )
    ],
]


@pytest.mark.parametrize("calls", COMPLIANT, ids=[c[0][0] for c in COMPLIANT])
def test_compliant_calls_break_no_rule(snapshot, tools, calls):
    actions = [Action(name=name, arguments=args) for name, args in calls]
    trace = execute(snapshot, tools, actions, "ana_silva_1")
    assert not trace.errors and trace.final.changes()
    assert check_policy(trace, AIRLINE_RULES) == []


def test_invalid_argument_types_are_call_errors(tools, snapshot):
    with pytest.raises(ToolCallError, match="cabin"):
        tools.call(snapshot.view(), "book_reservation", book(cabin="first"))
    with pytest.raises(ToolCallError, match="flights"):
        tools.call(snapshot.view(), "book_reservation", book(flights=[{"flight": "HAT001"}]))


@pytest.mark.parametrize(
    "expression",
    ["__import__('os')", "().__class__", "open('x')", "a + 1", "1 if 1 else 2", "[1, 2]", "1; 2", "lambda: 1"]
    + ["2 % 3", "'a' * 3", "True + 1", "1e3"],
)
def test_calculate_rejects_injection(tools, snapshot, expression):
    with pytest.raises(ToolError, match="^Invalid characters in expression$"):
        tools.call(snapshot.view(), "calculate", {"expression": expression})


def test_calculate_huge_power_is_refused(tools, snapshot):
    with pytest.raises(ToolError, match="too large to compute"):
        tools.call(snapshot.view(), "calculate", {"expression": "9 ** 9 ** 9"})


def test_tool_names_and_schema_match_tau_bench(tools):
    assert set(tools.names) == {
        "book_reservation",
        "calculate",
        "cancel_reservation",
        "get_reservation_details",
        "get_user_details",
        "list_all_airports",
        "search_direct_flight",
        "search_onestop_flight",
        "send_certificate",
        "think",
        "transfer_to_human_agents",
        "update_reservation_baggages",
        "update_reservation_flights",
        "update_reservation_passengers",
        "get_flight_status",
    }
    params = tools["book_reservation"].schema["function"]["parameters"]
    assert params["required"] == list(BOOK)
    assert params["properties"]["flights"]["items"]["required"] == ["flight_number", "date"]
    assert params["properties"]["cabin"]["enum"] == ["business", "economy", "basic_economy"]  # tau2 order
    assert tools["transfer_to_human_agents"].terminal
    assert {t.name for t in tools if t.mutates} == {
        "book_reservation",
        "cancel_reservation",
        "send_certificate",
        "update_reservation_baggages",
        "update_reservation_flights",
        "update_reservation_passengers",
    }


def test_next_id():
    assert next_id("HATHAT") == "HATHAU"
    assert next_id("HATHAZ") == "HATHB0"
