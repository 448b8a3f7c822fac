"""Offline template proposer for retail task blueprints (the domain half of APIGen-MT phase 1).

:func:`propose` samples real records from a snapshot (a user, their orders, product variants, payment
methods), walks the tool dependency chain an agent would follow (authenticate -> user details -> order
details -> product details -> write), and writes the customer's instruction from templates: persona,
what they know, what they want and what to answer when asked. The gold actions are replayed on a fresh
view before a task is returned: a task whose replay raises an error, or that neither changes the DB nor
asks for an output, is never produced (``None`` is returned instead, as when the sampled records do not
fit the intent).

:func:`build_task_set` makes a raw template task set::

    python -m apigen_envs.domains.retail.templates --seed 0 --out /tmp/raw_tasks.json

(The embedded ``data/tasks.json`` is the phase-1 pipeline's output over these templates:
``apigen-envs blueprints --domain retail --n 200 --seed 0 --recombine 20 --out domains/retail/data/tasks.json``.)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen import voice
from apigen_envs.db import DBView, Snapshot
from apigen_envs.peer_tasks import compose_instruction
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.tools import ToolSet
from apigen_envs.verify import replay

from . import NAME, load_db
from .generate import random_address, to_cents
from .tools import build_tools

Row = dict[str, Any]
"""A DB row as read from a view (shared: never mutated here)."""

REASON_TEXT = MappingProxyType(
    {"no longer needed": "you no longer need it", "ordered by mistake": "you ordered it by mistake"}
)
REASON_VOICE = MappingProxyType(
    {
        "no longer needed": (
            "you don't need it anymore",
            "your plans changed and it is no longer needed",
            "it turned out you have no use for it",
            "a friend already gave you one, so it is not needed",
        ),
        "ordered by mistake": (
            "you placed it by mistake",
            "you clicked the wrong button and ordered it by accident",
            "it was ordered by mistake",
            "your kid ordered it by accident on your account",
        ),
    }
)
COLOR_KEYS = ("color", "frame color", "dial color")
USER_TRIES = 8
"""Customers tried per proposal before giving up (multi-part intents need a customer with enough orders)."""


@functools.cache
def _tools() -> ToolSet:
    # Built once: the proposer replays every draft with these tools.
    return build_tools()


@functools.lru_cache(maxsize=8)
def _user_ids(snapshot: Snapshot) -> tuple[str, ...]:
    return tuple(snapshot.tables["users"])


def money(value: float) -> str:
    """An amount as a required output: the shortest text ("12.5", "30") that the ways an agent may write
    it ("$12.50", "12.5", "$1,234.50") all contain once commas are dropped.
    """
    return f"{to_cents(value):.2f}".rstrip("0").rstrip(".")


def dollars(value: float) -> str:
    """An amount as the customer says it (``$12.50``)."""
    return f"${to_cents(value):,.2f}"


def describe_options(options: dict[str, str]) -> str:
    """``{"color": "red", "size": "M"}`` -> ``"color red, size M"``."""
    return ", ".join(f"{name} {value}" for name, value in options.items())


def describe_item(item: Row) -> str:
    """An order item as the customer would name it."""
    return f"{item['name']} ({describe_options(item['options'])})"


def describe_address(a: dict[str, str]) -> str:
    """An address on one line."""
    line2 = f", {a['address2']}" if a["address2"] else ""
    return f"{a['address1']}{line2}, {a['city']}, {a['state']} {a['zip']}, {a['country']}"


def describe_method(method: Row, rng: random.Random | None = None) -> str:
    """A payment method as the customer would name it (phrased variously when given a random source)."""
    if method["source"] == "credit_card":
        if rng is not None:
            return voice.card(rng, method["brand"], method["last_four"]).removeprefix("your ").removeprefix("the ")
        return f"{method['brand']} credit card ending in {method['last_four']}"
    if method["source"] == "gift_card":
        return "gift card"
    return "PayPal account"


@dataclass
class Draft:
    """A task being written: the user (key and row), the gold actions so far and the instruction's pieces.

    ``refusal`` names the policy rule a refusal task pushes against and the call the customer asks for
    (never made: the policy stage checks that the rule forbids it); ``family`` is the task family.
    """

    view: DBView
    rng: random.Random
    user_id: str
    user: Row
    actions: list[Action] = field(default_factory=list)
    wants: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    if_asked: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    seen_orders: set[str] = field(default_factory=set)
    refusal: dict[str, Any] | None = None
    changes_mind: bool = False

    def call(self, name: str, **arguments: Any) -> None:
        """Append a gold action."""
        self.actions.append(Action(name=name, arguments=arguments))

    def say(self, *options: str) -> str:
        """One of several phrasings."""
        return self.rng.choice(options)

    def orders(self, *statuses: str) -> list[Row]:
        """The user's orders with one of these statuses, in profile order."""
        found = (self.view.orders.get(order_id) for order_id in self.user["orders"])
        return [o for o in found if o is not None and o["status"] in statuses]

    def pick_order(self, *statuses: str, exclude: Sequence[str] = ()) -> Row | None:
        """A random order of the user with one of these statuses, not one this task already uses."""
        skip = set(exclude) | self.seen_orders
        candidates = [o for o in self.orders(*statuses) if o["order_id"] not in skip]
        return self.rng.choice(candidates) if candidates else None

    def look_up_order(self, order: Row, hint: str | None = None) -> str:
        """Add the reads that find ``order`` and return how the customer refers to it.

        Most customers do not have the order id at hand: they describe the order by what is in it (when
        that singles it out among the user's orders), and the agent reads the profile's orders in turn.
        """
        order_id = order["order_id"]
        if order_id in self.seen_orders:
            return self.say("that same order", "the same order", "that order too")
        self.seen_orders.add(order_id)
        names = sorted(item["name"] for item in order["items"])
        same = [o for o in self.orders(*_ALL_STATUSES) if sorted(i["name"] for i in o["items"]) == names]
        if self.rng.random() < 0.1 or len(same) != 1:
            self.known.append(self.say(f"Your order id is {order_id}.", f"You have the order number: {order_id}."))
            self.call("get_order_details", order_id=order_id)
            return self.say(f"order {order_id}", f"the order {order_id}", f"your order {order_id}")
        if self.rng.random() < 0.45:
            self.unknown.append(
                self.say(
                    "No order number at hand.",
                    "You lost the confirmation e-mail.",
                    "The order id? No clue.",
                    "You never kept the order number.",
                    "The receipt got thrown away.",
                    "You can't find the order confirmation.",
                    "Order numbers are not your thing.",
                    "You deleted the shop's e-mails.",
                    "The order id is somewhere in an inbox you can't open right now.",
                    "Your partner placed it, so you never saw the order number.",
                )
            )
        for other_id in self.user["orders"]:
            self.call("get_order_details", order_id=other_id)
            if other_id == order_id:
                break
        things = " and the ".join(n.lower() for n in names)
        return hint or self.say(
            f"the order with the {things}",
            f"the one with the {things} in it",
            f"the {things} order",
            f"your order containing the {things}",
            f"the purchase that had the {things}",
            f"the {things} you bought",
            f"that {things} purchase",
            f"the {things} package",
            f"what you ordered ({things})",
        )

    def payment_choice(self, amount_due: float, exclude: Sequence[str] = ()) -> tuple[str, Row] | None:
        """A saved payment method able to pay ``amount_due`` (gift cards need the balance): (id, method)."""
        methods = [
            (method_id, m)
            for method_id, m in self.user["payment_methods"].items()
            if method_id not in exclude and not (m["source"] == "gift_card" and m["balance"] < amount_due)
        ]
        return self.rng.choice(methods) if methods else None


