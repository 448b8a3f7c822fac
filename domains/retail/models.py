"""Records of the retail domain: products with variants, users with payment methods, orders.

Field names and order follow tau2-bench's ``db.json`` so that a record's JSON dump (what the agent sees
as a tool result) has the same shape as tau2's tool outputs, including the optional fields tau2 adds to an
order once it is cancelled, exchanged or returned (dumped as ``null`` until set). Money is rounded to
cents on validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from apigen_envs.db import FrozenMap, Record


def to_cents(value: float) -> float:
    """Round an amount of money to cents (the one rounding rule of the domain)."""
    return round(float(value), 2)


Money = Annotated[float, AfterValidator(to_cents)]
"""A dollar amount, rounded to cents."""

OrderStatus = Literal[
    "pending",
    "pending (item modified)",
    "processed",
    "delivered",
    "cancelled",
    "exchange requested",
    "return requested",
]
"""Every status an order can have."""

CancelReason = Literal["no longer needed", "ordered by mistake"]
"""The only accepted reasons for cancelling a pending order."""


class Variant(Record):
    """One purchasable item of a product: a combination of option values with a price."""

    item_id: str
    options: FrozenMap[str, str]
    available: bool
    price: Money


class Product(Record):
    """A product type (``T-Shirt``) and its variant items keyed by item id."""

    name: str
    product_id: str
    variants: FrozenMap[str, Variant]


class UserName(Record):
    """A customer's name."""

    first_name: str
    last_name: str


class Address(Record):
    """A postal address (the user's default address or an order's shipping address)."""

    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class CreditCard(Record):
    """A saved credit card."""

    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class Paypal(Record):
    """A linked PayPal account."""

    source: Literal["paypal"]
    id: str


class GiftCard(Record):
    """A store gift card with a spendable balance."""

    source: Literal["gift_card"]
    id: str
    balance: Money


PaymentMethod = Annotated[CreditCard | GiftCard | Paypal, Field(discriminator="source")]
"""Any saved payment method, told apart by ``source``."""


class User(Record):
    """A customer: identity, default address, saved payment methods and order ids."""

    user_id: str
    name: UserName
    address: Address
    email: str
    payment_methods: FrozenMap[str, PaymentMethod]
    orders: tuple[str, ...] = ()


class Fulfillment(Record):
    """A shipment: tracking numbers and the item ids it carries."""

    tracking_id: tuple[str, ...]
    item_ids: tuple[str, ...]


class OrderItem(Record):
    """One item of an order, with the price paid and the options chosen."""

    name: str
    product_id: str
    item_id: str
    price: Money
    options: FrozenMap[str, str]


class Payment(Record):
    """A payment or refund on an order."""

    transaction_type: Literal["payment", "refund"]
    amount: Money
    payment_method_id: str


class Order(Record):
    """An order with its items, shipping address, status, shipments and payments.

    The fields after ``payment_history`` are set by the write tools (cancellation reason, exchange and
    return requests) and are ``None`` otherwise, as in tau2-bench.
    """

    order_id: str
    user_id: str
    address: Address
    items: tuple[OrderItem, ...]
    status: OrderStatus
    fulfillments: tuple[Fulfillment, ...] = ()
    payment_history: tuple[Payment, ...] = ()
    cancel_reason: CancelReason | None = None
    exchange_items: tuple[str, ...] | None = None
    exchange_new_items: tuple[str, ...] | None = None
    exchange_payment_method_id: str | None = None
    exchange_price_difference: Money | None = None
    return_items: tuple[str, ...] | None = None
    return_payment_method_id: str | None = None


TABLES: Mapping[str, tuple[type[Record], str]] = MappingProxyType(
    {
        "products": (Product, "product_id"),
        "users": (User, "user_id"),
        "orders": (Order, "order_id"),
    }
)
"""Table name -> (record class, primary-key field), in ``db.json`` order."""
