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

TRAITS = (
    "You are polite and patient.",
    "You are in a hurry and keep your answers short.",
    "You are friendly and like to chat a little.",
    "You are a bit anxious and want to be sure everything is right.",
    "You are direct and to the point.",
    "You are skeptical and ask for the details before agreeing to anything.",
    "You are calm, but you do not volunteer information unless asked.",
)
REASON_TEXT = MappingProxyType(
    {"no longer needed": "you no longer need it", "ordered by mistake": "you ordered it by mistake"}
)


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


def describe_method(method: Row) -> str:
    """A payment method as the customer would name it."""
    if method["source"] == "credit_card":
        return f"{method['brand']} credit card ending in {method['last_four']}"
    if method["source"] == "gift_card":
        return "gift card"
    return "PayPal account"


@dataclass
class Draft:
    """A task being written: the user (key and row), the gold actions so far and the instruction's pieces."""

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

    def call(self, name: str, **arguments: Any) -> None:
        """Append a gold action."""
        self.actions.append(Action(name=name, arguments=arguments))

    def orders(self, *statuses: str) -> list[Row]:
        """The user's orders with one of these statuses, in profile order."""
        found = (self.view.orders.get(order_id) for order_id in self.user["orders"])
        return [o for o in found if o is not None and o["status"] in statuses]

    def pick_order(self, *statuses: str, exclude: Sequence[str] = ()) -> Row | None:
        """A random order of the user with one of these statuses."""
        candidates = [o for o in self.orders(*statuses) if o["order_id"] not in exclude]
        return self.rng.choice(candidates) if candidates else None

    def look_up_order(self, order: Row) -> str:
        """Add the reads that find ``order`` and return how the customer refers to it.

        The customer knows the order id most of the time; otherwise they describe it by its items (only
        when that description singles it out) and the agent checks the orders of the profile in turn.
        """
        order_id = order["order_id"]
        if order_id in self.seen_orders:
            return f"order {order_id}"
        self.seen_orders.add(order_id)
        names = sorted(item["name"] for item in order["items"])
        same = [o for o in self.orders(order["status"]) if sorted(i["name"] for i in o["items"]) == names]
        if self.rng.random() < 0.65 or len(same) != 1:
            self.known.append(f"Your order id is {order_id}.")
            self.call("get_order_details", order_id=order_id)
            return f"order {order_id}"
        self.unknown.append("You do not remember the order id.")
        for other_id in self.user["orders"]:
            self.call("get_order_details", order_id=other_id)
            if other_id == order_id:
                break
        return f"your {order['status']} order with the {' and the '.join(names)}"

    def payment_choice(self, amount_due: float, exclude: Sequence[str] = ()) -> tuple[str, Row] | None:
        """A saved payment method able to pay ``amount_due`` (gift cards need the balance): (id, method)."""
        methods = [
            (method_id, m)
            for method_id, m in self.user["payment_methods"].items()
            if method_id not in exclude and not (m["source"] == "gift_card" and m["balance"] < amount_due)
        ]
        return self.rng.choice(methods) if methods else None


def _start(view: DBView, rng: random.Random, user_id: str) -> Draft:
    """Authenticate (by email, or by name and zip when that identifies the user) and read the profile."""
    user = view.users[user_id]
    draft = Draft(view, rng, user_id, user)
    first, last, zip_code = user["name"]["first_name"], user["name"]["last_name"], user["address"]["zip"]
    # Matched as the tools match it (lower-cased), so the name and zip single out exactly this user.
    by_name = view.users.lookup_keys("name_zip", (first.lower(), last.lower(), zip_code))
    if rng.random() < 0.55 or len(by_name) != 1:
        draft.known.append(f"Your name is {first} {last} and your email is {user['email']}.")
        draft.call("find_user_id_by_email", email=user["email"])
    else:
        draft.known.append(f"Your name is {first} {last} and your zip code is {zip_code}.")
        draft.unknown.append("You do not remember your email address.")
        draft.call("find_user_id_by_name_zip", first_name=first, last_name=last, zip=zip_code)
    draft.call("get_user_details", user_id=user_id)
    return draft


