"""Retail env overheads on the default DB and on a 100x generated DB.

Measures reset, one env step with a ``get_order_details`` call against the raw ``tools.call``, reward
computation on a view with a few writes, and memory per live env (1,000 envs after reset and one write).
The 100x DB (50,000 users, 100,000 orders) is generated once per session into a temporary directory and
loaded through ``load(data_dir)``; its tasks are proposed from it by the template proposer.

Run: pytest benchmarks/bench_retail.py --benchmark-only
"""

from __future__ import annotations

import itertools

import pytest

from apigen_envs.domain import Domain
from apigen_envs.domains.retail import POLICY, load
from apigen_envs.domains.retail.generate import generate_db, write_db
from apigen_envs.domains.retail.templates import build_task_set, write_tasks
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import tool_call
from apigen_envs.tools import render_result
from benchmarks.memory import bytes_per_item

NEW_ADDRESS = {
    "address1": "9 Elm Street",
    "address2": "",
    "city": "Austin",
    "state": "TX",
    "country": "USA",
    "zip": "78701",
}


@pytest.fixture(scope="session")
def retail_100x(tmp_path_factory) -> Domain:
    root = tmp_path_factory.mktemp("retail_100x")
    write_db(generate_db(seed=0, scale=100), root / "db.json")
    (root / "policy.md").write_bytes(POLICY.read_bytes())
    # No tasks.json yet: DB only. The default profile, as the embedded data runs (a directory alone follows tau2).
    loaded = load(root, semantics="apigen")
    tasks = build_task_set(loaded.snapshot, seed=0, n_train=24, n_test=0)
    write_tasks(tasks, root / "tasks.json")
    return Domain(
        "retail",
        loaded.snapshot,
        loaded.tools,
        loaded.policy,
        {t.id: t for t in tasks},
        source=str(root),
        semantics=loaded.semantics,
    )


@pytest.fixture(scope="module", params=["default", "100x"])
def domain(request) -> Domain:
    if request.param == "default":
        return load(None)
    return request.getfixturevalue("retail_100x")


def _tag(benchmark, domain: Domain) -> None:
    benchmark.extra_info["db"] = domain.snapshot.size()


def _write_task(domain: Domain):
    """A task whose gold actions make a few writes (two requests of one customer, when there is one)."""
    tasks = domain.task_list()
    multi = [t for t in tasks if t.provenance.get("intent") in ("return_and_cancel", "exchange_and_update_address")]
    return (multi or [t for t in tasks if domain.verifier.gold(t).changes])[0]


def test_reset(benchmark, domain):
    _tag(benchmark, domain)
    env = ToolUseEnv(domain)
    indexes = itertools.cycle(range(len(env.tasks)))
    benchmark(lambda: env.reset(options={"task_index": next(indexes)}))


def test_raw_tool_call(benchmark, domain):
    _tag(benchmark, domain)
    view = domain.snapshot.view()
    order_id = next(iter(domain.snapshot.tables["orders"]))
    benchmark(domain.tools.call, view, "get_order_details", {"order_id": order_id})


def test_find_user_id_by_email(benchmark, domain):
    """An indexed lookup: its cost must not grow with the number of users."""
    _tag(benchmark, domain)
    view = domain.snapshot.view()
    email = domain.snapshot.tables["users"][domain.task_list()[0].user_id]["email"]
    assert benchmark(domain.tools.call, view, "find_user_id_by_email", {"email": email})


def test_raw_tool_call_rendered(benchmark, domain):
    """The raw call plus turning the record into the JSON text the agent sees (part of every env step)."""
    _tag(benchmark, domain)
    view = domain.snapshot.view()
    order_id = next(iter(domain.snapshot.tables["orders"]))
    benchmark(lambda: render_result(domain.tools.call(view, "get_order_details", {"order_id": order_id})))


def test_env_step_tool_call(benchmark, domain):
    _tag(benchmark, domain)
    env = ToolUseEnv(domain, max_turns=10**9)
    env.reset(options={"task_index": 0})
    action = tool_call("get_order_details", {"order_id": next(iter(domain.snapshot.tables["orders"]))})

    def step():
        # keep the conversation short so the measured cost is one step, not a growing history
        if len(env._messages) > 40:
            env.reset(options={"task_index": 0})
        env.step(action)

    benchmark(step)


def test_reward(benchmark, domain):
    _tag(benchmark, domain)
    task = _write_task(domain)
    env = ToolUseEnv(domain, max_turns=100)
    env.reset(options={"task_id": task.id})
    for i, action in enumerate(task.actions):
        env.step(tool_call(action.name, dict(action.arguments), call_id=f"c{i}"))
    view, messages = env.view, env.messages
    benchmark.extra_info["changed_rows"] = sum(len(rows) for rows in view.changes().values())
    domain.verifier.gold(task)
    info = benchmark(domain.verifier.score, task, view, messages)
    assert info.db_match


def test_memory_per_live_env(benchmark, domain):
    _tag(benchmark, domain)
    task = domain.task_list()[0]
    action = tool_call("modify_user_address", {"user_id": task.user_id, **NEW_ADDRESS})

    def make():
        env = ToolUseEnv(domain)
        env.reset(options={"task_id": task.id})
        env.step(action)
        return env

    per_env = bytes_per_item(make, 1000)
    benchmark.extra_info["bytes_per_env"] = round(per_env)
    benchmark.pedantic(make, rounds=50)
