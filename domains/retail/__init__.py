"""The retail domain (tau-bench compatible): customers cancel, modify, return and exchange orders.

``load(None)`` gives the embedded data (our generated DB and template tasks). ``load(path)`` reads either
layout found in ``path``:

* tau2-bench: ``db.json`` (``products``/``users``/``orders``), ``tasks.json`` (tau2 tasks or our Task
  records), optional ``split_tasks.json`` and ``policy.md``;
* tau-bench v1: ``users.json``, ``orders.json``, ``products.json`` and tasks as a JSON list of
  ``{user_id, instruction, actions: [{name, kwargs}], outputs}`` in ``tasks.json`` or
  ``tasks_train.json`` / ``tasks_test.json`` / ``tasks_dev.json``; optional ``policy.md`` or ``wiki.md``.

A missing or corrupt file raises :class:`~apigen_envs.errors.DataFileError` naming the file (and the line
or row).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.db import IndexSpec, Record, Snapshot
from apigen_envs.domain import Domain, load_tasks, read_json, validate_rows
from apigen_envs.errors import DataFileError
from apigen_envs.task import Action, Task, UserScenario

from .models import TABLES
from .tools import build_tools, email_key, fold, name_zip_key

PACKAGE = Path(__file__).parent
DATA = PACKAGE / "data"
POLICY = PACKAGE / "policy.md"
NAME = "retail"

INDEXES = (
    IndexSpec("users", "email", email_key),
    IndexSpec("users", "name_zip", name_zip_key),
)
"""Secondary indexes used by the user lookups (O(1) in the number of users)."""

V1_TASK_FILES = (("tasks_train.json", "train"), ("tasks_test.json", "test"), ("tasks_dev.json", "dev"))
TAU2_BASIS = MappingProxyType({"DB": "db", "COMMUNICATE": "outputs"})


def table_records(path: Path, table: str, raw: Any) -> dict[str, Record]:
    """Validate one table's raw rows ({id: row}) into records.

    A row without its id field gets it from its key (tau-bench v1 ``users.json`` has no ``user_id``); a row
    whose id field differs from its key is an error.

    Args:
        path: The file the rows came from (for messages).
        table: ``products``, ``users`` or ``orders``.
        raw: The parsed JSON.

    Returns:
        {id: record}.

    """
    model, pk = TABLES[table]
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{path}: table {table!r} must be a JSON object of id -> record, got {type(raw).__name__}")
    rows = []
    for key, row in raw.items():
        if not isinstance(row, Mapping):
            raise DataFileError(f"{path}: row {key!r}: expected a JSON object, got {type(row).__name__}")
        rows.append((key, row if pk in row else {pk: key, **row}))
    records = validate_rows(path, rows, model)
    for key, record in records.items():
        if getattr(record, pk) != key:
            raise DataFileError(f"{path}: row {key!r}: {pk} is {getattr(record, pk)!r}, not the row key")
    return records


def build_snapshot(tables: Mapping[str, Mapping[str, Record]]) -> Snapshot:
    """Wrap validated tables into the domain's snapshot (primary keys and lookup indexes)."""
    return Snapshot(tables, {name: pk for name, (_, pk) in TABLES.items()}, INDEXES)


def snapshot_from_json(raw: Any, path: Path | str = "<db>") -> Snapshot:
    """Build a snapshot from a tau2-shaped DB dict (``{"products": ..., "users": ..., "orders": ...}``).

    Args:
        raw: The parsed ``db.json`` (or :func:`~apigen_envs.domains.retail.generate.generate_db` output).
        path: Where it came from, for error messages.

    Returns:
        The snapshot.

    """
    path = Path(path)
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{path}: expected a JSON object with products, users and orders")
    missing = [name for name in TABLES if name not in raw]
    if missing:
        raise DataFileError(f"{path}: missing table(s) {missing}; expected {list(TABLES)}")
    return build_snapshot({name: table_records(path, name, raw[name]) for name in TABLES})


def load_db(path: Path | str) -> Snapshot:
    """Read and validate a tau2-layout ``db.json`` into a snapshot."""
    return snapshot_from_json(read_json(Path(path)), path)


# ---------------------------------------------------------------------------------------------- tasks
def compose_instruction(parts: Mapping[str, Any], persona: str | None = None) -> str:
    """Join tau2's structured user instructions into one instruction text for the user simulator."""
    sections = [("Persona", persona)] + [
        (label, parts.get(key))
        for label, key in (
            ("Reason for call", "reason_for_call"),
            ("Known info", "known_info"),
            ("Unknown info", "unknown_info"),
            ("Task instructions", "task_instructions"),
        )
    ]
    return "\n\n".join(f"{label}:\n{text}" for label, text in sections if text)


