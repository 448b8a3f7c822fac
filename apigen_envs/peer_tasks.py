"""Importers for the peers' task formats, shared by every domain.

* tau2-bench: a JSON list of tasks with ``user_scenario`` and ``evaluation_criteria``; splits in
  ``split_tasks.json``. The current tau2-bench repository also keeps other task sets beside
  ``tasks.json`` (``tasks_voice.json``, a JSON object): only ``tasks.json`` is the text task set.
* tau-bench v1: tasks as ``{user_id, instruction, actions: [{name, kwargs}], outputs}``, published as
  Python files (``tasks_test.py``: ``TASKS_TEST = [Task(...), ...]``), which are read here as data (the
  syntax tree, never executed), or as the same records in JSON.

tau2's ``NL_ASSERTION`` reward basis needs an LLM judge; its assertions are kept on the task
(``nl_assertions``) but not scored, which is the same as scoring tau2 tasks with NL assertions excluded.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.domain import read_json
from apigen_envs.errors import DataFileError
from apigen_envs.task import Action, Task, UserScenario

TAU2_BASIS: Mapping[str, str] = MappingProxyType({"DB": "db", "COMMUNICATE": "outputs"})
"""tau2 reward bases we score, and our names for them."""

V1_SPLITS = ("test", "train", "dev")
"""The task splits tau-bench v1 publishes (``tasks_<split>.py``)."""

_USER_ID = re.compile(r"user id is\s*[:]?\s*['\"`]?([A-Za-z0-9_]+)", re.IGNORECASE)


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
    return "\n\n".join(f"{label}:\n{str(text).strip()}" for label, text in sections if text)


def user_id_from_text(known_info: str | None) -> str | None:
    """The user id a tau2 scenario states (``Your user id is X``), if it states one."""
    if known_info:
        match = _USER_ID.search(known_info)
        if match:
            return match.group(1)
    return None


def tau2_task(
    raw: Mapping[str, Any],
    domain: str,
    split_of: Mapping[str, str],
    user_of: Callable[[Sequence[Action], str | None], str | None],
) -> Task:
    """Convert one tau2-bench task to a :class:`Task`.

    Args:
        raw: The tau2 task.
        domain: The domain name.
        split_of: Task id -> split name (default ``test``).
        user_of: Finds the user a task is about from its gold actions and the user id its scenario states.

    Returns:
        The task.

    Raises:
        KeyError: When a required field is missing.
        TypeError: When a field has the wrong type.

    """
    task_id = str(raw["id"])
    scenario = raw["user_scenario"]
    if not isinstance(scenario, Mapping):
        raise TypeError("user_scenario must be an object")
    instructions = scenario.get("instructions") or {}
    persona = scenario.get("persona") if isinstance(scenario.get("persona"), str) else None
    if isinstance(instructions, str):
        user = UserScenario(instruction=instructions, persona=persona)
        known = None
    elif isinstance(instructions, Mapping):
        known = instructions.get("known_info")
        user = UserScenario(
            instruction=compose_instruction(instructions, persona),
            persona=persona,
            reason_for_call=instructions.get("reason_for_call"),
            known_info=known,
            unknown_info=instructions.get("unknown_info"),
            task_instructions=instructions.get("task_instructions"),
        )
    else:
        raise TypeError("user_scenario.instructions must be an object or a string")
    criteria = raw.get("evaluation_criteria") or {}
    if not isinstance(criteria, Mapping):
        raise TypeError("evaluation_criteria must be an object")
    actions = tuple(Action(name=a["name"], arguments=a.get("arguments") or {}) for a in criteria.get("actions") or ())
    basis_names = criteria.get("reward_basis") or ("DB", "COMMUNICATE")
    basis = tuple(dict.fromkeys(TAU2_BASIS[b] for b in basis_names if b in TAU2_BASIS))
    description = raw.get("description")
    if isinstance(description, Mapping):
        description = description.get("purpose")
    provenance: dict[str, Any] = {"source": "tau2", "tau2_id": task_id, "tau2_reward_basis": list(basis_names)}
    if raw.get("issues"):
        provenance["issues"] = [i.get("title") for i in raw["issues"] if isinstance(i, Mapping)]
    return Task(
        id=task_id,
        domain=domain,
        split=split_of.get(task_id, "test"),
        user_id=user_of(actions, user_id_from_text(known)),
        scenario=user,
        actions=actions,
        outputs=tuple(str(o) for o in criteria.get("communicate_info") or ()),
        reward_basis=basis or ("db",),  # type: ignore[arg-type]
        nl_assertions=tuple(criteria.get("nl_assertions") or ()),
        description=description if isinstance(description, str) else None,
        provenance=provenance,
    )


def v1_task(raw: Mapping[str, Any], domain: str, task_id: str, split: str) -> Task:
    """Convert one tau-bench v1 task (``user_id``, ``instruction``, ``actions``, ``outputs``).

    v1 scores every task on the final DB and, when it lists outputs, on the outputs.
    """
    instruction = raw["instruction"]
    if not isinstance(instruction, str):
        raise TypeError("instruction must be a string")
    provenance: dict[str, Any] = {"source": "tau-bench", "index": task_id}
    if raw.get("annotator") is not None:
        provenance["annotator"] = raw["annotator"]
    return Task(
        id=str(raw.get("id", task_id)),
        domain=domain,
        split=split,
        user_id=raw.get("user_id"),
        scenario=UserScenario(instruction=instruction),
        actions=tuple(Action.model_validate(a) for a in raw.get("actions") or ()),
        outputs=tuple(str(o) for o in raw.get("outputs") or ()),
        reward_basis=("db", "outputs"),
        provenance=provenance,
    )


def _literal(node: ast.AST, path: Path) -> Any:
    """A literal, or a ``Task(...)`` / ``Action(...)`` call of literals, as data."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Task", "Action"):
        if node.args:
            raise DataFileError(f"{path}:{node.lineno}: {node.func.id}(...) must use keyword arguments")
        return {kw.arg: _literal(kw.value, path) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, path) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k, path): _literal(v, path) for k, v in zip(node.keys, node.values, strict=True) if k}
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise DataFileError(
            f"{path}:{getattr(node, 'lineno', '?')}: only literals, Task(...) and Action(...) are read"
        ) from None


