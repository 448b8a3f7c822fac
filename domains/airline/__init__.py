"""The airline domain (tau-bench compatible): book, change and cancel flight reservations.

``load(None)`` gives the embedded data (our generated DB and blueprints) under the ``apigen`` semantics.
``load(path)`` detects the layout from the files present and picks that peer's semantics:

* tau2-bench (``tau2``): ``db.json`` (``flights``, ``users``, ``reservations``), ``tasks.json`` (tau2
  tasks or our Task records), optional ``split_tasks.json``, and ``policy.md``. Other task sets the
  current tau2 repository keeps beside ``tasks.json`` (``tasks_voice.json``) are not text tasks and
  are ignored;
* tau-bench v1 (``tau-bench``): ``flights.json``, ``users.json`` (keyed by user id; its rows have no
  ``user_id`` field), ``reservations.json``, tasks as published (``tasks_test.py``, read as data) or the
  same records in JSON, and ``wiki.md`` (or ``policy.md``) as the policy.

Rows are kept exactly as read under ``tau-bench`` and normalised through tau2's record types otherwise.
``semantics=`` forces a profile.
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
from apigen_envs.peer_tasks import load_v1_tasks, read_splits, split_of, tau2_task, v1_task_files
from apigen_envs.semantics import Semantics, resolve
from apigen_envs.table_cache import cached_tables, schema_tag
from apigen_envs.task import Action, Task

from .airports import AIRPORTS, CITY_BY_CODE
from .models import TABLES
from .tools import build_tools, index_keys

PACKAGE = Path(__file__).parent
DATA = PACKAGE / "data"
POLICY = PACKAGE / "policy.md"
NAME = "airline"
_V1_TABLES = tuple(f"{name}.json" for name in TABLES)


DATAGEN = DatagenSpec(
    templates=f"{__name__}.templates",
    policy_rules=f"{__name__}.policy_rules:RULES",
    retries=5,
    graph_hints=f"{__name__}.datagen_context:HINTS",
    grounder=f"{__name__}.datagen_context:ground_airline",
)
"""Phase-1 knowledge of the domain: its template proposer, policy predicates and feedback rounds."""


def build_snapshot(raw: Any, source: Path, *, normalize: bool = True, fill_key: bool = False) -> Snapshot:
    """Validate a DB in tau2 ``db.json`` shape into a :class:`Snapshot` with the tools' indexes.

    Args:
        raw: {"flights": {...}, "users": {...}, "reservations": {...}}.
        source: The file the data came from (named in errors).
        normalize: Normalise rows through tau2's record types (False keeps them exactly as read).
        fill_key: Rows may lack their key field (tau-bench v1 ``users.json``).

    Returns:
        The snapshot.

    Raises:
        DataFileError: When a table is missing or a row is invalid (naming the file and row).

    """
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{source}: expected a JSON object with flights, users and reservations")
    missing = [name for name in TABLES if name not in raw]
    if missing:
        raise DataFileError(f"{source}: missing table(s) {missing}; expected {list(TABLES)}")
    tables = {
        name: table_rows(source, name, raw[name], model, key, normalize=normalize, fill_key=fill_key)
        for name, (model, key) in TABLES.items()
    }
    return _snapshot(tables)


def _snapshot(tables: Mapping[str, Any]) -> Snapshot:
    return Snapshot(tables, tuple(IndexSpec(table, name, key) for table, name, key in index_keys()))


def load_snapshot(files: Sequence[Path], *, normalize: bool, v1: bool) -> Snapshot:
    """Read and validate the DB files of a layout into a snapshot (validated once per file content).

    Args:
        files: ``[db.json]`` (tau2 layout) or the three v1 table files, in :data:`TABLES` order.
        normalize: Normalise rows through tau2's record types.
        v1: The v1 layout (one file per table; user rows may lack their id field).

    """

    def build() -> dict[str, Any]:
        if v1:
            raw = {name: read_json(path) for name, path in zip(TABLES, files, strict=True)}
            return dict(build_snapshot(raw, files[0].parent, normalize=normalize, fill_key=True).tables)
        return dict(build_snapshot(read_json(files[0]), files[0], normalize=normalize).tables)

    tag = f"airline normalize={normalize} v1={v1} " + schema_tag(m for m, _ in TABLES.values())
    return _snapshot(cached_tables(files, tag, build))


def served_airports(snapshot: Snapshot) -> tuple[tuple[str, str], ...]:
    """(code, city) of the airports the snapshot's flights serve, in :data:`AIRPORTS` order, others last."""
    codes = {code for f in snapshot.tables["flights"].values() for code in (f["origin"], f["destination"])}
    known = [(code, city) for code, city in AIRPORTS if code in codes]
    extra = [(code, CITY_BY_CODE.get(code, code)) for code in sorted(codes - set(CITY_BY_CODE))]
    return (*known, *extra)


