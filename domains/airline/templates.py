"""Offline template proposer for the airline domain (the domain half of APIGen-MT's phase-1 proposer).

``propose(snapshot, rng, intent)`` samples real records, walks the tool chain a careful agent would
follow (get_user_details -> get_reservation_details -> search_direct_flight -> update_...), and writes a
natural user instruction (persona, what the user knows, what they want, constraints) with the gold
actions and required outputs. A proposal is returned only if its gold actions replay without error on a
fresh view and it changes the DB or requires an output, so a do-nothing agent cannot pass it.

``python -m apigen_envs.domains.airline.templates --out FILE`` writes a raw template task set; the embedded
``data/tasks.json`` is the phase-1 pipeline's output over these templates
(``apigen-envs blueprints --domain airline --n 200 --seed 0 --recombine 20 --out domains/airline/data/tasks.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen import voice
from apigen_envs.db import Snapshot
from apigen_envs.domain import read_json
from apigen_envs.peer_tasks import compose_instruction
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.verify import replay

from .airports import CITY_BY_CODE
from .models import CABINS
from .tools import NOW, build_tools

Row = dict[str, Any]
"""A DB row as read from the snapshot (shared: never mutated here)."""

FREE_BAGS: Mapping[str, dict[str, int]] = MappingProxyType(
    {
        "regular": {"basic_economy": 0, "economy": 1, "business": 2},
        "silver": {"basic_economy": 1, "economy": 2, "business": 3},
        "gold": {"basic_economy": 2, "economy": 3, "business": 4},
    }
)
TODAY = NOW[:10]
_CABIN_WORDS = MappingProxyType({"basic_economy": "basic economy", "economy": "economy", "business": "business"})

Proposal = tuple[str, dict[str, Any], list[Action], list[str]]
"""(instruction body, scenario parts, gold actions, outputs)."""


def _city(code: str) -> str:
    return f"{CITY_BY_CODE.get(code, code)} ({code})"


def _when(day: str) -> str:
    return date.fromisoformat(day).strftime("%B %-d, %Y")


def _pick_key(rng: random.Random, table: Any, keep: Callable[[Any], bool], tries: int = 200) -> str | None:
    keys = tuple(table)
    for _ in range(min(tries, len(keys))):
        key = rng.choice(keys)
        if keep(table[key]):
            return key
    return None


def _pick(rng: random.Random, table: Any, keep: Callable[[Any], bool], tries: int = 200) -> Any | None:
    key = _pick_key(rng, table, keep, tries)
    return table[key] if key is not None else None


def _available(state: Any) -> bool:
    """Whether a flight's entry for a date can still be booked."""
    return isinstance(state, dict) and state.get("status") == "available"


def _future(snapshot: Snapshot, res: Row) -> bool:
    """Every segment is still bookable-state (not flown, not today) and the reservation is active."""
    if res.get("status") == "cancelled":
        return False
    flights = snapshot.tables["flights"]
    for seg in res["flights"]:
        flight = flights.get(seg["flight_number"])
        if flight is None or not _available(flight["dates"].get(seg["date"])):
            return False
    return True


def _card(user: Row, rng: random.Random, need: int = 0) -> tuple[str, str] | None:
    """A saved credit card, or a gift card holding ``need`` dollars: (id, how the user describes it)."""
    options: list[tuple[str, str]] = []
    for method_id, method in user["payment_methods"].items():
        if method["source"] == "credit_card":
            options.append((method_id, voice.card(rng, method["brand"], method["last_four"])))
        elif method["source"] == "gift_card" and method["amount"] >= need:
            options.append((method_id, f"{rng.choice(('your gift card', 'the gift card', 'gift card'))} {method_id}"))
    return rng.choice(options) if options else None


def _name(user: Row) -> str:
    return f"{user['name']['first_name']} {user['name']['last_name']}"


# Opening words of a request that are not names, so a linking word before them lower-cases them.
_COMMON_WORDS = frozenset(
    {
        "You",
        "Your",
        "The",
        "A",
        "Add",
        "Put",
        "Book",
        "Cancel",
        "Rebook",
        "Replace",
        "On",
        "For",
        "Bump",
        "Find",
        "Before",
        "What",
        "How",
        "Ask",
        "Too",
        "Remove",
        "Change",
        "Flight",
        "Reservation",
        "Booking",
    }
)
USER_TRIES = 8
"""Customers tried per proposal before giving up (multi-part intents need several fitting reservations)."""
_DAY_AGO = "2024-05-14T15:00:00"


