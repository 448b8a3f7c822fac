"""A domain bundles what every env of it shares: snapshot, tools, policy, tasks and verifier."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from apigen_envs.db import Snapshot
from apigen_envs.errors import DataFileError, DomainNotFoundError, did_you_mean
from apigen_envs.task import Task
from apigen_envs.tools import ToolSet
from apigen_envs.verify import Verifier


@dataclass(eq=False)
class Domain:
    """Everything shared by the envs of one domain in a process.

    Attributes:
        name: Domain name (``retail``, ``airline``, ``mock``, ...).
        snapshot: The frozen base DB.
        tools: The tools the agent may call.
        policy: The agent policy (markdown).
        tasks: Tasks by id, in a stable order.
        splits: Split name -> task ids.
        user_guidelines: Extra guidance for LLM user simulators, if the domain has any.
        source: Where the data came from (a path or ``"embedded"``).
        verifier: The scorer, holding the gold cache.

    """

    name: str
    snapshot: Snapshot
    tools: ToolSet
    policy: str
    tasks: Mapping[str, Task]
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    user_guidelines: str | None = None
    source: str = "embedded"
    verifier: Verifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.snapshot, self.tools)
        if not self.splits:
            by_split: dict[str, list[str]] = {}
            for task in self.tasks.values():
                by_split.setdefault(task.split, []).append(task.id)
            self.splits = {k: tuple(v) for k, v in by_split.items()}

    def task(self, task_id: str) -> Task:
        """The task with this id.

        Raises:
            DomainNotFoundError: With a did-you-mean hint when there is no such task.

        """
        try:
            return self.tasks[task_id]
        except KeyError:
            raise DomainNotFoundError(
                f"domain {self.name!r} has no task {task_id!r}.{did_you_mean(task_id, self.tasks)}"
            ) from None

    def task_list(self, split: str | None = None) -> tuple[Task, ...]:
        """Tasks of one split (all tasks when ``split`` is None).

        Raises:
            DomainNotFoundError: When the split does not exist.

        """
        if split is None:
            return tuple(self.tasks.values())
        if split not in self.splits:
            raise DomainNotFoundError(
                f"domain {self.name!r} has no split {split!r}; splits: {sorted(self.splits)}."
                f"{did_you_mean(split, self.splits)}"
            )
        return tuple(self.tasks[i] for i in self.splits[split])

    def system_prompt(self) -> str:
        """The agent's system prompt: the domain policy."""
        return self.policy


def read_json(path: Path) -> Any:
    """Read a JSON file, turning every failure into a :class:`DataFileError` naming the file and line.

    Args:
        path: The file.

    Returns:
        The parsed JSON.

    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None


def read_jsonl(path: Path) -> list[Any]:
    """Read a JSON-lines file; a bad line raises :class:`DataFileError` with its line number.

    Args:
        path: The file.

    Returns:
        One parsed value per non-empty line.

    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    return out


def validate_rows(path: Path, rows: Iterable[tuple[str, Any]], model: Any) -> dict[str, Any]:
    """Validate raw rows into records, naming the file and row on failure.

    Args:
        path: The file the rows came from (for messages).
        rows: (key, raw dict) pairs.
        model: The record class.

    Returns:
        {key: record}.

    """
    out: dict[str, Any] = {}
    for key, raw in rows:
        try:
            out[key] = model.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise DataFileError(f"{path}: row {key!r}: {loc}: {first['msg']}") from None
    return out


def load_tasks(path: Path, domain: str, convert: Any = None) -> list[Task]:
    """Load tasks from a JSON list or JSONL file of :class:`Task` records (or a domain converter's input).

    Args:
        path: ``tasks.json`` or ``tasks.jsonl``.
        domain: Domain name to fill in.
        convert: Optional callable turning one raw dict into a Task (for foreign layouts).

    Returns:
        The tasks.

    """
    raw = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
    if not isinstance(raw, list):
        raise DataFileError(f"{path}: expected a JSON list of tasks, got {type(raw).__name__}")
    tasks = []
    for number, item in enumerate(raw):
        try:
            if convert is not None:
                tasks.append(convert(item, number))
            else:
                tasks.append(Task.model_validate({"domain": domain, **item}))
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"{path}: task #{number}: {exc}") from None
    return tasks
