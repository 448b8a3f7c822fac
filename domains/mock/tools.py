"""Tools of the mock bank domain (a handful, enough to exercise every engine path)."""

from __future__ import annotations

from typing import Any, Literal

from apigen_envs.db import DBView
from apigen_envs.errors import ToolError
from apigen_envs.tools import ToolSet


def build_tools() -> ToolSet:
    """Build the mock domain's ToolSet.

    Returns:
        A fresh ToolSet (no shared mutable state between domains).

    """
    tools = ToolSet()

    def _account(db: DBView, account_id: str, *, edit: bool = False) -> dict[str, Any]:
        if account_id not in db.accounts:
            raise ToolError(f"account {account_id} not found")
        return db.accounts.edit(account_id) if edit else db.accounts[account_id]

    @tools.tool
    def find_customer_by_email(db: DBView, email: str) -> str:
        """Find a customer id by email address.

        Args:
            email: The customer's email, such as 'ana@example.com'.

        """
        found = db.customers.lookup_keys("email", email.strip().lower())
        if not found:
            raise ToolError("customer not found")
        return found[0]

    @tools.tool
    def get_customer_details(db: DBView, customer_id: str) -> dict[str, Any]:
        """Get a customer's profile, including the ids of their accounts.

        Args:
            customer_id: The customer id, such as 'cus_ana'.

        """
        customer = db.customers.get(customer_id)
        if customer is None:
            raise ToolError("customer not found")
        return customer

    @tools.tool
    def get_account_details(db: DBView, account_id: str) -> dict[str, Any]:
        """Get an account's balance, status and nickname.

        Args:
            account_id: The account id, such as 'acc_1001'.

        """
        return _account(db, account_id)

    @tools.tool(mutates=True)
    def transfer_funds(db: DBView, from_account_id: str, to_account_id: str, amount: float) -> str:
        """Move money between two open accounts. The source must hold enough funds.

        Args:
            from_account_id: The account to take money from.
            to_account_id: The account to pay into.
            amount: The amount in dollars, greater than zero.

        """
        if amount <= 0:
            raise ToolError("amount must be positive")
        if from_account_id == to_account_id:
            raise ToolError("source and destination must differ")
        src, dst = _account(db, from_account_id), _account(db, to_account_id)
        if src["status"] != "open" or dst["status"] != "open":
            raise ToolError("both accounts must be open")
        if src["balance"] < amount:
            raise ToolError("insufficient funds")
        src = _account(db, from_account_id, edit=True)
        src["balance"] = round(src["balance"] - amount, 2)
        dst = _account(db, to_account_id, edit=True)
        dst["balance"] = round(dst["balance"] + amount, 2)
        return f"transferred {amount:.2f} from {from_account_id} to {to_account_id}"

    @tools.tool(mutates=True)
    def set_account_nickname(db: DBView, account_id: str, nickname: str) -> dict[str, Any]:
        """Give an account a nickname shown in the customer's app.

        Args:
            account_id: The account id.
            nickname: The new nickname, 1 to 30 characters.

        """
        if not 1 <= len(nickname) <= 30:
            raise ToolError("nickname must be 1 to 30 characters")
        account = _account(db, account_id, edit=True)
        account["nickname"] = nickname
        return account

    @tools.tool(mutates=True)
    def close_account(db: DBView, account_id: str, reason: Literal["moving", "fees", "other"]) -> dict[str, Any]:
        """Close an open account with a zero balance.

        Args:
            account_id: The account id.
            reason: Why the customer closes it.

        """
        account = _account(db, account_id)
        if account["status"] != "open":
            raise ToolError("account is not open")
        if account["balance"] != 0:
            raise ToolError("balance must be zero before closing")
        account = _account(db, account_id, edit=True)
        account["status"] = "closed"
        account["close_reason"] = reason
        return account

    @tools.tool
    def think(db: DBView, thought: str) -> str:
        """Think about something without acting; the thought is logged and nothing changes.

        Args:
            thought: The thought.

        """
        return ""

    @tools.tool(terminal=True)
    def transfer_to_human_agents(db: DBView, summary: str) -> str:
        """Hand the customer over to a human agent; ends the conversation.

        Args:
            summary: A short summary of the customer's issue.

        """
        return "Transfer successful"

    return tools