def read_v1_python_tasks(path: Path) -> list[dict[str, Any]]:
    """Read a tau-bench v1 task file (``TASKS_TEST = [Task(...), ...]``) as data, without running it.

    Args:
        path: The ``tasks_<split>.py`` file.

    Returns:
        The tasks as dicts (``kwargs`` kept as v1 spells them).

    Raises:
        DataFileError: When the file cannot be read, is not Python, or holds no task list.

    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise DataFileError(f"{path}: not a readable Python task file ({exc})") from None
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id.startswith("TASKS") for t in targets):
            tasks = _literal(statement.value, path)
            if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
                raise DataFileError(f"{path}: the TASKS list must hold Task(...) entries")
            return tasks
    raise DataFileError(f"{path}: no TASKS... = [...] list found")


def read_splits(path: Path) -> dict[str, tuple[str, ...]]:
    """Read tau2's ``split_tasks.json`` ({split: [task ids]}).

    Raises:
        DataFileError: When the file is not an object of string lists.

    """
    raw = read_json(path)
    if not isinstance(raw, Mapping) or not all(isinstance(v, list) for v in raw.values()):
        raise DataFileError(f"{path}: expected a JSON object mapping split names to lists of task ids")
    return {str(k): tuple(str(i) for i in v) for k, v in raw.items()}


def split_of(splits: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Task id -> split name; ``test`` and ``train`` win over umbrella splits such as tau2's ``base``."""
    out: dict[str, str] = {}
    for name in ("test", "train", *splits):
        for task_id in splits.get(name, ()):
            out.setdefault(task_id, name)
    return out


def v1_task_files(root: Path) -> list[tuple[Path, str]]:
    """The v1 task files present under ``root``, with their split: ``tasks_<split>.py`` or ``.json``.

    A JSON copy wins over the Python file of the same split; ``tasks.json`` alone means the test split.
    """
    found: list[tuple[Path, str]] = []
    for split in V1_SPLITS:
        for suffix in (".json", ".py"):
            path = root / f"tasks_{split}{suffix}"
            if path.is_file():
                found.append((path, split))
                break
    if not found and (root / "tasks.json").is_file():
        found.append((root / "tasks.json", "test"))
    return found


def load_v1_tasks(root: Path, domain: str) -> list[Task]:
    """Every v1 task under ``root``; ids are ``<split>_<position>`` (v1 tasks have none of their own).

    Raises:
        DataFileError: Naming the file and task number of the first problem.

    """
    tasks: list[Task] = []
    for path, split in v1_task_files(root):
        raw = read_v1_python_tasks(path) if path.suffix == ".py" else read_json(path)
        if not isinstance(raw, list):
            raise DataFileError(f"{path}: expected a list of tasks, got {type(raw).__name__}")
        for number, item in enumerate(raw):
            try:
                if not isinstance(item, Mapping):
                    raise TypeError(f"expected an object, got {type(item).__name__}")
                tasks.append(v1_task(item, domain, f"{split}_{number}", split))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFileError(f"{path}: task #{number}: {exc}") from None
    return tasks
