"""Records of the mock bank domain: customers and their accounts."""

from __future__ import annotations

from typing import Literal

from apigen_envs.db import Record


class Customer(Record):
    """A bank customer."""

    customer_id: str
    name: str
    email: str
    account_ids: tuple[str, ...] = ()


class Account(Record):
    """A bank account; balances are in dollars, rounded to cents."""

    account_id: str
    customer_id: str
    balance: float
    status: Literal["open", "frozen", "closed"] = "open"
    nickname: str | None = None
    close_reason: str | None = None