def _user_of(actions: Sequence[Action], stated: str | None) -> str | None:
    if stated:
        return stated
    for action in actions:
        if isinstance(action.arguments.get("user_id"), str):
            return action.arguments["user_id"]
    return None


def _task_reader(splits: Mapping[str, str]) -> Any:
    def convert(item: Any, number: int) -> Task:
        if not isinstance(item, Mapping):
            raise TypeError(f"expected an object, got {type(item).__name__}")
        if "user_scenario" in item or "evaluation_criteria" in item:
            return tau2_task(item, NAME, splits, _user_of)
        if "scenario" in item:
            return Task.model_validate({"domain": NAME, **item})
        raise KeyError("not a tau2 or apigen task (no user_scenario or scenario)")

    return convert


def _domain(
    snapshot: Snapshot,
    tasks: list[Task],
    splits: Mapping[str, Sequence[str]],
    policy: str,
    source: str,
    semantics: Semantics,
    task_file: Path,
) -> Domain:
    tools = build_tools(semantics, served_airports(snapshot))
    by_id = unique_tasks(Path(source), tasks)
    check_gold_actions(task_file, by_id.values(), tools)
    return Domain(
        name=NAME,
        snapshot=snapshot,
        tools=tools,
        policy=policy,
        tasks=by_id,
        splits={k: tuple(i for i in v if i in by_id) for k, v in splits.items() if any(i in by_id for i in v)},
        source=source,
        semantics=semantics,
        datagen=DATAGEN,
    )


def load(data_dir: Path | None = None, semantics: Semantics | str | None = None) -> Domain:
    """Load the airline domain.

    Args:
        data_dir: A tau2 or tau-bench v1 data directory (see the module docstring); embedded data if None.
        semantics: Force a semantics profile (default: ``apigen`` for the embedded data, else the layout's
            peer).

    Returns:
        The domain.

    Raises:
        DataFileError: When a file is missing or corrupt (the message names the file and row).

    """
    root = Path(data_dir) if data_dir is not None else DATA
    if not root.is_dir():
        raise DataFileError(f"{root}: airline data directory not found")
    source = "embedded" if data_dir is None else str(root)
    if (root / "db.json").is_file():
        profile = resolve(semantics, "apigen" if data_dir is None else "tau2")
        snapshot = load_snapshot([root / "db.json"], normalize=profile.name != "tau-bench", v1=False)
        splits = read_splits(root / "split_tasks.json") if (root / "split_tasks.json").is_file() else {}
        task_file = root / "tasks.json"
        tasks = load_tasks(task_file, NAME, _task_reader(split_of(splits))) if task_file.is_file() else []
        policy = read_policy(POLICY if data_dir is None else root / "policy.md")
        return _domain(snapshot, tasks, splits, policy, source, profile, task_file)
    if all((root / name).is_file() for name in _V1_TABLES):
        profile = resolve(semantics, "tau-bench")
        files = [root / f"{name}.json" for name in TABLES]
        snapshot = load_snapshot(files, normalize=profile.name != "tau-bench", v1=True)
        tasks = load_v1_tasks(root, NAME)
        by_split: dict[str, list[str]] = {}
        for task in tasks:
            by_split.setdefault(task.split, []).append(task.id)
        policy_file = next((p for p in (root / "wiki.md", root / "policy.md") if p.is_file()), root / "wiki.md")
        files = v1_task_files(root)
        return _domain(
            snapshot, tasks, by_split, read_policy(policy_file), source, profile, files[0][0] if files else root
        )
    raise DataFileError(
        f"{root}: no airline data found; expected db.json (tau2 layout) or "
        f"{', '.join(_V1_TABLES)} (tau-bench v1 layout)"
    )


__all__ = ["DATA", "build_snapshot", "load", "served_airports"]
