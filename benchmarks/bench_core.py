"""Engine overheads on the mock domain: reset, step vs raw tool call, reward, memory per live env.

Run: pytest benchmarks/bench_core.py --benchmark-only
"""

from __future__ import annotations

import pytest

from apigen_envs import load_domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import tool_call
from benchmarks.memory import bytes_per_item


@pytest.fixture(scope="module")
def domain():
    return load_domain("mock")


def test_reset(benchmark, domain):
    env = ToolUseEnv(domain)
    benchmark(env.reset, options={"task_index": 0})


def test_reset_seeded(benchmark, domain):
    env = ToolUseEnv(domain)
    benchmark(env.reset, seed=123)


def test_raw_tool_call(benchmark, domain):
    view = domain.snapshot.view()
    benchmark(domain.tools.call, view, "get_account_details", {"account_id": "acc_1001"})


def test_env_step_tool_call(benchmark, domain):
    env = ToolUseEnv(domain, max_turns=10**9)
    env.reset(options={"task_index": 0})
    action = tool_call("get_account_details", {"account_id": "acc_1001"})

    def step():
        # keep the conversation short so the measured cost is one step, not a growing history
        if len(env._messages) > 40:
            env.reset(options={"task_index": 0})
        env.step(action)

    benchmark(step)


def test_reward(benchmark, domain):
    env = ToolUseEnv(domain)
    env.reset(options={"task_id": "transfer_50"})
    env.step(tool_call("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}))
    task, view, messages = env.task, env.view, env.messages
    domain.verifier.gold(task)
    info = benchmark(domain.verifier.score, task, view, messages)
    assert info.reward == 1.0


def test_memory_per_live_env(benchmark, domain):
    action = tool_call("set_account_nickname", {"account_id": "acc_2001", "nickname": "daily"})

    def make():
        env = ToolUseEnv(domain)
        env.reset(options={"task_index": 1})
        env.step(action)
        return env

    per_env = bytes_per_item(make, 1000)
    benchmark.extra_info["bytes_per_env"] = round(per_env)
    benchmark.pedantic(make, rounds=50)
