"""Blueprint templates of the mock bank domain, for the offline phase-1 proposer and its tests.

``propose(snapshot, rng, intent)`` picks records that satisfy the intent's preconditions and returns a
:class:`~apigen_envs.task.Task` whose gold actions follow the mock policy (identify first), or None when
no record fits. Every choice comes from ``rng``, so the same seed gives the same task.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from apigen_envs.db import Snapshot
from apigen_envs.task import Action, Task, UserScenario

INTENTS: tuple[str, ...] = ("transfer", "nickname", "close", "balance_and_nickname", "balance")
"""What a template task can ask for."""

NICKNAMES: tuple[str, ...] = ("daily", "bills", "holiday", "rainy day", "groceries", "car fund", "gifts")
CLOSE_REASONS: tuple[str, ...] = ("moving", "fees", "other")


def _open_accounts(snapshot: Snapshot, customer_id: str) -> list[Any]:
    customer = snapshot.tables["customers"][customer_id]
    accounts = (snapshot.tables["accounts"].get(a) for a in customer["account_ids"])
    return [a for a in accounts if a is not None and a["status"] == "open"]


def _task(
    snapshot: Snapshot, customer_id: str, intent: str, text: str, actions: list[Action], outputs: Sequence[str] = ()
) -> Task:
    customer = snapshot.tables["customers"][customer_id]
    name, email = customer["name"], customer["email"]
    identify = Action(name="find_customer_by_email", arguments={"email": email})
    return Task(
        id=f"mock_{intent}",
        domain="mock",
        user_id=customer_id,
        scenario=UserScenario(
            instruction=f"You are {name} ({email}). {text}",
            known_info=f"Your email is {email}.",
        ),
        actions=(identify, *actions),
        outputs=tuple(outputs),
        provenance={"intent": intent},
    )


def _transfer(snapshot: Snapshot, rng: random.Random) -> Task | None:
    options = [
        (c, a, b)
        for c in snapshot.tables["customers"]
        for a in _open_accounts(snapshot, c)
        for b in _open_accounts(snapshot, c)
        if a["account_id"] != b["account_id"] and a["balance"] >= 10
    ]
    if not options:
        return None
    customer_id, src, dst = rng.choice(options)
    amount = rng.randrange(10, int(min(src["balance"], 500)) + 1, 5)
    text = f"Move ${amount} from your account {src['account_id']} to your account {dst['account_id']}."
    args = {"from_account_id": src["account_id"], "to_account_id": dst["account_id"], "amount": amount}
    return _task(snapshot, customer_id, "transfer", text, [Action(name="transfer_funds", arguments=args)])


def _nickname(snapshot: Snapshot, rng: random.Random) -> Task | None:
    options = [(c, a) for c in snapshot.tables["customers"] for a in _open_accounts(snapshot, c)]
    if not options:
        return None
    customer_id, account = rng.choice(options)
    name = rng.choice([n for n in NICKNAMES if n != account["nickname"]])
    text = f"Give your account {account['account_id']} the nickname '{name}'."
    action = Action(name="set_account_nickname", arguments={"account_id": account["account_id"], "nickname": name})
    return _task(snapshot, customer_id, "nickname", text, [action])


def _close(snapshot: Snapshot, rng: random.Random) -> Task | None:
    options = [(c, a) for c in snapshot.tables["customers"] for a in _open_accounts(snapshot, c) if a["balance"] == 0]
    if not options:
        return None
    customer_id, account = rng.choice(options)
    reason = rng.choice(CLOSE_REASONS)
    why = {"moving": "you are moving", "fees": "of the fees", "other": "you no longer need it"}[reason]
    text = f"Close your empty account {account['account_id']} because {why}."
    action = Action(name="close_account", arguments={"account_id": account["account_id"], "reason": reason})
    return _task(snapshot, customer_id, "close", text, [action])


def _balance(snapshot: Snapshot, rng: random.Random) -> Task | None:
    options = [(c, a) for c in snapshot.tables["customers"] for a in _open_accounts(snapshot, c) if a["balance"] > 0]
    if not options:
        return None
    customer_id, account = rng.choice(options)
    text = f"Ask for the balance of your account {account['account_id']}."
    action = Action(name="get_account_details", arguments={"account_id": account["account_id"]})
    return _task(snapshot, customer_id, "balance", text, [action], outputs=[f"{account['balance']:g}"])


def _balance_and_nickname(snapshot: Snapshot, rng: random.Random) -> Task | None:
    base = _balance(snapshot, rng)
    if base is None:
        return None
    account_id = base.actions[1].arguments["account_id"]
    account = snapshot.tables["accounts"][account_id]
    name = rng.choice([n for n in NICKNAMES if n != account["nickname"]])
    rename = Action(name="set_account_nickname", arguments={"account_id": account_id, "nickname": name})
    text = f"Ask for the balance of your account {account_id}, then rename it to '{name}'."
    return _task(snapshot, base.user_id or "", "balance_and_nickname", text, [base.actions[1], rename], base.outputs)


_BUILDERS: MappingProxyType[str, Callable[[Snapshot, random.Random], Task | None]] = MappingProxyType(
    {
        "transfer": _transfer,
        "nickname": _nickname,
        "close": _close,
        "balance_and_nickname": _balance_and_nickname,
        "balance": _balance,
    }
)


def propose(snapshot: Snapshot, rng: random.Random, intent: str | None = None) -> Task | None:
    """Propose one blueprint.

    Args:
        snapshot: The mock DB.
        rng: Random source (the only one used).
        intent: One of :data:`INTENTS`; a random one when None.

    Returns:
        The task, or None when no record satisfies the intent's preconditions.

    Raises:
        ValueError: For an unknown intent.

    """
    if intent is None:
        intent = rng.choice(INTENTS)
    if intent not in _BUILDERS:
        raise ValueError(f"unknown intent {intent!r}; choose from {INTENTS}")
    return _BUILDERS[intent](snapshot, rng)