def infer_user_id(snapshot: Snapshot, actions: tuple[Action, ...]) -> str | None:
    """The user a task is about, read from its gold actions (tau2 tasks do not store it)."""
    view = snapshot.view()
    for action in actions:
        args = action.arguments
        if isinstance(args.get("user_id"), str):
            return args["user_id"]
        if action.name == "find_user_id_by_email" and isinstance(args.get("email"), str):
            found = view.users.lookup("email", fold(args["email"]))
        elif action.name == "find_user_id_by_name_zip" and all(
            isinstance(args.get(k), str) for k in ("first_name", "last_name", "zip")
        ):
            found = view.users.lookup("name_zip", (fold(args["first_name"]), fold(args["last_name"]), args["zip"]))
        elif isinstance(args.get("order_id"), str) and args["order_id"] in view.orders:
            return view.orders[args["order_id"]].user_id
        else:
            continue
        if found:
            return found[0].user_id
    return None


def tau2_task(item: Mapping[str, Any], snapshot: Snapshot, split_of: Mapping[str, str]) -> Task:
    """Convert one tau2-bench task into a :class:`Task`.

    The instruction is composed from ``reason_for_call`` / ``known_info`` / ``unknown_info`` /
    ``task_instructions``; gold actions come from ``evaluation_criteria.actions``; outputs from
    ``communicate_info``. ``reward_basis`` maps DB -> ``"db"`` and COMMUNICATE -> ``"outputs"``;
    NL_ASSERTION needs an LLM judge, so it is not scored here but kept in ``nl_assertions``.
    """
    task_id = str(item["id"])
    scenario = item.get("user_scenario") or {}
    instructions = scenario.get("instructions") or {}
    persona = scenario.get("persona")
    if isinstance(instructions, str):
        user = UserScenario(instruction=instructions, persona=persona)
    else:
        user = UserScenario(
            instruction=compose_instruction(instructions, persona),
            persona=persona,
            reason_for_call=instructions.get("reason_for_call"),
            known_info=instructions.get("known_info"),
            unknown_info=instructions.get("unknown_info"),
            task_instructions=instructions.get("task_instructions"),
        )
    criteria = item.get("evaluation_criteria") or {}
    actions = tuple(Action(name=a["name"], arguments=a.get("arguments") or {}) for a in criteria.get("actions") or ())
    basis = tuple(dict.fromkeys(TAU2_BASIS[b] for b in criteria.get("reward_basis") or ("DB",) if b in TAU2_BASIS))
    description = item.get("description")
    if isinstance(description, Mapping):
        description = description.get("purpose")
    provenance: dict[str, Any] = {"source": "tau2-bench", "tau2_id": task_id}
    if item.get("issues"):
        provenance["issues"] = [issue.get("title") for issue in item["issues"] if isinstance(issue, Mapping)]
    return Task(
        id=task_id,
        domain=NAME,
        split=split_of.get(task_id, "test"),
        user_id=infer_user_id(snapshot, actions),
        scenario=user,
        actions=actions,
        outputs=tuple(str(o) for o in criteria.get("communicate_info") or ()),
        reward_basis=basis or ("db",),
        nl_assertions=tuple(criteria.get("nl_assertions") or ()),
        description=description if isinstance(description, str) else None,
        provenance=provenance,
    )


def v1_task(item: Mapping[str, Any], task_id: str, split: str) -> Task:
    """Convert one tau-bench v1 task (``{user_id, instruction, actions: [{name, kwargs}], outputs}``)."""
    provenance: dict[str, Any] = {"source": "tau-bench"}
    if item.get("annotator") is not None:
        provenance["annotator"] = item["annotator"]
    return Task(
        id=str(item.get("id", task_id)),
        domain=NAME,
        split=str(item.get("split", split)),
        user_id=item.get("user_id"),
        scenario=UserScenario(instruction=item["instruction"]),
        actions=tuple(Action.model_validate(a) for a in item.get("actions") or ()),
        outputs=tuple(str(o) for o in item.get("outputs") or ()),
        reward_basis=("db", "outputs"),
        provenance=provenance,
    )


