"""Trainer adapters: a verifiers-style multi-turn env and OpenPipe ART trajectories, driven by scripted models."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from apigen_envs.adapters import drive_episode, openai_policy
from apigen_envs.adapters.verifiers import ApigenMultiTurnEnv, apigen_reward, load_environment
from apigen_envs.env import ToolUseEnv
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.registry import load_domain

openai = pytest.importorskip("openai")


def _call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    return {
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]
    }


ORACLE_SCRIPT = (
    _call("c1", "find_customer_by_email", email="ana@example.com"),
    _call("c2", "transfer_funds", from_account_id="acc_1001", to_account_id="acc_1002", amount=50),
    "Done: $50 moved from acc_1001 to acc_1002.",
)
NOOP_SCRIPT = ("I'm sorry, I can't help with that.",)


def _run(server: ScriptedServer, fn: Any) -> Any:
    """Run ``fn(client)`` in a fresh loop, closing the client before the loop closes."""

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as client:
            return await fn(client)

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------- shared loop
def test_drive_episode_with_text_written_tool_calls() -> None:
    # A small local model writes calls as JSON text; the policy parses them like the project's client.
    script = (
        '{"name": "find_customer_by_email", "arguments": {"email": "ana@example.com"}}',
        '```json\n{"name": "transfer_funds", "arguments": {"from_account_id": "acc_1001", '
        '"to_account_id": "acc_1002", "amount": 50}}\n```',
        "All done.",
    )
    with ScriptedServer(script) as server:
        env = ToolUseEnv("mock")
        run = _run(server, lambda c: drive_episode(env, openai_policy(c, "m"), options={"task_id": "transfer_50"}))
    assert run.reward == 1.0 and run.info["termination"] == "user_stop"
    assert run.prompt[0]["role"] == "system" and run.prompt[1]["role"] == "user"
    assert [i for i, _ in run.raw_replies] == [0, 2, 4]
    assert [m["role"] for m in run.completion] == ["assistant", "tool", "assistant", "tool", "assistant", "user"]


def test_empty_reply_ends_the_episode_against_the_policy() -> None:
    # No canned text in its place: the empty turn is the policy's, and it counts (reward 0, in metrics).
    with ScriptedServer(("", "Thanks, bye.")) as server:
        run = _run(
            server, lambda c: drive_episode(ToolUseEnv("mock"), openai_policy(c, "m"), options={"task_index": 0})
        )
    assert run.reward == 0.0 and run.info["termination"] == "invalid_action" and run.completion == []
    assert run.episode is not None and not run.episode.is_infra_failure
    assert [i for i, _ in run.raw_replies] == [0]  # the raw reply is kept for the trainer
    assert server.request_count == 1


def test_model_server_failure_is_infrastructure_not_the_policy() -> None:
    from apigen_envs.fake_server import Fault

    with ScriptedServer(handler=lambda request: Fault.server_error(500)) as server:
        run = _run(
            server, lambda c: drive_episode(ToolUseEnv("mock"), openai_policy(c, "m"), options={"task_index": 0})
        )
    assert run.info["termination"] == "agent_error" and "500" in run.info["error"]
    assert run.episode is not None and run.episode.is_infra_failure


def test_verifiers_hooks_end_an_unusable_turn_as_invalid_action() -> None:
    vf_env = ApigenMultiTurnEnv("mock", task_ids=["transfer_50"])

    async def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        state = await vf_env.setup_state({"info": vf_env.dataset[0]["info"]})
        messages = [*vf_env.dataset[0]["prompt"], *state["opening"], {"role": "assistant", "content": "  "}]
        new, state = await vf_env.env_response(messages, state)
        assert await vf_env.is_completed(messages, state)
        return new, state

    new, state = asyncio.run(run())
    assert new == [] and state["termination"] == "invalid_action" and state["reward"] == 0.0


# ---------------------------------------------------------------------------------------------- verifiers
def test_verifiers_env_rollout_rewards_with_our_verifier() -> None:
    vf_env = ApigenMultiTurnEnv("mock", task_ids=["transfer_50", "nickname"])
    assert [row["info"]["task_id"] for row in vf_env.dataset] == ["transfer_50", "nickname"]
    assert vf_env.dataset[0]["prompt"][0]["role"] == "system" and "gold" not in json.dumps(vf_env.dataset)
    row = vf_env.dataset[0]
    with ScriptedServer(ORACLE_SCRIPT) as server:
        completion, state = _run(server, lambda c: vf_env.rollout(c, "m", row))
    # The scripted customer opens with its request in the first person, not the raw instruction.
    assert state["prompt"][1]["content"].startswith("Hi, I want to move $50")
    assert "ana@example.com" in state["prompt"][1]["content"]
    assert [m["role"] for m in completion] == ["assistant", "tool", "assistant", "tool", "assistant", "user"]
    assert state["termination"] == "user_stop"
    scores = asyncio.run(vf_env.score(state))
    assert scores["apigen_reward"] == 1.0 and scores["reward"] == 1.0 and scores["apigen_shaped"] == 1.0
    with ScriptedServer(NOOP_SCRIPT) as server:
        _, state = _run(server, lambda c: vf_env.rollout(c, "m", row))
    assert apigen_reward(state) == 0.0


def test_verifiers_hooks_follow_the_multiturn_protocol() -> None:
    vf_env = ApigenMultiTurnEnv("mock", task_ids=["transfer_50"])

    async def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        state = await vf_env.setup_state({"info": vf_env.dataset[0]["info"]})
        messages = [*vf_env.dataset[0]["prompt"], *state["opening"]]
        assert not await vf_env.is_completed(messages, state)
        messages.append({"role": "assistant", "content": "", "tool_calls": ORACLE_SCRIPT[0]["tool_calls"]})
        new, state = await vf_env.env_response(messages, state)
        assert [m["role"] for m in new] == ["tool"] and new[0]["content"] == "cus_ana"
        messages += new
        messages.append({"role": "assistant", "content": "Shall I move $50 now?"})
        new, state = await vf_env.env_response(messages, state)
        assert new == [{"role": "user", "content": "Yes, please go ahead."}]
        return messages + new, state

    _, state = asyncio.run(run())
    assert state["reward_info"] is None and not state["apigen_env"].done


def test_load_environment_without_a_compatible_verifiers() -> None:
    env = load_environment(api="standalone", domain="mock", split="test")
    assert isinstance(env, ApigenMultiTurnEnv)
    assert len(env.dataset) == len(load_domain("mock").task_list("test"))
    assert {t["function"]["name"] for t in env.oai_tools} >= {"transfer_funds"}