_ALL_STATUSES = ("pending", "processed", "delivered", "cancelled", "return requested", "exchange requested")


def _start(view: DBView, rng: random.Random, user_id: str) -> Draft:
    """Authenticate (by email, or by name and zip when that identifies the user) and read the profile."""
    user = view.users[user_id]
    draft = Draft(view, rng, user_id, user)
    first, last, zip_code = user["name"]["first_name"], user["name"]["last_name"], user["address"]["zip"]
    # Matched as the tools match it (lower-cased), so the name and zip single out exactly this user.
    by_name = view.users.lookup_keys("name_zip", (first.lower(), last.lower(), zip_code))
    if rng.random() < 0.5 or len(by_name) != 1:
        email = user["email"]
        draft.known.append(
            draft.say(
                f"Your e-mail address is {email}.",
                f"E-mail on file: {email}.",
                f"The account is under {email}.",
                f"You shop as {email}.",
                f"Log-in e-mail: {email}.",
                f"You registered with {email}.",
                f"{email} is the address the store knows you by.",
                f"Reach the account through {email}.",
            )
        )
        draft.call("find_user_id_by_email", email=email)
    else:
        draft.known.append(
            draft.say(
                f"Your name is {first} {last} and you live in zip code {zip_code}.",
                f"You are {first} {last}, zip {zip_code}.",
                f"Zip code {zip_code}; full name {first} {last}.",
                f"{first} {last}, living in {zip_code}.",
                f"Postal code {zip_code}, name {first} {last}.",
                f"{first} {last}; zip {zip_code}.",
                f"Home zip: {zip_code}. Name: {first} {last}.",
            )
        )
        if rng.random() < 0.6:
            draft.unknown.append(
                draft.say(
                    "You forgot your e-mail.",
                    "Which e-mail? You have no idea.",
                    "You can't recall the e-mail you used.",
                    "The e-mail address escapes you.",
                    "Too many inboxes.",
                    "No e-mail to give.",
                )
            )
        draft.call("find_user_id_by_name_zip", first_name=first, last_name=last, zip=zip_code)
    draft.call("get_user_details", user_id=user_id)
    return draft


def _new_address(rng: random.Random, current: Row) -> dict[str, str]:
    while True:
        address = random_address(rng)
        if address != current:
            return address


def _others(product: Row, item: Row) -> list[Row]:
    return [
        v
        for v in product["variants"].values()
        if v["available"] and v["item_id"] != item["item_id"] and v["options"] != item["options"]
    ]


def _swaps(draft: Draft, order: Row, max_items: int) -> list[tuple[Row, Row, Row]]:
    """Up to ``max_items`` (item, new variant, product): items of the order, each with another available
    variant of its product.
    """
    options: list[tuple[int, Row, Row, list[Row]]] = []
    for index, item in enumerate(order["items"]):
        product = draft.view.products.get(item["product_id"])
        if product is None or any(item["item_id"] == o[1]["item_id"] for o in options):
            continue
        others = _others(product, item)
        if others:
            options.append((index, item, product, others))
    if not options:
        return []
    chosen = draft.rng.sample(options, draft.rng.randint(1, min(max_items, len(options))))
    chosen.sort(key=lambda o: o[0])
    return [(item, draft.rng.choice(others), product) for _, item, product, others in chosen]


