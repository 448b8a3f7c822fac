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
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.db import Snapshot
from apigen_envs.domain import read_json
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.verify import replay

from .airports import CITY_BY_CODE
from .models import CABINS
from .tools import NOW, build_tools

Row = dict[str, Any]
"""A DB row as read from the snapshot (shared: never mutated here)."""

INTENTS: tuple[str, ...] = (
    "book_one_way",
    "book_round_trip",
    "cancel_reservation",
    "change_flights",
    "change_cabin",
    "add_baggage",
    "update_passengers",
    "compensation_certificate",
    "info_request",
)
"""Intents the proposer can write tasks for."""

PERSONAS: tuple[str, ...] = (
    "You are polite and patient, and you answer questions one at a time.",
    "You are in a hurry and keep your answers short.",
    "You are a little anxious about travel and like to double-check details.",
    "You are friendly and chatty, but you stay on topic.",
    "You are direct and businesslike.",
)
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
            options.append((method_id, f"your {method['brand']} credit card ending in {method['last_four']}"))
        elif method["source"] == "gift_card" and method["amount"] >= need:
            options.append((method_id, f"your gift card ({method_id})"))
    return rng.choice(options) if options else None


def _name(user: Row) -> str:
    return f"{user['name']['first_name']} {user['name']['last_name']}"


