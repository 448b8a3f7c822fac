"""Random tool calls grounded in a database, valid and invalid, for the differential tests.

Each generator draws through hypothesis (so failures shrink) a call an agent could plausibly make: real
ids in the right state most of the time, and the mistakes agents make the rest of the time (unknown ids,
the wrong status, another user's payment method, a variant of another product, amounts that do not add
up, missing or unknown arguments, wrong types, extra keys in nested objects, unknown tools).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

Call = tuple[str, dict[str, Any]]


class Picker:
    """Draws through a hypothesis ``data`` object."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def choice(self, options: Sequence[Any]) -> Any:
        """One of ``options`` (drawn by index, so failure reports stay short)."""
        options = list(options)
        return options[self.data.draw(st.integers(0, len(options) - 1))]

    def chance(self, p: float) -> bool:
        """True with probability about ``p``."""
        return self.data.draw(st.integers(0, 99)) < int(p * 100)

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return self.data.draw(st.integers(lo, hi))

    def sample(self, options: Sequence[Any], k: int) -> list[Any]:
        """``k`` options, with repeats allowed."""
        return [self.choice(options) for _ in range(k)]


WRONG_TYPES: tuple[Any, ...] = (123, ["x"], None, {"a": 1}, 1.5, True)


def mutate(p: Picker, name: str, args: dict[str, Any], required: Sequence[str]) -> Call:
    """Sometimes break a call the way agents do: drop or add an argument, a wrong type, an unknown tool."""
    if not p.chance(0.15):
        return name, args
    kind = p.choice(["drop", "extra", "wrong_type", "unknown_tool", "reserved"])
    args = dict(args)
    if kind == "drop" and required:
        args.pop(p.choice(list(required)), None)
    elif kind == "extra":
        args[p.choice(["extra", "note", "user"])] = "value"
    elif kind == "wrong_type" and args:
        args[p.choice(sorted(args))] = p.choice(WRONG_TYPES)
    elif kind == "unknown_tool":
        name = p.choice(["cancel_order", "get_order", "refund", "lookup_user"])
    elif kind == "reserved":
        args[p.choice(["data", "self", "tool_name", "requestor"])] = "value"
    return name, args


def expression(p: Picker) -> str:
    """An expression as an agent writes one for ``calculate``, or a bad one."""
    a, b, c = p.integer(0, 999), p.integer(1, 99), p.integer(0, 50)
    return p.choice(
        [
            f"{a} + {b}",
            f"{a}.{c} - {b}.5",
            f"({a} + {b}) * {c}",
            f"{a} / {b}",
            f"{a} / 0",
            f"{a} // {b}",
            f"2 ** {c}",
            f"{a} * 1.08",
            "12 apples",
            "",
            "1 2",
            "(3 + 4",
            "()",
            f"-{a} + +{b}",
            f"  {a}*{b}",
        ]
    )


