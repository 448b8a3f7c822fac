"""Tools of the retail domain, compatible with tau-bench / tau2-bench.

Names, arguments, error cases and state changes follow tau2-bench's retail toolkit, so agents trained on
tau-bench traces (APIGen-MT-5k, xLAM-2) call them unchanged; results are the same JSON shapes. The
docstrings are the prompts the agent reads and are our own.

Where tau2 has a defect we keep the documented behaviour instead: ``modify_pending_order_items`` gives
each modified item the price and options of *its own* new variant (a later tau2 revision copies the last
new variant into every modified item), and amounts are rounded to cents before they are stored.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from apigen_envs.db import DBView
from apigen_envs.errors import ToolError
from apigen_envs.tools import ToolSet

from .models import Address, CancelReason, GiftCard, Order, OrderItem, Payment, Product, User, Variant, to_cents


def fold(text: str) -> str:
    """Normalise a name or email for matching: case-folded, accents removed, surrounding spaces dropped."""
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def email_key(user: User) -> str:
    """Index key of ``users`` by email."""
    return fold(user.email)


def name_zip_key(user: User) -> tuple[str, str, str]:
    """Index key of ``users`` by (first name, last name, zip)."""
    return fold(user.name.first_name), fold(user.name.last_name), user.address.zip.strip()


# ---------------------------------------------------------------------------------------------- calculate
_BINARY: Mapping[type[ast.operator], Callable[[float, float], float]] = MappingProxyType(
    {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
    }
)
_UNARY: Mapping[type[ast.unaryop], Callable[[float], float]] = MappingProxyType(
    {ast.USub: operator.neg, ast.UAdd: operator.pos}
)
_ALLOWED_CHARS = frozenset("0123456789+-*/(). ")
MAX_EXPRESSION_CHARS = 1000


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        op = type(node.op)
        if isinstance(node, ast.BinOp) and op in _BINARY:
            return _BINARY[op](_evaluate(node.left), _evaluate(node.right))
        if isinstance(node, ast.UnaryOp) and op in _UNARY:
            return _UNARY[op](_evaluate(node.operand))
        raise ToolError(f"Unsupported operator: {op.__name__} (use only + - * / and parentheses)")
    raise ToolError(f"Unsupported expression element: {type(node).__name__}")


def safe_calculate(expression: str) -> str:
    """Evaluate an arithmetic expression without ``eval``; the result is rounded to 2 decimals.

    Only numbers, ``+ - * /``, unary minus or plus and parentheses are accepted (no names, calls,
    attributes or powers). Numbers are evaluated as floats, so no input can build huge integers.

    Args:
        expression: Text such as ``"(12.5 + 3) * 2"``.

    Returns:
        The rounded result as text, as tau-bench prints it (``"31.0"``).

    Raises:
        ToolError: For any other character or construct, division by zero, or a non-finite result.

    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"Expression too long (at most {MAX_EXPRESSION_CHARS} characters)")
    if not expression.strip() or not set(expression) <= _ALLOWED_CHARS:
        raise ToolError("Invalid characters in expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        raise ToolError("Invalid expression") from None
    if not math.isfinite(value):
        raise ToolError("Result is not a finite number")
    return str(round(value, 2))


# ---------------------------------------------------------------------------------------------- helpers
def get_order(db: DBView, order_id: str) -> Order:
    """The order, or ToolError("Order not found")."""
    order = db.orders.get(order_id)
    if order is None:
        raise ToolError("Order not found")
    return order


def get_user(db: DBView, user_id: str) -> User:
    """The user, or ToolError("User not found")."""
    user = db.users.get(user_id)
    if user is None:
        raise ToolError("User not found")
    return user


def get_product(db: DBView, product_id: str) -> Product:
    """The product, or ToolError("Product not found")."""
    product = db.products.get(product_id)
    if product is None:
        raise ToolError("Product not found")
    return product


def get_variant(db: DBView, product_id: str, item_id: str) -> Variant:
    """A variant of a given product, or ToolError (product or variant not found)."""
    variant = get_product(db, product_id).variants.get(item_id)
    if variant is None:
        raise ToolError("Variant not found")
    return variant


def get_payment_method(db: DBView, user_id: str, payment_method_id: str) -> Any:
    """One of the user's payment methods, or ToolError("Payment method not found")."""
    method = get_user(db, user_id).payment_methods.get(payment_method_id)
    if method is None:
        raise ToolError("Payment method not found")
    return method


def adjust_gift_card(db: DBView, user_id: str, payment_method_id: str, delta: float) -> None:
    """Add ``delta`` (negative to charge) to a gift card's balance; other payment methods are untouched."""
    user = get_user(db, user_id)
    method = user.payment_methods.get(payment_method_id)
    if not isinstance(method, GiftCard):
        return
    methods = dict(user.payment_methods)
    methods[payment_method_id] = method.evolve(balance=to_cents(method.balance + delta))
    db.users.put(user.evolve(payment_methods=methods))


def check_item_counts(order: Order, item_ids: Iterable[str], message: Callable[[str], str]) -> None:
    """Each id must occur in the order at least as often as it is listed (duplicates allowed)."""
    wanted = list(item_ids)
    owned = [item.item_id for item in order.items]
    for item_id in wanted:
        if wanted.count(item_id) > owned.count(item_id):
            raise ToolError(message(item_id))


def first_item(items: Iterable[OrderItem], item_id: str) -> OrderItem:
    """The first order item with this id, or ToolError("Item ... not found")."""
    found = next((item for item in items if item.item_id == item_id), None)
    if found is None:
        raise ToolError(f"Item {item_id} not found")
    return found


def price_difference(
    db: DBView, order: Order, item_ids: list[str], new_item_ids: list[str], *, forbid_same: bool
) -> tuple[float, list[Variant]]:
    """Validate item swaps and return (new total - old total, the new variants in order).

    Each new item must be an available variant of the same product as the item it replaces.
    """
    diff = 0.0
    variants = []
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        if forbid_same and item_id == new_item_id:
            raise ToolError("The new item id should be different from the old item id")
        item = first_item(order.items, item_id)
        variant = get_variant(db, item.product_id, new_item_id)
        if not variant.available:
            raise ToolError(f"New item {new_item_id} not found or available")
        diff += variant.price - item.price
        variants.append(variant)
    return to_cents(diff), variants


def address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> Address:
    """Build an address record from tool arguments."""
    return Address(address1=address1, address2=address2, city=city, country=country, state=state, zip=zip)


# ---------------------------------------------------------------------------------------------- tools
def build_tools() -> ToolSet:
    """Build the retail ToolSet (15 tau-bench tools, tau2's ``get_item_details`` and ``think``).

    Returns:
        A fresh ToolSet.

    """
    tools = ToolSet()

    @tools.tool
    def calculate(db: DBView, expression: str) -> str:
        """Evaluate an arithmetic expression and return the result rounded to two decimals. Use it for sums,
        differences and totals of prices instead of computing them yourself.

        Args:
            expression: The expression, made only of numbers, the operators + - * /, parentheses and spaces,
                such as '(149.99 + 20.5) * 2'.

        """
        return safe_calculate(expression)

    @tools.tool(mutates=True)
    def cancel_pending_order(db: DBView, order_id: str, reason: CancelReason) -> Order:
        """Cancel an order whose status is exactly 'pending'. Orders that are processed, delivered, already
        cancelled or had their items modified cannot be cancelled. Before calling, tell the user what will be
        cancelled and get an explicit 'yes'. Every payment of the order is refunded to the method it came
        from: at once for a gift card, within 5 to 7 business days otherwise. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            reason: Why the user cancels: 'no longer needed' or 'ordered by mistake' (no other reason is
                accepted).

        """
        order = get_order(db, order_id)
        if order.status != "pending":
            raise ToolError("Non-pending order cannot be cancelled")
        refunds = []
        for payment in order.payment_history:
            get_payment_method(db, order.user_id, payment.payment_method_id)
            refunds.append(payment.evolve(transaction_type="refund"))
            adjust_gift_card(db, order.user_id, payment.payment_method_id, payment.amount)
        order = order.evolve(
            status="cancelled", cancel_reason=reason, payment_history=(*order.payment_history, *refunds)
        )
        db.orders.put(order)
        return order

    @tools.tool(mutates=True)
    def exchange_delivered_order_items(
        db: DBView, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> Order:
        """Request an exchange of items of a delivered order for other variants of the same products (for
        example a different size or color; never a different product). An order can be exchanged or
        returned only once, so collect every item to exchange before calling, and get an explicit 'yes'
        from the user. The price difference is charged to, or refunded to, the given payment method; a gift
        card must have enough balance to pay a positive difference. The order status becomes 'exchange
        requested' and the user gets an email on how to send the old items back; no new order is needed.
        Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to exchange, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            new_item_ids: The item ids to exchange them for, position by position; each must be an available
                variant of the same product as the item it replaces.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000' (see the user's or the order's
                details), used to pay or receive the price difference.

        """
        order = get_order(db, order_id)
        if order.status != "delivered":
            raise ToolError("Non-delivered order cannot be exchanged")
        check_item_counts(order, item_ids, lambda i: f"Number of {i} not found.")
        if len(item_ids) != len(new_item_ids):
            raise ToolError("The number of items to be exchanged should match.")
        diff, _ = price_difference(db, order, item_ids, new_item_ids, forbid_same=False)
        method = get_payment_method(db, order.user_id, payment_method_id)
        if isinstance(method, GiftCard) and method.balance < diff:
            raise ToolError("Insufficient gift card balance to pay for the price difference")
        order = order.evolve(
            status="exchange requested",
            exchange_items=tuple(sorted(item_ids)),
            exchange_new_items=tuple(sorted(new_item_ids)),
            exchange_payment_method_id=payment_method_id,
            exchange_price_difference=diff,
        )
        db.orders.put(order)
        return order

    @tools.tool
    def find_user_id_by_name_zip(db: DBView, first_name: str, last_name: str, zip: str) -> str:
        """Look up a user id from the customer's first name, last name and zip code (names are matched
        ignoring case and accents). Prefer find_user_id_by_email; use this when the customer does not
        remember their email or the email lookup fails.

        Args:
            first_name: The customer's first name, such as 'John'.
            last_name: The customer's last name, such as 'Doe'.
            zip: The zip code of the customer's default address, such as '12345'.

        """
        found = db.users.lookup("name_zip", (fold(first_name), fold(last_name), zip.strip()))
        if not found:
            raise ToolError("User not found")
        return found[0].user_id

    @tools.tool
    def find_user_id_by_email(db: DBView, email: str) -> str:
        """Look up a user id from the customer's email address (matched ignoring case).

        Args:
            email: The customer's email, such as 'jane.doe1234@example.com'.

        """
        found = db.users.lookup("email", fold(email))
        if not found:
            raise ToolError("User not found")
        return found[0].user_id

    @tools.tool
    def get_order_details(db: DBView, order_id: str) -> Order:
        """Show an order: status, items with prices and options, shipping address, shipments with tracking
        ids, and payment history.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.

        """
        return get_order(db, order_id)

    @tools.tool
    def get_product_details(db: DBView, product_id: str) -> Product:
        """Show a product type and all its variant items, each with its options, price and availability.
        A product id is not an item id: take it from the 'product_id' of an order item or from
        list_all_product_types.

        Args:
            product_id: The product id, such as '6086499569'.

        """
        return get_product(db, product_id)

    @tools.tool
    def get_item_details(db: DBView, item_id: str) -> Variant:
        """Show one variant item: its options, price and availability. An item id is not a product id.

        Args:
            item_id: The item id, such as '1008292230'.

        """
        for product in db.products.values():
            variant = product.variants.get(item_id)
            if variant is not None:
                return variant
        raise ToolError("Item not found")

    @tools.tool
    def get_user_details(db: DBView, user_id: str) -> User:
        """Show a user's profile: name, email, default address, saved payment methods (with gift card
        balances) and the ids of their orders.

        Args:
            user_id: The user id, such as 'jane_doe_1234'.

        """
        return get_user(db, user_id)

    @tools.tool
    def list_all_product_types(db: DBView) -> str:
        """List every product type the store sells as a JSON object mapping product name to product id,
        sorted by name. Use get_product_details for a product's variant items.
        """
        return json.dumps({p.name: p.product_id for p in db.products.values()}, sort_keys=True)

    @tools.tool(mutates=True)
    def modify_pending_order_address(
        db: DBView, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> Order:
        """Change the shipping address of a pending order. Before calling, tell the user the new address and
        get an explicit 'yes'. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            address1: First address line, such as '123 Main St'.
            address2: Second address line, such as 'Apt 1', or '' when there is none.
            city: City, such as 'San Francisco'.
            state: State, such as 'CA'.
            country: Country, such as 'USA'.
            zip: Zip code, such as '12345'.

        """
        order = get_order(db, order_id)
        if "pending" not in order.status:
            raise ToolError("Non-pending order cannot be modified")
        order = order.evolve(address=address(address1, address2, city, state, country, zip))
        db.orders.put(order)
        return order

    @tools.tool(mutates=True)
    def modify_pending_order_items(
        db: DBView, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
    ) -> Order:
        """Swap items of a pending order for other variants of the same products (for example another color
        or size; never a different product). This can be done only once per order: afterwards the status is
        'pending (item modified)' and the order can no longer be cancelled or have its items changed, so
        make sure the user has listed every item to change, and get an explicit 'yes'. The price difference
        is charged to, or refunded to, the given payment method; a gift card must have enough balance to pay
        a positive difference. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to change, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            new_item_ids: The new item ids, position by position; each must be an available variant of the
                same product as the item it replaces, and differ from it.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000' (see the user's or the order's
                details), used to pay or receive the price difference.

        """
        order = get_order(db, order_id)
        if order.status != "pending":
            raise ToolError("Non-pending order cannot be modified")
        check_item_counts(order, item_ids, lambda i: f"{i} not found")
        if len(item_ids) != len(new_item_ids):
            raise ToolError("The number of items to be exchanged should match")
        diff, variants = price_difference(db, order, item_ids, new_item_ids, forbid_same=True)
        method = get_payment_method(db, order.user_id, payment_method_id)
        if isinstance(method, GiftCard) and method.balance < diff:
            raise ToolError("Insufficient gift card balance to pay for the new item")
        payment = Payment(
            transaction_type="payment" if diff > 0 else "refund", amount=abs(diff), payment_method_id=payment_method_id
        )
        adjust_gift_card(db, order.user_id, payment_method_id, -diff)
        items = list(order.items)
        for item_id, variant in zip(item_ids, variants, strict=True):
            index = next(i for i, item in enumerate(items) if item.item_id == item_id)
            items[index] = items[index].evolve(item_id=variant.item_id, price=variant.price, options=variant.options)
        order = order.evolve(
            items=tuple(items), status="pending (item modified)", payment_history=(*order.payment_history, payment)
        )
        db.orders.put(order)
        return order

    @tools.tool(mutates=True)
    def modify_pending_order_payment(db: DBView, order_id: str, payment_method_id: str) -> Order:
        """Pay a pending order with a different saved payment method. The order must have exactly one
        payment, and the new method must differ from it; a gift card must have enough balance for the whole
        order. The old method is refunded (at once for a gift card, within 5 to 7 business days otherwise).
        Before calling, get an explicit 'yes' from the user. Returns the updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            payment_method_id: The id of one of the user's saved payment methods, such as
                'credit_card_0000000', 'paypal_0000000' or 'gift_card_0000000' (see the user's or the order's
                details), that will pay the order.

        """
        order = get_order(db, order_id)
        if "pending" not in order.status:
            raise ToolError("Non-pending order cannot be modified")
        method = get_payment_method(db, order.user_id, payment_method_id)
        history = order.payment_history
        if len(history) != 1 or history[0].transaction_type != "payment":
            raise ToolError("There should be exactly one payment for a pending order")
        old_id, amount = history[0].payment_method_id, history[0].amount
        if old_id == payment_method_id:
            raise ToolError("The new payment method should be different from the current one")
        if isinstance(method, GiftCard) and method.balance < amount:
            raise ToolError("Insufficient gift card balance to pay for the order")
        get_payment_method(db, order.user_id, old_id)
        order = order.evolve(
            payment_history=(
                *history,
                Payment(transaction_type="payment", amount=amount, payment_method_id=payment_method_id),
                Payment(transaction_type="refund", amount=amount, payment_method_id=old_id),
            )
        )
        adjust_gift_card(db, order.user_id, payment_method_id, -amount)
        adjust_gift_card(db, order.user_id, old_id, amount)
        db.orders.put(order)
        return order

    @tools.tool(mutates=True)
    def modify_user_address(
        db: DBView, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
    ) -> User:
        """Change a user's default address (existing orders keep their shipping address). Before calling,
        tell the user the new address and get an explicit 'yes'. Returns the updated user.

        Args:
            user_id: The user id, such as 'jane_doe_1234'.
            address1: First address line, such as '123 Main St'.
            address2: Second address line, such as 'Apt 1', or '' when there is none.
            city: City, such as 'San Francisco'.
            state: State, such as 'CA'.
            country: Country, such as 'USA'.
            zip: Zip code, such as '12345'.

        """
        user = get_user(db, user_id).evolve(address=address(address1, address2, city, state, country, zip))
        db.users.put(user)
        return user

    @tools.tool(mutates=True)
    def return_delivered_order_items(db: DBView, order_id: str, item_ids: list[str], payment_method_id: str) -> Order:
        """Request a return of items of a delivered order. An order can be returned or exchanged only once,
        so collect every item first, and get an explicit 'yes' from the user. The refund goes to the
        order's original payment method or to one of the user's gift cards, nowhere else. The order status
        becomes 'return requested' and the user gets an email on how to send the items back. Returns the
        updated order.

        Args:
            order_id: The order id, which starts with '#', such as '#W0000000'.
            item_ids: Item ids of the order to return, such as ['1008292230']. An id may repeat when the
                order holds that item more than once.
            payment_method_id: Where the refund goes: the id of the payment method that paid the order, or of
                one of the user's gift cards, such as 'gift_card_0000000'.

        """
        order = get_order(db, order_id)
        if order.status != "delivered":
            raise ToolError("Non-delivered order cannot be returned")
        method = get_payment_method(db, order.user_id, payment_method_id)
        original = order.payment_history[0].payment_method_id if order.payment_history else None
        if not isinstance(method, GiftCard) and payment_method_id != original:
            raise ToolError("Payment method should be the original payment method")
        check_item_counts(order, item_ids, lambda _: "Some item not found")
        order = order.evolve(
            status="return requested", return_items=tuple(sorted(item_ids)), return_payment_method_id=payment_method_id
        )
        db.orders.put(order)
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

    return tools