@dataclass
class Draft:
    """A task being written for one customer: gold actions, the instruction's pieces and the records used."""

    snapshot: Snapshot
    rng: random.Random
    user_id: str
    user: Row
    actions: list[Action] = field(default_factory=list)
    wants: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    refusal: dict[str, Any] | None = None

    def call(self, name: str, **arguments: Any) -> None:
        """Append a gold action."""
        self.actions.append(Action(name=name, arguments=arguments))

    def say(self, *options: str) -> str:
        """One of several phrasings."""
        return self.rng.choice(options)

    def reservations(self, keep: Callable[[Row], bool]) -> list[Row]:
        """The customer's reservations that ``keep`` accepts and this task has not used yet."""
        table = self.snapshot.tables["reservations"]
        found = (table.get(r) for r in self.user["reservations"] if r not in self.used)
        return [r for r in found if r is not None and keep(r)]

    def pick(self, keep: Callable[[Row], bool]) -> Row | None:
        """A random fitting reservation of the customer."""
        found = self.reservations(keep)
        return self.rng.choice(found) if found else None

    def refer(self, res: Row) -> str:
        """Add the reads that find ``res`` and return how the customer names it.

        Half the customers have the confirmation code; the others name the route (when only one of their
        reservations flies it) and the agent opens their reservations in turn until it finds the trip.
        """
        rid = res["reservation_id"]
        if rid in self.used:
            return self.say("that same booking", "the same reservation")
        self.used.add(rid)
        table = self.snapshot.tables["reservations"]
        same = [
            r
            for r in (table.get(x) for x in self.user["reservations"])
            if r is not None and (r["origin"], r["destination"]) == (res["origin"], res["destination"])
        ]
        if self.rng.random() < 0.5 or len(same) != 1:
            self.known.append(
                self.say(
                    f"Reservation {rid}.",
                    f"Code: {rid}.",
                    f"Booking reference: {rid}.",
                    f"You have {rid} written down.",
                    f"Confirmation {rid}.",
                    f"PNR {rid}.",
                    f"It's under {rid}.",
                    f"Ticket reference {rid}.",
                )
            )
            self.call("get_reservation_details", reservation_id=rid)
            return self.say(f"reservation {rid}", f"booking {rid}", f"the {rid} trip")
        for other in self.user["reservations"]:
            self.call("get_reservation_details", reservation_id=other)
            if other == rid:
                break
        route = f"{_city(res['origin'])} to {_city(res['destination'])}"
        return self.say(
            f"your trip from {route}",
            f"the {route} booking",
            f"the reservation from {route} (code unknown)",
            f"your {route} flight (no code at hand)",
            f"the {route} one",
            f"the trip {route}",
            f"your {route} ticket",
        )


def _start(snapshot: Snapshot, rng: random.Random, user_id: str) -> Draft:
    user = snapshot.tables["users"][user_id]
    draft = Draft(snapshot, rng, user_id, user)
    draft.known.append(
        draft.say(
            f"Your user id is {user_id}.",
            f"User id: {user_id}.",
            f"Member {user_id}.",
            f"Profile: {user_id}.",
            f"Id {user_id}.",
            f"Account {user_id}.",
            f"Log-in: {user_id}.",
            f"Frequent-flyer id {user_id}.",
        )
    )
    draft.call("get_user_details", user_id=user_id)
    return draft


def _status_guard(draft: Draft) -> None:
    """Sometimes make a change depend on the trip not having started (the agent checks; it has not)."""
    if draft.rng.random() < 0.5:
        draft.wants.append(
            draft.say(
                "If any of its flights has already departed, forget it.",
                "That only makes sense if you haven't flown yet; if you have, drop it.",
                "If the trip is already under way, never mind.",
                "Unless it has already been flown, of course.",
            )
        )


def _cancellable(res: Row, snapshot: Snapshot) -> str | None:
    if res["created_at"] >= _DAY_AGO:
        return "you booked it only yesterday"
    if res["cabin"] == "business":
        return "it is a business ticket"
    if res["insurance"] == "yes":
        return "you bought travel insurance and now you are ill"
    return None


# ---------------------------------------------------------------------------------------------- parts
def _cancel(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and _cancellable(r, snap) is not None)
    if res is None:
        return False
    why = _cancellable(res, snap)
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You want {ref} cancelled with a refund; {why}.",
            f"Cancel {ref} and refund it - {why}.",
            f"You can't make {ref} anymore and want your money back ({why}).",
        )
    )
    _status_guard(draft)
    draft.call("cancel_reservation", reservation_id=res["reservation_id"])
    return True


def _change_flights(draft: Draft) -> bool:
    snap = draft.snapshot
    flights = snap.tables["flights"]
    res = draft.pick(
        lambda r: (
            _future(snap, r)
            and r["cabin"] != "basic_economy"
            and r["flight_type"] == "one_way"
            and len(r["flights"]) == 1
        )
    )
    if res is None:
        return False
    seg = res["flights"][0]
    cabin, n = res["cabin"], len(res["passengers"])
    options = [
        (f, d)
        for f in sorted(flights.values(), key=lambda f: f["flight_number"])
        if f["origin"] == seg["origin"] and f["destination"] == seg["destination"]
        for d, s in f["dates"].items()
        if _available(s) and d > TODAY and d != seg["date"] and s["available_seats"][cabin] >= n
    ]
    if not options:
        return False
    new_flight, new_day = draft.rng.choice(options)
    if sum(d == new_day for _, d in options) > 1:
        return False  # the customer names only the date, so it must pick one flight
    diff = (new_flight["dates"][new_day]["prices"][cabin] - seg["price"]) * n
    card = _card(draft.user, draft.rng, max(0, diff))
    if card is None:
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You need to move {ref} to the direct flight on {_when(new_day)}, same cabin.",
            f"Your meeting moved, so {ref} should fly on {_when(new_day)} instead (keep the cabin).",
            f"Rebook {ref} onto {_when(new_day)}'s direct flight without changing the cabin.",
        )
    )
    draft.notes.append(draft.say(f"Fare differences go through {card[1]}.", f"Use {card[1]} for any difference."))
    draft.call("search_direct_flight", origin=seg["origin"], destination=seg["destination"], date=new_day)
    draft.call(
        "update_reservation_flights",
        reservation_id=res["reservation_id"],
        cabin=cabin,
        flights=[{"flight_number": new_flight["flight_number"], "date": new_day}],
        payment_id=card[0],
    )
    return True


