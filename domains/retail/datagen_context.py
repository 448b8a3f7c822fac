"""Phase-1 context knowledge of the retail domain: tool-graph hints and the grounding of sampled records.

Named by the domain's ``DatagenSpec`` (``graph_hints``, ``grounder``), so :mod:`apigen_envs.datagen` stays
generic: a third-party domain supplies its own module of the same shape.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen.context import GraphHints
from apigen_envs.db import Snapshot, copy_row
from apigen_envs.domains.retail import models as retail_models
from apigen_envs.tools import ToolSet

_RETAIL_ORDER = retail_models.Order


HINTS = GraphHints(
    rows=MappingProxyType(
        {
            "cancel_pending_order": _RETAIL_ORDER,
            "exchange_delivered_order_items": _RETAIL_ORDER,
            "get_order_details": _RETAIL_ORDER,
            "get_product_details": retail_models.Product,
            "get_item_details": retail_models.Variant,
            "get_user_details": retail_models.User,
            "modify_pending_order_address": _RETAIL_ORDER,
            "modify_pending_order_items": _RETAIL_ORDER,
            "modify_pending_order_payment": _RETAIL_ORDER,
            "modify_user_address": retail_models.User,
            "return_delivered_order_items": _RETAIL_ORDER,
        }
    ),
    returns={
        "find_user_id_by_email": ("user_id",),
        "find_user_id_by_name_zip": ("user_id",),
        "list_all_product_types": ("product_id",),
    },
    identify=("find_user_id_by_email", "find_user_id_by_name_zip"),
    profile="get_user_details",
    forbidden=frozenset(
        {
            ("cancel_pending_order", "modify_pending_order_items"),
            ("cancel_pending_order", "return_delivered_order_items"),
            ("return_delivered_order_items", "exchange_delivered_order_items"),
            ("modify_pending_order_items", "cancel_pending_order"),
        }
    ),
)
"""What the tool signatures cannot tell: row types, lookups' outputs, identification, forbidden pairs."""

_STATUS: Mapping[str, str] = MappingProxyType(
    {
        "cancel_pending_order": "pending",
        "modify_pending_order_address": "pending",
        "modify_pending_order_items": "pending",
        "modify_pending_order_payment": "pending",
        "exchange_delivered_order_items": "delivered",
        "return_delivered_order_items": "delivered",
    }
)
"""Order status each retail write needs (the policy's rule; the records shown are chosen to fit it)."""

_VARIANT_WRITES = frozenset({"exchange_delivered_order_items", "modify_pending_order_items"})
_MAX_VARIANTS = 4


def ground_retail(
    snapshot: Snapshot, tools: ToolSet, user: Mapping[str, Any], writes: Sequence[str], rng: random.Random, limit: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Retail orders whose status allows the chosen writes, and other variants of their items.

    Args:
        snapshot: The base DB.
        tools: The domain's tools.
        user: The user's row.
        writes: The walk's write tools.
        rng: Random source.
        limit: Orders to show at most.

    Returns:
        (records, candidates): orders by id; ``variants of <item_id>`` -> available other variants.

    """
    orders = snapshot.tables.get("orders", {})
    mine = [o for o in user.get("orders", ()) if o in orders]
    wanted = {_STATUS[w] for w in writes if w in _STATUS}
    fitting = [o for o in mine if orders[o].get("status") in wanted]
    rng.shuffle(fitting)
    rest = [o for o in mine if o not in fitting]
    rng.shuffle(rest)
    chosen = (fitting + rest)[: max(limit, len(wanted))]
    records = {"orders": {o: copy_row(orders[o]) for o in chosen}} if chosen else {}
    candidates: dict[str, Any] = {}
    if _VARIANT_WRITES & set(writes):
        products = snapshot.tables.get("products", {})
        for oid in [o for o in chosen if o in fitting][:1] or chosen[:1]:
            for item in list(orders[oid].get("items", ()))[:2]:
                product = products.get(item.get("product_id"))
                if product is None:
                    continue
                others = [
                    {"item_id": v["item_id"], "options": v["options"], "price": v["price"]}
                    for v in product.get("variants", {}).values()
                    if v.get("available") and v.get("item_id") != item.get("item_id")
                ]
                rng.shuffle(others)
                if others:
                    candidates[f"available variants of {item.get('name', 'item')} {item['item_id']}"] = others[
                        :_MAX_VARIANTS
                    ]
    return records, candidates