def _describe_swap(draft: Draft, item: Row, new: Row) -> str:
    changed = {k: v for k, v in new["options"].items() if item["options"].get(k) != v}
    if set(new["options"]) != set(item["options"]):
        changed = dict(new["options"])
    name = item["name"].lower()
    if len(changed) == 1:
        ((key, value),) = changed.items()
        if key in COLOR_KEYS:
            return draft.say(
                f"the {name} for the same one in {value}",
                f"the {describe_item(item)} for an otherwise identical one in {value}",
                f"the {name} so it comes in {value} instead",
            )
        return draft.say(
            f"the {name} for one with {key} {value}, everything else the same",
            f"the {describe_item(item)} for the {key} {value} version",
            f"the {name} so that its {key} is {value}",
        )
    return draft.say(
        f"the {describe_item(item)} for the same {name} but with {describe_options(changed)}",
        f"the {name} for the {describe_options(changed)} variant",
    )


def _pay_line(draft: Draft, method: Row, diff: float) -> None:
    where = describe_method(method, draft.rng)
    if diff > 0:
        draft.if_asked.append(
            draft.say(
                f"Any extra cost goes on your {where}.",
                f"You will pay the difference with your {where}.",
                f"The {where} covers anything extra to pay.",
            )
        )
    else:
        draft.if_asked.append(
            draft.say(
                f"Any money back should go to your {where}.",
                f"Refund the difference to your {where}.",
                f"Money coming back goes to the {where}.",
            )
        )


def _item_change(
    draft: Draft, statuses: tuple[str, ...], tool: str, verb: str, max_items: int = 2, order: Row | None = None
) -> bool:
    order = order or draft.pick_order(*statuses)
    if order is None:
        return False
    swaps = _swaps(draft, order, max_items=max_items)
    if not swaps:
        return False
    ref = draft.look_up_order(order)
    for product_id in dict.fromkeys(p["product_id"] for _, _, p in swaps):
        draft.call("get_product_details", product_id=product_id)
    diff = to_cents(sum(new["price"] - item["price"] for item, new, _ in swaps))
    choice = draft.payment_choice(max(diff, 0.0))
    if choice is None:
        return False
    method_id, method = choice
    changes = "; and ".join(_describe_swap(draft, item, new) for item, new, _ in swaps)
    draft.wants.append(
        draft.say(
            f"For {ref}, you want to {verb} {changes}.",
            f"You'd like to {verb} {changes} in {ref}.",
            f"In {ref} you want to {verb} {changes}.",
        )
    )
    _guard(draft, order["status"])
    _pay_line(draft, method, diff)
    if len(swaps) > 1:
        draft.if_asked.append(
            draft.say(
                "Make sure every item is mentioned before you confirm, since it can only be done once.",
                "List all the items at once; you know the change can only be made a single time.",
            )
        )
    draft.call(
        tool,
        order_id=order["order_id"],
        item_ids=[item["item_id"] for item, _, _ in swaps],
        new_item_ids=[new["item_id"] for _, new, _ in swaps],
        payment_method_id=method_id,
    )
    return True


# ---------------------------------------------------------------------------------------------- parts
def _guard(draft: Draft, status: str) -> None:
    """Sometimes make the request depend on the order's status (which the agent must check; it holds)."""
    if draft.rng.random() < 0.55:
        return
    if status == "pending":
        draft.wants.append(
            draft.say(
                "If it has already shipped, forget about it.",
                "That is only if it hasn't left the warehouse yet; if it has, leave it.",
                "Should it already be on its way, never mind.",
                "If it went out already, don't touch it.",
            )
        )
    else:
        draft.wants.append(
            draft.say(
                "If the system says it was never delivered, drop this request.",
                "If it turns out it hasn't been delivered, leave it alone.",
                "Only if it shows as delivered, of course.",
            )
        )


def _cancel(draft: Draft, tell_amount: bool = False, order: Row | None = None) -> bool:
    order = order or draft.pick_order("pending")
    if order is None:
        return False
    reason = draft.rng.choice(tuple(REASON_TEXT))
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You want to cancel {ref}.",
            f"Please get {ref} cancelled.",
            f"You need {ref} called off before it ships.",
            f"Cancel {ref} - that's the main thing.",
        )
    )
    _guard(draft, "pending")
    draft.if_asked.append(
        draft.say(
            f"The reason: {draft.rng.choice(REASON_VOICE[reason])}.",
            f"If the agent asks for a reason, say {draft.rng.choice(REASON_VOICE[reason])}.",
        )
    )
    if tell_amount:
        total = to_cents(sum(p["amount"] for p in order["payment_history"] if p["transaction_type"] == "payment"))
        draft.wants.append(
            draft.say(
                "You also want to hear how much you will get back.",
                "Ask what the total refund comes to.",
                "Before hanging up, find out the refund amount.",
            )
        )
        draft.outputs.append(money(total))
    draft.call("cancel_pending_order", order_id=order["order_id"], reason=reason)
    return True


def _modify_order_address(draft: Draft) -> bool:
    order = draft.pick_order("pending")
    if order is None:
        return False
    ref = draft.look_up_order(order)
    default = draft.user["address"]
    if order["address"] != default and draft.rng.random() < 0.4:
        new = dict(default)
        draft.wants.append(
            draft.say(
                f"You want {ref} sent to your default address instead.",
                f"{ref[0].upper()}{ref[1:]} should go to the address on your profile, not where it is headed now.",
            )
        )
    else:
        new = _new_address(draft.rng, order["address"])
        draft.wants.append(
            draft.say(
                f"You want {ref} shipped to {describe_address(new)}.",
                f"You'll be staying at {describe_address(new)}, so {ref} should be delivered there.",
                f"Redirect {ref} to {describe_address(new)}.",
            )
        )
    _guard(draft, "pending")
    draft.call("modify_pending_order_address", order_id=order["order_id"], **new)
    return True


def _modify_order_items(draft: Draft) -> bool:
    return _item_change(draft, ("pending",), "modify_pending_order_items", draft.say("swap", "change", "switch"))