def _upgrade_cost(draft: Draft, res: Row, new_cabin: str) -> int | None:
    flights = draft.snapshot.tables["flights"]
    n, cost = len(res["passengers"]), 0
    for seg in res["flights"]:
        state = flights[seg["flight_number"]]["dates"][seg["date"]]
        if state["available_seats"][new_cabin] < n:
            return None
        cost += (state["prices"][new_cabin] - seg["price"]) * n
    return cost


def _change_cabin(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and r["cabin"] != "business")
    if res is None:
        return False
    new_cabin = CABINS[CABINS.index(res["cabin"]) + 1]
    cost = _upgrade_cost(draft, res, new_cabin)
    card = _card(draft.user, draft.rng, max(0, cost)) if cost is not None else None
    if card is None:
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You'd like every flight of {ref} upgraded to {_CABIN_WORDS[new_cabin]}.",
            f"Bump {ref} up to {_CABIN_WORDS[new_cabin]} on all its flights.",
            f"For {ref}, you want {_CABIN_WORDS[new_cabin]} seats instead, same flights.",
        )
    )
    _status_guard(draft)
    draft.notes.append(draft.say(f"Pay with {card[1]}.", f"Charge {card[1]}."))
    _upgrade(draft, res, new_cabin, card[0])
    return True


def _upgrade(draft: Draft, res: Row, cabin: str, payment_id: str) -> None:
    draft.call(
        "update_reservation_flights",
        reservation_id=res["reservation_id"],
        cabin=cabin,
        flights=[{"flight_number": s["flight_number"], "date": s["date"]} for s in res["flights"]],
        payment_id=payment_id,
    )


def _bags_call(draft: Draft, res: Row, extra: int) -> tuple[str, str] | None:
    total = res["total_baggages"] + extra
    free = FREE_BAGS[draft.user["membership"]][res["cabin"]] * len(res["passengers"])
    nonfree = max(res["nonfree_baggages"], total - free)
    card = _card(draft.user, draft.rng, 50 * (nonfree - res["nonfree_baggages"]))
    if card is None:
        return None
    draft.call(
        "update_reservation_baggages",
        reservation_id=res["reservation_id"],
        total_baggages=total,
        nonfree_baggages=nonfree,
        payment_id=card[0],
    )
    return card


def _add_baggage(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r))
    if res is None:
        return False
    extra = draft.rng.randint(1, 2)
    ref = draft.refer(res)
    bags = f"{extra} more checked bag{'s' if extra > 1 else ''}"
    draft.wants.append(
        draft.say(
            f"You need {bags} on {ref}.",
            f"Add {bags} to {ref}.",
            f"Too much luggage: {bags} for {ref}.",
            f"Put {bags} on {ref}.",
            f"{ref[0].upper()}{ref[1:]} needs {bags}.",
        )
    )
    card = _bags_call(draft, res, extra)
    if card is None:
        return False
    draft.notes.append(draft.say(f"Bag fees: {card[1]}.", f"Luggage charges to {card[1]}.", f"Pay with {card[1]}."))
    return True


def _update_passengers(draft: Draft) -> bool:
    from .generate import FIRST_NAMES, LAST_NAMES

    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and len(r["passengers"]) >= 2)
    if res is None:
        return False
    index = draft.rng.randrange(1, len(res["passengers"]))
    old = res["passengers"][index]
    new = {
        "first_name": draft.rng.choice([n for n in FIRST_NAMES if n != old["first_name"]]),
        "last_name": draft.rng.choice(LAST_NAMES),
        "dob": date(draft.rng.randint(1955, 2004), draft.rng.randint(1, 12), draft.rng.randint(1, 28)).isoformat(),
    }
    # Fresh dicts of the schema's fields: the arguments must not alias the shared rows.
    passengers = [{k: p[k] for k in ("first_name", "last_name", "dob")} for p in res["passengers"]]
    passengers[index] = new
    ref = draft.refer(res)
    who, repl = f"{old['first_name']} {old['last_name']}", f"{new['first_name']} {new['last_name']}"
    draft.wants.append(
        draft.say(
            f"{who} can't come on {ref}; {repl} (born {new['dob']}) takes the seat.",
            f"On {ref}, swap the traveller {who} for {repl}, date of birth {new['dob']}.",
            f"Replace {who} with {repl} ({new['dob']}) on {ref}; the others stay.",
        )
    )
    draft.call("update_reservation_passengers", reservation_id=res["reservation_id"], passengers=passengers)
    return True


