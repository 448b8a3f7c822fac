"""Retail tools (``apigen`` profile): success and error paths of every tool on a tiny DB built here, plus
calculate's safety. Rows are plain JSON dicts; tools refuse only what tau2's tools refuse (the policy is
checked by :mod:`apigen_envs.datagen.policy_checks`, see ``tests/test_policy_checks.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from apigen_envs.domains.retail import snapshot_from_json
from apigen_envs.domains.retail.tools import build_tools
from apigen_envs.errors import ToolCallError, ToolError
from apigen_envs.semantics import Semantics
from apigen_envs.tools import execute, render_result


def _address(zip_code: str = "10001") -> dict[str, str]:
    return {
        "address1": "1 Main Street",
        "address2": "Apt 2",
        "city": "New York",
        "country": "USA",
        "state": "NY",
        "zip": zip_code,
    }


def _variant(item_id: str, price: float, available: bool = True, **options: str) -> dict[str, Any]:
    return {"item_id": item_id, "options": options, "available": available, "price": price}


SHIRT = {
    "S_RED_M": _variant("S_RED_M", 20.0, color="red", size="M"),
    "S_BLUE_M": _variant("S_BLUE_M", 25.5, color="blue", size="M"),
    "S_GREEN_L": _variant("S_GREEN_L", 22.0, available=False, color="green", size="L"),
    "S_GOLD_XL": _variant("S_GOLD_XL", 99.0, color="gold", size="XL"),
}
LAMP = {"L_BLACK": _variant("L_BLACK", 40.0, color="black"), "L_WHITE": _variant("L_WHITE", 35.0, color="white")}


def _item(product_id: str, variant: dict[str, Any]) -> dict[str, Any]:
    name = {"P_SHIRT": "T-Shirt", "P_LAMP": "Desk Lamp"}[product_id]
    return {
        "name": name,
        "product_id": product_id,
        "item_id": variant["item_id"],
        "price": variant["price"],
        "options": variant["options"],
    }


def _order(order_id: str, user: str, status: str, items: list[dict[str, Any]], payments: list[tuple[str, float, str]]):
    return {
        "order_id": order_id,
        "user_id": user,
        "address": _address(),
        "items": items,
        "status": status,
        "fulfillments": []
        if "pending" in status
        else [{"tracking_id": ["111"], "item_ids": [i["item_id"] for i in items]}],
        "payment_history": [{"transaction_type": t, "amount": a, "payment_method_id": m} for t, a, m in payments],
    }


RED, BLUE, BLACK = (
    _item("P_SHIRT", SHIRT["S_RED_M"]),
    _item("P_SHIRT", SHIRT["S_BLUE_M"]),
    _item("P_LAMP", LAMP["L_BLACK"]),
)
ORDERS = [
    _order("#W1", "ana_silva_1000", "pending", [RED, RED, BLACK], [("payment", 80.0, "credit_card_1")]),
    _order("#W2", "ana_silva_1000", "delivered", [RED, BLACK], [("payment", 60.0, "paypal_1")]),
    _order("#W3", "ana_silva_1000", "processed", [RED], [("payment", 20.0, "paypal_1")]),
    _order("#W4", "ana_silva_1000", "cancelled", [RED], [("payment", 20.0, "paypal_1"), ("refund", 20.0, "paypal_1")]),
    _order(
        "#W5",
        "ana_silva_1000",
        "pending (item modified)",
        [BLUE],
        [("payment", 20.0, "paypal_1"), ("payment", 5.5, "paypal_1")],
    ),
    _order("#W6", "ana_silva_1000", "pending", [RED], [("payment", 20.0, "gift_card_1")]),
    _order("#W7", "ben_okafor_2000", "delivered", [BLUE], [("payment", 25.5, "gift_card_2")]),
]
RAW_DB = {
    "products": {
        "P_SHIRT": {"name": "T-Shirt", "product_id": "P_SHIRT", "variants": SHIRT},
        "P_LAMP": {"name": "Desk Lamp", "product_id": "P_LAMP", "variants": LAMP},
    },
    "users": {
        "ana_silva_1000": {
            "user_id": "ana_silva_1000",
            "name": {"first_name": "Ana", "last_name": "Silva"},
            "address": _address("10001"),
            "email": "Ana.Silva1000@example.com",
            "payment_methods": {
                "credit_card_1": {"source": "credit_card", "id": "credit_card_1", "brand": "visa", "last_four": "1234"},
                "gift_card_1": {"source": "gift_card", "id": "gift_card_1", "balance": 10.0},
                "paypal_1": {"source": "paypal", "id": "paypal_1"},
            },
            "orders": ["#W1", "#W2", "#W3", "#W4", "#W5", "#W6"],
        },
        "ben_okafor_2000": {
            "user_id": "ben_okafor_2000",
            "name": {"first_name": "Bén", "last_name": "Okafor"},
            "address": _address("94110"),
            "email": "ben.okafor2000@example.com",
            "payment_methods": {"gift_card_2": {"source": "gift_card", "id": "gift_card_2", "balance": 500.0}},
            "orders": ["#W7"],
        },
    },
    "orders": {o["order_id"]: o for o in ORDERS},
}

TOOLS = build_tools()
SNAPSHOT = snapshot_from_json(RAW_DB)
WRITERS = {
    "cancel_pending_order",
    "exchange_delivered_order_items",
    "modify_pending_order_address",
    "modify_pending_order_items",
    "modify_pending_order_payment",
    "modify_user_address",
    "return_delivered_order_items",
}
NEW_ADDRESS = {
    "address1": "9 Elm Street",
    "address2": "",
    "city": "Austin",
    "state": "TX",
    "country": "USA",
    "zip": "78701",
}


def balance(view, user_id: str, method_id: str) -> float:
    return view.users[user_id]["payment_methods"][method_id]["balance"]


def payments(row) -> list[tuple[str, float, str]]:
    return [(p["transaction_type"], p["amount"], p["payment_method_id"]) for p in row["payment_history"]]


def order(view, order_id: str):
    return view.orders[order_id]


# Each case: tool, arguments, check(result, view) for a success.
SUCCESS: list[tuple[str, dict[str, Any], Callable[[Any, Any], None]]] = [
    ("find_user_id_by_email", {"email": "ana.silva1000@EXAMPLE.com"}, lambda r, v: r == "ana_silva_1000"),
    (
        "find_user_id_by_name_zip",
        {"first_name": "ANA", "last_name": "silva", "zip": "10001"},
        lambda r, v: r == "ana_silva_1000",
    ),
    (
        "find_user_id_by_name_zip",
        {"first_name": "BÉN", "last_name": "OKAFOR", "zip": "94110"},  # str.lower, as both peers match names
        lambda r, v: r == "ben_okafor_2000",
    ),
    (
        "get_user_details",
        {"user_id": "ben_okafor_2000"},
        lambda r, v: r["payment_methods"]["gift_card_2"]["balance"] == 500,
    ),
    ("get_order_details", {"order_id": "#W2"}, lambda r, v: r["status"] == "delivered" and len(r["items"]) == 2),
    ("get_product_details", {"product_id": "P_LAMP"}, lambda r, v: set(r["variants"]) == {"L_BLACK", "L_WHITE"}),
    ("get_item_details", {"item_id": "S_GREEN_L"}, lambda r, v: r["available"] is False and r["price"] == 22.0),
    (
        "list_all_product_types",
        {},
        lambda r, v: json.loads(r) == {"Desk Lamp": "P_LAMP", "T-Shirt": "P_SHIRT"} and r.index("Desk") < r.index("T-"),
    ),
    ("calculate", {"expression": "2 + 2"}, lambda r, v: r == "4.0"),
    ("calculate", {"expression": "(10 - 4) / 4"}, lambda r, v: r == "1.5"),
    ("calculate", {"expression": "-3 * 2.5 + +1"}, lambda r, v: r == "-6.5"),
    ("calculate", {"expression": "1 / 3"}, lambda r, v: r == "0.33"),
    ("calculate", {"expression": "652.61 + 473.43"}, lambda r, v: r == "1126.04"),
    ("calculate", {"expression": "2 ** 3"}, lambda r, v: r == "8.0"),  # eval's arithmetic, as in both peers
    ("calculate", {"expression": "7 // 2"}, lambda r, v: r == "3.0"),
    ("calculate", {"expression": "  1 + 1"}, lambda r, v: r == "2.0"),
    ("think", {"thought": "check the order first"}, lambda r, v: r == "" and not v.changes()),
    (
        "transfer_to_human_agents",
        {"summary": "wants a refund to another card"},
        lambda r, v: r == "Transfer successful",
    ),
    (
        "cancel_pending_order",
        {"order_id": "#W1", "reason": "no longer needed"},
        lambda r, v: (
            r["status"] == "cancelled"
            and r["cancel_reason"] == "no longer needed"
            and payments(r) == [("payment", 80.0, "credit_card_1"), ("refund", 80.0, "credit_card_1")]
            and order(v, "#W1") == r
            and "users" not in v.changes()
        ),
    ),
    (  # a gift card is refunded at once
        "cancel_pending_order",
        {"order_id": "#W6", "reason": "ordered by mistake"},
        lambda r, v: r["cancel_reason"] == "ordered by mistake" and balance(v, "ana_silva_1000", "gift_card_1") == 30.0,
    ),
    (
        "modify_pending_order_address",
        {"order_id": "#W1", **NEW_ADDRESS},
        lambda r, v: r["address"] == {**NEW_ADDRESS} and r["status"] == "pending",
    ),
    (  # tau2 lets the address of an item-modified pending order change
        "modify_pending_order_address",
        {"order_id": "#W5", **NEW_ADDRESS},
        lambda r, v: r["address"]["city"] == "Austin" and r["status"] == "pending (item modified)",
    ),
    (
        "modify_pending_order_items",
        {"order_id": "#W1", "item_ids": ["S_RED_M"], "new_item_ids": ["S_BLUE_M"], "payment_method_id": "paypal_1"},
        lambda r, v: (
            r["status"] == "pending (item modified)"
            and [i["item_id"] for i in r["items"]] == ["S_BLUE_M", "S_RED_M", "L_BLACK"]
            and r["items"][0]["price"] == 25.5
            and r["items"][0]["options"] == {"color": "blue", "size": "M"}
            and r["payment_history"][-1]
            == {"transaction_type": "payment", "amount": 5.5, "payment_method_id": "paypal_1"}
        ),
    ),
    (  # duplicates and several products in one call; each item gets its own variant; gift card pays
        "modify_pending_order_items",
        {
            "order_id": "#W1",
            "item_ids": ["S_RED_M", "L_BLACK", "S_RED_M"],
            "new_item_ids": ["S_BLUE_M", "L_WHITE", "S_BLUE_M"],
            "payment_method_id": "gift_card_1",
        },
        lambda r, v: (
            [(i["item_id"], i["price"]) for i in r["items"]]
            == [("S_BLUE_M", 25.5), ("S_BLUE_M", 25.5), ("L_WHITE", 35.0)]
            and r["items"][2]["options"] == {"color": "white"}
            and r["payment_history"][-1]["amount"] == 6.0
            and balance(v, "ana_silva_1000", "gift_card_1") == 4.0
        ),
    ),
    (  # a cheaper variant is a refund, credited to the gift card at once
        "modify_pending_order_items",
        {"order_id": "#W1", "item_ids": ["L_BLACK"], "new_item_ids": ["L_WHITE"], "payment_method_id": "gift_card_1"},
        lambda r, v: (
            r["payment_history"][-1]["transaction_type"] == "refund"
            and r["payment_history"][-1]["amount"] == 5.0
            and balance(v, "ana_silva_1000", "gift_card_1") == 15.0
        ),
    ),
    (
        "modify_pending_order_payment",
        {"order_id": "#W1", "payment_method_id": "paypal_1"},
        lambda r, v: (
            payments(r)
            == [("payment", 80.0, "credit_card_1"), ("payment", 80.0, "paypal_1"), ("refund", 80.0, "credit_card_1")]
            and r["status"] == "pending"
        ),
    ),
    (  # the old gift card is refunded at once
        "modify_pending_order_payment",
        {"order_id": "#W6", "payment_method_id": "credit_card_1"},
        lambda r, v: balance(v, "ana_silva_1000", "gift_card_1") == 30.0,
    ),
    (
        "modify_user_address",
        {"user_id": "ana_silva_1000", **NEW_ADDRESS},
        lambda r, v: r["address"]["zip"] == "78701" and order(v, "#W1")["address"]["zip"] == "10001",
    ),
    (
        "exchange_delivered_order_items",
        {
            "order_id": "#W2",
            "item_ids": ["S_RED_M", "L_BLACK"],
            "new_item_ids": ["S_BLUE_M", "L_WHITE"],
            "payment_method_id": "paypal_1",
        },
        lambda r, v: (
            r["status"] == "exchange requested"
            and r["exchange_items"] == ["L_BLACK", "S_RED_M"]
            and r["exchange_new_items"] == ["L_WHITE", "S_BLUE_M"]
            and r["exchange_payment_method_id"] == "paypal_1"
            and r["exchange_price_difference"] == 0.5
            and [i["item_id"] for i in r["items"]] == ["S_RED_M", "L_BLACK"]
            and len(r["payment_history"]) == 1
        ),
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W2", "item_ids": ["L_BLACK", "S_RED_M"], "payment_method_id": "paypal_1"},
        lambda r, v: (
            r["status"] == "return requested"
            and r["return_items"] == ["L_BLACK", "S_RED_M"]
            and r["return_payment_method_id"] == "paypal_1"
        ),
    ),
    (  # a gift card may receive the refund even though it did not pay
        "return_delivered_order_items",
        {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "gift_card_1"},
        lambda r, v: (
            r["return_payment_method_id"] == "gift_card_1" and balance(v, "ana_silva_1000", "gift_card_1") == 10.0
        ),
    ),
]

ITEMS = {"order_id": "#W1", "item_ids": ["S_RED_M"], "new_item_ids": ["S_BLUE_M"], "payment_method_id": "paypal_1"}
EXCHANGE = {**ITEMS, "order_id": "#W2"}
# Each case: tool, arguments, expected error message (ToolError unless it starts with "call:").
ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("find_user_id_by_email", {"email": "nobody@example.com"}, "User not found"),
    # Both peers compare str.lower() of the text as given: no trimming, no accent folding.
    ("find_user_id_by_email", {"email": " ana.silva1000@example.com"}, "User not found"),
    ("find_user_id_by_name_zip", {"first_name": "Ana", "last_name": "Silva", "zip": "10002"}, "User not found"),
    ("find_user_id_by_name_zip", {"first_name": "Ben", "last_name": "Okafor", "zip": "94110"}, "User not found"),
    ("find_user_id_by_name_zip", {"first_name": "Ana", "last_name": "Silva", "zip": " 10001"}, "User not found"),
    ("get_user_details", {"user_id": "ana_silva"}, "User not found"),
    ("get_order_details", {"order_id": "W1"}, "Order not found"),
    ("get_product_details", {"product_id": "S_RED_M"}, "Product not found"),
    ("get_item_details", {"item_id": "P_SHIRT"}, "Item not found"),
    ("calculate", {"expression": "abs(-1)"}, "Invalid characters in expression"),
    ("calculate", {"expression": "5 % 3"}, "Invalid characters in expression"),
    ("cancel_pending_order", {"order_id": "#W9", "reason": "no longer needed"}, "Order not found"),
    (
        "cancel_pending_order",
        {"order_id": "#W3", "reason": "no longer needed"},
        "Non-pending order cannot be cancelled",
    ),
    (
        "cancel_pending_order",
        {"order_id": "#W5", "reason": "no longer needed"},
        "Non-pending order cannot be cancelled",
    ),
    ("cancel_pending_order", {"order_id": "#W1", "reason": "too expensive"}, "call:reason: Input should be"),
    ("modify_pending_order_address", {"order_id": "#W2", **NEW_ADDRESS}, "Non-pending order cannot be modified"),
    ("modify_pending_order_address", {"order_id": "#W1", **NEW_ADDRESS, "zip": 78701}, "call:zip: Input should be"),
    ("modify_pending_order_items", {**ITEMS, "order_id": "#W5"}, "Non-pending order cannot be modified"),
    ("modify_pending_order_items", {**ITEMS, "item_ids": ["L_WHITE"]}, "L_WHITE not found"),
    (
        "modify_pending_order_items",
        {**ITEMS, "item_ids": ["L_BLACK", "L_BLACK"], "new_item_ids": ["L_WHITE", "L_WHITE"]},
        "L_BLACK not found",
    ),
    (
        "modify_pending_order_items",
        {**ITEMS, "new_item_ids": ["S_BLUE_M", "S_GOLD_XL"]},
        "The number of items to be exchanged should match",
    ),
    (
        "modify_pending_order_items",
        {**ITEMS, "new_item_ids": ["S_RED_M"]},
        "The new item id should be different from the old item id",
    ),
    (
        "modify_pending_order_items",
        {**ITEMS, "new_item_ids": ["S_GREEN_L"]},
        "New item S_GREEN_L not found or available",
    ),
    ("modify_pending_order_items", {**ITEMS, "new_item_ids": ["L_WHITE"]}, "Variant not found"),
    ("modify_pending_order_items", {**ITEMS, "payment_method_id": "gift_card_2"}, "Payment method not found"),
    (
        "modify_pending_order_items",
        {**ITEMS, "new_item_ids": ["S_GOLD_XL"], "payment_method_id": "gift_card_1"},
        "Insufficient gift card balance to pay for the new item",
    ),
    ("modify_pending_order_items", {**ITEMS, "item_ids": "S_RED_M"}, "call:item_ids: Input should be a valid list"),
    (
        "modify_pending_order_payment",
        {"order_id": "#W2", "payment_method_id": "paypal_1"},
        "Non-pending order cannot be modified",
    ),
    ("modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "paypal_9"}, "Payment method not found"),
    (
        "modify_pending_order_payment",
        {"order_id": "#W5", "payment_method_id": "credit_card_1"},
        "There should be exactly one payment for a pending order",
    ),
    (
        "modify_pending_order_payment",
        {"order_id": "#W1", "payment_method_id": "credit_card_1"},
        "The new payment method should be different from the current one",
    ),
    (
        "modify_pending_order_payment",
        {"order_id": "#W1", "payment_method_id": "gift_card_1"},
        "Insufficient gift card balance to pay for the order",
    ),
    ("modify_user_address", {"user_id": "nobody", **NEW_ADDRESS}, "User not found"),
    (
        "modify_user_address",
        {"user_id": "ana_silva_1000", **NEW_ADDRESS, "country": None},
        "call:country: Input should be",
    ),
    ("exchange_delivered_order_items", {**EXCHANGE, "order_id": "#W1"}, "Non-delivered order cannot be exchanged"),
    ("exchange_delivered_order_items", {**EXCHANGE, "order_id": "#W404"}, "Order not found"),
    (
        "exchange_delivered_order_items",
        {**EXCHANGE, "item_ids": ["S_RED_M", "S_RED_M"]},
        "Number of S_RED_M not found.",
    ),
    (
        "exchange_delivered_order_items",
        {**EXCHANGE, "new_item_ids": []},
        "The number of items to be exchanged should match.",
    ),
    (
        "exchange_delivered_order_items",
        {**EXCHANGE, "new_item_ids": ["S_GREEN_L"]},
        "New item S_GREEN_L not found or available",
    ),
    ("exchange_delivered_order_items", {**EXCHANGE, "new_item_ids": ["L_WHITE"]}, "Variant not found"),
    ("exchange_delivered_order_items", {**EXCHANGE, "payment_method_id": "gift_card_2"}, "Payment method not found"),
    (
        "exchange_delivered_order_items",
        {**EXCHANGE, "new_item_ids": ["S_GOLD_XL"], "payment_method_id": "gift_card_1"},
        "Insufficient gift card balance to pay for the price difference",
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W1", "item_ids": ["S_RED_M"], "payment_method_id": "credit_card_1"},
        "Non-delivered order cannot be returned",
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "credit_card_1"},
        "Payment method should be the original payment method",
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "gift_card_2"},
        "Payment method not found",
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W2", "item_ids": ["S_BLUE_M"], "payment_method_id": "paypal_1"},
        "Some item not found",
    ),
    (
        "return_delivered_order_items",
        {"order_id": "#W3", "item_ids": ["S_RED_M"], "payment_method_id": "paypal_1"},
        "Non-delivered order cannot be returned",
    ),
    ("think", {}, "call:thought: Field required"),
    ("transfer_to_human_agents", {"summary": "x", "urgent": True}, "call:urgent: Extra inputs are not permitted"),
]


def test_tool_names_flags_and_arguments_match_tau_bench():
    expected = {
        "calculate": ["expression"],
        "cancel_pending_order": ["order_id", "reason"],
        "exchange_delivered_order_items": ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
        "find_user_id_by_email": ["email"],
        "find_user_id_by_name_zip": ["first_name", "last_name", "zip"],
        "get_item_details": ["item_id"],
        "get_order_details": ["order_id"],
        "get_product_details": ["product_id"],
        "get_user_details": ["user_id"],
        "list_all_product_types": [],
        "modify_pending_order_address": ["order_id", "address1", "address2", "city", "state", "country", "zip"],
        "modify_pending_order_items": ["order_id", "item_ids", "new_item_ids", "payment_method_id"],
        "modify_pending_order_payment": ["order_id", "payment_method_id"],
        "modify_user_address": ["user_id", "address1", "address2", "city", "state", "country", "zip"],
        "return_delivered_order_items": ["order_id", "item_ids", "payment_method_id"],
        "think": ["thought"],
        "transfer_to_human_agents": ["summary"],
    }
    schemas = {s["function"]["name"]: s["function"] for s in TOOLS.schemas()}
    assert set(schemas) == set(expected)
    for name, params in expected.items():
        assert list(schemas[name]["parameters"]["properties"]) == params, name
        assert schemas[name]["parameters"]["required"] == params, name
        assert all(p["description"] for p in schemas[name]["parameters"]["properties"].values())
    assert schemas["cancel_pending_order"]["parameters"]["properties"]["reason"]["enum"] == [
        "no longer needed",
        "ordered by mistake",
    ]
    assert schemas["return_delivered_order_items"]["parameters"]["properties"]["item_ids"]["type"] == "array"
    assert {t.name for t in TOOLS if t.mutates} == WRITERS
    assert {t.name for t in TOOLS if t.terminal} == {"transfer_to_human_agents"}


def test_every_tool_has_a_success_and_an_error_case():
    assert {c[0] for c in SUCCESS} == set(TOOLS.names)
    assert {c[0] for c in ERRORS} == set(TOOLS.names) - {"list_all_product_types"}  # it takes no input to get wrong


@pytest.mark.parametrize(("name", "arguments", "check"), SUCCESS, ids=[f"{c[0]}-{i}" for i, c in enumerate(SUCCESS)])
def test_tool_success(name, arguments, check):
    view = SNAPSHOT.view()
    result = TOOLS.call(view, name, arguments)
    assert check(result, view), result
    if name not in WRITERS:
        assert not view.changes()
    else:
        assert view.changes(), "a successful write must change the DB"
        json.loads(render_result(result))  # the agent sees JSON


@pytest.mark.parametrize(("name", "arguments", "message"), ERRORS, ids=[f"{c[0]}-{i}" for i, c in enumerate(ERRORS)])
def test_tool_error(name, arguments, message):
    view = SNAPSHOT.view()
    expected = ToolCallError if message.startswith("call:") else ToolError
    with pytest.raises(expected) as raised:
        TOOLS.call(view, name, arguments)
    assert message.removeprefix("call:") in str(raised.value)
    assert not view.changes(), "a refused call must not write"


def test_order_json_has_tau2_shape_with_null_optional_fields():
    out = json.loads(render_result(TOOLS.call(SNAPSHOT.view(), "get_order_details", {"order_id": "#W2"})))
    assert list(out) == [
        "order_id",
        "user_id",
        "address",
        "items",
        "status",
        "fulfillments",
        "payment_history",
        "cancel_reason",
        "exchange_items",
        "exchange_new_items",
        "exchange_payment_method_id",
        "exchange_price_difference",
        "return_items",
        "return_payment_method_id",
    ]
    assert out == {
        **RAW_DB["orders"]["#W2"],
        **dict.fromkeys(list(out)[7:]),
    }
    user = json.loads(render_result(TOOLS.call(SNAPSHOT.view(), "get_user_details", {"user_id": "ana_silva_1000"})))
    assert user == RAW_DB["users"]["ana_silva_1000"]


def test_lookups_see_the_views_own_writes():
    view = SNAPSHOT.view()
    TOOLS.call(view, "modify_user_address", {"user_id": "ana_silva_1000", **NEW_ADDRESS})
    args = {"first_name": "Ana", "last_name": "Silva"}
    assert TOOLS.call(view, "find_user_id_by_name_zip", {**args, "zip": "78701"}) == "ana_silva_1000"
    with pytest.raises(ToolError, match="User not found"):
        TOOLS.call(view, "find_user_id_by_name_zip", {**args, "zip": "10001"})
    assert TOOLS.call(SNAPSHOT.view(), "find_user_id_by_name_zip", {**args, "zip": "10001"}) == "ana_silva_1000"


def test_second_item_change_or_exchange_is_refused():
    view = SNAPSHOT.view()
    TOOLS.call(view, "modify_pending_order_items", ITEMS)
    with pytest.raises(ToolError, match="Non-pending order cannot be modified"):
        TOOLS.call(view, "modify_pending_order_items", {**ITEMS, "item_ids": ["L_BLACK"], "new_item_ids": ["L_WHITE"]})
    with pytest.raises(ToolError, match="Non-pending order cannot be cancelled"):
        TOOLS.call(view, "cancel_pending_order", {"order_id": "#W1", "reason": "no longer needed"})
    with pytest.raises(ToolError, match="exactly one payment"):
        TOOLS.call(view, "modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "credit_card_1"})
    TOOLS.call(view, "exchange_delivered_order_items", EXCHANGE)
    with pytest.raises(ToolError, match="Non-delivered order cannot be returned"):
        TOOLS.call(
            view,
            "return_delivered_order_items",
            {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "paypal_1"},
        )


def test_snapshot_is_never_mutated_by_writes():
    before, digest = SNAPSHOT.to_json(), SNAPSHOT.content_hash()
    view = SNAPSHOT.view()
    for name, arguments, _ in SUCCESS:
        if name in WRITERS:
            TOOLS.call(view.fork(), name, arguments)
    assert SNAPSHOT.to_json() == before and SNAPSHOT.content_hash() == digest


def test_results_are_the_views_rows_not_copies_of_the_snapshot():
    """Reads return the shared row (cheap); writes return the view's private copy (never the shared one)."""
    view = SNAPSHOT.view()
    assert TOOLS.call(view, "get_order_details", {"order_id": "#W1"}) is SNAPSHOT.tables["orders"]["#W1"]
    written = TOOLS.call(view, "cancel_pending_order", {"order_id": "#W1", "reason": "no longer needed"})
    assert written is view.orders["#W1"] and written is not SNAPSHOT.tables["orders"]["#W1"]
    assert SNAPSHOT.tables["orders"]["#W1"]["status"] == "pending"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "().__class__.__bases__[0].__subclasses__()",
        "(1).real",
        "open('/etc/passwd')",
        "x + 1",
        "1e308 * 10",
        "1 if 1 else 2",
        "[1, 2]",
        "1; 2",
        "lambda: 1",
        "5 % 3",
        "1 < 2",
        "1_000",
    ],
)
def test_calculate_refuses_anything_outside_the_arithmetic_characters(expression):
    with pytest.raises(ToolError, match="Invalid characters in expression"):
        TOOLS.call(SNAPSHOT.view(), "calculate", {"expression": expression})