def _modify_order_payment(draft: Draft) -> bool:
    candidates = [
        o for o in draft.orders("pending") if len(o["payment_history"]) == 1 and o["order_id"] not in draft.seen_orders
    ]
    if not candidates:
        return False
    order = draft.rng.choice(candidates)
    old = order["payment_history"][0]
    choice = draft.payment_choice(old["amount"], exclude=(old["payment_method_id"],))
    if choice is None:
        return False
    method_id, method = choice
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You want to pay for {ref} with your {describe_method(method, draft.rng)} instead.",
            f"Move the payment of {ref} over to your {describe_method(method, draft.rng)}.",
            f"You would rather have {ref} charged to your {describe_method(method, draft.rng)}.",
        )
    )
    draft.call("modify_pending_order_payment", order_id=order["order_id"], payment_method_id=method_id)
    return True


def _modify_user_address(draft: Draft) -> bool:
    if any(a.name == "modify_user_address" for a in draft.actions):
        return False
    new = _new_address(draft.rng, draft.user["address"])
    draft.wants.append(
        draft.say(
            f"You moved and want your default address changed to {describe_address(new)}.",
            f"New home address: {describe_address(new)}.",
            f"Update the address on your account to {describe_address(new)}.",
            f"You recently relocated to {describe_address(new)} and want the account to show it.",
        )
    )
    draft.call("modify_user_address", user_id=draft.user_id, **new)
    return True


def _exchange(draft: Draft) -> bool:
    return _item_change(draft, ("delivered",), "exchange_delivered_order_items", draft.say("exchange", "trade"))


def _return(draft: Draft, tell_amount: bool = False, order: Row | None = None) -> bool:
    order = order or draft.pick_order("delivered")
    if order is None or not order["payment_history"]:
        return False
    items = draft.rng.sample(list(order["items"]), draft.rng.randint(1, len(order["items"])))
    original = order["payment_history"][0]["payment_method_id"]
    targets = [
        (method_id, m)
        for method_id, m in draft.user["payment_methods"].items()
        if method_id == original or m["source"] == "gift_card"
    ]
    if not targets:
        return False
    method_id, method = draft.rng.choice(targets)
    ref = draft.look_up_order(order)
    every = len(items) == len(order["items"])
    what = "everything in it" if every else " and the ".join(describe_item(i) for i in items)
    where = (
        draft.say("the original payment method", "the card you paid with", "wherever the money came from")
        if method_id == original
        else f"your {describe_method(method, draft.rng)}"
    )
    draft.wants.append(
        draft.say(
            f"From {ref}, you want to return {what}; the refund goes to {where}.",
            f"You're sending back {what} from {ref} and want the money on {where}.",
            f"Return {what} from {ref}, refunded to {where}.",
        )
    )
    _guard(draft, "delivered")
    if tell_amount:
        draft.wants.append(draft.say("Ask how much the refund will be.", "You want to know the refund amount."))
        draft.outputs.append(money(sum(i["price"] for i in items)))
    draft.call(
        "return_delivered_order_items",
        order_id=order["order_id"],
        item_ids=[i["item_id"] for i in items],
        payment_method_id=method_id,
    )
    return True


def _info_refund_estimate(draft: Draft) -> bool:
    order = draft.pick_order("delivered")
    if order is None or len(order["items"]) < 2:
        return False
    items = draft.rng.sample(list(order["items"]), draft.rng.randint(2, len(order["items"])))
    ref = draft.look_up_order(order)
    listed = " and the ".join(describe_item(i) for i in items)
    draft.wants.append(
        draft.say(
            f"You are thinking about returning the {listed} from {ref} and want to know how much you would get "
            "back in total. Only the amount for now: nothing should be returned yet.",
            f"Before deciding, you want the combined refund you'd get for the {listed} in {ref}. Do not start a "
            "return.",
        )
    )
    draft.call("calculate", expression=" + ".join(f"{i['price']:.2f}" for i in items))
    draft.outputs.append(money(sum(i["price"] for i in items)))
    return True


def _tracked(draft: Draft, *statuses: str) -> list[Row]:
    return [
        o
        for o in draft.orders(*statuses)
        if len(o["fulfillments"]) == 1
        and len(o["fulfillments"][0]["tracking_id"]) == 1
        and o["order_id"] not in draft.seen_orders
    ]


def _info_tracking(draft: Draft) -> bool:
    candidates = _tracked(draft, "processed", "delivered")
    if not candidates:
        return False
    order = draft.rng.choice(candidates)
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You want the tracking number for {ref}.",
            f"Where is {ref}? You want its tracking number.",
            f"Get the shipment tracking code of {ref}.",
        )
    )
    draft.outputs.append(order["fulfillments"][0]["tracking_id"][0])
    return True


# ---------------------------------------------------------------------------- lookups and conditions
def _cheapest_variant(draft: Draft) -> bool:
    """Switch an item of a pending order to the cheapest available variant of its product."""
    order = draft.pick_order("pending")
    if order is None:
        return False
    for item in draft.rng.sample(list(order["items"]), len(order["items"])):
        product = draft.view.products.get(item["product_id"])
        others = _others(product, item) if product is not None else []
        if not others:
            continue
        cheapest = min(others, key=lambda v: v["price"])
        if cheapest["price"] >= item["price"] or sum(v["price"] == cheapest["price"] for v in others) > 1:
            continue
        choice = draft.payment_choice(0.0)
        if choice is None:
            return False
        ref = draft.look_up_order(order)
        draft.call("get_product_details", product_id=item["product_id"])
        name = item["name"].lower()
        draft.wants.append(
            draft.say(
                f"The {name} in {ref} is more than you want to spend: switch it to the cheapest {name} still "
                "available, whatever the options.",
                f"You'd like the least expensive version of the {name} you ordered in {ref} instead.",
                f"For {ref}, change the {name} to whichever available {name} costs the least.",
            )
        )
        _pay_line(draft, choice[1], -1.0)
        draft.call(
            "modify_pending_order_items",
            order_id=order["order_id"],
            item_ids=[item["item_id"]],
            new_item_ids=[cheapest["item_id"]],
            payment_method_id=choice[0],
        )
        return True
    return False


