"""Record types of the retail domain: the schema of every row, and the types tau2's tools build.

Rows live in the database as plain JSON (see :mod:`apigen_envs.db`); these models validate data on load,
normalise rows the way tau2 does (every optional field present, amounts as floats), and build the values
tau2's tools construct (an address, a payment), so a value that tau2 would refuse is refused here with
the same message. Class names, field names, field order and types follow tau2-bench's retail records.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, Field

OrderStatus = Literal[
    "processed",
    "pending",
    "pending (item modified)",
    "delivered",
    "cancelled",
    "exchange requested",
    "return requested",
]
"""Every status an order can have."""

CancelReason = Literal["no longer needed", "ordered by mistake"]
"""The only accepted reasons for cancelling a pending order."""


class Variant(BaseModel):
    """One purchasable item of a product: a combination of option values with a price."""

    item_id: str
    options: dict[str, str]
    available: bool
    price: float


class Product(BaseModel):
    """A product type (``T-Shirt``) and its variant items keyed by item id."""

    name: str
    product_id: str
    variants: dict[str, Variant]


class UserName(BaseModel):
    """A customer's name."""

    first_name: str
    last_name: str


class UserAddress(BaseModel):
    """A postal address (the user's default address or an order's shipping address)."""

    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class CreditCard(BaseModel):
    """A saved credit card."""

    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class Paypal(BaseModel):
    """A linked PayPal account."""

    source: Literal["paypal"]
    id: str


class GiftCard(BaseModel):
    """A store gift card with a spendable balance."""

    source: Literal["gift_card"]
    id: str
    balance: float


class User(BaseModel):
    """A customer: identity, default address, saved payment methods and order ids."""

    user_id: str
    name: UserName
    address: UserAddress
    email: str
    payment_methods: dict[str, Annotated[CreditCard | GiftCard | Paypal, Field(discriminator="source")]]
    orders: list[str]


class OrderFullfilment(BaseModel):  # tau2's spelling
    """A shipment: tracking numbers and the item ids it carries."""

    tracking_id: list[str]
    item_ids: list[str]


class OrderItem(BaseModel):
    """One item of an order, with the price paid and the options chosen."""

    name: str
    product_id: str
    item_id: str
    price: float
    options: dict[str, str]


class OrderPayment(BaseModel):
    """A payment or refund on an order."""

    transaction_type: Literal["payment", "refund"]
    amount: float
    payment_method_id: str


class Order(BaseModel):
    """An order with its items, shipping address, status, shipments and payments.

    The fields after ``payment_history`` are set by the write tools (cancellation reason, exchange and
    return requests) and are ``None`` otherwise, as in tau2-bench.
    """

    order_id: str
    user_id: str
    address: UserAddress
    items: list[OrderItem]
    status: OrderStatus
    fulfillments: list[OrderFullfilment]
    payment_history: list[OrderPayment]
    cancel_reason: CancelReason | None = None
    exchange_items: list[str] | None = None
    exchange_new_items: list[str] | None = None
    exchange_payment_method_id: str | None = None
    exchange_price_difference: float | None = None
    return_items: list[str] | None = None
    return_payment_method_id: str | None = None


TABLES: Mapping[str, tuple[type[BaseModel], str]] = MappingProxyType(
    {
        "products": (Product, "product_id"),
        "users": (User, "user_id"),
        "orders": (Order, "order_id"),
    }
)
"""Table name -> (row model, key field), in ``db.json`` order."""
