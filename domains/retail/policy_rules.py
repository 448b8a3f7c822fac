"""Retail policy predicates for phase 1 (see ``policy.md``): the rules a blueprint must not break.

Each predicate reads an execution trace (rows as plain JSON dicts) and yields the violations it finds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from apigen_envs.datagen.policy_checks import PolicyRule, Violation, get_row
from apigen_envs.datagen.trace import ExecutionTrace, TraceStep

_RETAIL_ORDER_WRITES = (
    "cancel_pending_order",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "exchange_delivered_order_items",
    "return_delivered_order_items",
)
_RETAIL_AUTH = ("find_user_id_by_email", "find_user_id_by_name_zip")
_RETAIL_CANCEL_REASONS = ("no longer needed", "ordered by mistake")
_RETAIL_SWAPS = ("modify_pending_order_items", "exchange_delivered_order_items")


def _retail_owner(step: TraceStep) -> str | None:
    if step.name == "modify_user_address":
        return step.args.get("user_id")
    order = get_row(step.before, "orders", step.args.get("order_id"))
    return order["user_id"] if order is not None else None


def _retail_authenticated(trace: ExecutionTrace) -> Iterable[Violation]:
    known: set[str] = set()
    for step in trace.steps:
        if not step.ok:
            continue
        if step.name in _RETAIL_AUTH:
            known.add(str(step.result()))
        elif step.name == "get_user_details":
            known.add(str(step.args.get("user_id")))
        elif step.mutates:
            owner = _retail_owner(step)
            if owner is not None and owner not in known:
                yield Violation(
                    "retail.authenticate_first",
                    f"{step.name} changes data of user {owner} before the user was identified "
                    "(find_user_id_by_email / find_user_id_by_name_zip / get_user_details)",
                    step.index,
                )


def _retail_one_user(trace: ExecutionTrace) -> Iterable[Violation]:
    owners: dict[str, int] = {}
    for step in trace.writes():
        owner = _retail_owner(step)
        if owner is not None:
            owners.setdefault(owner, step.index)
    if trace.user_id is not None:
        for owner, index in owners.items():
            if owner != trace.user_id:
                yield Violation(
                    "retail.own_data_only",
                    f"the request changes data of user {owner}, not of the caller {trace.user_id}",
                    index,
                )
    elif len(owners) > 1:
        yield Violation("retail.own_data_only", f"one conversation changes data of several users: {sorted(owners)}")


def _retail_status(trace: ExecutionTrace) -> Iterable[Violation]:
    exact_pending = ("cancel_pending_order", "modify_pending_order_items")
    for step in trace.writes():
        order = get_row(step.before, "orders", step.args.get("order_id"))
        if order is None:
            continue
        status = order["status"]
        not_pending = status != "pending" if step.name in exact_pending else "pending" not in status
        if step.name.startswith(("cancel_pending", "modify_pending")) and not_pending:
            yield Violation(
                "retail.pending_only", f"{step.name} on order {order['order_id']} in status {status!r}", step.index
            )
        elif step.name.endswith("delivered_order_items") and status != "delivered":
            yield Violation(
                "retail.delivered_only", f"{step.name} on order {order['order_id']} in status {status!r}", step.index
            )


def _retail_cancel_reason(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.calls("cancel_pending_order"):
        reason = step.args.get("reason")
        if reason not in _RETAIL_CANCEL_REASONS:
            yield Violation(
                "retail.cancel_reason",
                f"order {step.args.get('order_id')} is cancelled for {reason!r}; the only reasons are "
                f"{' and '.join(repr(r) for r in _RETAIL_CANCEL_REASONS)}",
                step.index,
            )


def _retail_items(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        if step.name not in (*_RETAIL_SWAPS, "return_delivered_order_items"):
            continue
        order = get_row(step.before, "orders", step.args.get("order_id"))
        if order is None:
            continue
        item_ids = step.args.get("item_ids")
        item_ids = item_ids if isinstance(item_ids, list) else []
        owned = [item["item_id"] for item in order["items"]]
        missing = sorted({i for i in item_ids if item_ids.count(i) > owned.count(i)}, key=str)
        if not item_ids or missing:
            what = f"items {missing} are not (that many times) in it" if missing else "no item is listed"
            yield Violation("retail.items_in_order", f"{step.name} on order {order['order_id']}: {what}", step.index)
            continue
        if step.name not in _RETAIL_SWAPS:
            continue
        new_ids = step.args.get("new_item_ids")
        new_ids = new_ids if isinstance(new_ids, list) else []
        if len(new_ids) != len(item_ids):
            yield Violation(
                "retail.same_product_variant",
                f"{step.name} on order {order['order_id']} swaps {len(item_ids)} items for {len(new_ids)}",
                step.index,
            )
            continue
        for item_id, new_id in zip(item_ids, new_ids, strict=True):
            item = next(i for i in order["items"] if i["item_id"] == item_id)
            product = get_row(step.before, "products", item["product_id"])
            variant = product["variants"].get(new_id) if product is not None and isinstance(new_id, str) else None
            if new_id == item_id:
                problem = "is the same item"
            elif variant is None:
                problem = f"is not a variant of the same product ({item['name']})"
            elif not variant["available"]:
                problem = "is not available"
            else:
                continue
            yield Violation(
                "retail.same_product_variant",
                f"{step.name} on order {order['order_id']}: new item {new_id} for {item_id} {problem}; each item "
                "can only become another available variant of the same product",
                step.index,
            )


def _retail_order_sequences(trace: ExecutionTrace) -> Iterable[Violation]:
    item_changes: dict[str, int] = {}
    cancelled: dict[str, int] = {}
    after_sale: dict[str, tuple[str, int]] = {}
    for step in trace.writes():
        order_id = step.args.get("order_id")
        if not isinstance(order_id, str):
            continue
        if order_id in cancelled and step.name in _RETAIL_ORDER_WRITES:
            yield Violation(
                "retail.no_change_after_cancel",
                f"{step.name} on order {order_id} after it was cancelled by action {cancelled[order_id]}",
                step.index,
            )
        if step.name == "modify_pending_order_items":
            if order_id in item_changes:
                yield Violation(
                    "retail.items_modified_once",
                    f"items of order {order_id} modified twice (actions {item_changes[order_id]} and {step.index})",
                    step.index,
                )
            item_changes.setdefault(order_id, step.index)
        if step.name in ("exchange_delivered_order_items", "return_delivered_order_items"):
            if order_id in after_sale:
                first, at = after_sale[order_id]
                yield Violation(
                    "retail.one_return_or_exchange",
                    f"order {order_id} gets {step.name} after {first} (action {at}); only one is allowed",
                    step.index,
                )
            after_sale.setdefault(order_id, (step.name, step.index))
        if step.name == "cancel_pending_order":
            cancelled.setdefault(order_id, step.index)
    for order_id, index in cancelled.items():
        if order_id in after_sale:
            yield Violation(
                "retail.return_cancel_conflict",
                f"order {order_id} is both cancelled (action {index}) and returned/exchanged "
                f"(action {after_sale[order_id][1]})",
                index,
            )


def _retail_payment_methods(trace: ExecutionTrace) -> Iterable[Violation]:
    for step in trace.writes():
        method_id = step.args.get("payment_method_id")
        order = get_row(step.before, "orders", step.args.get("order_id"))
        if method_id is None or order is None:
            continue
        user = get_row(step.before, "users", order["user_id"])
        if user is None or method_id not in user["payment_methods"]:
            yield Violation(
                "retail.own_payment_method",
                f"payment method {method_id} does not belong to user {order['user_id']}",
                step.index,
            )
            continue
        method = user["payment_methods"][method_id]
        history = order["payment_history"]
        if step.name == "return_delivered_order_items":
            original = history[0]["payment_method_id"] if history else None
            if method_id != original and method["source"] != "gift_card":
                yield Violation(
                    "retail.refund_to_original_or_gift_card",
                    f"refund of order {order['order_id']} goes to {method_id}, neither the original method "
                    f"{original} nor a gift card",
                    step.index,
                )
        elif step.name == "modify_pending_order_payment":
            if len(history) != 1 or history[0]["transaction_type"] != "payment":
                yield Violation(
                    "retail.payment_change_rules",
                    f"the payment of order {order['order_id']} is changed, but it has {len(history)} transactions, "
                    "not exactly one payment",
                    step.index,
                )
            elif history[0]["payment_method_id"] == method_id:
                yield Violation(
                    "retail.payment_change_rules",
                    f"order {order['order_id']} is already paid with {method_id}; the new method must differ",
                    step.index,
                )
            elif method["source"] == "gift_card" and method["balance"] < history[0]["amount"]:
                yield Violation(
                    "retail.gift_card_balance",
                    f"gift card {method_id} holds {method['balance']}, less than the order total "
                    f"{history[0]['amount']}",
                    step.index,
                )
        elif step.name in _RETAIL_SWAPS and method["source"] == "gift_card":
            due = _price_difference(step, order)
            if due is not None and method["balance"] < due:
                yield Violation(
                    "retail.gift_card_balance",
                    f"gift card {method_id} holds {method['balance']}, less than the price difference {due:.2f}",
                    step.index,
                )


def _price_difference(step: TraceStep, order: Mapping[str, Any]) -> float | None:
    """New minus old price of an item swap, or None when an item or variant is unknown."""
    item_ids, new_ids = step.args.get("item_ids"), step.args.get("new_item_ids")
    if not (isinstance(item_ids, list) and isinstance(new_ids, list)) or len(item_ids) != len(new_ids):
        return None
    diff = 0.0
    for item_id, new_id in zip(item_ids, new_ids, strict=True):
        item = next((i for i in order["items"] if i["item_id"] == item_id), None)
        product = get_row(step.before, "products", item["product_id"]) if item is not None else None
        variant = product["variants"].get(new_id) if product is not None and isinstance(new_id, str) else None
        if item is None or variant is None:
            return None
        diff += variant["price"] - item["price"]
    return round(diff, 2)


RULES: tuple[PolicyRule, ...] = (
    PolicyRule(
        "retail.authenticate_first",
        "Identify the user (by email, or name and zip) before changing any of their data.",
        _retail_authenticated,
    ),
    PolicyRule("retail.own_data_only", "Only act on the data of the user in the conversation.", _retail_one_user),
    PolicyRule(
        "retail.pending_only",
        "Only pending orders can be cancelled or modified (items and cancellation: exactly 'pending'); only "
        "delivered orders can be returned or exchanged.",
        _retail_status,
    ),
    PolicyRule(
        "retail.cancel_reason",
        "A cancellation's reason is 'no longer needed' or 'ordered by mistake', nothing else.",
        _retail_cancel_reason,
    ),
    PolicyRule(
        "retail.items_in_order",
        "Items to change, exchange or return are items of the order; each new item is another available "
        "variant of the same product.",
        _retail_items,
    ),
    PolicyRule(
        "retail.items_modified_once",
        "Items of a pending order can be modified once; a cancelled order is not changed again; an order is "
        "returned or exchanged at most once, and never both cancelled and returned.",
        _retail_order_sequences,
    ),
    PolicyRule(
        "retail.own_payment_method",
        "Payment methods must be the user's own; refunds go to the original method or a gift card; a payment "
        "change needs exactly one payment and a different method; a gift card must cover what it pays.",
        _retail_payment_methods,
    ),
)
"""Retail policy predicates (see ``domains/retail/policy.md``)."""