def _color_fallback(draft: Draft) -> bool:
    """Exchange for a colour that is out of stock unless a second colour is named: the agent must check."""
    order = draft.pick_order("delivered")
    if order is None:
        return False
    for item in order["items"]:
        product = draft.view.products.get(item["product_id"])
        key = next((k for k in COLOR_KEYS if k in item["options"]), None)
        if product is None or key is None:
            continue
        same_rest = [
            v
            for v in product["variants"].values()
            if v["options"].get(key) != item["options"][key]
            and all(v["options"].get(k) == o for k, o in item["options"].items() if k != key)
        ]
        gone = [v for v in same_rest if not v["available"]]
        there = [v for v in same_rest if v["available"]]
        if not gone or not there:
            continue
        first, second = draft.rng.choice(gone), draft.rng.choice(there)
        choice = draft.payment_choice(max(second["price"] - item["price"], 0.0))
        if choice is None:
            return False
        ref = draft.look_up_order(order)
        draft.call("get_product_details", product_id=item["product_id"])
        name, c1, c2 = item["name"].lower(), first["options"][key], second["options"][key]
        draft.wants.append(
            draft.say(
                f"You want to exchange the {name} from {ref} for the same one in {c1}. If {c1} is sold out, "
                f"{c2} is your second choice.",
                f"The {name} in {ref} should be swapped for a {c1} one; if that colour isn't in stock, take "
                f"{c2} instead.",
                f"Exchange the {name} ({ref}) for {c1} - or, if there is no {c1} available, for {c2}.",
            )
        )
        _pay_line(draft, choice[1], second["price"] - item["price"])
        draft.call(
            "exchange_delivered_order_items",
            order_id=order["order_id"],
            item_ids=[item["item_id"]],
            new_item_ids=[second["item_id"]],
            payment_method_id=choice[0],
        )
        return True
    return False


def _cancel_or_return(draft: Draft) -> bool:
    """Get rid of an order: cancel it if it has not shipped, else return it (the branch is the DB's)."""
    order = draft.pick_order("pending", "delivered")
    if order is None:
        return False
    # The customer names one product, so it must be in no other order of theirs.
    elsewhere = {i["name"] for o in draft.orders(*_ALL_STATUSES) if o is not order for i in o["items"]}
    names = [i["name"] for i in order["items"] if i["name"] not in elsewhere]
    if not names:
        return False
    name = draft.rng.choice(names).lower()
    draft.wants.append(
        draft.say(
            f"You don't want the {name} order anymore. If it hasn't shipped, cancel it; if it has already "
            "arrived, return all of it.",
            f"You are not sure whether the {name} was delivered yet. If it is still pending, cancel the order; "
            "otherwise send everything in it back.",
            f"Whatever state the {name} order is in, you want out: cancel it if possible, and if it was "
            "delivered, return the whole thing.",
        )
    )
    hint = draft.say(f"the {name} order", f"the order with the {name}")
    draft.look_up_order(order, hint)
    if order["status"] == "pending":
        reason = draft.rng.choice(tuple(REASON_TEXT))
        draft.if_asked.append(
            draft.say("Why cancel? ", "Reason: ", "Because ") + f"{draft.rng.choice(REASON_VOICE[reason])}."
        )
        draft.call("cancel_pending_order", order_id=order["order_id"], reason=reason)
        return True
    original = order["payment_history"][0]["payment_method_id"] if order["payment_history"] else None
    if original is None:
        return False
    draft.if_asked.append(draft.say("The refund goes back to how you paid.", "Refund it to the original method."))
    draft.call(
        "return_delivered_order_items",
        order_id=order["order_id"],
        item_ids=[i["item_id"] for i in order["items"]],
        payment_method_id=original,
    )
    return True


def _exchange_within_budget(draft: Draft) -> bool:
    """Exchange only if the new variant costs at most a limit more; otherwise return (resolved here)."""
    order = draft.pick_order("delivered")
    if order is None or not order["payment_history"]:
        return False
    swaps = _swaps(draft, order, max_items=1)
    if not swaps:
        return False
    item, new, product = swaps[0]
    extra = to_cents(new["price"] - item["price"])
    limit = draft.rng.choice((10, 20, 25, 50, 75, 100))
    if abs(abs(extra) - limit) < 1:
        return False
    ref = draft.look_up_order(order)
    draft.call("get_product_details", product_id=product["product_id"])
    swap = _describe_swap(draft, item, new)
    draft.wants.append(
        draft.say(
            f"You'd like to exchange {swap} from {ref}, but only if it costs no more than ${limit} extra. If it "
            "is pricier than that, return the item instead.",
            f"For {ref}: exchange {swap} if the price difference is ${limit} or less; otherwise just return it.",
            f"Your budget for the upgrade is ${limit}. Exchange {swap} ({ref}) if that covers it, and if not, "
            "you will return the item.",
        )
    )
    original = order["payment_history"][0]["payment_method_id"]
    if extra <= limit:
        choice = draft.payment_choice(max(extra, 0.0))
        if choice is None:
            return False
        _pay_line(draft, choice[1], extra)
        draft.call(
            "exchange_delivered_order_items",
            order_id=order["order_id"],
            item_ids=[item["item_id"]],
            new_item_ids=[new["item_id"]],
            payment_method_id=choice[0],
        )
    else:
        draft.if_asked.append(draft.say("A refund goes to the original payment.", "Refund to how you paid."))
        draft.call(
            "return_delivered_order_items",
            order_id=order["order_id"],
            item_ids=[item["item_id"]],
            payment_method_id=original,
        )
    return True


