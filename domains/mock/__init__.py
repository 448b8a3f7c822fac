"""A tiny bank domain used by the engine's tests: two tables, a few tools, a handful of tasks."""

from __future__ import annotations

from pathlib import Path

from apigen_envs.db import IndexSpec, Snapshot
from apigen_envs.domain import Domain, load_tasks, read_json, validate_rows

from .models import Account, Customer
from .tools import build_tools

DATA = Path(__file__).parent / "data"


def load(data_dir: Path | None = None) -> Domain:
    """Load the mock domain.

    Args:
        data_dir: A directory with ``db.json``, ``tasks.json`` and ``policy.md``; embedded data if None.

    Returns:
        The domain.

    """
    root = data_dir or DATA
    raw = read_json(root / "db.json")
    customers = validate_rows(root / "db.json", raw.get("customers", {}).items(), Customer)
    accounts = validate_rows(root / "db.json", raw.get("accounts", {}).items(), Account)
    snapshot = Snapshot(
        {"customers": customers, "accounts": accounts},
        {"customers": "customer_id", "accounts": "account_id"},
        (IndexSpec("customers", "email", lambda c: c.email.lower()),),
    )
    tasks = load_tasks(root / "tasks.json", "mock")
    policy = (root / "policy.md").read_text(encoding="utf-8")
    return Domain(
        name="mock",
        snapshot=snapshot,
        tools=build_tools(),
        policy=policy,
        tasks={t.id: t for t in tasks},
        source="embedded" if data_dir is None else str(data_dir),
    )