# Expressions of the allowed characters that eval cannot turn into a number: both peers answer with
# Python's own error text. None of them may run for long or end the episode.
CALCULATE_FAILURES = [
    ("1 / 0", "Error: division by zero"),
    ("1 +", "Error: invalid syntax"),
    ("", "Error: invalid syntax"),
    ("   ", "Error: invalid syntax"),
    ("()", "Error: float() argument must be a string or a real number, not 'tuple'"),
    ("10 ** 400", "Error: int too large to convert to float"),
    ("9**9**9**9", "Error: "),
    ("2 ** 10000000", "Error: "),
    ("(" * 300 + "1" + ")" * 300, "Error: too many nested parentheses"),
]


@pytest.mark.parametrize("profile", ["apigen", "tau2"])
@pytest.mark.parametrize(("expression", "observation"), CALCULATE_FAILURES, ids=[c[0][:12] for c in CALCULATE_FAILURES])
def test_calculate_failures_are_observations_not_env_bugs(profile, expression, observation):
    tools = build_tools(Semantics.named(profile))
    outcome = execute(tools, SNAPSHOT.view(), "calculate", {"expression": expression}, atomic=True)
    assert outcome.bug is None and outcome.error
    assert outcome.content.startswith(observation), outcome.content


def test_calculate_long_sums_and_huge_numbers_stay_floats():
    call = lambda e: TOOLS.call(SNAPSHOT.view(), "calculate", {"expression": e})  # noqa: E731
    assert call("99999999999999999999 * 99999999999999999999") == str(round(float(10**40 - 2 * 10**20 + 1), 2))
    assert call("1" + " + 1" * 600) == "601.0"  # the peers set no length limit
    assert call("--1") == "1.0"
    assert call("-" * 50 + "1") == "1.0"


