"""The airline domain (tau-bench compatible): book, change and cancel flight reservations.

``load(data_dir)`` reads the embedded data when ``data_dir`` is None, and otherwise detects the layout
from the files present:

* tau2-bench / ours: ``db.json`` (``flights``, ``users``, ``reservations``), ``tasks.json`` (tau2 tasks
  or our Task dicts), optional ``split_tasks.json`` and ``policy.md``;
* tau-bench v1: ``flights.json``, ``users.json``, ``reservations.json`` and ``tasks.json`` (or
  ``tasks_<split>.json``) holding ``{user_id, instruction, actions: [{name, kwargs}], outputs}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.db import IndexSpec, Snapshot
from apigen_envs.domain import Domain, load_tasks, read_json, validate_rows
from apigen_envs.errors import DataFileError
from apigen_envs.task import Task

from .airports import AIRPORTS, CITY_BY_CODE
from .models import Airport, Flight, Reservation, User
from .peer import tau2_splits, tau2_task, v1_tables, v1_task
from .tools import build_tools, index_keys

DATA = Path(__file__).parent / "data"
PRIMARY_KEYS: Mapping[str, str] = MappingProxyType(
    {"flights": "flight_number", "users": "user_id", "reservations": "reservation_id"}
)
_V1_TABLES = ("flights.json", "users.json", "reservations.json")


def build_snapshot(raw: Mapping[str, Any], source: Path) -> Snapshot:
    """Validate a DB in tau2 ``db.json`` shape into a :class:`Snapshot` with the tools' indexes.

    Args:
        raw: {"flights": {...}, "users": {...}, "reservations": {...}}.
        source: The file the data came from (named in errors).

    Returns:
        The snapshot.

    Raises:
        DataFileError: When a table is missing or a row is invalid (naming the file and row).

    """
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{source}: expected a JSON object with flights, users and reservations")
    tables = {}
    for name, model in (("flights", Flight), ("users", User), ("reservations", Reservation)):
        rows = raw.get(name)
        if not isinstance(rows, Mapping):
            raise DataFileError(f"{source}: table {name!r} is missing or not an object keyed by id")
        tables[name] = validate_rows(source, rows.items(), model)
        pk = PRIMARY_KEYS[name]
        for key, record in tables[name].items():
            if getattr(record, pk) != key:
                raise DataFileError(
                    f"{source}: row {key!r} of {name}: key differs from its {pk} {getattr(record, pk)!r}"
                )
    indexes = tuple(IndexSpec(table, name, key) for table, name, key in index_keys())
    return Snapshot(tables, PRIMARY_KEYS, indexes)


def served_airports(snapshot: Snapshot) -> tuple[Airport, ...]:
    """Airports the snapshot's flights serve, in :data:`AIRPORTS` order, unknown codes last."""
    codes = {code for f in snapshot.tables["flights"].values() for code in (f.origin, f.destination)}
    known = [Airport(iata=code, city=city) for code, city in AIRPORTS if code in codes]
    extra = [Airport(iata=code, city=CITY_BY_CODE.get(code, code)) for code in sorted(codes - set(CITY_BY_CODE))]
    return (*known, *extra)


def _convert(splits: dict[str, str]) -> Any:
    def convert(item: Any, number: int) -> Task:
        if not isinstance(item, dict):
            raise TypeError(f"expected an object, got {type(item).__name__}")
        if "user_scenario" in item or "evaluation_criteria" in item:
            return tau2_task(item, number, splits)
        if "scenario" in item:
            return Task.model_validate({"domain": "airline", **item})
        if "instruction" in item:
            return v1_task(item, number, splits.get(str(item.get("id", number)), "test"))
        raise KeyError("not a tau2, tau-bench v1 or apigen task (no user_scenario, scenario or instruction)")

    return convert


def _tasks(root: Path) -> tuple[list[Task], dict[str, tuple[str, ...]]]:
    split_file = root / "split_tasks.json"
    splits = tau2_splits(split_file) if split_file.exists() else {}
    by_task: dict[str, str] = {}
    for split in ("base", *[s for s in splits if s != "base"]):
        for task_id in splits.get(split, ()):
            by_task[task_id] = split
    tasks: list[Task] = []
    if (root / "tasks.json").exists() or not list(root.glob("tasks_*.json")):
        tasks.extend(load_tasks(root / "tasks.json", "airline", _convert(by_task)))
    for path in sorted(root.glob("tasks_*.json")):
        split = path.stem.removeprefix("tasks_")
        tasks.extend(load_tasks(path, "airline", lambda item, n, s=split: v1_task(item, n, s)))
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise DataFileError(f"{root}: duplicate task id {task.id!r}")
        seen.add(task.id)
    return tasks, {k: tuple(i for i in v if i in seen) for k, v in splits.items()}


def load(data_dir: Path | None = None) -> Domain:
    """Load the airline domain.

    Args:
        data_dir: A tau2 or tau-bench v1 data directory (see the module docstring); embedded data if None.

    Returns:
        The domain.

    Raises:
        DataFileError: When a file is missing or corrupt (the message names the file and row).

    """
    root = Path(data_dir) if data_dir is not None else DATA
    if not root.is_dir():
        raise DataFileError(f"{root}: data directory not found")
    if (root / "db.json").exists():
        source = root / "db.json"
        raw = read_json(source)
    elif all((root / name).exists() for name in _V1_TABLES):
        source = root
        raw = v1_tables(root)
    else:
        raise DataFileError(
            f"{root}: no airline data found; expected db.json (tau2 layout) or "
            f"{', '.join(_V1_TABLES)} (tau-bench v1 layout)"
        )
    snapshot = build_snapshot(raw, source)
    tasks, splits = _tasks(root)
    policy_file = root / "policy.md"
    if not policy_file.exists():
        policy_file = DATA.parent / "policy.md"
    try:
        policy = policy_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{policy_file}: cannot read ({exc})") from None
    return Domain(
        name="airline",
        snapshot=snapshot,
        tools=build_tools(served_airports(snapshot)),
        policy=policy,
        tasks={t.id: t for t in tasks},
        splits=splits,
        source="embedded" if data_dir is None else str(data_dir),
    )


__all__ = ["DATA", "build_snapshot", "load", "served_airports"]