def _book(snapshot: Snapshot, rng: random.Random, round_trip: bool) -> Proposal | None:
    flights = snapshot.tables["flights"]
    users = snapshot.tables["users"]
    user_id = _pick_key(rng, users, lambda u: _card(u, rng) is not None)
    if user_id is None:
        return None
    user = users[user_id]
    out_flight = flights[rng.choice(tuple(flights))]
    bookable_days = [d for d, s in out_flight["dates"].items() if _available(s) and d > TODAY]
    if not bookable_days:
        return None
    day = rng.choice(bookable_days)
    cabin = rng.choice(CABINS)
    people = [{"first_name": user["name"]["first_name"], "last_name": user["name"]["last_name"], "dob": user["dob"]}]
    if user["saved_passengers"] and rng.random() < 0.5:
        companion = user["saved_passengers"][0]
        people.append({k: companion[k] for k in ("first_name", "last_name", "dob")})
    legs = [(out_flight, day)]
    if round_trip:
        back = sorted(
            (
                f
                for f in flights.values()
                if f["origin"] == out_flight["destination"] and f["destination"] == out_flight["origin"]
            ),
            key=lambda f: f["flight_number"],
        )
        later = [(f, d) for f in back for d, s in f["dates"].items() if _available(s) and d > day]
        if not later:
            return None
        legs.append(rng.choice(later))
    price = 0
    for flight, d in legs:
        state = flight["dates"][d]
        if state["available_seats"][cabin] < len(people):
            return None
        # Ambiguity guard: the user names the departure time, so it must pick one flight on that route.
        twins = [
            f
            for f in flights.values()
            if f["origin"] == flight["origin"]
            and f["destination"] == flight["destination"]
            and f["scheduled_departure_time_est"] == flight["scheduled_departure_time_est"]
        ]
        if len(twins) > 1:
            return None
        price += state["prices"][cabin] * len(people)
    free = FREE_BAGS[user["membership"]][cabin] * len(people)
    bags = rng.randint(0, free + 1)
    nonfree = max(0, bags - free)
    insurance = rng.choice(("yes", "no"))
    total = price + 30 * len(people) * (insurance == "yes") + 50 * nonfree
    card = _card(user, rng, total)
    if card is None:
        return None
    origin, destination = out_flight["origin"], out_flight["destination"]
    args = {
        "user_id": user_id,
        "origin": origin,
        "destination": destination,
        "flight_type": "round_trip" if round_trip else "one_way",
        "cabin": cabin,
        "flights": [{"flight_number": f["flight_number"], "date": d} for f, d in legs],
        "passengers": people,
        "payment_methods": [{"payment_id": card[0], "amount": total}],
        "total_baggages": bags,
        "nonfree_baggages": nonfree,
        "insurance": insurance,
    }
    actions = [Action(name="get_user_details", arguments={"user_id": user_id})]
    for f, d in legs:
        actions.append(
            Action(
                name="search_direct_flight",
                arguments={"origin": f["origin"], "destination": f["destination"], "date": d},
            )
        )
    actions.append(Action(name="book_reservation", arguments=args))
    trip = "a round trip" if round_trip else "a one-way trip"
    legs_text = "; ".join(
        f"the direct flight from {_city(f['origin'])} to {_city(f['destination'])} on {_when(d)} leaving at "
        f"{f['scheduled_departure_time_est'][:5]}"
        for f, d in legs
    )
    who = (
        "just yourself"
        if len(people) == 1
        else (f"yourself and {people[1]['first_name']} {people[1]['last_name']} (born {people[1]['dob']})")
    )
    want = (
        f"You want to book {trip} in {_CABIN_WORDS[cabin]}: {legs_text}. The booking is for {who}. "
        f"You want {bags} checked bag{'s' if bags != 1 else ''} in total"
        f"{' and are fine paying for bags beyond the free allowance' if nonfree else ''}, and you "
        f"{'want' if insurance == 'yes' else 'do not want'} travel insurance. Pay everything with {card[1]}."
    )
    known = f"You are {_name(user)}, user id {user_id}, date of birth {user['dob']}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _cancel(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    users = snapshot.tables["users"]
    day_ago = "2024-05-14T15:00:00"

    def reason(res: Row) -> str | None:
        if res["created_at"] >= day_ago:
            return "You booked it yesterday and your plans changed."
        if res["cabin"] == "business":
            return "Your plans changed, so you no longer need it."
        if res["insurance"] == "yes":
            return "You are sick and cannot travel; you bought travel insurance with it."
        return None

    res = _pick(rng, snapshot.tables["reservations"], lambda r: _future(snapshot, r) and reason(r) is not None)
    if res is None:
        return None
    user_id, reservation_id = res["user_id"], res["reservation_id"]
    user = users[user_id]
    why = reason(res)
    want = (
        f"You want to cancel your reservation {reservation_id} from {_city(res['origin'])} to "
        f"{_city(res['destination'])} and get a refund. {why}"
    )
    actions = [
        Action(name="get_user_details", arguments={"user_id": user_id}),
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(name="cancel_reservation", arguments={"reservation_id": reservation_id}),
    ]
    known = f"You are {_name(user)}, user id {user_id}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _change_flights(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    flights = snapshot.tables["flights"]
    res = _pick(
        rng,
        snapshot.tables["reservations"],
        lambda r: (
            _future(snapshot, r)
            and r["cabin"] != "basic_economy"
            and r["flight_type"] == "one_way"
            and len(r["flights"]) == 1
        ),
    )
    if res is None:
        return None
    seg = res["flights"][0]
    cabin = res["cabin"]
    user = snapshot.tables["users"][res["user_id"]]
    n = len(res["passengers"])
    options = [
        (f, d)
        for f in sorted(flights.values(), key=lambda f: f["flight_number"])
        if f["origin"] == seg["origin"] and f["destination"] == seg["destination"]
        for d, s in f["dates"].items()
        if _available(s)
        and d > TODAY
        and (f["flight_number"], d) != (seg["flight_number"], seg["date"])
        and s["available_seats"][cabin] >= n
        and d != seg["date"]
    ]
    if not options:
        return None
    new_flight, new_day = rng.choice(options)
    same_day = [f for f, d in options if d == new_day]
    if len(same_day) > 1:
        return None  # the user names only the date, so it must pick one flight
    diff = (new_flight["dates"][new_day]["prices"][cabin] - seg["price"]) * n
    card = _card(user, rng, max(0, diff))
    if card is None:
        return None
    reservation_id = res["reservation_id"]
    want = (
        f"Your reservation {reservation_id} flies from {_city(seg['origin'])} to {_city(seg['destination'])} on "
        f"{_when(seg['date'])}. You want to move it to the direct flight on {_when(new_day)} instead, keeping the "
        f"same cabin. Pay or receive any fare difference with {card[1]}."
    )
    actions = [
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(
            name="search_direct_flight",
            arguments={"origin": seg["origin"], "destination": seg["destination"], "date": new_day},
        ),
        Action(
            name="update_reservation_flights",
            arguments={
                "reservation_id": reservation_id,
                "cabin": cabin,
                "flights": [{"flight_number": new_flight["flight_number"], "date": new_day}],
                "payment_id": card[0],
            },
        ),
    ]
    known = f"You are {_name(user)}, user id {res['user_id']}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _change_cabin(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    flights = snapshot.tables["flights"]
    res = _pick(rng, snapshot.tables["reservations"], lambda r: _future(snapshot, r) and r["cabin"] != "business")
    if res is None:
        return None
    new_cabin = CABINS[CABINS.index(res["cabin"]) + 1]
    n = len(res["passengers"])
    cost = 0
    for seg in res["flights"]:
        state = flights[seg["flight_number"]]["dates"][seg["date"]]
        if state["available_seats"][new_cabin] < n:
            return None
        cost += (state["prices"][new_cabin] - seg["price"]) * n
    user = snapshot.tables["users"][res["user_id"]]
    card = _card(user, rng, max(0, cost))
    if card is None:
        return None
    reservation_id = res["reservation_id"]
    want = (
        f"You want to upgrade every flight of reservation {reservation_id} to {_CABIN_WORDS[new_cabin]}, "
        f"keeping the same flights. Pay the difference with {card[1]}."
    )
    actions = [
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(
            name="update_reservation_flights",
            arguments={
                "reservation_id": reservation_id,
                "cabin": new_cabin,
                "flights": [{"flight_number": s["flight_number"], "date": s["date"]} for s in res["flights"]],
                "payment_id": card[0],
            },
        ),
    ]
    known = f"You are {_name(user)}, user id {res['user_id']}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _add_baggage(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    res = _pick(rng, snapshot.tables["reservations"], lambda r: _future(snapshot, r))
    if res is None:
        return None
    user_id, reservation_id = res["user_id"], res["reservation_id"]
    user = snapshot.tables["users"][user_id]
    extra = rng.randint(1, 2)
    total = res["total_baggages"] + extra
    free = FREE_BAGS[user["membership"]][res["cabin"]] * len(res["passengers"])
    nonfree = max(res["nonfree_baggages"], total - free)
    card = _card(user, rng, 50 * (nonfree - res["nonfree_baggages"]))
    if card is None:
        return None
    want = (
        f"You want to add {extra} checked bag{'s' if extra > 1 else ''} to reservation {reservation_id}. "
        f"If anything must be paid, use {card[1]}."
    )
    actions = [
        Action(name="get_user_details", arguments={"user_id": user_id}),
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(
            name="update_reservation_baggages",
            arguments={
                "reservation_id": reservation_id,
                "total_baggages": total,
                "nonfree_baggages": nonfree,
                "payment_id": card[0],
            },
        ),
    ]
    known = f"You are {_name(user)}, user id {user_id}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _update_passengers(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    from .generate import FIRST_NAMES, LAST_NAMES

    res = _pick(rng, snapshot.tables["reservations"], lambda r: _future(snapshot, r) and len(r["passengers"]) >= 2)
    if res is None:
        return None
    user_id, reservation_id = res["user_id"], res["reservation_id"]
    user = snapshot.tables["users"][user_id]
    index = rng.randrange(1, len(res["passengers"]))
    old = res["passengers"][index]
    new = {
        "first_name": rng.choice([n for n in FIRST_NAMES if n != old["first_name"]]),
        "last_name": rng.choice(LAST_NAMES),
        "dob": date(rng.randint(1955, 2004), rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
    }
    # Fresh dicts of the schema's fields: the arguments must not alias the shared rows.
    passengers = [{k: p[k] for k in ("first_name", "last_name", "dob")} for p in res["passengers"]]
    passengers[index] = new
    want = (
        f"On reservation {reservation_id}, {old['first_name']} {old['last_name']} can no longer travel. You want "
        f"to replace them with {new['first_name']} {new['last_name']}, born {new['dob']}. Everyone else stays."
    )
    actions = [
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(
            name="update_reservation_passengers",
            arguments={"reservation_id": reservation_id, "passengers": passengers},
        ),
    ]
    known = f"You are {_name(user)}, user id {user_id}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _compensation(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    flights = snapshot.tables["flights"]
    users = snapshot.tables["users"]

    def cancelled_segment(res: Row) -> Row | None:
        for seg in res["flights"]:
            flight = flights.get(seg["flight_number"])
            state = flight["dates"].get(seg["date"]) if flight is not None else None
            if isinstance(state, dict) and state.get("status") == "cancelled":
                return seg
        return None

    def eligible(res: Row) -> bool:
        user = users.get(res["user_id"])
        return (
            res.get("status") != "cancelled"
            and cancelled_segment(res) is not None
            and user is not None
            and (user["membership"] != "regular" or res["insurance"] == "yes" or res["cabin"] == "business")
        )

    res = _pick(rng, snapshot.tables["reservations"], eligible, tries=2000)
    seg = cancelled_segment(res) if res is not None else None
    if res is None or seg is None:
        return None
    user_id, reservation_id = res["user_id"], res["reservation_id"]
    user = users[user_id]
    amount = 100 * len(res["passengers"])
    want = (
        f"Your flight {seg['flight_number']} on {_when(seg['date'])} (reservation {reservation_id}) was cancelled "
        f"by the airline and it ruined your plans. You are upset and ask for compensation. Accept a travel "
        f"certificate if offered."
    )
    actions = [
        Action(name="get_user_details", arguments={"user_id": user_id}),
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
        Action(name="get_flight_status", arguments={"flight_number": seg["flight_number"], "date": seg["date"]}),
        Action(name="send_certificate", arguments={"user_id": user_id, "amount": amount}),
    ]
    known = f"You are {_name(user)}, user id {user_id}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, []


def _info(snapshot: Snapshot, rng: random.Random) -> Proposal | None:
    res = _pick(rng, snapshot.tables["reservations"], lambda r: r.get("status") != "cancelled")
    if res is None:
        return None
    user_id, reservation_id = res["user_id"], res["reservation_id"]
    user = snapshot.tables["users"][user_id]
    paid = sum(p["amount"] for p in res["payment_history"])
    if paid < 1000 and rng.random() < 0.5:
        return None  # prefer totals long enough not to appear by chance in unrelated text
    want = (
        f"You want to know how much you paid in total for reservation {reservation_id}. You only want the "
        f"number; do not change anything."
    )
    actions = [
        Action(name="get_user_details", arguments={"user_id": user_id}),
        Action(name="get_reservation_details", arguments={"reservation_id": reservation_id}),
    ]
    known = f"You are {_name(user)}, user id {user_id}. The reservation id is {reservation_id}."
    return want, {"known_info": known, "reason_for_call": want}, actions, [str(paid)]


_WRITERS: Mapping[str, Callable[[Snapshot, random.Random], Proposal | None]] = MappingProxyType(
    {
        "book_one_way": lambda s, r: _book(s, r, round_trip=False),
        "book_round_trip": lambda s, r: _book(s, r, round_trip=True),
        "cancel_reservation": _cancel,
        "change_flights": _change_flights,
        "change_cabin": _change_cabin,
        "add_baggage": _add_baggage,
        "update_passengers": _update_passengers,
        "compensation_certificate": _compensation,
        "info_request": _info,
    }
)


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
    if intent not in _WRITERS:
        raise ValueError(f"unknown intent {intent!r}; choose from {INTENTS}")
    proposal = _WRITERS[intent](snapshot, rng)
    if proposal is None:
        return None
    want, parts, actions, outputs = proposal
    view = snapshot.view()
    results = replay(build_tools(), view, actions)
    if any(not ok for ok, _ in results) or not (view.changes() or outputs):
        return None
    persona = rng.choice(PERSONAS)
    instruction = (
        f"{parts['known_info']} {want} Reveal details only when the agent asks for them, and do not invent "
        f"anything you were not told. {persona}"
    )
    user_id = next((a.arguments["user_id"] for a in actions if "user_id" in a.arguments), None)
    if user_id is None:
        user_id = snapshot.tables["reservations"][actions[0].arguments["reservation_id"]]["user_id"]
    return Task(
        id="proposal",
        domain="airline",
        split="train",
        user_id=user_id,
        scenario=UserScenario(
            instruction=instruction,
            persona=persona,
            reason_for_call=parts["reason_for_call"],
            known_info=parts["known_info"],
        ),
        actions=tuple(actions),
        outputs=tuple(outputs),
        provenance={"proposer": "template", "intent": intent},
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