def _change_of_mind(draft: Draft) -> bool:
    """Ask for a cancellation, then change one's mind: keep the order and change its address."""
    order = draft.pick_order("pending")
    if order is None:
        return False
    ref = draft.look_up_order(order)
    new = _new_address(draft.rng, order["address"])
    draft.wants.append(
        draft.say(
            f"You start by asking to cancel {ref}. Before agreeing, change your mind: you keep it after all, "
            f"but it has to go to {describe_address(new)}.",
            f"Open by saying you want {ref} cancelled. Once the agent is about to do it, say you've thought "
            f"again and would rather have it delivered to {describe_address(new)} instead; do not cancel.",
            f"At first you want to cancel {ref}; halfway through you decide to keep it, as long as it is "
            f"shipped to {describe_address(new)}.",
        )
    )
    draft.changes_mind = True
    draft.call("modify_pending_order_address", order_id=order["order_id"], **new)
    return True


def _return_then_exchange(draft: Draft) -> bool:
    """Ask for a return, then prefer an exchange once the options are known."""
    order = draft.pick_order("delivered")
    if order is None:
        return False
    swaps = _swaps(draft, order, max_items=1)
    if not swaps:
        return False
    item, new, product = swaps[0]
    choice = draft.payment_choice(max(new["price"] - item["price"], 0.0))
    if choice is None:
        return False
    ref = draft.look_up_order(order)
    draft.call("get_product_details", product_id=product["product_id"])
    swap = _describe_swap(draft, item, new)
    draft.wants.append(
        draft.say(
            f"You call to return the {item['name'].lower()} from {ref}. When you hear it can be exchanged "
            f"instead, change your mind and exchange {swap}.",
            f"You first think you'll return the {item['name'].lower()} ({ref}), then decide an exchange is "
            f"better: {swap}. Nothing gets returned.",
        )
    )
    draft.changes_mind = True
    _pay_line(draft, choice[1], new["price"] - item["price"])
    draft.call(
        "exchange_delivered_order_items",
        order_id=order["order_id"],
        item_ids=[item["item_id"]],
        new_item_ids=[new["item_id"]],
        payment_method_id=choice[0],
    )
    return True


# ------------------------------------------------------------------------------------------ refusals
def _refuse_cancel_shipped(draft: Draft) -> bool:
    """Cancel an order that already shipped: forbidden; the customer settles for its tracking number."""
    candidates = _tracked(draft, "processed")
    if not candidates:
        return False
    order = draft.rng.choice(candidates)
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You insist on cancelling {ref}, even if the agent says it is too late. Push back once. If it "
            "really cannot be cancelled, ask for the tracking number instead and accept that.",
            f"You want {ref} cancelled right now. If you are told that is not possible, complain, then settle "
            "for the tracking number of the shipment.",
            f"Cancel {ref}, you say. Should the agent refuse, argue a little, then ask where the package is "
            "(its tracking number).",
        )
    )
    draft.outputs.append(order["fulfillments"][0]["tracking_id"][0])
    draft.refusal = {
        "rule": "retail.pending_only",
        "forbidden": [
            Action(name="cancel_pending_order", arguments={"order_id": order["order_id"], "reason": "no longer needed"})
        ],
    }
    return True


def _refuse_return_pending(draft: Draft) -> bool:
    """Return items of an order that has not been delivered: forbidden; the customer asks what they paid."""
    order = draft.pick_order("pending")
    if order is None or len(order["payment_history"]) != 1:
        return False
    item = draft.rng.choice(order["items"])
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You want to return the {item['name'].lower()} from {ref} right away, although it has not arrived. "
            "If the agent says that is not allowed, drop it and ask what the order cost in total.",
            f"You are adamant about sending back the {item['name'].lower()} in {ref}. When the agent explains "
            "why not, ask for the total you were charged for the order.",
        )
    )
    draft.if_asked.append(draft.say("Do not cancel the order.", "You do not want a cancellation."))
    draft.outputs.append(money(order["payment_history"][0]["amount"]))
    draft.refusal = {
        "rule": "retail.pending_only",
        "forbidden": [
            Action(
                name="return_delivered_order_items",
                arguments={
                    "order_id": order["order_id"],
                    "item_ids": [item["item_id"]],
                    "payment_method_id": order["payment_history"][0]["payment_method_id"],
                },
            )
        ],
    }
    return True


def _refuse_refund_elsewhere(draft: Draft) -> bool:
    """Refund a return to a card it was not paid with: forbidden; the customer only asks the amount."""
    order = draft.pick_order("delivered")
    if order is None or not order["payment_history"]:
        return False
    original = order["payment_history"][0]["payment_method_id"]
    others = [
        (mid, m)
        for mid, m in draft.user["payment_methods"].items()
        if mid != original and m["source"] in ("credit_card", "paypal")
    ]
    if not others:
        return False
    method_id, method = draft.rng.choice(others)
    item = draft.rng.choice(order["items"])
    ref = draft.look_up_order(order)
    draft.wants.append(
        draft.say(
            f"You want to return the {item['name'].lower()} from {ref}, but only if the refund goes to your "
            f"{describe_method(method, draft.rng)}. If that is not possible, you keep the item; just ask how much you "
            "would have got back.",
            f"Return the {item['name'].lower()} in {ref} with the money on your {describe_method(method, draft.rng)} - "
            "nowhere else. If the agent won't, do not return it, but ask what the refund would have been.",
        )
    )
    draft.outputs.append(money(item["price"]))
    draft.refusal = {
        "rule": "retail.own_payment_method",
        "forbidden": [
            Action(
                name="return_delivered_order_items",
                arguments={
                    "order_id": order["order_id"],
                    "item_ids": [item["item_id"]],
                    "payment_method_id": method_id,
                },
            )
        ],
    }
    return True


