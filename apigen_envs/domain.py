"""A domain bundles what every env of it shares: snapshot, tools, policy, tasks, semantics and verifier.

The loading helpers here turn every failure of a data file into a :class:`DataFileError` that names the
file and, where there is one, the row or task.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from apigen_envs.db import Snapshot
from apigen_envs.errors import DataFileError, DomainNotFoundError, ToolCallError, did_you_mean
from apigen_envs.semantics import Semantics
from apigen_envs.task import Task
from apigen_envs.tools import ToolSet
from apigen_envs.verify import Verifier


@dataclass(frozen=True)
class DatagenSpec:
    """What a domain gives the generic phase-1 pipeline (``apigen_envs.datagen`` holds no domain knowledge).

    Objects or import paths: a path (``"pkg.module"``, ``"pkg.module:NAME"``) is imported on first use, so
    declaring a spec costs nothing and cannot create import cycles.

    Attributes:
        templates: The template proposer's module (``INTENTS``, ``propose(snapshot, rng, intent)``, optional
            ``CYCLE``), or None when the domain has no templates (only the LLM proposer works).
        policy_rules: The policy predicates (a sequence of
            :class:`~apigen_envs.datagen.policy_checks.PolicyRule`), or None when the domain has none: its
            blueprints' policy stage then checks nothing, and statistics say so.
        retries: Feedback rounds per attempt (the paper: 3 retail, 5 airline).
        hints: Free-form extras for context samplers, keyed by their user.
        graph_hints: The LLM context sampler's tool-graph hints (a
            :class:`~apigen_envs.datagen.context.GraphHints`), or None: walks then start at the graph's entry
            points.
        grounder: Picks a sampled user's records (and candidates such as item variants or searched flights)
            that fit the chosen writes (a :data:`~apigen_envs.datagen.context.Grounder`), or None: the records
            the user's fields point to.

    """

    templates: Any = None
    policy_rules: Any = None
    retries: int = 3
    hints: Mapping[str, Any] = field(default_factory=dict)
    graph_hints: Any = None
    grounder: Any = None

    def resolve(self, name: str) -> Any:
        """One of the spec's fields, imported when given as a path (None when unset).

        Args:
            name: The field's name (``graph_hints``, ``grounder``, ...).

        Returns:
            The value.

        """
        return _resolve(getattr(self, name, None))

    def template_module(self) -> Any:
        """The templates, imported when given as a path (None when the domain has none)."""
        return _resolve(self.templates)

    def rules(self) -> tuple[Any, ...] | None:
        """The policy predicates, imported when given as a path (None when the domain has none)."""
        rules = _resolve(self.policy_rules)
        return tuple(rules) if rules is not None else None


def _resolve(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    import importlib

    module_name, _, attribute = value.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


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
        semantics: The profile whose tool behaviour, reward and output matching episodes follow.
        verifier: The scorer, holding the gold cache.
        datagen: What phase 1 needs from the domain (templates, policy predicates, retries), or None.

    """

    name: str
    snapshot: Snapshot
    tools: ToolSet
    policy: str
    tasks: Mapping[str, Task]
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    user_guidelines: str | None = None
    source: str = "embedded"
    semantics: Semantics = field(default_factory=lambda: Semantics.named("apigen"))
    datagen: DatagenSpec | None = None
    verifier: Verifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.snapshot, self.tools, self.semantics)
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
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise DataFileError(f"{path}: invalid JSON ({exc})") from None
    except RecursionError:
        raise DataFileError(f"{path}: invalid JSON (nested too deeply)") from None


def _refuse_constant(name: str) -> Any:
    # json accepts NaN and Infinity by default; neither is JSON, and a NaN balance breaks every comparison.
    raise ValueError(f"{name} is not a JSON number")


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
            out.append(json.loads(line, parse_constant=_refuse_constant))
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        except ValueError as exc:
            raise DataFileError(f"{path}:{number}: invalid JSON ({exc})") from None
        except RecursionError:
            raise DataFileError(f"{path}:{number}: invalid JSON (nested too deeply)") from None
    return out


