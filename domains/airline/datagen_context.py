"""Phase-1 context knowledge of the airline domain: tool-graph hints and the grounding of sampled records.

Named by the domain's ``DatagenSpec`` (``graph_hints``, ``grounder``), so :mod:`apigen_envs.datagen` stays
generic: a third-party domain supplies its own module of the same shape.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen.context import GraphHints
from apigen_envs.db import Snapshot, copy_row
from apigen_envs.domains.airline import models as airline_models
from apigen_envs.tools import ToolSet

_AIRLINE_RESERVATION = airline_models.Reservation


HINTS = GraphHints(
    rows=MappingProxyType(
        {
            "book_reservation": _AIRLINE_RESERVATION,
            "cancel_reservation": _AIRLINE_RESERVATION,
            "get_reservation_details": _AIRLINE_RESERVATION,
            "get_user_details": airline_models.User,
            "list_all_airports": list[airline_models.AirportCode],
            "search_direct_flight": list[airline_models.DirectFlight],
            "search_onestop_flight": list[list[airline_models.DirectFlight]],
            "update_reservation_baggages": _AIRLINE_RESERVATION,
            "update_reservation_flights": _AIRLINE_RESERVATION,
            "update_reservation_passengers": _AIRLINE_RESERVATION,
        }
    ),
    forbidden=frozenset({("cancel_reservation", "update_reservation_flights")}),
    # Airline customers give their user id; the agent reads the profile first.
    identify=("get_user_details",),
    profile="get_user_details",
)
"""What the tool signatures cannot tell: row types, identification, forbidden pairs."""

_MAX_FLIGHTS = 3


def _search_flights(tools: ToolSet, snapshot: Snapshot, origin: str, destination: str, date: str) -> list[Any]:
    """Run the domain's own ``search_direct_flight`` (a real search, so candidates are bookable)."""
    if "search_direct_flight" not in tools:
        return []
    try:
        found = tools.call(
            snapshot.view(), "search_direct_flight", {"origin": origin, "destination": destination, "date": date}
        )
    except Exception:  # noqa: BLE001 - a refused search just yields no candidates
        return []
    return list(found)[:_MAX_FLIGHTS] if isinstance(found, list) else []


def ground_airline(
    snapshot: Snapshot, tools: ToolSet, user: Mapping[str, Any], writes: Sequence[str], rng: random.Random, limit: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Airline reservations for the chosen writes, and candidate flights from a real search.

    Args:
        snapshot: The base DB.
        tools: The domain's tools.
        user: The user's row.
        writes: The walk's write tools.
        rng: Random source.
        limit: Reservations to show at most.

    Returns:
        (records, candidates): reservations by id; ``flights <origin>-><destination> on <date>`` -> the
        search results.

    """
    reservations = snapshot.tables.get("reservations", {})
    mine = [r for r in user.get("reservations", ()) if r in reservations]
    if "update_reservation_flights" in writes:
        # Basic economy flights cannot be changed: show changeable reservations first.
        mine.sort(key=lambda r: reservations[r].get("cabin") == "basic_economy")
        head = [r for r in mine if reservations[r].get("cabin") != "basic_economy"]
        rng.shuffle(head)
        mine = head + [r for r in mine if r not in head]
    else:
        rng.shuffle(mine)
    chosen = mine[:limit]
    records = {"reservations": {r: copy_row(reservations[r]) for r in chosen}} if chosen else {}
    candidates: dict[str, Any] = {}
    legs: list[tuple[str, str, str]] = []
    flights = snapshot.tables.get("flights", {})
    if "update_reservation_flights" in writes and chosen:
        first = reservations[chosen[0]]["flights"][0]
        # Bookable dates of the same route (a change keeps the trip's endpoints).
        dates = sorted(
            {
                d
                for row in flights.values()
                if row.get("origin") == first["origin"] and row.get("destination") == first["destination"]
                for d, v in row.get("dates", {}).items()
                if v.get("status") == "available" and d != first["date"]
            }
        )
        if dates:
            legs.append((first["origin"], first["destination"], rng.choice(dates)))
    if "book_reservation" in writes:
        keys = sorted(flights)
        for _ in range(8):
            row = flights[rng.choice(keys)]
            dates = sorted(d for d, v in row.get("dates", {}).items() if v.get("status") == "available")
            if dates:
                legs.append((row["origin"], row["destination"], rng.choice(dates)))
                break
    for origin, destination, date in legs:
        found = _search_flights(tools, snapshot, origin, destination, date)
        if found:
            candidates[f"flights {origin}->{destination} on {date} (search_direct_flight)"] = found
    return records, candidates