# ---------------------------------------------------------------------------------------------- the policy
def _trace(calls, user_id="ana_silva_1000", *, run=True):
    """A trace of ``calls`` on the tiny DB: executed by the tools, or (``run=False``) taken as succeeded
    without running them, for rules that tau2's tools also enforce (tau-bench's tools differ, and the
    policy stage must not depend on which peer's tools ran)."""
    from apigen_envs.datagen.trace import ExecutionTrace, TraceStep
    from apigen_envs.datagen.trace import execute as run_trace
    from apigen_envs.task import Action

    identify = ("find_user_id_by_email", {"email": RAW_DB["users"][user_id]["email"]})
    actions = [Action(name=name, arguments=args) for name, args in [identify, *calls]]
    if run:
        trace = run_trace(SNAPSHOT, TOOLS, actions, user_id)
        assert not trace.errors, [s.output for s in trace.errors]
        return trace
    view = SNAPSHOT.view()
    steps = [
        TraceStep(i, a, True, user_id if i == 0 else "{}", TOOLS[a.name].mutates, view, view)
        for i, a in enumerate(actions)
    ]
    return ExecutionTrace(tuple(steps), view, user_id)


def _violated(trace) -> set[str]:
    from apigen_envs.datagen.policy_checks import RETAIL_RULES, check_policy

    return {v.rule for v in check_policy(trace, RETAIL_RULES)}