def _new_address(rng: random.Random, current: Row) -> dict[str, str]:
    while True:
        address = random_address(rng)
        if address != current:
            return address


def _swaps(draft: Draft, order: Row, max_items: int) -> list[tuple[Row, Row, Row]]:
    """Up to ``max_items`` (item, new variant, product): items of the order, each with another available
    variant of its product.
    """
    options: list[tuple[int, Row, Row, list[Row]]] = []
    for index, item in enumerate(order["items"]):
        product = draft.view.products.get(item["product_id"])
        if product is None or any(item["item_id"] == o[1]["item_id"] for o in options):
            continue
        others = [v for v in product["variants"].values() if v["available"] and v["item_id"] != item["item_id"]]
        others = [v for v in others if v["options"] != item["options"]]
        if others:
            options.append((index, item, product, others))
    if not options:
        return []
    chosen = draft.rng.sample(options, draft.rng.randint(1, min(max_items, len(options))))
    chosen.sort(key=lambda o: o[0])
    return [(item, draft.rng.choice(others), product) for _, item, product, others in chosen]


def _describe_swap(item: Row, new: Row) -> str:
    changed = {k: v for k, v in new["options"].items() if item["options"].get(k) != v}
    if set(new["options"]) != set(item["options"]):
        changed = dict(new["options"])
    return f"the {describe_item(item)} for the same {item['name'].lower()} but with {describe_options(changed)}"


def _item_change(draft: Draft, statuses: tuple[str, ...], tool: str, verb: str, exclude: Sequence[str] = ()) -> bool:
    order = draft.pick_order(*statuses, exclude=exclude)
    if order is None:
        return False
    swaps = _swaps(draft, order, max_items=2)
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
    changes = "; and ".join(_describe_swap(item, new) for item, new, _ in swaps)
    draft.wants.append(f"For {ref}, you want to {verb} {changes}.")
    direction = "pay" if diff > 0 else "receive"
    draft.if_asked.append(f"Use your {describe_method(method)} to {direction} any price difference.")
    if len(swaps) > 1:
        draft.if_asked.append("Mention every item you want changed before confirming: it can only be done once.")
    draft.call(
        tool,
        order_id=order["order_id"],
        item_ids=[item["item_id"] for item, _, _ in swaps],
        new_item_ids=[new["item_id"] for _, new, _ in swaps],
        payment_method_id=method_id,
    )
    return True


# ---------------------------------------------------------------------------------------------- intents
def _cancel(draft: Draft, exclude: Sequence[str] = (), tell_amount: bool = False) -> bool:
    order = draft.pick_order("pending", exclude=exclude)
    if order is None:
        return False
    reason = draft.rng.choice(tuple(REASON_TEXT))
    ref = draft.look_up_order(order)
    draft.wants.append(f"You want to cancel {ref} because {REASON_TEXT[reason]}.")
    draft.if_asked.append(f"If asked for the reason, say {REASON_TEXT[reason]}.")
    if tell_amount:
        total = to_cents(sum(p["amount"] for p in order["payment_history"] if p["transaction_type"] == "payment"))
        draft.wants.append("You also want to know how much money will be refunded in total.")
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
        draft.wants.append(f"You want {ref} to be shipped to your default address instead.")
    else:
        new = _new_address(draft.rng, order["address"])
        draft.wants.append(f"You want {ref} to be shipped to {describe_address(new)} instead.")
    draft.call("modify_pending_order_address", order_id=order["order_id"], **new)
    return True


def _modify_order_items(draft: Draft) -> bool:
    return _item_change(draft, ("pending",), "modify_pending_order_items", "swap")


def _modify_order_payment(draft: Draft) -> bool:
    candidates = [o for o in draft.orders("pending") if len(o["payment_history"]) == 1]
    if not candidates:
        return False
    order = draft.rng.choice(candidates)
    old = order["payment_history"][0]
    choice = draft.payment_choice(old["amount"], exclude=(old["payment_method_id"],))
    if choice is None:
        return False
    method_id, method = choice
    ref = draft.look_up_order(order)
    draft.wants.append(f"You want to pay for {ref} with your {describe_method(method)} instead.")
    draft.call("modify_pending_order_payment", order_id=order["order_id"], payment_method_id=method_id)
    return True


