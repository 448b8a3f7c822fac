"""Airline env speed and memory, on the default DB and on a generated 100x DB.

Run: ``pytest benchmarks/bench_airline.py --benchmark-only`` (the 100x DB is generated once per session
into a temporary directory and loaded through ``load(data_dir)``; ``APIGEN_BENCH_SCALE`` changes its scale).
"""

from __future__ import annotations

import gc
import os
import random
import tracemalloc

import pytest

from apigen_envs.domain import Domain
from apigen_envs.domains.airline import POLICY, load
from apigen_envs.domains.airline.generate import generate_db, write_db
from apigen_envs.domains.airline.templates import generate_tasks
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import AssistantMessage, ToolCall

SCALE = float(os.environ.get("APIGEN_BENCH_SCALE", "100"))


@pytest.fixture(scope="session")
def big_domain(tmp_path_factory) -> Domain:
    root = tmp_path_factory.mktemp("airline_big")
    write_db(generate_db(seed=0, scale=SCALE), root / "db.json")
    (root / "tasks.json").write_text("[]")
    (root / "policy.md").write_bytes(POLICY.read_bytes())
    # The default profile, as the embedded data runs (a directory alone would follow tau2).
    loaded = load(root, semantics="apigen")
    tasks = generate_tasks(loaded.snapshot, seed=0, n_train=9, n_test=0)
    return Domain(
        name="airline",
        snapshot=loaded.snapshot,
        tools=loaded.tools,
        policy=loaded.policy,
        tasks={t.id: t for t in tasks},
        source=str(root),
        semantics=loaded.semantics,
    )


@pytest.fixture(scope="session")
def default_domain() -> Domain:
    return load(None)


@pytest.fixture(params=["default", "x100"])
def domain(request) -> Domain:
    return request.getfixturevalue("default_domain" if request.param == "default" else "big_domain")


def _reservation_id(domain: Domain) -> str:
    rng = random.Random(0)
    keys = tuple(domain.snapshot.tables["reservations"])
    return keys[rng.randrange(len(keys))]


def test_reset(benchmark, domain):
    env = ToolUseEnv(domain)
    benchmark(env.reset, options={"task_index": 0})


def test_step_get_reservation_details(benchmark, domain):
    env = ToolUseEnv(domain, max_turns=10**9)
    env.reset(options={"task_index": 0})
    rid = _reservation_id(domain)
    action = AssistantMessage(
        tool_calls=(ToolCall(id="c1", name="get_reservation_details", arguments={"reservation_id": rid}),)
    )

    def setup():
        env.reset(options={"task_index": 0})
        return (action,), {}

    benchmark.pedantic(env.step, setup=setup, rounds=3000, iterations=1, warmup_rounds=10)


def test_raw_tool_call(benchmark, domain):
    view = domain.snapshot.view()
    rid = _reservation_id(domain)
    benchmark(domain.tools.call, view, "get_reservation_details", {"reservation_id": rid})


def test_reward(benchmark, domain):
    task = domain.task_list()[0]
    view = domain.snapshot.view()
    rid = _reservation_id(domain)
    res = view.reservations[rid]
    user = view.users[res["user_id"]]
    card = next(key for key, m in user["payment_methods"].items() if m["source"] == "credit_card")
    domain.tools.call(view, "send_certificate", {"user_id": res["user_id"], "amount": 100})
    domain.tools.call(
        view,
        "update_reservation_passengers",
        {"reservation_id": rid, "passengers": [dict(p) for p in reversed(res["passengers"])]},
    )
    domain.tools.call(
        view,
        "update_reservation_baggages",
        {
            "reservation_id": rid,
            "total_baggages": res["total_baggages"] + 1,
            "nonfree_baggages": res["nonfree_baggages"],
            "payment_id": card,
        },
    )
    domain.verifier.gold(task)  # the gold replay is cached once per task; measure scoring only
    info = benchmark(domain.verifier.score, task, view, ())
    assert info.changed_rows >= 2


def test_memory_per_live_env(benchmark, domain):
    n = 1000

    def build():
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        envs = []
        for i in range(n):
            env = ToolUseEnv(domain)
            env.reset(options={"task_index": i % len(env.tasks)})
            envs.append(env)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return (after - before) / n, envs

    per_env, envs = benchmark.pedantic(build, rounds=1, iterations=1)
    benchmark.extra_info["bytes_per_live_env"] = round(per_env)
    benchmark.extra_info["db_rows"] = domain.snapshot.size()
    assert len(envs) == n and per_env > 0