RETAIL_POLICY_CASES = [
    # Accepted by tau2's tools, refused by the policy.
    (
        [("exchange_delivered_order_items", {**EXCHANGE, "new_item_ids": ["S_RED_M"]})],
        True,
        "retail.same_product_variant",
    ),
    (
        [("modify_pending_order_items", {**ITEMS, "item_ids": [], "new_item_ids": []})],
        True,
        "retail.items_in_order",
    ),
    (
        [("return_delivered_order_items", {"order_id": "#W2", "item_ids": [], "payment_method_id": "paypal_1"})],
        True,
        "retail.items_in_order",
    ),
    (
        [
            ("modify_pending_order_address", {"order_id": "#W1", **NEW_ADDRESS}),
            ("cancel_pending_order", {"order_id": "#W1", "reason": "no longer needed"}),
            ("modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "paypal_1"}),
        ],
        False,
        "retail.no_change_after_cancel",
    ),
    (
        [
            (
                "return_delivered_order_items",
                {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "paypal_1"},
            ),
            ("exchange_delivered_order_items", EXCHANGE),
        ],
        False,
        "retail.one_return_or_exchange",
    ),
    ([("modify_pending_order_items", ITEMS)] * 2, False, "retail.items_modified_once"),
    # Refused by tau2's tools too; the policy refuses them whatever the tools do.
    ([("cancel_pending_order", {"order_id": "#W1", "reason": "too expensive"})], False, "retail.cancel_reason"),
    ([("cancel_pending_order", {"order_id": "#W3", "reason": "no longer needed"})], False, "retail.pending_only"),
    ([("modify_pending_order_items", {**ITEMS, "order_id": "#W5"})], False, "retail.pending_only"),
    ([("return_delivered_order_items", {**ITEMS, "order_id": "#W1"})], False, "retail.delivered_only"),
    ([("modify_pending_order_items", {**ITEMS, "new_item_ids": ["S_RED_M"]})], False, "retail.same_product_variant"),
    ([("modify_pending_order_items", {**ITEMS, "new_item_ids": ["L_WHITE"]})], False, "retail.same_product_variant"),
    ([("modify_pending_order_items", {**ITEMS, "new_item_ids": ["S_GREEN_L"]})], False, "retail.same_product_variant"),
    ([("modify_pending_order_items", {**ITEMS, "new_item_ids": []})], False, "retail.same_product_variant"),
    ([("modify_pending_order_items", {**ITEMS, "item_ids": ["L_WHITE"]})], False, "retail.items_in_order"),
    (
        [("modify_pending_order_items", {**ITEMS, "payment_method_id": "gift_card_2"})],
        False,
        "retail.own_payment_method",
    ),
    (
        [("modify_pending_order_items", {**ITEMS, "new_item_ids": ["S_GOLD_XL"], "payment_method_id": "gift_card_1"})],
        False,
        "retail.gift_card_balance",
    ),
    (
        [
            (
                "exchange_delivered_order_items",
                {**EXCHANGE, "new_item_ids": ["S_GOLD_XL"], "payment_method_id": "gift_card_1"},
            )
        ],
        False,
        "retail.gift_card_balance",
    ),
    (
        [("modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "gift_card_1"})],
        False,
        "retail.gift_card_balance",
    ),
    (
        [("modify_pending_order_payment", {"order_id": "#W5", "payment_method_id": "credit_card_1"})],
        False,
        "retail.payment_change_rules",
    ),
    (
        [("modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "credit_card_1"})],
        False,
        "retail.payment_change_rules",
    ),
    (
        [
            (
                "return_delivered_order_items",
                {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "credit_card_1"},
            )
        ],
        False,
        "retail.refund_to_original_or_gift_card",
    ),
]


@pytest.mark.parametrize(
    ("calls", "run", "rule"), RETAIL_POLICY_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(RETAIL_POLICY_CASES)]
)
def test_retail_policy_predicates_fire(calls, run, rule):
    assert rule in _violated(_trace(calls, run=run))


@pytest.mark.parametrize(
    "calls",
    [
        [("cancel_pending_order", {"order_id": "#W1", "reason": "ordered by mistake"})],
        [("modify_pending_order_items", ITEMS)],
        [("modify_pending_order_items", {**ITEMS, "payment_method_id": "gift_card_1"})],  # 5.50 <= 10.00
        [("modify_pending_order_payment", {"order_id": "#W1", "payment_method_id": "paypal_1"})],
        [("exchange_delivered_order_items", EXCHANGE)],
        [
            (
                "return_delivered_order_items",
                {"order_id": "#W2", "item_ids": ["S_RED_M"], "payment_method_id": "gift_card_1"},
            )
        ],
        [("modify_pending_order_address", {"order_id": "#W5", **NEW_ADDRESS})],  # tau2 lets an item-modified order move
    ],
    ids=lambda c: c[0][0],
)
def test_compliant_retail_calls_break_no_rule(calls):
    assert _violated(_trace(calls)) == set()