def _transfer(draft: Draft) -> bool:
    """After the rest, ask for something no tool does: a human agent has to take over."""
    issue = draft.say(
        "a charge on your bank statement that you do not recognise",
        "a package that arrived damaged and needs an insurance claim",
        "a complaint about a courier who was rude at your door",
        "setting up a corporate account for your company",
        "a price-match request against another shop",
    )
    draft.wants.append(
        draft.say(
            f"After that, you also want help with {issue}, and you ask for a human agent for it.",
            f"Once that is done, bring up {issue}; you want a real person to handle that part.",
            f"Finally, you want to talk to a human about {issue}.",
        )
    )
    draft.call("transfer_to_human_agents", summary=f"The customer needs help with {issue}.")
    return True


Part = Callable[[Draft], bool]
RECIPES: Mapping[str, tuple[Part, ...]] = MappingProxyType(
    {
        "cancel_pending_order": (_cancel,),
        "modify_order_address": (_modify_order_address,),
        "modify_order_items": (_modify_order_items,),
        "modify_order_payment": (_modify_order_payment,),
        "modify_user_address": (_modify_user_address,),
        "exchange_delivered_items": (_exchange,),
        "return_delivered_items": (_return,),
        "info_refund_estimate": (_info_refund_estimate,),
        "info_tracking_number": (_info_tracking,),
        "cancel_and_refund_amount": (lambda d: _cancel(d, tell_amount=True),),
        "return_and_cancel": (_return, _cancel),
        "exchange_and_update_address": (_exchange, _modify_user_address),
        "cheapest_variant": (_cheapest_variant, _return),
        "color_fallback_exchange": (_color_fallback, _modify_user_address),
        "cancel_or_return": (_cancel_or_return, _info_tracking),
        "exchange_within_budget": (_exchange_within_budget, _cancel),
        "change_of_mind_address": (_change_of_mind, _return),
        "change_of_mind_exchange": (_return_then_exchange, _modify_order_address),
        "three_orders": (_cancel, _return, _modify_order_address),
        "three_changes": (_modify_order_items, _modify_order_payment, _modify_user_address),
        "budget_trio": (_exchange_within_budget, _cancel_or_return, _modify_user_address),
        "move_everything": (_modify_user_address, _modify_order_address, _modify_order_address),
        "refuse_cancel_shipped": (_refuse_cancel_shipped,),
        "refuse_return_pending": (_refuse_return_pending,),
        "refuse_refund_elsewhere": (_refuse_refund_elsewhere,),
        "write_then_transfer": (_cancel_or_return, _transfer),
    }
)
"""Intent -> the parts it chains for one customer (each part picks records the earlier ones left unused)."""

INTENTS: tuple[str, ...] = tuple(RECIPES)
"""Intents :func:`propose` can write."""

FAMILY: Mapping[str, str] = MappingProxyType(
    {
        **{i: "simple" for i in INTENTS},
        "info_refund_estimate": "information",
        "info_tracking_number": "information",
        "cancel_and_refund_amount": "multi_intent",
        "return_and_cancel": "multi_intent",
        "exchange_and_update_address": "multi_intent",
        "cheapest_variant": "lookup",
        "color_fallback_exchange": "lookup",
        "cancel_or_return": "conditional",
        "exchange_within_budget": "conditional",
        "budget_trio": "conditional",
        "change_of_mind_address": "change_of_mind",
        "change_of_mind_exchange": "change_of_mind",
        "three_orders": "multi_intent",
        "three_changes": "multi_intent",
        "move_everything": "multi_intent",
        "refuse_cancel_shipped": "refusal",
        "refuse_return_pending": "refusal",
        "refuse_refund_elsewhere": "refusal",
        "write_then_transfer": "transfer",
    }
)
"""Intent -> task family (recorded in provenance)."""

CYCLE: tuple[str, ...] = (
    *INTENTS,
    "three_orders",
    "three_changes",
    "budget_trio",
    "cancel_or_return",
    "exchange_within_budget",
    "change_of_mind_address",
    "return_and_cancel",
    "refuse_cancel_shipped",
)
"""The order in which the phase-1 pipeline takes intents (the families that matter most come twice)."""


