"""Phase-1 context knowledge of the mock domain: tool-graph hints and the grounding of sampled records.

Named by the domain's ``DatagenSpec`` (``graph_hints``, ``grounder``), so :mod:`apigen_envs.datagen` stays
generic: a third-party domain supplies its own module of the same shape.
"""

from __future__ import annotations

from types import MappingProxyType

from apigen_envs.datagen.context import GraphHints
from apigen_envs.domains.mock import models as mock_models

_MOCK_ACCOUNT = mock_models.Account


HINTS = GraphHints(
    rows=MappingProxyType(
        {
            "get_customer_details": mock_models.Customer,
            "get_account_details": _MOCK_ACCOUNT,
            "set_account_nickname": _MOCK_ACCOUNT,
            "close_account": _MOCK_ACCOUNT,
        }
    ),
    returns={"find_customer_by_email": ("customer_id",)},
    identify=("find_customer_by_email",),
    profile="get_customer_details",
)
"""What the tool signatures cannot tell: row types, lookups' outputs, identification."""