def _modify_user_address(draft: Draft) -> bool:
    new = _new_address(draft.rng, draft.user["address"])
    draft.wants.append(f"You moved and want your default address changed to {describe_address(new)}.")
    draft.call("modify_user_address", user_id=draft.user_id, **new)
    return True


def _exchange(draft: Draft) -> bool:
    return _item_change(draft, ("delivered",), "exchange_delivered_order_items", "exchange")


def _return(draft: Draft, exclude: Sequence[str] = ()) -> bool:
    order = draft.pick_order("delivered", exclude=exclude)
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
    where = "the original payment method" if method_id == original else f"your {describe_method(method)}"
    draft.wants.append(f"From {ref}, you want to return {what}, with the refund going to {where}.")
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
        f"You are thinking about returning the {listed} from {ref} and want to know how much money you would "
        "get back in total. You only want the amount: do not return anything yet."
    )
    draft.call("calculate", expression=" + ".join(f"{i['price']:.2f}" for i in items))
    draft.outputs.append(money(sum(i["price"] for i in items)))
    return True


def _info_tracking(draft: Draft) -> bool:
    candidates = [
        o
        for o in draft.orders("processed", "delivered")
        if len(o["fulfillments"]) == 1 and len(o["fulfillments"][0]["tracking_id"]) == 1
    ]
    if not candidates:
        return False
    order = draft.rng.choice(candidates)
    ref = draft.look_up_order(order)
    draft.wants.append(f"You want the tracking number of the shipment of {ref}.")
    draft.outputs.append(order["fulfillments"][0]["tracking_id"][0])
    return True


def _cancel_and_refund_amount(draft: Draft) -> bool:
    return _cancel(draft, tell_amount=True)


def _return_and_cancel(draft: Draft) -> bool:
    if not _return(draft):
        return False
    return _cancel(draft, exclude=tuple(draft.seen_orders))


def _exchange_and_update_address(draft: Draft) -> bool:
    return _exchange(draft) and _modify_user_address(draft)


WRITERS: Mapping[str, Callable[[Draft], bool]] = MappingProxyType(
    {
        "cancel_pending_order": _cancel,
        "modify_order_address": _modify_order_address,
        "modify_order_items": _modify_order_items,
        "modify_order_payment": _modify_order_payment,
        "modify_user_address": _modify_user_address,
        "exchange_delivered_items": _exchange,
        "return_delivered_items": _return,
        "info_refund_estimate": _info_refund_estimate,
        "info_tracking_number": _info_tracking,
        "cancel_and_refund_amount": _cancel_and_refund_amount,
        "return_and_cancel": _return_and_cancel,
        "exchange_and_update_address": _exchange_and_update_address,
    }
)

INTENTS: tuple[str, ...] = tuple(WRITERS)
"""Intents :func:`propose` can write; the last three combine two requests of one customer."""


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
    if intent not in WRITERS:
        raise ValueError(f"unknown intent {intent!r}; choose from {INTENTS}")
    view = snapshot.view()
    user_id = rng.choice(_user_ids(snapshot))
    draft = _start(view, rng, user_id)
    user = draft.user
    if not WRITERS[intent](draft):
        return None
    check = snapshot.view()
    results = replay(_tools(), check, draft.actions)
    changes = check.changes()
    if not all(ok for ok, _ in results) or not (changes or draft.outputs):
        return None
    first, last = user["name"]["first_name"], user["name"]["last_name"]
    persona = f"You are {first} {last}. {rng.choice(TRAITS)}"
    reason = " ".join(draft.wants)
    known = " ".join(draft.known)
    unknown = " ".join(dict.fromkeys(draft.unknown)) or None
    behaviour = " ".join(
        ["If the agent lists the details and asks you to confirm, say yes.", *draft.if_asked]
        if changes
        else ["Do not ask for any change to your account or orders."]
    )
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
    return Task(
        id=f"{intent}-{digest}",
        domain=NAME,
        split="train",
        user_id=user_id,
        scenario=scenario,
        actions=tuple(draft.actions),
        outputs=tuple(draft.outputs),
        reward_basis=("db", "outputs"),
        provenance={"proposer": "template", "intent": intent},
    )


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
