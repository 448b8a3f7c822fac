"""Seeded generator of a realistic airline DB in tau2-bench's ``db.json`` shape.

The default (``scale=1``) matches tau-bench's size: 500 users, 2,000 reservations, 300 flights (routes
flown daily) over May 2024 around the fixed current time (2024-05-15 15:00 EST). ``scale`` multiplies
users, reservations and routes; larger networks also use more airports, so the flights per airport pair,
and with it the cost and size of a search, stay about the same.

Run ``python -m apigen_envs.domains.airline.generate --seed 0 --scale 100 --out db.json``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .airports import AIRPORTS

FIRST_NAMES: tuple[str, ...] = (
    "Aarav", "Amelia", "Anya", "Ava", "Carlos", "Chen", "Daiki", "Emma", "Ethan", "Fatima", "Harper", "Isabella",
    "Ivan", "James", "Juan", "Kevin", "Lei", "Liam", "Lucas", "Mason", "Mei", "Mia", "Mohamed", "Noah", "Olivia",
    "Omar", "Priya", "Raj", "Sofia", "Sophia", "Yara", "Yusuf", "Zoe", "Aisha", "Mateo", "Hiro", "Nora", "Elena",
    "Tomas", "Ingrid",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Ahmed", "Brown", "Davis", "Garcia", "Gonzalez", "Hernandez", "Ito", "Jackson", "Johnson", "Kim", "Kovacs",
    "Lee", "Li", "Lopez", "Martin", "Moore", "Muller", "Nguyen", "Patel", "Rossi", "Sanchez", "Santos", "Silva",
    "Smith", "Sullivan", "Taylor", "Thomas", "Wang", "Wilson", "Young", "Okafor", "Novak", "Berg", "Costa",
    "Dubois", "Haddad", "Ivanova", "Jensen", "Khan", "Larsen",
)  # fmt: skip
STREETS: tuple[str, ...] = (
    "Oak Street", "Maple Avenue", "Cedar Lane", "Pine Road", "Elm Street", "Lakeview Drive", "Sunset Boulevard",
    "River Road", "Hillcrest Avenue", "Park Place", "Main Street", "Broadway", "Willow Way", "Chestnut Street",
)  # fmt: skip
CITIES: tuple[tuple[str, str, str], ...] = (
    ("Austin", "TX", "787"), ("Denver", "CO", "802"), ("Seattle", "WA", "981"), ("Boston", "MA", "021"),
    ("Chicago", "IL", "606"), ("Phoenix", "AZ", "850"), ("New York", "NY", "100"), ("Miami", "FL", "331"),
    ("San Francisco", "CA", "941"), ("Philadelphia", "PA", "191"), ("Charlotte", "NC", "282"),
    ("Houston", "TX", "770"), ("Los Angeles", "CA", "900"), ("Detroit", "MI", "482"), ("Orlando", "FL", "328"),
)  # fmt: skip
CARD_BRANDS: tuple[str, ...] = ("visa", "mastercard", "amex", "discover")
FIRST_DAY = date(2024, 5, 1)
TODAY = date(2024, 5, 15)
NOW_MINUTES = 15 * 60
"""Minutes after midnight of the fixed current time (15:00 EST)."""
PRICE_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"basic_economy": (50, 100), "economy": (100, 200), "business": (200, 500)}
)


def _hms(minutes: int) -> str:
    day, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{text}+{day}" if day else text


def _stamp(day: date, minutes: int) -> str:
    return (datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)).isoformat()


def _flight_dates(rng: random.Random, dep: int, arr: int, days: int) -> dict[str, Any]:
    """Per-date state of one flight: history before today, live states today, bookable afterwards."""
    out: dict[str, Any] = {}
    for offset in range(days):
        day = FIRST_DAY + timedelta(days=offset)
        key = day.isoformat()
        if day < TODAY or (day == TODAY and arr + 30 < NOW_MINUTES):
            if rng.random() < 0.05:
                out[key] = {"status": "cancelled"}
                continue
            shift = rng.randint(-30, 45)
            out[key] = {
                "status": "landed",
                "actual_departure_time_est": _stamp(day, dep + shift),
                "actual_arrival_time_est": _stamp(day, arr + shift + rng.randint(-20, 20)),
            }
        elif day == TODAY:
            roll = rng.random()
            if dep <= NOW_MINUTES:
                out[key] = {
                    "status": "flying",
                    "actual_departure_time_est": _stamp(day, dep + rng.randint(0, 20)),
                    "estimated_arrival_time_est": _stamp(day, arr + rng.randint(-10, 30)),
                }
            elif roll < 0.1:
                out[key] = {"status": "cancelled"}
            elif roll < 0.3:
                delay = rng.randint(45, 240)
                out[key] = {
                    "status": "delayed",
                    "estimated_departure_time_est": _stamp(day, dep + delay),
                    "estimated_arrival_time_est": _stamp(day, arr + delay),
                }
            else:
                out[key] = {
                    "status": "on time",
                    "estimated_departure_time_est": _stamp(day, dep),
                    "estimated_arrival_time_est": _stamp(day, arr),
                }
        else:
            out[key] = {
                "status": "available",
                "available_seats": {c: rng.randint(0, 20) for c in PRICE_RANGES},
                "prices": {c: rng.randint(*r) for c, r in PRICE_RANGES.items()},
            }
    return out


def _flights(rng: random.Random, n_routes: int, n_airports: int, days: int) -> dict[str, dict[str, Any]]:
    codes = [code for code, _ in AIRPORTS[:n_airports]]
    pairs = [(a, b) for a in codes for b in codes if a < b]
    rng.shuffle(pairs)
    flights: dict[str, dict[str, Any]] = {}
    width = max(3, len(str(n_routes)))
    pair_index = 0
    # Each airport pair gets flights both ways (so round trips exist), two to four per direction.
    while len(flights) < n_routes:
        a, b = pairs[pair_index % len(pairs)]
        pair_index += 1
        for origin, destination in ((a, b), (b, a)):
            for _ in range(rng.randint(1, 2)):
                if len(flights) >= n_routes:
                    break
                number = f"HAT{len(flights) + 1:0{width}d}"
                dep = rng.randrange(0, 24 * 60, 60)
                arr = dep + rng.randint(1, 6) * 60 + rng.choice((0, 30))
                flights[number] = {
                    "flight_number": number,
                    "origin": origin,
                    "destination": destination,
                    "scheduled_departure_time_est": _hms(dep),
                    "scheduled_arrival_time_est": _hms(arr),
                    "dates": _flight_dates(rng, dep, arr, days),
                }
    return dict(sorted(flights.items()))


def _unique(rng: random.Random, used: set[str], make: Any) -> str:
    while True:
        value = make(rng)
        if value not in used:
            used.add(value)
            return value


def _users(rng: random.Random, n_users: int, used_ids: set[str]) -> dict[str, dict[str, Any]]:
    users: dict[str, dict[str, Any]] = {}
    for _ in range(n_users):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        user_id = _unique(rng, used_ids, lambda r, f=first, la=last: f"{f}_{la}_{r.randint(1000, 9999)}".lower())
        methods: dict[str, Any] = {}
        for _ in range(rng.choice((1, 1, 2))):
            pid = _unique(rng, used_ids, lambda r: f"credit_card_{r.randint(1000000, 9999999)}")
            brand = rng.choice(CARD_BRANDS)
            methods[pid] = {
                "source": "credit_card",
                "id": pid,
                "brand": brand,
                "last_four": f"{rng.randint(0, 9999):04d}",
            }
        for _ in range(rng.choice((0, 0, 1, 2))):
            pid = _unique(rng, used_ids, lambda r: f"gift_card_{r.randint(1000000, 9999999)}")
            methods[pid] = {"source": "gift_card", "id": pid, "amount": float(rng.randint(0, 300))}
        for _ in range(rng.choice((0, 0, 1, 2))):
            pid = _unique(rng, used_ids, lambda r: f"certificate_{r.randint(1000000, 9999999)}")
            methods[pid] = {"source": "certificate", "id": pid, "amount": float(rng.choice((100, 150, 250, 500)))}
        keys = list(methods)
        rng.shuffle(keys)
        city, state, zip_prefix = rng.choice(CITIES)
        users[user_id] = {
            "user_id": user_id,
            "name": {"first_name": first, "last_name": last},
            "address": {
                "address1": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                "address2": f"Suite {rng.randint(100, 999)}" if rng.random() < 0.5 else None,
                "city": city,
                "country": "USA",
                "state": state,
                "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
            },
            "email": f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com",
            "dob": _dob(rng),
            "payment_methods": {k: methods[k] for k in keys},
            "saved_passengers": [_person(rng) for _ in range(rng.choice((0, 1, 1, 2)))],
            "membership": rng.choice(("regular", "silver", "gold")),
            "reservations": [],
        }
    return users


def _dob(rng: random.Random) -> str:
    return date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)).isoformat()


def _person(rng: random.Random) -> dict[str, str]:
    return {"first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES), "dob": _dob(rng)}


def _trip(
    rng: random.Random, numbers: list[str], flights: dict[str, Any], by_origin: dict[str, list[Any]], day: date
) -> list[Any]:
    """One direction of a trip leaving on ``day``: a direct flight or a same-day one-stop connection."""
    first = flights[rng.choice(numbers)]
    legs = [(first, day)]
    arrival = first["scheduled_arrival_time_est"]
    if rng.random() < 0.4 and "+" not in arrival:
        # by_origin lists are sorted by departure time, so the onward flights are a suffix.
        departures = by_origin.get(first["destination"], [])
        start = bisect.bisect_right(departures, (arrival, "~"))
        onward = [n for _, n in departures[start:] if flights[n]["destination"] != first["origin"]]
        if onward:
            legs.append((flights[rng.choice(onward)], day))
    return legs


def _reservations(
    rng: random.Random, n_res: int, users: dict[str, Any], flights: dict[str, Any], days: int
) -> dict[str, dict[str, Any]]:
    by_origin: dict[str, list[Any]] = {}
    by_route: dict[tuple[str, str], list[str]] = {}
    for number, f in flights.items():
        by_origin.setdefault(f["origin"], []).append((f["scheduled_departure_time_est"], number))
        by_route.setdefault((f["origin"], f["destination"]), []).append(number)
    for departures in by_origin.values():
        departures.sort()
    numbers = list(flights)
    user_ids = list(users)
    used: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while len(out) < n_res:
        start = FIRST_DAY + timedelta(days=rng.randrange(days))
        outbound = _trip(rng, numbers, flights, by_origin, start)
        origin, destination = outbound[0][0]["origin"], outbound[-1][0]["destination"]
        segments = list(outbound)
        flight_type = "one_way"
        back_day = start + timedelta(days=rng.randint(1, 6))
        returns = by_route.get((destination, origin))
        if rng.random() < 0.55 and returns and (back_day - FIRST_DAY).days < days:
            segments.append((flights[rng.choice(returns)], back_day))
            flight_type = "round_trip"
        cabin = rng.choices(("basic_economy", "economy", "business"), weights=(3, 5, 3))[0]
        rid = _unique(rng, used, lambda r: "".join(r.choice(alphabet) for _ in range(6)))
        if rid.startswith("HATH"):
            continue  # keep the ids new bookings receive (HATHAT, HATHAU, ...) free
        user = users[rng.choice(user_ids)]
        people = [
            {"first_name": user["name"]["first_name"], "last_name": user["name"]["last_name"], "dob": user["dob"]}
        ]
        extra = rng.choice((0, 0, 0, 1, 1, 2, 3))
        people += (user["saved_passengers"] + [_person(rng) for _ in range(extra)])[:extra]
        legs = []
        for flight, day in segments:
            state = flight["dates"].get(day.isoformat(), {})
            price = state["prices"][cabin] if "prices" in state else rng.randint(*PRICE_RANGES[cabin])
            legs.append(
                {
                    "origin": flight["origin"],
                    "destination": flight["destination"],
                    "flight_number": flight["flight_number"],
                    "date": day.isoformat(),
                    "price": price,
                }
            )
        insurance = rng.choice(("yes", "no"))
        bag_allowance = {"regular": 0, "silver": 1, "gold": 2}[user["membership"]] + (
            {"basic_economy": 0, "economy": 1, "business": 2}[cabin]
        )
        total_bags = rng.randint(0, 3) * len(people) // max(1, len(people) // 2 + 1)
        nonfree = max(0, total_bags - bag_allowance * len(people))
        total = sum(leg["price"] for leg in legs) * len(people) + 30 * len(people) * (insurance == "yes") + 50 * nonfree
        payable = [p for p in user["payment_methods"].values() if p["source"] != "certificate"]
        method = rng.choice(payable)
        created = datetime(start.year, start.month, start.day) - timedelta(minutes=rng.randint(60, 14 * 24 * 60))
        created = min(created, datetime(2024, 5, 14, 23, 59))
        out[rid] = {
            "reservation_id": rid,
            "user_id": user["user_id"],
            "origin": origin,
            "destination": destination,
            "flight_type": flight_type,
            "cabin": cabin,
            "flights": legs,
            "passengers": people,
            "payment_history": [{"payment_id": method["id"], "amount": total}],
            "created_at": created.isoformat(timespec="seconds"),
            "total_baggages": total_bags,
            "nonfree_baggages": nonfree,
            "insurance": insurance,
        }
        user["reservations"].append(rid)
    return out


def generate_db(seed: int = 0, scale: float = 1.0, days: int = 30) -> dict[str, Any]:
    """Generate an airline DB as raw JSON in tau2's ``db.json`` shape.

    Args:
        seed: RNG seed; the same seed and scale always give the same DB.
        scale: Multiplies users (500), reservations (2,000) and routes (300).
        days: Dates per flight, from 2024-05-01 (at least 16, so some dates are still bookable).

    Returns:
        ``{"flights": {...}, "users": {...}, "reservations": {...}}``.

    Raises:
        ValueError: For a non-positive scale or too few days.

    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not 16 <= days <= 31:
        raise ValueError(f"days must be between 16 and 31, got {days}")
    rng = random.Random(seed)
    n_routes = max(10, round(300 * scale))
    n_airports = min(len(AIRPORTS), max(6, round(20 * math.sqrt(scale))))
    flights = _flights(rng, n_routes, n_airports, days)
    used_ids: set[str] = set()
    users = _users(rng, max(1, round(500 * scale)), used_ids)
    reservations = _reservations(rng, max(1, round(2000 * scale)), users, flights, days)
    return {"flights": flights, "users": users, "reservations": reservations}


def write_db(db: dict[str, Any], path: Path) -> None:
    """Write a generated DB as compact JSON, one table row per line (small files, readable diffs)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        for t, (table, rows) in enumerate(db.items()):
            out.write(("," if t else "") + f"\n{json.dumps(table)}: {{")
            for r, (key, row) in enumerate(rows.items()):
                out.write(("," if r else "") + f"\n{json.dumps(key)}: {json.dumps(row, separators=(',', ':'))}")
            out.write("\n}")
        out.write("\n}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Generate a synthetic airline DB (tau2 db.json shape).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        db = generate_db(args.seed, args.scale, args.days)
    except ValueError as exc:
        parser.error(str(exc))
    write_db(db, args.out)
    sizes = {k: len(v) for k, v in db.items()}
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes): {sizes}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