def _compensation(draft: Draft) -> bool:
    snap = draft.snapshot
    flights = snap.tables["flights"]

    def cancelled_segment(res: Row) -> Row | None:
        for seg in res["flights"]:
            flight = flights.get(seg["flight_number"])
            state = flight["dates"].get(seg["date"]) if flight is not None else None
            if isinstance(state, dict) and state.get("status") == "cancelled":
                return seg
        return None

    eligible = draft.user["membership"] != "regular"
    res = draft.pick(
        lambda r: (
            r.get("status") != "cancelled"
            and cancelled_segment(r) is not None
            and (eligible or r["insurance"] == "yes" or r["cabin"] == "business")
        )
    )
    seg = cancelled_segment(res) if res is not None else None
    if res is None or seg is None or any(a.name == "send_certificate" for a in draft.actions):
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"The airline cancelled flight {seg['flight_number']} of {ref} and you want compensation for it.",
            f"Flight {seg['flight_number']} ({ref}) was cancelled on you; you expect something for the trouble.",
            f"You're upset that {seg['flight_number']} on {_when(seg['date'])} was scrapped ({ref}): ask for "
            "compensation, a travel certificate is fine.",
        )
    )
    draft.call("get_flight_status", flight_number=seg["flight_number"], date=seg["date"])
    draft.call("send_certificate", user_id=draft.user_id, amount=100 * len(res["passengers"]))
    return True


def _paid(res: Row) -> int | float:
    return sum(p["amount"] for p in res["payment_history"])


def _info_total(draft: Draft) -> bool:
    res = draft.pick(lambda r: r.get("status") != "cancelled" and len(r["payment_history"]) == 1)
    if res is None:
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You need the total you paid for {ref}, for an expense report.",
            f"How much did {ref} cost you altogether? You want the number.",
            f"Ask for the amount charged for {ref}.",
        )
    )
    draft.outputs.append(str(_paid(res)))
    return True


def _direct_options(draft: Draft, origin: str, destination: str, day: str, cabin: str, n: int) -> list[Row]:
    flights = draft.snapshot.tables["flights"]
    found = []
    for f in sorted(flights.values(), key=lambda f: f["flight_number"]):
        state = f["dates"].get(day)
        route = f["origin"] == origin and f["destination"] == destination
        if route and _available(state) and state["available_seats"][cabin] >= n:
            found.append(f)
    return found