def task_digest(actions: Sequence[Action], outputs: Sequence[str]) -> str:
    """A short stable hash of a task's gold actions and outputs (used for ids and de-duplication)."""
    blob = json.dumps([[a.name, a.arguments] for a in actions] + [list(outputs)], sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


def propose(snapshot: Snapshot, rng: random.Random, intent: str | None = None) -> Task | None:
    """Propose one task blueprint from real records of ``snapshot``.

    Args:
        snapshot: A retail snapshot (embedded, generated at any scale, or tau2's).
        rng: The randomness; the same seed gives the same task.
        intent: One of :data:`INTENTS`; a random one when None.

    Returns:
        The task (split ``"train"``, id derived from its content), or None when the sampled user's records
        do not fit the intent.

    Raises:
        ValueError: For an unknown intent.

    """
    if intent is None:
        intent = rng.choice(INTENTS)
    if intent not in RECIPES:
        raise ValueError(f"unknown intent {intent!r}; choose from {INTENTS}")
    for _ in range(USER_TRIES):
        user_id = rng.choice(_user_ids(snapshot))
        draft = _start(snapshot.view(), rng, user_id)
        if all(part(draft) for part in RECIPES[intent]):
            break
    else:
        return None
    user = draft.user
    check = snapshot.view()
    results = replay(_tools(), check, draft.actions)
    changes = check.changes()
    if not all(ok for ok, _ in results) or not (changes or draft.outputs):
        return None
    first, last = user["name"]["first_name"], user["name"]["last_name"]
    persona = voice.persona(rng, f"{first} {last}")
    reason = " ".join(_joined(draft.wants, rng))
    known = " ".join(draft.known)
    unknown = " ".join(dict.fromkeys(draft.unknown)) or None
    notes = list(draft.if_asked)
    if changes:
        line = voice.confirm_line(rng)
        if line:
            notes.insert(0, line)
    elif draft.refusal is None:
        notes.append(rng.choice(("Nothing on your account should change.", "You are only asking, not changing.")))
    behaviour = " ".join(notes) or None
    parts = {"reason_for_call": reason, "known_info": known, "unknown_info": unknown, "task_instructions": behaviour}
    scenario = UserScenario(
        instruction=compose_instruction(parts, persona),
        persona=persona,
        reason_for_call=reason,
        known_info=known,
        unknown_info=unknown,
        task_instructions=behaviour,
    )
    digest = task_digest(draft.actions, draft.outputs)
    provenance: dict[str, Any] = {"proposer": "template", "intent": intent, "family": FAMILY[intent]}
    if draft.refusal is not None:
        provenance["refusal"] = {
            "rule": draft.refusal["rule"],
            "forbidden": [a.model_dump() for a in draft.refusal["forbidden"]],
        }
    return Task(
        id=f"{intent}-{digest}",
        domain=NAME,
        split="train",
        user_id=user_id,
        scenario=scenario,
        actions=tuple(draft.actions),
        outputs=tuple(draft.outputs),
        reward_basis=("db", "outputs"),
        provenance=provenance,
    )


_LINKS = ("Also, ", "On top of that, ", "Separately, ", "While you're at it, ", "One more thing: ", "And ")


def _joined(wants: Sequence[str], rng: random.Random) -> list[str]:
    """The requests in order, the later ones linked the way one customer would add them."""
    out = []
    for index, want in enumerate(wants):
        if index == 0 or want.startswith(("After", "Once", "Finally", "Ask", "You also", "Before")):
            out.append(want)
            continue
        link = rng.choice(_LINKS)
        out.append(link + want[0].lower() + want[1:] if not want.startswith(("I ", "If")) else link + want)
    return out


def _is_test_user(user_id: str, test_fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=4).digest(), "big") / 2**32
    return bucket < test_fraction


def build_task_set(
    snapshot: Snapshot,
    seed: int = 0,
    n_train: int = 150,
    n_test: int = 50,
    max_attempts: int = 100_000,
    tries_per_intent: int = 50,
) -> list[Task]:
    """Propose a train/test task set, taking the intents in turn so that each is covered about equally.

    A customer's tasks all land in one split (train and test share no user). Each task records in
    ``provenance["seed"]`` the seed with which ``propose(snapshot, random.Random(seed), intent)`` rebuilds
    it.

    Args:
        snapshot: The DB to draw from.
        seed: Base seed of the set.
        n_train: Train tasks wanted.
        n_test: Test tasks wanted.
        max_attempts: Give up after this many proposals.
        tries_per_intent: Proposals per intent turn before moving to the next intent.

    Returns:
        The tasks, train first, with ids ``retail-train-000`` ... and ``retail-test-000`` ....

    """
    wanted = {"train": n_train, "test": n_test}
    fraction = n_test / max(1, n_train + n_test)
    chosen: dict[str, list[Task]] = {"train": [], "test": []}
    seen: set[str] = set()
    attempt = 0
    for turn in itertools.count():
        if all(len(chosen[s]) >= n for s, n in wanted.items()) or attempt >= max_attempts:
            break
        intent = INTENTS[turn % len(INTENTS)]
        for _ in range(tries_per_intent):  # retry this intent so that rarer fits are not crowded out
            task_seed, attempt = seed * 1_000_003 + attempt, attempt + 1
            task = propose(snapshot, random.Random(task_seed), intent)
            if task is None or task.id in seen:
                continue
            split = "test" if _is_test_user(task.user_id or "", fraction) else "train"
            if len(chosen[split]) >= wanted[split]:
                continue
            seen.add(task.id)
            number = len(chosen[split])
            provenance = {**task.provenance, "seed": task_seed, "digest": task.id.rsplit("-", 1)[1]}
            chosen[split].append(
                task.model_copy(update={"id": f"retail-{split}-{number:03d}", "split": split, "provenance": provenance})
            )
            break
    return chosen["train"] + chosen["test"]


def write_tasks(tasks: Sequence[Task], out: Path) -> None:
    """Write tasks as a JSON list of Task dicts."""
    rows = [t.model_dump(mode="json", exclude_none=True) for t in tasks]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: regenerate a task set from a DB."""
    parser = argparse.ArgumentParser(
        prog="python -m apigen_envs.domains.retail.templates", description="Propose retail task blueprints."
    )
    parser.add_argument("--db", type=Path, default=None, help="db.json to draw from (default: the embedded DB)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--train", type=int, default=150, help="train tasks (default 150)")
    parser.add_argument("--test", type=int, default=50, help="test tasks (default 50)")
    parser.add_argument("--out", type=Path, required=True, help="output tasks.json")
    args = parser.parse_args(argv)
    from . import DATA

    snapshot = load_db(args.db or DATA / "db.json")
    tasks = build_task_set(snapshot, args.seed, args.train, args.test)
    write_tasks(tasks, args.out)
    by_split = {s: sum(t.split == s for t in tasks) for s in ("train", "test")}
    print(f"wrote {args.out}: {len(tasks)} tasks {by_split}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
