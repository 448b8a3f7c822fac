"""Tool steps beside tau-bench's own tools (``../shared/peers/tau-bench``), on the same data, same calls.

For every gold call of the tau2 task sets (in tau-bench v1 form), four timings per call:

* ``peer``: tau-bench's ``Tool.invoke(data, **kwargs)`` (its tool and the ``json.dumps`` of the result);
* ``peer step``: tau-bench's ``Env.step(Action)`` (the tool, its ``EnvInfo``/``EnvResponse`` records, and on
  a terminal tool its reward: v1 hashes the whole DB, reloads it and replays the gold actions);
* ``tool``: our tool layer, :func:`apigen_envs.tools.execute` (argument checks, the tool, rendering);
* ``step``: our full ``env.step`` (also the typed messages, the fresh OpenAI-format observation that
  Gymnasium requires on every step, and on a terminal tool the reward).

Each round times the four in separate passes over the tasks (so no timing runs right after another one
warmed the same rows), rounds alternate peer and ours so machine load hits both alike, and the garbage
collector is paused while a call is timed (each side's own allocations would otherwise trigger collections
inside the other's calls).
The table prints medians per tool and the ratios peer / ours (>= 1.0: we are at least as fast).

Run: ``pytest benchmarks/bench_peer_steps.py --benchmark-only -s``. Skipped when the peer code is absent.
"""

from __future__ import annotations

import gc
import json
import marshal
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.harness import (  # noqa: E402
    TAU2_DATA,
    TAU_BENCH,
    EchoUser,
    tau_bench,
    v1_tables,
    v1_task_record,
    write_v1_layout,
)

from apigen_envs.domains import airline, retail  # noqa: E402
from apigen_envs.env import ToolUseEnv  # noqa: E402
from apigen_envs.messages import AssistantMessage, ToolCall  # noqa: E402
from apigen_envs.tools import execute  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (TAU_BENCH / "tau_bench").is_dir() or not (TAU2_DATA / "retail" / "db.json").is_file(),
    reason="peer code or data not found under ../shared/peers",
)
LOADERS = {"retail": retail.load, "airline": airline.load}
ROUNDS = 5


def _setup(domain: str, tmp: Path, profile: str) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    tables = v1_tables(json.loads((TAU2_DATA / domain / "db.json").read_text(encoding="utf-8")))
    names = {t.get_info()["function"]["name"] for t in tau_bench().tools[domain]}
    records = [v1_task_record(t) for t in LOADERS[domain](TAU2_DATA / domain).task_list()]
    for record in records:
        record["actions"] = [a for a in record["actions"] if a["name"] in names]
    root = write_v1_layout(tmp / domain, domain, tables, records)
    return tables, records, LOADERS[domain](root, semantics=profile)


def _peer_round(
    domain: str,
    frozen: str,
    records: list[dict[str, Any]],
    out: dict[str, list[float]],
    steps: dict[str, list[float]],
) -> None:
    tb = tau_bench()
    tools = {t.get_info()["function"]["name"]: t for t in tb.tools[domain]}
    blob = marshal.dumps(json.loads(frozen))
    for record in records:
        data = json.loads(frozen)
        for action in record["actions"]:
            tool = tools[action["name"]]
            gc.disable()
            started = time.perf_counter()
            tool.invoke(data=data, **action["kwargs"])
            out[action["name"]].append(time.perf_counter() - started)
            gc.enable()
    # A separate pass, so neither timing runs right after the other warmed the same rows.
    for record in records:
        env = tb.Env(
            data_load_func=lambda: marshal.loads(blob),  # the same data; marshal only to keep setup short
            tools=tb.tools[domain],
            tasks=[tb.Task(**record)],
            wiki="",
            rules=[],
            user_strategy="scripted",
            user_model="none",
            task_index=0,
        )
        env.terminate_tools = ["transfer_to_human_agents"]  # as tau-bench's retail and airline envs set it
        for action in record["actions"]:
            step_action = tb.Action(name=action["name"], kwargs=dict(action["kwargs"]))
            gc.disable()
            started = time.perf_counter()
            done = env.step(step_action).done
            steps[action["name"]].append(time.perf_counter() - started)
            gc.enable()
            if done:
                break


def _our_round(ours: Any, steps: dict[str, list[float]], calls: dict[str, list[float]]) -> None:
    for task in ours.task_list():
        view = ours.snapshot.view()
        for action in task.actions:
            gc.disable()
            started = time.perf_counter()
            execute(ours.tools, view, action.name, action.arguments, atomic=ours.semantics.atomic_calls)
            calls[action.name].append(time.perf_counter() - started)
            gc.enable()
    for task in ours.task_list():  # a separate pass, as for the peer
        env = ToolUseEnv(ours, user=EchoUser(), task_ids=[task.id], max_turns=10_000)
        env.reset(seed=0, options={"task_id": task.id})
        for index, action in enumerate(task.actions):
            message = AssistantMessage(
                tool_calls=(ToolCall(id=f"c{index}", name=action.name, arguments=dict(action.arguments)),)
            )
            gc.disable()
            started = time.perf_counter()
            env.step(message)
            steps[action.name].append(time.perf_counter() - started)
            gc.enable()
            if env.done:
                break


def _table(
    peer: dict[str, list[float]],
    peer_steps: dict[str, list[float]],
    steps: dict[str, list[float]],
    calls: dict[str, list[float]],
) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values) * 1e6 if values else float("nan")

    def row(name: str, count: int, p: float, ps: float, c: float, s: float) -> str:
        return f"{name:32} {count:>5} {p:8.1f} {ps:9.1f} {c:8.1f} {s:8.1f} {p / c:9.2f} {p / s:9.2f} {ps / s:10.2f}"

    lines = [
        f"{'tool':32} {'calls':>5} {'peer us':>8} {'pstep us':>9} {'tool us':>8} {'step us':>8} "
        f"{'peer/tool':>9} {'peer/step':>9} {'pstep/step':>10}"
    ]
    for name in sorted(peer):
        lines.append(
            row(
                name,
                len(peer[name]) // ROUNDS,
                med(peer[name]),
                med(peer_steps[name]),
                med(calls[name]),
                med(steps[name]),
            )
        )

    def pooled(values: dict[str, list[float]]) -> float:
        return med([v for vs in values.values() for v in vs])

    count = sum(len(v) for v in peer.values()) // ROUNDS
    lines.append(row("all gold calls", count, pooled(peer), pooled(peer_steps), pooled(calls), pooled(steps)))
    return "\n".join(lines)


@pytest.mark.parametrize("profile", ["tau-bench", "apigen"])
@pytest.mark.parametrize("domain", ["retail", "airline"])
def test_gold_steps_beside_tau_bench(benchmark: Any, domain: str, profile: str, tmp_path: Path) -> None:
    tables, records, ours = _setup(domain, tmp_path, profile)
    frozen = json.dumps(tables)
    peer: dict[str, list[float]] = defaultdict(list)
    peer_steps: dict[str, list[float]] = defaultdict(list)
    steps: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, list[float]] = defaultdict(list)

    def run() -> None:
        for _ in range(ROUNDS):
            _peer_round(domain, frozen, records, peer, peer_steps)
            _our_round(ours, steps, calls)

    benchmark.pedantic(run, rounds=1, iterations=1)
    table = _table(peer, peer_steps, steps, calls)
    print(f"\n{domain}, our semantics {profile!r} (medians over {ROUNDS} interleaved rounds)\n{table}")
    benchmark.extra_info["table"] = table
