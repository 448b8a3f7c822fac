"""The retail domain (tau-bench compatible): customers cancel, modify, return and exchange orders.

``load(None)`` gives the embedded data (our generated DB and blueprints) under the ``apigen`` semantics.
``load(path)`` reads either peer layout found in ``path`` and picks that peer's semantics:

* tau2-bench (``tau2``): ``db.json`` (``products``/``users``/``orders``), ``tasks.json`` (tau2 tasks or
  our Task records), optional ``split_tasks.json``, and ``policy.md``;
* tau-bench v1 (``tau-bench``): ``users.json``, ``orders.json``, ``products.json``, tasks as published
  (``tasks_test.py`` / ``tasks_train.py`` / ``tasks_dev.py``, read as data) or the same records in JSON
  (``tasks_<split>.json`` or ``tasks.json``), and ``wiki.md`` (or ``policy.md``) as the policy.

Rows are kept exactly as read under ``tau-bench`` (v1 stores and hashes raw JSON), and normalised through
tau2's record types otherwise (as tau2 loads them). ``semantics=`` forces a profile. A missing or corrupt
file raises :class:`~apigen_envs.errors.DataFileError` naming the file (and the line, row or task).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apigen_envs.db import IndexSpec, Snapshot
from apigen_envs.domain import (
    DatagenSpec,
    Domain,
    check_gold_actions,
    load_tasks,
    read_json,
    read_policy,
    table_rows,
    unique_tasks,
)
from apigen_envs.errors import DataFileError
from apigen_envs.peer_tasks import load_v1_tasks, read_splits, split_of, tau2_task
from apigen_envs.semantics import Semantics, resolve
from apigen_envs.table_cache import cached_tables, schema_tag
from apigen_envs.task import Action, Task

from .models import TABLES
from .tools import build_tools, email_key, name_zip_key

PACKAGE = Path(__file__).parent
DATA = PACKAGE / "data"
POLICY = PACKAGE / "policy.md"
NAME = "retail"

INDEXES = (
    IndexSpec("users", "email", email_key),
    IndexSpec("users", "name_zip", name_zip_key),
)
"""Secondary indexes used by the user lookups (O(1) in the number of users)."""


DATAGEN = DatagenSpec(
    templates=f"{__name__}.templates",
    policy_rules=f"{__name__}.policy_rules:RULES",
    retries=3,
    graph_hints=f"{__name__}.datagen_context:HINTS",
    grounder=f"{__name__}.datagen_context:ground_retail",
)
"""Phase-1 knowledge of the domain: its template proposer, policy predicates and feedback rounds."""


def snapshot_from_json(raw: Any, path: Path | str = "<db>", *, normalize: bool = True) -> Snapshot:
    """Build a snapshot from a tau2-shaped DB (``{"products": ..., "users": ..., "orders": ...}``).

    Args:
        raw: The parsed ``db.json`` (or :func:`~apigen_envs.domains.retail.generate.generate_db` output).
        path: Where it came from, for error messages.
        normalize: Normalise rows through tau2's record types (False keeps them exactly as given).

    Returns:
        The snapshot.

    Raises:
        DataFileError: Naming the file, table, row and field of the first problem.

    """
    path = Path(path)
    _check_shape(raw, path)
    return Snapshot(_tables(raw, path, normalize=normalize), INDEXES)


def _check_shape(raw: Any, path: Path) -> None:
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{path}: expected a JSON object with products, users and orders")
    missing = [name for name in TABLES if name not in raw]
    if missing:
        raise DataFileError(f"{path}: missing table(s) {missing}; expected {list(TABLES)}")
    extra = sorted(set(raw) - set(TABLES))
    if extra:
        raise DataFileError(f"{path}: unknown table(s) {extra}; expected {list(TABLES)}")


def _tables(raw: Mapping[str, Any], path: Path, *, normalize: bool, fill_key: bool = False) -> dict[str, Any]:
    return {
        name: table_rows(path, name, raw[name], model, key, normalize=normalize, fill_key=fill_key)
        for name, (model, key) in TABLES.items()
    }


def _tag(normalize: bool, fill_key: bool = False) -> str:
    return f"retail normalize={normalize} fill_key={fill_key} " + schema_tag(m for m, _ in TABLES.values())


def load_db(path: Path | str, *, normalize: bool = True) -> Snapshot:
    """Read and validate a tau2-layout ``db.json`` into a snapshot (validated once per file content)."""
    path = Path(path)

    def build() -> dict[str, Any]:
        raw = read_json(path)
        _check_shape(raw, path)
        return _tables(raw, path, normalize=normalize)

    return Snapshot(cached_tables([path], _tag(normalize), build), INDEXES)


def infer_user_id(snapshot: Snapshot, actions: Sequence[Action], stated: str | None = None) -> str | None:
    """The user a task is about: the id its scenario states, else the first one its gold actions reach."""
    if stated:
        return stated
    view = snapshot.view()
    for action in actions:
        args = action.arguments
        if isinstance(args.get("user_id"), str):
            return args["user_id"]
        found: list[str] = []
        if action.name == "find_user_id_by_email" and isinstance(args.get("email"), str):
            found = view.users.lookup_keys("email", args["email"].lower())
        elif action.name == "find_user_id_by_name_zip" and all(
            isinstance(args.get(k), str) for k in ("first_name", "last_name", "zip")
        ):
            key = (args["first_name"].lower(), args["last_name"].lower(), args["zip"])
            found = view.users.lookup_keys("name_zip", key)
        elif isinstance(args.get("order_id"), str) and args["order_id"] in view.orders:
            return view.orders[args["order_id"]]["user_id"]
        if found:
            return found[0]
    return None


def _task_reader(snapshot: Snapshot, splits: Mapping[str, str]) -> Any:
    def convert(item: Any, number: int) -> Task:
        if not isinstance(item, Mapping):
            raise TypeError(f"expected a JSON object, got {type(item).__name__}")
        if "evaluation_criteria" in item or "user_scenario" in item:
            return tau2_task(item, NAME, splits, lambda actions, stated: infer_user_id(snapshot, actions, stated))
        if "scenario" in item:
            return Task.model_validate({"domain": NAME, **item})
        raise ValueError("unknown task format: expected tau2 ('user_scenario') or ours ('scenario')")

    return convert


def _domain(
    snapshot: Snapshot,
    tasks: list[Task],
    splits: Mapping[str, tuple[str, ...]],
    policy: str,
    source: str,
    semantics: Semantics,
    guidelines: str | None = None,
    task_file: Path | None = None,
) -> Domain:
    tools = build_tools(semantics)
    by_id = unique_tasks(Path(source), tasks)
    check_gold_actions(task_file or Path(source), by_id.values(), tools)
    return Domain(
        name=NAME,
        snapshot=snapshot,
        tools=tools,
        policy=policy,
        tasks=by_id,
        splits={k: tuple(i for i in v if i in by_id) for k, v in splits.items() if any(i in by_id for i in v)},
        user_guidelines=guidelines,
        source=source,
        semantics=semantics,
        datagen=DATAGEN,
    )


def _tau2_layout(root: Path, source: str, semantics: Semantics, policy_file: Path) -> Domain:
    snapshot = load_db(root / "db.json", normalize=semantics.name != "tau-bench")
    splits = read_splits(root / "split_tasks.json") if (root / "split_tasks.json").is_file() else {}
    task_file = next((root / n for n in ("tasks.json", "tasks.jsonl") if (root / n).is_file()), None)
    tasks = load_tasks(task_file, NAME, _task_reader(snapshot, split_of(splits))) if task_file else []
    guidelines = root.parent / "user_simulator" / "simulation_guidelines.md"
    return _domain(
        snapshot,
        tasks,
        splits,
        read_policy(policy_file),
        source,
        semantics,
        guidelines.read_text(encoding="utf-8") if guidelines.is_file() else None,
        task_file,
    )


def _v1_layout(root: Path, semantics: Semantics) -> Domain:
    normalize = semantics.name != "tau-bench"
    files = [root / f"{name}.json" for name in TABLES]

    def build() -> dict[str, Any]:
        tables = {}
        for name, (model, key) in TABLES.items():
            path = root / f"{name}.json"
            tables[name] = table_rows(path, name, read_json(path), model, key, normalize=normalize, fill_key=True)
        return tables

    snapshot = Snapshot(cached_tables(files, _tag(normalize, fill_key=True), build), INDEXES)
    tasks = load_v1_tasks(root, NAME)
    policy = next((p for p in (root / "wiki.md", root / "policy.md") if p.is_file()), root / "wiki.md")
    splits: dict[str, list[str]] = {}
    for task in tasks:
        splits.setdefault(task.split, []).append(task.id)
    return _domain(snapshot, tasks, {k: tuple(v) for k, v in splits.items()}, read_policy(policy), str(root), semantics)


def load(data_dir: Path | None = None, semantics: Semantics | str | None = None) -> Domain:
    """Load the retail domain.

    Args:
        data_dir: A directory in the tau2-bench layout (``db.json`` ...) or the tau-bench v1 layout
            (``users.json``, ``orders.json``, ``products.json`` ...); the embedded data when None.
        semantics: Force a semantics profile (default: ``apigen`` for the embedded data, else the layout's
            peer).

    Returns:
        The domain.

    Raises:
        DataFileError: When the directory holds neither layout, or a file is missing or invalid.

    """
    if data_dir is None:
        return _tau2_layout(DATA, "embedded", resolve(semantics, "apigen"), POLICY)
    root = Path(data_dir)
    if not root.is_dir():
        raise DataFileError(f"{root}: retail data directory not found")
    if (root / "db.json").is_file():
        return _tau2_layout(root, str(root), resolve(semantics, "tau2"), root / "policy.md")
    if any((root / f"{name}.json").is_file() for name in TABLES):
        return _v1_layout(root, resolve(semantics, "tau-bench"))
    raise DataFileError(
        f"{root}: no retail data: expected db.json (tau2-bench layout) or users.json, orders.json and "
        "products.json (tau-bench layout)"
    )


__all__ = ["build_tools", "infer_user_id", "load", "load_db", "snapshot_from_json"]