def _book(draft: Draft, round_trip: bool = False, budget: bool = False) -> bool:
    """Book a trip. With ``budget`` the customer wants the cheapest direct flight of the day under a limit."""
    flights = draft.snapshot.tables["flights"]
    user = draft.user
    if any(a.name == "book_reservation" for a in draft.actions):
        return False
    out_flight = flights[draft.rng.choice(tuple(flights))]
    days = [d for d, s in out_flight["dates"].items() if _available(s) and d > TODAY]
    if not days:
        return False
    day = draft.rng.choice(days)
    cabin = draft.rng.choice(CABINS)
    people = [{"first_name": user["name"]["first_name"], "last_name": user["name"]["last_name"], "dob": user["dob"]}]
    if user["saved_passengers"] and draft.rng.random() < 0.5:
        companion = user["saved_passengers"][0]
        people.append({k: companion[k] for k in ("first_name", "last_name", "dob")})
    origin, destination = out_flight["origin"], out_flight["destination"]
    legs = [(out_flight, day)]
    limit = None
    if budget:
        options = _direct_options(draft, origin, destination, day, cabin, len(people))
        prices = sorted(f["dates"][day]["prices"][cabin] for f in options)
        if len(prices) < 2 or prices[0] == prices[1]:
            return False
        out_flight = min(options, key=lambda f: f["dates"][day]["prices"][cabin])
        legs = [(out_flight, day)]
        limit = (prices[0] // 50 + 1) * 50 + 50
    if round_trip:
        back = sorted(
            (f for f in flights.values() if f["origin"] == destination and f["destination"] == origin),
            key=lambda f: f["flight_number"],
        )
        later = [(f, d) for f in back for d, s in f["dates"].items() if _available(s) and d > day]
        if not later:
            return False
        legs.append(draft.rng.choice(later))
    price = 0
    for flight, d in legs:
        state = flight["dates"][d]
        if state["available_seats"][cabin] < len(people):
            return False
        if not budget or flight is not out_flight:
            twins = [
                f
                for f in flights.values()
                if f["origin"] == flight["origin"]
                and f["destination"] == flight["destination"]
                and f["scheduled_departure_time_est"] == flight["scheduled_departure_time_est"]
            ]
            if len(twins) > 1:
                return False
        price += state["prices"][cabin] * len(people)
    free = FREE_BAGS[user["membership"]][cabin] * len(people)
    bags = draft.rng.randint(0, free + 1)
    nonfree = max(0, bags - free)
    insurance = draft.rng.choice(("yes", "no"))
    total = price + 30 * len(people) * (insurance == "yes") + 50 * nonfree
    card = _card(user, draft.rng, total)
    if card is None:
        return False
    for f, d in legs:
        draft.call("search_direct_flight", origin=f["origin"], destination=f["destination"], date=d)
    draft.call(
        "book_reservation",
        user_id=draft.user_id,
        origin=origin,
        destination=destination,
        flight_type="round_trip" if round_trip else "one_way",
        cabin=cabin,
        flights=[{"flight_number": f["flight_number"], "date": d} for f, d in legs],
        passengers=people,
        payment_methods=[{"payment_id": card[0], "amount": total}],
        total_baggages=bags,
        nonfree_baggages=nonfree,
        insurance=insurance,
    )

    def leg_text(f: Row, d: str) -> str:
        return (
            f"{_city(f['origin'])} to {_city(f['destination'])} on {_when(d)}, the direct flight leaving at "
            f"{f['scheduled_departure_time_est'][:5]}"
        )

    who = (
        draft.say("just you", "only yourself", "one traveller: you")
        if len(people) == 1
        else f"you and {people[1]['first_name']} {people[1]['last_name']} (born {people[1]['dob']})"
    )
    cabin_words = _CABIN_WORDS[cabin]
    if budget:
        first = f"the cheapest direct {cabin_words} flight from {_city(origin)} to {_city(destination)} on {_when(day)}"
        rest = f"; coming back {leg_text(*legs[1])}" if round_trip else ""
        draft.wants.append(
            draft.say(
                f"You want to book {first}{rest}, as long as it is under ${limit} a person. If nothing is that "
                "cheap, don't book anything.",
                f"Book {first}{rest}. Your budget is ${limit} per ticket; above that, skip it.",
                f"Find and book {first}{rest} - if the cheapest one costs more than ${limit} each, you'll pass.",
            )
        )
    else:
        trip = "; back: ".join(leg_text(f, d) for f, d in legs)
        draft.wants.append(
            draft.say(
                f"You'd like a {'round trip' if round_trip else 'one-way'} in {cabin_words}: {trip}.",
                f"Book {'a return trip' if round_trip else 'one way'} ({cabin_words}): {trip}.",
                f"You're planning {'a round trip' if round_trip else 'a one-way trip'}: {trip}, in {cabin_words}.",
            )
        )
    draft.notes.append(
        draft.say(
            f"Travellers: {who}. Date of birth: {user['dob']}.",
            f"It is for {who}; your birthday is {user['dob']}.",
        )
    )
    extra = (
        f"{bags} checked bag{'s' if bags != 1 else ''}"
        + (" (paying for the extra ones is fine)" if nonfree else "")
        + f", {'with' if insurance == 'yes' else 'no'} insurance, paid with {card[1]}"
    )
    draft.notes.append(draft.say(f"Options: {extra}.", f"You want {extra}."))
    return True


def _budget_fare_info(draft: Draft) -> bool:
    """The cheapest economy fare on a route and day, as information only."""
    flights = draft.snapshot.tables["flights"]
    flight = flights[draft.rng.choice(tuple(flights))]
    days = [d for d, s in flight["dates"].items() if _available(s) and d > TODAY]
    if not days:
        return False
    day = draft.rng.choice(days)
    options = _direct_options(draft, flight["origin"], flight["destination"], day, "economy", 1)
    prices = sorted(f["dates"][day]["prices"]["economy"] for f in options)
    if not prices or (len(prices) > 1 and prices[0] == prices[1]):
        return False
    draft.call("search_direct_flight", origin=flight["origin"], destination=flight["destination"], date=day)
    draft.wants.append(
        draft.say(
            f"Before booking anything, you want the lowest economy fare for a direct flight from "
            f"{_city(flight['origin'])} to {_city(flight['destination'])} on {_when(day)}.",
            f"What is the cheapest direct economy seat {_city(flight['origin'])} to "
            f"{_city(flight['destination'])} on {_when(day)}? You only want the price, no booking.",
        )
    )
    draft.outputs.append(str(prices[0]))
    return True


# ------------------------------------------------------------------------------------- conditional
def _upgrade_if_cheap(draft: Draft) -> bool:
    """Upgrade if the total extra cost is under a limit, else add a bag instead (resolved from the DB)."""
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and r["cabin"] != "business")
    if res is None:
        return False
    new_cabin = CABINS[CABINS.index(res["cabin"]) + 1]
    cost = _upgrade_cost(draft, res, new_cabin)
    if cost is None or cost <= 0:
        return False
    limit = draft.rng.choice((100, 150, 200, 300, 400, 500, 750))
    if abs(cost - limit) < 5:
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You'd upgrade {ref} to {_CABIN_WORDS[new_cabin]} if the extra cost is under ${limit} in total; "
            "otherwise add one checked bag instead.",
            f"If moving {ref} up to {_CABIN_WORDS[new_cabin]} costs less than ${limit} altogether, do it. If "
            "not, you'd settle for one more checked bag.",
        )
    )
    if cost < limit:
        card = _card(draft.user, draft.rng, cost)
        if card is None:
            return False
        _upgrade(draft, res, new_cabin, card[0])
    else:
        card = _bags_call(draft, res, 1)
        if card is None:
            return False
    draft.notes.append(draft.say(f"Use {card[1]} for payment.", f"Payment: {card[1]}."))
    return True


def _cancel_or_bag(draft: Draft) -> bool:
    """Cancel if the policy allows a refund, else keep the trip and add a bag (resolved from the DB)."""
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r))
    if res is None:
        return False
    ref = draft.refer(res)
    draft.wants.append(
        draft.say(
            f"You are thinking of cancelling {ref}. If you can get a refund, cancel it; if not, keep it and add "
            "one checked bag.",
            f"Cancel {ref} only if it is refundable. Otherwise, you keep it and want one extra checked bag.",
        )
    )
    if _cancellable(res, snap) is not None:
        draft.notes.append(f"If asked why: {_cancellable(res, snap)}.")
        draft.call("cancel_reservation", reservation_id=res["reservation_id"])
        return True
    card = _bags_call(draft, res, 1)
    if card is None:
        return False
    draft.notes.append(draft.say(f"Bags are paid with {card[1]}.", f"{card[1]} pays for the bag."))
    return True


