"""The verifiers adapter against the real ``verifiers`` package (0.4.x, its ``verifiers.v1`` stack).

Skipped where verifiers is not installed (the project's own venv: verifiers 0.4 pins ``openai<3``).
``scripts/check_verifiers.sh`` builds a side venv with verifiers 0.4.0 and runs this file there.
Episodes go through verifiers' own machinery (``Env.serving`` / ``Env.run_episode``: runtime, interception
server, trace graph, task scoring) against the stdlib ``ScriptedServer``, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("verifiers")
vf = pytest.importorskip("verifiers.v1")

from apigen_envs.adapters.verifiers import (  # noqa: E402 - after the skip on purpose
    V1_PLUGIN_ID,
    as_verifiers_v1_env,
    load_environment,
    run_verifiers_v1_episode,
)
from apigen_envs.fake_server import ScriptedServer  # noqa: E402
from apigen_envs.registry import load_domain  # noqa: E402


def _call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    return {
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]
    }


# The mock task's gold actions, as a model would emit them.
ORACLE_SCRIPT = (
    _call("c1", "find_customer_by_email", email="ana@example.com"),
    _call("c2", "transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=50),
    "Done: $50 moved from acc_1001 to acc_1002.",
)
NOOP_SCRIPT = ("I'm sorry, I can't help with that.",)


def _episode(script: tuple[Any, ...], task_id: str = "transfer_50", **env_kwargs: Any) -> tuple[Any, int]:
    env = as_verifiers_v1_env("mock", task_ids=[task_id], **env_kwargs)
    with ScriptedServer(script) as server:
        episode = asyncio.run(run_verifiers_v1_episode(env, "scripted", server.base_url, task_id=task_id))
        return episode, server.request_count


def test_oracle_episode_through_real_verifiers_scores_one() -> None:
    episode, requests = _episode(ORACLE_SCRIPT)
    assert episode.ok and not episode.errors
    (trace,) = episode.traces
    assert not trace.errors, trace.errors
    assert trace.rewards["apigen_reward"].score == 1.0 and trace.reward == 1.0
    assert trace.metrics["apigen_shaped"] == 1.0
    assert trace.info["apigen"]["termination"] == "user_stop"
    # Every policy turn went through verifiers' interception, which recorded it on the trace.
    assert requests == 3 and len(trace.calls) == 3
    roles = [m.role for m in trace.messages]
    assert roles[:2] == ["system", "user"] and roles.count("tool") == 2
    assert {t.name for t in trace.tools} >= {"transfer_funds", "find_customer_by_email"}
    assert trace.task.key == "mock/transfer_50"


def test_noop_episode_through_real_verifiers_scores_zero() -> None:
    episode, requests = _episode(NOOP_SCRIPT)
    (trace,) = episode.traces
    assert episode.ok and requests == 1
    assert trace.rewards["apigen_reward"].score == 0.0 and trace.reward == 0.0
    assert trace.info["apigen"]["termination"] == "user_stop"


def test_verifiers_turn_limit_ends_the_episode_cleanly() -> None:
    # verifiers refuses the second model call (agent max_turns=1); the harness ends our episode there.
    episode, requests = _episode(ORACLE_SCRIPT, agent={"max_turns": 1})
    (trace,) = episode.traces
    assert requests == 1
    assert trace.stop_condition is not None and trace.stop_condition != "agent_completed"
    assert trace.rewards["apigen_reward"].score == 0.0


def test_plugin_resolves_through_verifiers_loaders() -> None:
    env = as_verifiers_v1_env("mock", split="test")
    assert isinstance(env, vf.SingleAgentEnv)
    taskset = vf.load_taskset(env.config.taskset)
    ids = [t.data.task_id for t in taskset]
    assert ids == [t.id for t in load_domain("mock").task_list("test")]
    assert type(vf.load_harness(env.config.agent.harness)).__name__ == "ApigenHarness"
    assert vf.default_harness_id(V1_PLUGIN_ID) == V1_PLUGIN_ID
    # Rows carry the task id only: no gold actions or outputs on the wire.
    wire = json.dumps([t.data.model_dump(mode="json") for t in taskset])
    assert "transfer_funds" not in wire and "acc_1002" not in wire


def test_load_environment_picks_the_v1_env() -> None:
    env = load_environment(domain="mock", split="test")
    assert isinstance(env, vf.Env)
    with pytest.raises(ImportError, match="no MultiTurnEnv"):
        load_environment(api="classic", domain="mock")
    with pytest.raises(ValueError, match="unknown verifiers api"):
        load_environment(api="v2", domain="mock")


def test_unknown_task_is_a_clear_error() -> None:
    env = as_verifiers_v1_env("mock", task_ids=["transfer_50"])
    with pytest.raises(KeyError, match="nickname"):
        asyncio.run(run_verifiers_v1_episode(env, "m", "http://127.0.0.1:9/v1", task_id="nickname"))