# ---------------------------------------------------------------------------------------------- retail
class RetailCalls:
    """Call generator over a retail DB (tau2 shape: products, users, orders)."""

    def __init__(self, db: Mapping[str, Any]) -> None:
        self.db = db
        self.orders = list(db["orders"].values())
        self.users = list(db["users"].items())
        self.by_status: dict[str, list[dict[str, Any]]] = {}
        for order in self.orders:
            self.by_status.setdefault(order["status"], []).append(order)
        self.products = list(db["products"].values())

    def order(self, p: Picker) -> dict[str, Any]:
        status = p.choice(sorted(self.by_status))
        return p.choice(self.by_status[status])

    def order_id(self, p: Picker, order: dict[str, Any]) -> Any:
        if p.chance(0.9):
            return order["order_id"]
        return p.choice(["#W0000000", "W0000000", order["order_id"].lower()])

    def method_id(self, p: Picker, user_id: str) -> str:
        user = self.db["users"].get(user_id)
        if user is None or p.chance(0.1):
            other = p.choice(self.users)[1]
            return p.choice(sorted(other["payment_methods"])) if other["payment_methods"] else "credit_card_0"
        if p.chance(0.05):
            return "gift_card_0000000"
        return p.choice(sorted(user["payment_methods"]))

    def item_ids(self, p: Picker, order: dict[str, Any]) -> list[str]:
        owned = [i["item_id"] for i in order["items"]]
        picked = p.sample(owned, p.integer(1, min(3, len(owned)))) if owned else []
        if p.chance(0.1):
            picked.append(p.choice(["1234567890", owned[0] if owned else "0"]))
        return picked

    def new_item_ids(self, p: Picker, order: dict[str, Any], item_ids: Sequence[str]) -> list[str]:
        items = {i["item_id"]: i for i in order["items"]}
        out = []
        for item_id in item_ids:
            item = items.get(item_id)
            product = self.db["products"].get(item["product_id"]) if item else None
            kind = p.choice(["available", "available", "available", "same", "unavailable", "other", "missing"])
            if product is None or kind == "missing":
                out.append("0000000000")
            elif kind == "same":
                out.append(item_id)
            elif kind == "other":
                other = p.choice(self.products)
                out.append(p.choice(sorted(other["variants"])))
            else:
                wanted = kind == "available"
                pool = [
                    v for v, variant in product["variants"].items() if variant["available"] == wanted and v != item_id
                ]
                out.append(p.choice(sorted(pool)) if pool else item_id)
        if p.chance(0.07):
            out = out[:-1] if out else ["0000000000"]
        return out

    def address(self, p: Picker) -> dict[str, Any]:
        fields = {
            "address1": p.choice(["123 Main St", "5 Elm Road"]),
            "address2": p.choice(["", "Apt 4"]),
            "city": p.choice(["Austin", "Denver"]),
            "state": p.choice(["TX", "CO"]),
            "country": "USA",
            "zip": p.choice(["78701", "80202"]),
        }
        if p.chance(0.05):
            fields[p.choice(sorted(fields))] = 12345
        return fields

    def call(self, p: Picker, tools: Sequence[str]) -> Call:
        """One call to one of ``tools`` (the profile's tool names)."""
        name = p.choice(
            [t for t in tools for _ in range(3 if t.startswith(("modify", "cancel", "exchange", "return")) else 1)]
        )
        order = self.order(p)
        user_id = order["user_id"] if p.chance(0.9) else p.choice(["nobody_123", self.users[0][0]])
        args: dict[str, Any]
        if name == "calculate":
            args = {"expression": expression(p)}
        elif name == "cancel_pending_order":
            reason = p.choice(["no longer needed", "ordered by mistake", "no longer needed", "changed my mind"])
            args = {"order_id": self.order_id(p, order), "reason": reason}
        elif name in ("exchange_delivered_order_items", "modify_pending_order_items"):
            item_ids = self.item_ids(p, order)
            args = {
                "order_id": self.order_id(p, order),
                "item_ids": item_ids,
                "new_item_ids": self.new_item_ids(p, order, item_ids),
                "payment_method_id": self.method_id(p, order["user_id"]),
            }
        elif name == "return_delivered_order_items":
            args = {
                "order_id": self.order_id(p, order),
                "item_ids": self.item_ids(p, order),
                "payment_method_id": self.method_id(p, order["user_id"]),
            }
        elif name == "modify_pending_order_payment":
            args = {"order_id": self.order_id(p, order), "payment_method_id": self.method_id(p, order["user_id"])}
        elif name == "modify_pending_order_address":
            args = {"order_id": self.order_id(p, order), **self.address(p)}
        elif name == "modify_user_address":
            args = {"user_id": user_id, **self.address(p)}
        elif name == "find_user_id_by_email":
            user = self.db["users"].get(order["user_id"])
            email = user["email"] if user else "x@example.com"
            args = {"email": p.choice([email, email.upper(), " " + email, "nobody@example.com"])}
        elif name == "find_user_id_by_name_zip":
            user = self.db["users"].get(order["user_id"])
            first, last, zip_ = (
                (user["name"]["first_name"], user["name"]["last_name"], user["address"]["zip"])
                if user
                else ("A", "B", "1")
            )
            args = {
                "first_name": p.choice([first, first.lower(), "Nobody"]),
                "last_name": p.choice([last, last.upper()]),
                "zip": p.choice([zip_, "00000"]),
            }
        elif name == "get_order_details":
            args = {"order_id": self.order_id(p, order)}
        elif name == "get_user_details":
            args = {"user_id": user_id}
        elif name == "get_product_details":
            product_id = order["items"][0]["product_id"] if order["items"] else "0"
            args = {
                "product_id": p.choice([product_id, order["items"][0]["item_id"] if order["items"] else "1", "000"])
            }
        elif name == "get_item_details":
            args = {"item_id": p.choice([order["items"][0]["item_id"] if order["items"] else "1", "000"])}
        elif name == "list_all_product_types":
            args = {}
        elif name == "think":
            args = {"thought": "Let me check the order first."}
        else:  # transfer_to_human_agents
            args = {"summary": "The customer wants a human."}
        required = [k for k in args if name != "modify_pending_order_address" or k != "address2"]
        return mutate(p, name, args, required)