# ---------------------------------------------------------------------------------------- refusals
_PUSH = (
    "Push back at least once if the agent says no.",
    "Don't accept the first no.",
    "Argue a little; you think the rule is unfair.",
    "Say you have been a loyal customer for years.",
    "Ask for an exception.",
    "Mention you'll complain online if refused.",
    "Try once more after a refusal.",
    "Insist, politely.",
)
_FALLBACK = (
    "If it still can't be done, ask how much you paid for this booking.",
    "Failing that, you want to know the amount you were charged.",
    "When it's clear it won't happen, ask for the total you paid and leave it there.",
    "If refused for good, change nothing; just ask what the reservation cost.",
    "If the answer stays no, ask what you paid, then end the call.",
    "Should it really be impossible, settle for hearing the price you paid.",
)


def _refusal(draft: Draft, res: Row, rule: str, forbidden: Action, text: str) -> bool:
    """A request the policy forbids: the customer pushes, then asks for the amount paid (the fact the agent
    must state, so doing nothing fails), and the rule named must forbid the call (the policy stage checks).
    """
    demand = text.split(". ")[0].rstrip(".") + "."
    draft.wants.append(" ".join((demand, draft.rng.choice(_PUSH), draft.rng.choice(_FALLBACK))))
    draft.outputs.append(str(_paid(res)))
    draft.refusal = {"rule": rule, "forbidden": [forbidden]}
    return True


def _refuse_cancel(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and _cancellable(r, snap) is None and len(r["payment_history"]) == 1)
    if res is None:
        return False
    ref = draft.refer(res)
    text = draft.say(
        f"You want {ref} cancelled and fully refunded. You push hard, even if the agent says the ticket does not "
        "qualify. If it really won't happen, keep the booking and ask how much you paid for it.",
        f"You insist on a refund for {ref}: cancel it. Argue once if refused, then give up on the cancellation "
        "and just ask for the total you were charged.",
        f"Cancel {ref} for a full refund - you don't care about fare rules. If the agent still says no, leave "
        "the trip as is and ask what it cost you.",
    )
    forbidden = Action(name="cancel_reservation", arguments={"reservation_id": res["reservation_id"]})
    return _refusal(draft, res, "airline.cancel_rules", forbidden, text)


def _refuse_basic_change(draft: Draft) -> bool:
    snap = draft.snapshot
    flights = snap.tables["flights"]
    res = draft.pick(
        lambda r: (
            _future(snap, r)
            and r["cabin"] == "basic_economy"
            and len(r["flights"]) == 1
            and len(r["payment_history"]) == 1
        )
    )
    if res is None:
        return False
    seg = res["flights"][0]
    others = [
        (f, d)
        for f in flights.values()
        if f["origin"] == seg["origin"] and f["destination"] == seg["destination"]
        for d, s in f["dates"].items()
        if _available(s) and d > TODAY and d != seg["date"]
    ]
    if not others:
        return False
    flight, day = draft.rng.choice(sorted(others, key=lambda o: (o[0]["flight_number"], o[1])))
    ref = draft.refer(res)
    text = draft.say(
        f"You want {ref} moved to {_when(day)}, and you keep asking even when told basic economy can't be "
        "changed. If the agent holds firm, keep the flight and ask what you paid.",
        f"Change {ref} to fly on {_when(day)}. If the agent says your fare doesn't allow it, complain, then "
        "settle for knowing how much the booking cost.",
    )
    forbidden = Action(
        name="update_reservation_flights",
        arguments={
            "reservation_id": res["reservation_id"],
            "cabin": "basic_economy",
            "flights": [{"flight_number": flight["flight_number"], "date": day}],
            "payment_id": res["payment_history"][0]["payment_id"],
        },
    )
    return _refusal(draft, res, "airline.basic_economy_flights_fixed", forbidden, text)


def _refuse_remove_bag(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and r["total_baggages"] >= 1 and len(r["payment_history"]) == 1)
    if res is None:
        return False
    ref = draft.refer(res)
    total = res["total_baggages"] - 1
    text = draft.say(
        f"You want one checked bag taken off {ref} and the fee refunded; press the point once if told no. "
        "If it can't be done, ask how much the reservation cost in total.",
        f"Remove a checked bag from {ref} - you packed lighter. When the agent refuses, accept it and ask for "
        "the total you paid.",
    )
    forbidden = Action(
        name="update_reservation_baggages",
        arguments={
            "reservation_id": res["reservation_id"],
            "total_baggages": total,
            "nonfree_baggages": min(res["nonfree_baggages"], total),
            "payment_id": res["payment_history"][0]["payment_id"],
        },
    )
    return _refusal(draft, res, "airline.bags_only_added", forbidden, text)