def any_task(item: Any, number: int, snapshot: Snapshot, split_of: Mapping[str, str], split: str, prefix: str) -> Task:
    """Convert one task record of any supported format (ours, tau2-bench, tau-bench v1).

    v1 tasks have no ids: they get ``prefix + number`` (their position in the file).
    """
    if not isinstance(item, Mapping):
        raise TypeError(f"expected a JSON object, got {type(item).__name__}")
    if "evaluation_criteria" in item or "user_scenario" in item:
        return tau2_task(item, snapshot, split_of)
    if "scenario" in item:
        return Task.model_validate({"domain": NAME, **item})
    if "instruction" in item:
        return v1_task(item, f"{prefix}{number}", split)
    raise ValueError("unknown task format: expected tau2 ('user_scenario'), ours ('scenario') or v1 ('instruction')")


def read_tasks(
    path: Path, snapshot: Snapshot, split_of: Mapping[str, str], split: str = "test", prefix: str = ""
) -> list[Task]:
    """Read a task file of any supported format; errors name the file and the task number."""
    return load_tasks(path, NAME, lambda item, number: any_task(item, number, snapshot, split_of, split, prefix))


def read_splits(path: Path) -> dict[str, tuple[str, ...]]:
    """Read tau2's ``split_tasks.json`` ({split: [task ids]})."""
    raw = read_json(path)
    if not isinstance(raw, Mapping) or not all(isinstance(v, list) for v in raw.values()):
        raise DataFileError(f"{path}: expected a JSON object of split name -> list of task ids")
    return {str(name): tuple(str(i) for i in ids) for name, ids in raw.items()}


# ---------------------------------------------------------------------------------------------- layouts
def _policy(*candidates: Path) -> str:
    for path in candidates:
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise DataFileError(f"{path}: cannot read ({exc})") from None
    return POLICY.read_text(encoding="utf-8")


def _tau2_layout(root: Path, source: str) -> Domain:
    snapshot = load_db(root / "db.json")
    splits: dict[str, tuple[str, ...]] = {}
    if (root / "split_tasks.json").is_file():
        splits = read_splits(root / "split_tasks.json")
    split_of: dict[str, str] = {}
    for name in ("test", "train", *splits):  # train/test win over umbrella splits such as "base"
        for task_id in splits.get(name, ()):
            split_of.setdefault(task_id, name)
    tasks: list[Task] = []
    for name in ("tasks.json", "tasks.jsonl"):
        if (root / name).is_file():
            tasks = read_tasks(root / name, snapshot, split_of)
            break
    by_id = {t.id: t for t in tasks}
    splits = {name: tuple(i for i in ids if i in by_id) for name, ids in splits.items()}
    guidelines = root.parent / "user_simulator" / "simulation_guidelines.md"
    return Domain(
        name=NAME,
        snapshot=snapshot,
        tools=build_tools(),
        policy=_policy(root / "policy.md"),
        tasks=by_id,
        splits={k: v for k, v in splits.items() if v},
        user_guidelines=guidelines.read_text(encoding="utf-8") if guidelines.is_file() else None,
        source=source,
    )


def _v1_layout(root: Path) -> Domain:
    snapshot = build_snapshot(
        {name: table_records(root / f"{name}.json", name, read_json(root / f"{name}.json")) for name in TABLES}
    )
    tasks: list[Task] = []
    if (root / "tasks.json").is_file():
        tasks.extend(read_tasks(root / "tasks.json", snapshot, {}, "test"))
    for filename, split in V1_TASK_FILES:
        if (root / filename).is_file():
            tasks.extend(read_tasks(root / filename, snapshot, {}, split, f"{split}_"))
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.id in by_id:
            raise DataFileError(f"{root}: duplicate task id {task.id!r}")
        by_id[task.id] = task
    return Domain(
        name=NAME,
        snapshot=snapshot,
        tools=build_tools(),
        policy=_policy(root / "policy.md", root / "wiki.md"),
        tasks=by_id,
        source=str(root),
    )


def load(data_dir: Path | None = None) -> Domain:
    """Load the retail domain.

    Args:
        data_dir: A directory in the tau2-bench layout (``db.json`` ...) or the tau-bench v1 layout
            (``users.json``, ``orders.json``, ``products.json`` ...); the embedded data when None.

    Returns:
        The domain.

    Raises:
        DataFileError: When the directory holds neither layout, or a file is missing or invalid.

    """
    if data_dir is None:
        return _tau2_layout(DATA, "embedded")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataFileError(f"{root}: retail data directory not found")
    if (root / "db.json").is_file():
        return _tau2_layout(root, str(root))
    if any((root / f"{name}.json").is_file() for name in TABLES):
        return _v1_layout(root)
    raise DataFileError(
        f"{root}: no retail data: expected db.json (tau2-bench layout) or users.json, orders.json and "
        "products.json (tau-bench layout)"
    )


__all__ = ["build_snapshot", "build_tools", "load", "load_db", "snapshot_from_json"]