# ---------------------------------------------------------------------------------------------- airline
class AirlineCalls:
    """Call generator over an airline DB (tau2 shape: flights, users, reservations)."""

    def __init__(self, db: Mapping[str, Any]) -> None:
        self.db = db
        self.users = list(db["users"].items())
        self.reservations = list(db["reservations"].values())
        self.flights = list(db["flights"].values())
        self.bookable: list[tuple[dict[str, Any], str]] = [
            (f, day)
            for f in self.flights
            for day, state in sorted(f["dates"].items())
            if state["status"] == "available"
        ]
        self.days = sorted({day for f in self.flights for day in f["dates"]})
        self.airports = sorted({f["origin"] for f in self.flights} | {f["destination"] for f in self.flights})

    def user_id(self, p: Picker) -> str:
        return p.choice(self.users)[0] if p.chance(0.93) else "nobody_123"

    def reservation(self, p: Picker) -> dict[str, Any]:
        return p.choice(self.reservations)

    def payment_id(self, p: Picker, user_id: str) -> str:
        user = self.db["users"].get(user_id)
        if user is None or not user["payment_methods"] or p.chance(0.08):
            return p.choice(["credit_card_0000000", "gift_card_0000000"])
        return p.choice(sorted(user["payment_methods"]))

    def segment(self, p: Picker, flight: dict[str, Any], day: str) -> dict[str, Any]:
        seg: dict[str, Any] = {"flight_number": flight["flight_number"], "date": day}
        if p.chance(0.15):
            seg.update(origin=flight["origin"], destination=flight["destination"])
        if p.chance(0.05):
            seg["seat"] = "12A"
        return seg

    def passengers(self, p: Picker, user_id: str, n: int) -> list[dict[str, Any]]:
        user = self.db["users"].get(user_id)
        saved = user["saved_passengers"] if user else []
        people = []
        for i in range(n):
            base = (
                dict(saved[i % len(saved)]) if saved else {"first_name": "Ana", "last_name": "Li", "dob": "1990-01-01"}
            )
            if p.chance(0.1):
                base["gender"] = "f"
            people.append(base)
        return people

    def pay(self, p: Picker, user_id: str, total: int) -> list[dict[str, Any]]:
        user = self.db["users"].get(user_id)
        methods = sorted(user["payment_methods"].items()) if user else []
        if not methods or p.chance(0.1):
            return [{"payment_id": self.payment_id(p, user_id), "amount": total}]
        pid, method = p.choice(methods)
        if method["source"] != "credit_card" and p.chance(0.5):
            part = min(total, int(method.get("amount", 0)))
            cards = [m for m, v in methods if v["source"] == "credit_card"]
            if cards and part < total:
                return [{"payment_id": pid, "amount": part}, {"payment_id": cards[0], "amount": total - part}]
        amount = total if p.chance(0.8) else total + p.choice([-1, 10, 0.5])
        return [{"payment_id": pid, "amount": amount}]

    def call(self, p: Picker, tools: Sequence[str]) -> Call:
        """One call to one of ``tools`` (the profile's tool names)."""
        name = p.choice(
            [t for t in tools for _ in range(3 if t.startswith(("book", "cancel", "update", "send")) else 1)]
        )
        res = self.reservation(p)
        args: dict[str, Any]
        if name == "book_reservation":
            user_id = self.user_id(p)
            n = p.integer(1, 3)
            cabin = p.choice(["basic_economy", "economy", "business"])
            legs = [p.choice(self.bookable)]
            if p.chance(0.3):
                legs.append(p.choice(self.bookable))
            insurance = p.choice(["yes", "no"])
            nonfree = p.integer(0, 2)
            total = sum(f["dates"][d]["prices"][cabin] for f, d in legs) * n
            total += (30 * n if insurance == "yes" else 0) + 50 * nonfree
            args = {
                "user_id": user_id,
                "origin": legs[0][0]["origin"],
                "destination": legs[-1][0]["destination"],
                "flight_type": p.choice(["one_way", "round_trip"]),
                "cabin": cabin,
                "flights": [self.segment(p, f, d) for f, d in legs],
                "passengers": self.passengers(p, user_id, n),
                "payment_methods": self.pay(p, user_id, total),
                "total_baggages": nonfree + p.integer(0, 2),
                "nonfree_baggages": nonfree,
                "insurance": insurance,
            }
        elif name == "calculate":
            args = {"expression": expression(p)}
        elif name == "cancel_reservation":
            args = {"reservation_id": res["reservation_id"] if p.chance(0.92) else "ZZZZZZ"}
        elif name == "get_reservation_details":
            args = {"reservation_id": res["reservation_id"] if p.chance(0.9) else "ZZZZZZ"}
        elif name == "get_user_details":
            args = {"user_id": self.user_id(p)}
        elif name == "list_all_airports":
            args = {}
        elif name in ("search_direct_flight", "search_onestop_flight"):
            flight, day = p.choice(self.bookable)
            args = {
                "origin": flight["origin"] if p.chance(0.9) else p.choice(self.airports),
                "destination": p.choice([flight["destination"], p.choice(self.airports)]),
                "date": p.choice([day, p.choice(self.days), "2024-05-5", "tomorrow"]),
            }
        elif name == "send_certificate":
            args = {"user_id": self.user_id(p), "amount": p.choice([50, 100, 150.0, 0, -20])}
        elif name == "think":
            args = {"thought": "Check the reservation."}
        elif name == "transfer_to_human_agents":
            args = {"summary": "The user wants a human."}
        elif name == "update_reservation_baggages":
            total = res["total_baggages"] + p.integer(-1, 2)
            nonfree = max(0, res["nonfree_baggages"] + p.integer(-1, 2))
            args = {
                "reservation_id": res["reservation_id"],
                "total_baggages": total,
                "nonfree_baggages": nonfree,
                "payment_id": self.payment_id(p, res["user_id"]),
            }
        elif name == "update_reservation_flights":
            segments = [{"flight_number": s["flight_number"], "date": s["date"]} for s in res["flights"]]
            if segments and p.chance(0.6):
                index = p.integer(0, len(segments) - 1)
                same_route = [
                    (f, d) for f, d in self.bookable if f["origin"] == res["flights"][index]["origin"]
                ] or self.bookable
                flight, day = p.choice(same_route)
                segments[index] = self.segment(p, flight, day)
            args = {
                "reservation_id": res["reservation_id"],
                "cabin": p.choice([res["cabin"], "economy", "business", "basic_economy"]),
                "flights": segments,
                "payment_id": self.payment_id(p, res["user_id"]),
            }
        elif name == "update_reservation_passengers":
            n = len(res["passengers"]) + (0 if p.chance(0.85) else 1)
            args = {"reservation_id": res["reservation_id"], "passengers": self.passengers(p, res["user_id"], n)}
        else:  # get_flight_status
            flight, day = p.choice(self.bookable)
            args = {"flight_number": flight["flight_number"], "date": p.choice([day, "2024-06-01"])}
        return mutate(p, name, args, list(args))


def subset_db(domain: str, db: Mapping[str, Any], n_users: int, seed: int = 0) -> dict[str, Any]:
    """A smaller, self-consistent copy of a DB: ``n_users`` users, their orders or reservations, and the
    products (retail) or the flights those reservations use plus those of a few airports (airline)."""
    rng = random.Random(seed)
    users = dict(rng.sample(sorted(db["users"].items()), n_users))
    if domain == "retail":
        orders = {k: v for k, v in db["orders"].items() if v["user_id"] in users}
        users = {k: {**u, "orders": [o for o in u["orders"] if o in orders]} for k, u in users.items()}
        return {"products": dict(db["products"]), "users": users, "orders": orders}
    reservations = {k: v for k, v in db["reservations"].items() if v["user_id"] in users}
    users = {k: {**u, "reservations": [r for r in u["reservations"] if r in reservations]} for k, u in users.items()}
    used = {s["flight_number"] for r in reservations.values() for s in r["flights"]}
    hubs = set(rng.sample(sorted({f["origin"] for f in db["flights"].values()}), 4))
    flights = {k: v for k, v in db["flights"].items() if k in used or v["origin"] in hubs or v["destination"] in hubs}
    return {"flights": flights, "users": users, "reservations": reservations}