def _refuse_add_passenger(draft: Draft) -> bool:
    snap = draft.snapshot
    res = draft.pick(lambda r: _future(snap, r) and len(r["passengers"]) < 5 and len(r["payment_history"]) == 1)
    if not draft.user["saved_passengers"] or res is None:
        return False
    friend = draft.user["saved_passengers"][0]
    ref = draft.refer(res)
    text = draft.say(
        f"You want {friend['first_name']} {friend['last_name']} added as an extra traveller on {ref}. Insist "
        "once. If that's impossible, don't book anything new; just ask what you paid for the reservation.",
        f"Add {friend['first_name']} {friend['last_name']} to {ref} as one more passenger. If the agent says "
        "the number of passengers can't change, drop it and ask for the amount you were charged.",
    )
    passengers = [{k: p[k] for k in ("first_name", "last_name", "dob")} for p in res["passengers"]]
    passengers.append({k: friend[k] for k in ("first_name", "last_name", "dob")})
    forbidden = Action(
        name="update_reservation_passengers",
        arguments={"reservation_id": res["reservation_id"], "passengers": passengers},
    )
    return _refusal(draft, res, "airline.passenger_count_fixed", forbidden, text)


def _refuse_compensation(draft: Draft) -> bool:
    snap = draft.snapshot
    flights = snap.tables["flights"]
    if draft.user["membership"] != "regular":
        return False

    def delayed(res: Row) -> bool:
        for seg in res["flights"]:
            state = flights[seg["flight_number"]]["dates"].get(seg["date"])
            if isinstance(state, dict) and state.get("status") in ("delayed", "cancelled"):
                return True
        return False

    res = draft.pick(
        lambda r: (
            r["insurance"] == "no"
            and r["cabin"] != "business"
            and r.get("status") != "cancelled"
            and len(r["payment_history"]) == 1
            and delayed(r)
        )
    )
    if res is None:
        return False
    ref = draft.refer(res)
    text = draft.say(
        f"A flight of {ref} was disrupted and you demand a travel certificate as compensation. Push for it. If "
        "the agent won't give one, ask how much the booking cost you.",
        f"You want compensation for the disruption on {ref}. If none is offered, ask for the total you paid "
        "for it and leave it there.",
    )
    forbidden = Action(
        name="send_certificate", arguments={"user_id": draft.user_id, "amount": 50 * len(res["passengers"])}
    )
    return _refusal(draft, res, "airline.certificate_rules", forbidden, text)


def _transfer(draft: Draft) -> bool:
    issue = draft.say(
        "a bag that never arrived on your last trip",
        "a refund that has not shown up on your card",
        "a complaint about the crew on a previous flight",
        "a medical device you need to bring on board",
        "travelling with a service animal",
    )
    draft.wants.append(
        draft.say(
            f"After that you want a human agent for {issue}.",
            f"Finally, ask to be put through to a person about {issue}.",
            f"Once done, raise {issue}; you want a real person for that.",
        )
    )
    draft.call("transfer_to_human_agents", summary=f"The customer needs help with {issue}.")
    return True


Part = Callable[[Draft], bool]
RECIPES: Mapping[str, tuple[Part, ...]] = MappingProxyType(
    {
        "book_one_way": (_book,),
        "book_round_trip": (lambda d: _book(d, round_trip=True), _info_total),
        "cancel_reservation": (_cancel, _info_total),
        "change_flights": (_change_flights,),
        "change_cabin": (_change_cabin,),
        "add_baggage": (_add_baggage,),
        "update_passengers": (_update_passengers, _info_total),
        "compensation_certificate": (_compensation, _add_baggage),
        "info_request": (_info_total,),
        "budget_booking": (lambda d: _book(d, budget=True), _add_baggage),
        "budget_fare_info": (_budget_fare_info,),
        "upgrade_if_cheap": (_upgrade_if_cheap, _add_baggage),
        "cancel_or_bag": (_cancel_or_bag, _change_cabin),
        "bags_and_cabin": (_add_baggage, _change_cabin),
        "three_reservations": (_add_baggage, _change_cabin, _cancel_or_bag),
        "trip_overhaul": (_update_passengers, _add_baggage, _upgrade_if_cheap),
        "book_and_fix": (_book, _add_baggage, _change_cabin),
        "change_and_total": (_change_flights, _info_total),
        "refuse_cancel": (_refuse_cancel,),
        "refuse_basic_economy_change": (_refuse_basic_change,),
        "refuse_remove_bag": (_refuse_remove_bag,),
        "refuse_add_passenger": (_refuse_add_passenger,),
        "refuse_compensation": (_refuse_compensation,),
        "write_then_transfer": (_add_baggage, _transfer),
    }
)
"""Intent -> the parts it chains for one customer (each part uses records the earlier ones left)."""

INTENTS: tuple[str, ...] = tuple(RECIPES)
"""Intents the proposer can write tasks for."""

FAMILY: Mapping[str, str] = MappingProxyType(
    {
        **{i: "simple" for i in INTENTS},
        "info_request": "information",
        "budget_booking": "lookup",
        "budget_fare_info": "lookup",
        "upgrade_if_cheap": "conditional",
        "cancel_or_bag": "conditional",
        "bags_and_cabin": "multi_intent",
        "three_reservations": "multi_intent",
        "trip_overhaul": "multi_intent",
        "book_and_fix": "multi_intent",
        "change_and_total": "multi_intent",
        **{i: "refusal" for i in INTENTS if i.startswith("refuse_")},
        "write_then_transfer": "transfer",
    }
)
"""Intent -> task family (recorded in provenance)."""

