"""A tiny bank domain used by the engine's tests: two tables, a few tools, a handful of tasks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from apigen_envs.db import IndexSpec, Snapshot
from apigen_envs.domain import DatagenSpec, Domain, check_gold_actions, load_tasks, read_json, read_policy, table_rows
from apigen_envs.errors import DataFileError
from apigen_envs.semantics import Semantics, resolve

from .models import Account, Customer
from .tools import build_tools

DATA = Path(__file__).parent / "data"


DATAGEN = DatagenSpec(
    templates=f"{__name__}.templates",
    policy_rules=f"{__name__}.policy_rules:RULES",
    retries=3,
    graph_hints=f"{__name__}.datagen_context:HINTS",
)
"""Phase-1 knowledge of the domain: its template proposer, policy predicates and feedback rounds."""


def load(data_dir: Path | None = None, semantics: Semantics | str | None = None) -> Domain:
    """Load the mock domain.

    Args:
        data_dir: A directory with ``db.json``, ``tasks.json`` and ``policy.md``; embedded data if None.
        semantics: The profile recorded on episodes (its tools are ours, validated, in every profile).

    Returns:
        The domain.

    Raises:
        DataFileError: When a file is missing or invalid (naming the file and row).

    """
    root = data_dir or DATA
    raw = read_json(root / "db.json")
    if not isinstance(raw, Mapping) or not {"customers", "accounts"} <= set(raw):
        raise DataFileError(f"{root / 'db.json'}: expected a JSON object with 'customers' and 'accounts' tables")
    snapshot = Snapshot(
        {
            "customers": table_rows(
                root / "db.json", "customers", raw["customers"], Customer, "customer_id", normalize=True
            ),
            "accounts": table_rows(
                root / "db.json", "accounts", raw["accounts"], Account, "account_id", normalize=True
            ),
        },
        (IndexSpec("customers", "email", lambda c: c["email"].lower()),),
    )
    tools = build_tools()
    tasks = load_tasks(root / "tasks.json", "mock")
    check_gold_actions(root / "tasks.json", tasks, tools)
    return Domain(
        name="mock",
        snapshot=snapshot,
        tools=tools,
        policy=read_policy(root / "policy.md"),
        tasks={t.id: t for t in tasks},
        source="embedded" if data_dir is None else str(data_dir),
        semantics=resolve(semantics, "apigen"),
        datagen=DATAGEN,
    )
