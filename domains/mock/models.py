"""Row types of the mock bank domain: customers and their accounts (validated on load)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Customer(BaseModel):
    """A bank customer."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    name: str
    email: str
    account_ids: list[str] = []


class Account(BaseModel):
    """A bank account; balances are in dollars, rounded to cents."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    customer_id: str
    balance: float
    status: Literal["open", "frozen", "closed"] = "open"
    nickname: str | None = None
    close_reason: str | None = None