CYCLE: tuple[str, ...] = (
    *INTENTS,
    "refuse_cancel",
    "refuse_basic_economy_change",
    "refuse_remove_bag",
    "refuse_add_passenger",
    "refuse_cancel",
    "three_reservations",
    "trip_overhaul",
    "book_and_fix",
    "upgrade_if_cheap",
    "cancel_or_bag",
    "budget_booking",
    "bags_and_cabin",
    "change_and_total",
    "refuse_remove_bag",
    "refuse_add_passenger",
    "refuse_basic_economy_change",
    "refuse_cancel",
)
"""The order in which the phase-1 pipeline takes intents (refusals and multi-write tasks weigh more)."""


def propose(snapshot: Snapshot, rng: random.Random, intent: str | None = None) -> Task | None:
    """Propose one task blueprint from real DB records.

    Args:
        snapshot: The airline DB.
        rng: Source of randomness (the proposal is a function of its state).
        intent: One of :data:`INTENTS`; drawn with ``rng`` when None.

    Returns:
        The task (id ``"proposal"``, split ``"train"``; callers rename them), or None when the sampled
        records do not fit the intent or the gold actions fail to replay.

    Raises:
        ValueError: For an unknown intent.

    """
    if intent is None:
        intent = rng.choice(INTENTS)
    if intent not in RECIPES:
        raise ValueError(f"unknown intent {intent!r}; choose from {INTENTS}")
    users = tuple(snapshot.tables["users"])
    for _ in range(USER_TRIES):
        draft = _start(snapshot, rng, rng.choice(users))
        if all(part(draft) for part in RECIPES[intent]):
            break
    else:
        return None
    view = snapshot.view()
    results = replay(build_tools(), view, draft.actions)
    if any(not ok for ok, _ in results) or not (view.changes() or draft.outputs):
        return None
    persona = voice.persona(rng, _name(draft.user))
    links = ("Also, ", "Then ", "Besides that, ", "And ", "Next, ")
    wants = [
        w
        if i == 0 or w.startswith(("After", "Finally", "Once", "If", "That", "Unless"))
        else rng.choice(links) + (w[0].lower() + w[1:] if w.split(" ", 1)[0] in _COMMON_WORDS else w)
        for i, w in enumerate(draft.wants)
    ]
    reason = " ".join(wants)
    known = " ".join(draft.known)
    notes = list(draft.notes)
    if view.changes():
        line = voice.confirm_line(rng)
        if line:
            notes.insert(0, line)
    behaviour = " ".join(notes) or None
    parts = {"reason_for_call": reason, "known_info": known, "task_instructions": behaviour}
    provenance: dict[str, Any] = {"proposer": "template", "intent": intent, "family": FAMILY[intent]}
    if draft.refusal is not None:
        provenance["refusal"] = {
            "rule": draft.refusal["rule"],
            "forbidden": [a.model_dump() for a in draft.refusal["forbidden"]],
        }
    return Task(
        id="proposal",
        domain="airline",
        split="train",
        user_id=draft.user_id,
        scenario=UserScenario(
            instruction=compose_instruction(parts, persona),
            persona=persona,
            reason_for_call=reason,
            known_info=known,
            task_instructions=behaviour,
        ),
        actions=tuple(draft.actions),
        outputs=tuple(draft.outputs),
        provenance=provenance,
    )


def generate_tasks(snapshot: Snapshot, seed: int = 0, n_train: int = 100, n_test: int = 50) -> list[Task]:
    """A task set cycling through every intent, with no user shared between tasks (so no train/test leak).

    Args:
        snapshot: The airline DB.
        seed: RNG seed.
        n_train: Train tasks.
        n_test: Test tasks.

    Returns:
        ``n_train`` train tasks then ``n_test`` test tasks (fewer if the DB runs out of fitting records).

    """
    rng = random.Random(seed)
    tasks: list[Task] = []
    used_users: set[str] = set()
    used_reservations: set[str] = set()
    total = n_train + n_test
    attempts = 0
    while len(tasks) < total and attempts < total * 200:
        intent = INTENTS[len(tasks) % len(INTENTS)]
        attempts += 1
        task = propose(snapshot, rng, intent)
        if task is None or task.user_id in used_users:
            continue
        touched = {a.arguments["reservation_id"] for a in task.actions if "reservation_id" in a.arguments}
        if touched & used_reservations:
            continue
        used_users.add(str(task.user_id))
        used_reservations |= touched
        split = "train" if len(tasks) < n_train else "test"
        number = len(tasks) if split == "train" else len(tasks) - n_train
        tasks.append(
            task.model_copy(
                update={
                    "id": f"{split}_{number:03d}_{intent}",
                    "split": split,
                    "provenance": {**task.provenance, "seed": seed},
                }
            )
        )
    return tasks


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: regenerate the task set from a DB directory."""
    from . import DATA, build_snapshot, load

    parser = argparse.ArgumentParser(description="Generate airline template tasks.")
    parser.add_argument("--data-dir", type=Path, default=None, help="DB directory (default: embedded data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    root = args.data_dir or DATA
    snapshot = load(root).snapshot if args.data_dir else build_snapshot(read_json(root / "db.json"), root / "db.json")
    tasks = generate_tasks(snapshot, args.seed, args.train, args.test)
    rows = [t.model_dump(mode="json", exclude_defaults=False) for t in tasks]
    args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(tasks)} tasks to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