def validation_message(exc: ValidationError) -> str:
    """The first problem of a validation error as ``field.path: message``."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{loc}: {first['msg']}" if loc else first["msg"]


def table_rows(
    path: Path,
    table: str,
    raw: Any,
    model: Any,
    key_field: str,
    *,
    normalize: bool,
    fill_key: bool = False,
) -> dict[str, Any]:
    """Validate one table ({key: row}) and return its rows, normalised or verbatim.

    Args:
        path: The file the rows came from (named in errors).
        table: The table name (named in errors).
        raw: The parsed JSON of the table.
        model: The pydantic model of a row.
        key_field: The row field that must equal the row's key.
        normalize: Return each row as the model dumps it (missing optional fields filled in, numbers in
            the model's types), as tau2 does on load; else the row exactly as read (tau-bench v1).
        fill_key: A row without ``key_field`` is validated with it taken from the key (tau-bench v1's
            ``users.json`` has no ``user_id``); the verbatim row is still returned without it.

    Returns:
        {key: row}.

    Raises:
        DataFileError: Naming the file, table, row and field of the first problem.

    """
    if not isinstance(raw, Mapping):
        raise DataFileError(f"{path}: table {table!r} must be a JSON object of id -> row, got {type(raw).__name__}")
    if not fill_key:
        # The whole table in one call of pydantic's Rust core (about twice as fast as a Python loop over rows);
        # any problem is found again row by row below, for a message naming the row.
        with contextlib.suppress(ValidationError):
            adapter = _table_adapter(model)
            records = adapter.validate_python(raw)
            if all(getattr(record, key_field) == key for key, record in records.items()):
                return adapter.dump_python(records) if normalize else dict(raw)
    out: dict[str, Any] = {}
    for key, row in raw.items():
        if not isinstance(row, Mapping):
            raise DataFileError(f"{path}: {table} row {key!r}: expected a JSON object, got {type(row).__name__}")
        candidate = {key_field: key, **row} if fill_key and key_field not in row else row
        try:
            record = model.model_validate(candidate)
        except ValidationError as exc:
            raise DataFileError(f"{path}: {table} row {key!r}: {validation_message(exc)}") from None
        if getattr(record, key_field) != key:
            raise DataFileError(
                f"{path}: {table} row {key!r}: its {key_field} is {getattr(record, key_field)!r}, not the row key"
            )
        out[key] = record.model_dump() if normalize else row
    return out


@functools.cache
def _table_adapter(model: Any) -> TypeAdapter[Any]:
    # Built once per row model: building an adapter compiles its validator.
    return TypeAdapter(dict[str, model])


PEER_SOURCES = frozenset({"tau2", "tau-bench"})
"""``Task.provenance["source"]`` values of tasks read from a peer's own task format."""


def check_gold_actions(path: Path, tasks: Iterable[Task], tools: ToolSet) -> None:
    """Refuse tasks whose gold actions name an unknown tool or carry arguments the tool's schema rejects.

    Such a task can never be replayed as intended; its gold state collapses to "nothing changed", which a
    do-nothing agent then matches. Calls that the tool refuses for a business reason (an order that is
    not pending) are legitimate data and pass this check.

    A peer's published task (read from tau2's or tau-bench's task format, ``provenance.source``) is taken
    as published: a gold call whose arguments the schema rejects stays, because the peer replays it too and
    it fails there the same way (tau-bench's retail test task 34 passes ``province`` where the tool takes
    ``state``), so scoring agrees with the peer's own. Unknown tools are refused for every task.

    Raises:
        DataFileError: Naming the file, task and action.

    """
    for task in tasks:
        for index, action in enumerate(task.actions):
            if action.name not in tools:
                raise DataFileError(
                    f"{path}: task {task.id!r} action #{index}: unknown tool {action.name!r}."
                    f"{did_you_mean(action.name, tools.names)}"
                )
            if task.provenance.get("source") in PEER_SOURCES:
                continue
            try:
                tools[action.name].validate(action.arguments)
            except ToolCallError as exc:
                raise DataFileError(f"{path}: task {task.id!r} action #{index}: {exc}") from None


def read_policy(path: Path) -> str:
    """Read a policy markdown file.

    Raises:
        DataFileError: When it is missing, unreadable or empty.

    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(f"{path}: policy file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    if not text.strip():
        raise DataFileError(f"{path}: the policy is empty")
    return text


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
    seen: set[str] = set()
    for number, item in enumerate(raw):
        try:
            if convert is not None:
                task = convert(item, number)
            elif isinstance(item, Mapping):
                task = Task.model_validate({"domain": domain, **item})
            else:
                raise TypeError(f"expected a JSON object, got {type(item).__name__}")
        except ValidationError as exc:
            raise DataFileError(f"{path}: task #{number}: {validation_message(exc)}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"{path}: task #{number}: {exc}") from None
        if task.id in seen:
            raise DataFileError(f"{path}: task #{number}: duplicate task id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def unique_tasks(source: Path, tasks: Iterable[Task]) -> dict[str, Task]:
    """Tasks by id, refusing a duplicate id across files.

    Raises:
        DataFileError: Naming the duplicated id.

    """
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.id in by_id:
            raise DataFileError(f"{source}: duplicate task id {task.id!r}")
        by_id[task.id] = task
    return by_id
