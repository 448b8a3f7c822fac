"""Importers for foreign data layouts: tau2-bench (``db.json`` + tau2 tasks) and tau-bench v1 (one JSON
file per table, tasks as ``{user_id, instruction, actions: [{name, kwargs}], outputs}``).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.domain import read_json
from apigen_envs.errors import DataFileError
from apigen_envs.task import Action, Task, UserScenario

_USER_ID = re.compile(r"user id is\s*[:]?\s*['\"`]?([A-Za-z0-9_]+)", re.IGNORECASE)
_BASIS = MappingProxyType({"DB": "db", "COMMUNICATE": "outputs"})


def compose_instruction(parts: dict[str, Any]) -> str:
    """One instruction for a user simulator from tau2's separate scenario fields.

    Args:
        parts: tau2's ``user_scenario.instructions`` (reason_for_call, known_info, unknown_info,
            task_instructions).

    Returns:
        The instruction, one labelled paragraph per non-empty field.

    """
    labels = (
        ("reason_for_call", "Why you are contacting the airline"),
        ("known_info", "What you know"),
        ("unknown_info", "What you do not know"),
        ("task_instructions", "How to behave"),
    )
    paragraphs = [f"{label}: {str(parts[key]).strip()}" for key, label in labels if parts.get(key)]
    return "\n\n".join(paragraphs)


def _user_id(known: str | None, actions: list[Action]) -> str | None:
    if known:
        match = _USER_ID.search(known)
        if match:
            return match.group(1)
    for action in actions:
        if "user_id" in action.arguments:
            return str(action.arguments["user_id"])
    return None


def tau2_task(raw: dict[str, Any], number: int, splits: dict[str, str] | None = None) -> Task:
    """Convert one tau2-bench task to a :class:`Task`.

    Args:
        raw: The tau2 task dict.
        number: Its position in the file (for messages).
        splits: Task id -> split name.

    Returns:
        The task. ``NL_ASSERTION`` is not scored; its assertions are kept in ``nl_assertions``.

    Raises:
        KeyError: When a required field is missing.
        TypeError: When a field has the wrong type.

    """
    task_id = str(raw["id"])
    scenario = raw["user_scenario"]
    if not isinstance(scenario, dict):
        raise TypeError("user_scenario must be an object")
    parts = scenario.get("instructions") or {}
    if isinstance(parts, str):
        parts = {"task_instructions": parts}
    criteria = raw.get("evaluation_criteria") or {}
    actions = [Action(name=a["name"], arguments=a.get("arguments") or {}) for a in criteria.get("actions") or []]
    basis = tuple(dict.fromkeys(_BASIS[b] for b in criteria.get("reward_basis") or ["DB"] if b in _BASIS))
    description = raw.get("description")
    purpose = description.get("purpose") if isinstance(description, dict) else description
    persona = scenario.get("persona")
    return Task(
        id=task_id,
        domain="airline",
        split=(splits or {}).get(task_id, "test"),
        user_id=_user_id(parts.get("known_info"), actions),
        scenario=UserScenario(
            instruction=compose_instruction(parts),
            persona=persona if isinstance(persona, str) else None,
            reason_for_call=parts.get("reason_for_call"),
            known_info=parts.get("known_info"),
            unknown_info=parts.get("unknown_info"),
            task_instructions=parts.get("task_instructions"),
        ),
        actions=tuple(actions),
        outputs=tuple(str(o) for o in criteria.get("communicate_info") or ()),
        reward_basis=basis or ("db",),  # type: ignore[arg-type]
        nl_assertions=tuple(criteria.get("nl_assertions") or ()),
        description=purpose,
        provenance={"source": "tau2", "index": number},
    )


def v1_task(raw: dict[str, Any], number: int, split: str = "test") -> Task:
    """Convert one tau-bench v1 task (``user_id``, ``instruction``, ``actions``, ``outputs``).

    Args:
        raw: The v1 task dict.
        number: Its position in the file; the task id is ``<split>_<number>`` unless the task has an id.
        split: Split name for the task.

    Returns:
        The task, scored on DB and outputs as tau-bench v1 does.

    """
    instruction = raw["instruction"]
    if not isinstance(instruction, str):
        raise TypeError("instruction must be a string")
    return Task(
        id=str(raw.get("id", f"{split}_{number}")),
        domain="airline",
        split=split,
        user_id=raw.get("user_id"),
        scenario=UserScenario(instruction=instruction),
        actions=tuple(Action.model_validate(a) for a in raw.get("actions") or ()),
        outputs=tuple(str(o) for o in raw.get("outputs") or ()),
        provenance={"source": "tau-bench-v1", "index": number},
    )


def tau2_splits(path: Path) -> dict[str, tuple[str, ...]]:
    """Read tau2's ``split_tasks.json`` ({split: [task ids]}).

    Raises:
        DataFileError: When the file is not an object of string lists.

    """
    raw = read_json(path)
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise DataFileError(f"{path}: expected an object mapping split names to lists of task ids")
    return {str(k): tuple(str(i) for i in v) for k, v in raw.items()}


def v1_tables(root: Path) -> dict[str, Any]:
    """Read the v1 layout's table files into the tau2 ``db.json`` shape.

    Raises:
        DataFileError: When a table file is missing or not a JSON object.

    """
    out = {}
    for table in ("flights", "users", "reservations"):
        path = root / f"{table}.json"
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataFileError(f"{path}: expected a JSON object keyed by id, got {type(raw).__name__}")
        out[table] = raw
    return out
