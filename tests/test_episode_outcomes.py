"""One meaning for every outcome: every bad-turn kind through every entry point ends the same way.

The policy's first turn is the bad one; afterwards it says "All done." (the scripted customer then stops).
A turn that cannot be executed ends the episode as ``invalid_action`` (reward 0, counted); a wrong tool call
is answered with an error tool message and the episode goes on (``user_stop``, reward 0, counted); only the
model server giving up is infrastructure (``agent_error``, left out of metrics).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from apigen_envs import testing
from apigen_envs.adapters import drive_episode
from apigen_envs.adapters.verifiers import ApigenMultiTurnEnv
from apigen_envs.collect import Collector
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode
from apigen_envs.errors import LLMError
from apigen_envs.messages import AssistantMessage, ToolCall
from apigen_envs.metrics import summarize
from apigen_envs.play import HumanUser, Transcript, play_as_user
from apigen_envs.registry import load_domain
from apigen_envs.rl import AsyncEnvBatch, EnvStepReward, rollout_group
from apigen_envs.runner import arun_episode, run_episode

TASK = "close_empty"
DONE = AssistantMessage(content="All done.")


def _nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"account_id": "acc_3001"}
    for _ in range(depth):
        value = {"x": value}
    return value


def _call(arguments: Any, name: str = "close_account") -> AssistantMessage:
    return AssistantMessage(tool_calls=(ToolCall(id="bad", name=name, arguments=arguments),))


class _Raise:
    """A turn that is an exception raised by the policy (only policies that are code can raise)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


@dataclass(frozen=True)
class Kind:
    turn: Callable[[], Any]
    termination: str

    @property
    def raises(self) -> bool:
        return isinstance(self.turn(), _Raise)


BAD_TURNS: dict[str, Kind] = {
    # Cannot be executed: the episode ends, against the policy.
    "empty_message": Kind(lambda: AssistantMessage(content=""), "invalid_action"),
    "blank_text": Kind(lambda: "   ", "invalid_action"),
    "empty_dict": Kind(lambda: {"role": "assistant", "content": None}, "invalid_action"),
    "other_role": Kind(lambda: {"role": "user", "content": "I am the customer now"}, "invalid_action"),
    "malformed_content": Kind(lambda: {"role": "assistant", "content": 42}, "invalid_action"),
    "malformed_tool_calls": Kind(lambda: {"role": "assistant", "tool_calls": "close it"}, "invalid_action"),
    "tool_call_not_an_object": Kind(lambda: {"role": "assistant", "tool_calls": [7]}, "invalid_action"),
    "not_a_message": Kind(lambda: 12345, "invalid_action"),
    "none": Kind(lambda: None, "invalid_action"),
    "policy_raises": Kind(lambda: _Raise(KeyError("parser bug")), "invalid_action"),
    # Can be executed but is wrong: an error tool message, and the episode goes on.
    "unknown_tool": Kind(lambda: _call({}, name="no_such_tool"), "user_stop"),
    "wrongly_typed_arguments": Kind(lambda: _call({"account_id": ["acc_3001"], "reason": 5}), "user_stop"),
    "unknown_argument": Kind(lambda: _call({"account_id": "acc_3001", "force": True}), "user_stop"),
    "broken_json": Kind(lambda: _call('{"account_id": "acc_3001", '), "user_stop"),
    "json_not_an_object": Kind(lambda: _call("[1, 2]"), "user_stop"),
    "deep_json_text": Kind(lambda: _call('{"a": ' * 5_000 + "1" + "}" * 5_000), "user_stop"),
    "json_text_at_the_recursion_limit": Kind(lambda: _call('{"a": ' * 990 + "1" + "}" * 990), "user_stop"),
    "deep_dict": Kind(lambda: _call(_nested_dict(2_000)), "user_stop"),
    "value_json_cannot_encode": Kind(lambda: _call({"account_id": {1, 2}}), "user_stop"),
    # Outside the policy: the model server gave up (infrastructure, left out of metrics).
    "model_server_down": Kind(lambda: _Raise(LLMError("model server down after 5 attempts")), "agent_error"),
}


def _first_turn(kind: Kind) -> Any:
    turn = kind.turn()
    if isinstance(turn, _Raise):
        raise turn.exc
    return turn


def policy_for(kind: Kind) -> Callable[[Any, Any], Any]:
    """``(conversation, context) -> turn``: the bad turn first, then a closing reply."""

    def policy(conversation: Any, context: Any) -> Any:
        said = any(getattr(m, "role", None) == "assistant" for m in conversation)
        return DONE if said else _first_turn(kind)

    return policy


def as_completion(turn: Any) -> Any:
    """The turn as a TRL completion: a conversational list for messages, raw data otherwise."""
    if isinstance(turn, AssistantMessage):
        return [turn.to_openai()]
    if isinstance(turn, dict):
        return [turn]
    return turn


def as_wire(turn: Any) -> Any:
    return turn.to_openai() if isinstance(turn, AssistantMessage) else turn


# ---------------------------------------------------------------------------------------------- entry points
def via_collector(kind: Kind) -> list[Episode]:
    return Collector("mock", _Named(policy_for(kind)), retries=0).run([load_domain("mock").task(TASK)])


def via_runner_sync(kind: Kind) -> list[Episode]:
    return [run_episode(ToolUseEnv("mock"), policy_for(kind), task_id=TASK)]


def via_runner_async(kind: Kind) -> list[Episode]:
    return [asyncio.run(arun_episode(ToolUseEnv("mock"), policy_for(kind), task_id=TASK))]


def via_rl_group(kind: Kind) -> list[Episode]:
    return list(rollout_group("mock", TASK, policy_for(kind), 2).episodes)


def via_batch(kind: Kind) -> list[Episode]:
    def batch_policy(conversations: list[list[dict[str, Any]]]) -> list[Any]:
        out = []
        for conversation in conversations:
            said = any(m["role"] == "assistant" for m in conversation)
            out.append(DONE if said else _first_turn(kind))
        return out

    return AsyncEnvBatch.from_domain("mock", 3, task_ids=[TASK]).run(batch_policy)


def via_batch_low_level(kind: Kind) -> list[Episode]:
    async def run() -> list[Episode]:
        batch = AsyncEnvBatch.from_domain("mock", 2, task_ids=[TASK])
        await batch.areset(seeds=[0, 1], options=[{"task_id": TASK}] * 2)
        await batch.astep(dict.fromkeys(batch.active, kind.turn()))
        while batch.active:
            await batch.astep(dict.fromkeys(batch.active, DONE))
        return [batch.episode(0), batch.episode(1)]

    return asyncio.run(run())


def via_env_step_reward(kind: Kind) -> list[Episode]:
    reward = EnvStepReward("mock", keep_episodes=True)
    assert reward(None, [as_completion(kind.turn())], task_id=[TASK], step=[0]) == [0.0]
    return reward.episodes


def via_adapter(kind: Kind) -> list[Episode]:
    async def call(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[Any, Any]:
        said = any(m["role"] == "assistant" for m in messages)
        turn = DONE if said else _first_turn(kind)
        return turn, {"raw": "reply"}

    run = asyncio.run(drive_episode(ToolUseEnv("mock"), call, options={"task_id": TASK}))
    assert run.episode is not None and run.reward == run.episode.reward
    return [run.episode]


def via_testing_run_episode(kind: Kind) -> list[Episode]:
    env = ToolUseEnv("mock")
    reward, messages = testing.run_episode(env, _Named(policy_for(kind)), task_id=TASK)
    episode = env.to_episode(agent="t")
    assert reward == episode.reward and messages == episode.messages
    return [episode]


def via_verifiers_hooks(kind: Kind) -> list[Episode]:
    vf_env = ApigenMultiTurnEnv("mock", task_ids=[TASK])

    async def run() -> Episode:
        state = await vf_env.setup_state({"info": vf_env.dataset[0]["info"]})
        messages: list[Any] = [*vf_env.dataset[0]["prompt"], *state["opening"], as_wire(kind.turn())]
        new, state = await vf_env.env_response(messages, state)
        while not await vf_env.is_completed(messages, state):
            messages += [*new, DONE.to_openai()]
            new, state = await vf_env.env_response(messages, state)
        return state["apigen_env"].to_episode(agent="vf")

    return [asyncio.run(run())]


def via_play_user_seat(kind: Kind) -> list[Episode]:
    lines = iter(("Please close my account acc_3001.", "/stop"))
    screen = Transcript(io.StringIO())
    human = HumanUser(lambda prompt: next(lines), screen)
    env = ToolUseEnv("mock", user=human)
    episode, abandoned = play_as_user(env, _Named(policy_for(kind)), human, seed=0, options={"task_id": TASK})
    assert abandoned is None
    return [episode]


class _Named:
    """A policy function as an Agent object (sync and async)."""

    name = "table_policy"

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def act(self, conversation: Any, context: Any) -> Any:
        return self.fn(conversation, context)

    async def aact(self, conversation: Any, context: Any) -> Any:
        return self.fn(conversation, context)


ENTRY_POINTS: dict[str, Callable[[Kind], list[Episode]]] = {
    "collector": via_collector,
    "runner_sync": via_runner_sync,
    "runner_async": via_runner_async,
    "rl_group": via_rl_group,
    "async_env_batch": via_batch,
    "async_env_batch_low_level": via_batch_low_level,
    "env_step_reward": via_env_step_reward,
    "trainer_adapter": via_adapter,
    "testing_run_episode": via_testing_run_episode,
    "verifiers_hooks": via_verifiers_hooks,
    "play_user_seat": via_play_user_seat,
}
# Entry points that take data, not a policy that runs code, cannot meet a policy that raises.
DATA_ONLY = {"async_env_batch_low_level", "env_step_reward", "verifiers_hooks"}

CASES = [
    pytest.param(kind, entry, id=f"{kind}-{entry}")
    for kind in BAD_TURNS
    for entry in ENTRY_POINTS
    if not (BAD_TURNS[kind].raises and entry in DATA_ONLY)
]


@pytest.mark.parametrize(("kind_name", "entry"), CASES)
def test_every_bad_turn_means_the_same_at_every_entry_point(kind_name: str, entry: str) -> None:
    kind = BAD_TURNS[kind_name]
    episodes = ENTRY_POINTS[entry](kind)
    assert episodes
    for episode in episodes:
        assert episode.termination == kind.termination, (episode.termination, episode.error)
        assert episode.reward == 0.0
        # Whatever the policy sent, the record can be written and read back.
        assert Episode.model_validate_json(episode.model_dump_json()).termination == kind.termination
        tool_results = [m for m in episode.messages if m.role == "tool"]
        if kind.termination == "user_stop":
            assert len(tool_results) == 1 and tool_results[0].error, tool_results
            assert tool_results[0].content.startswith("Error:")
        else:
            assert tool_results == [] and episode.error
    summary = summarize(episodes)
    if kind.termination == "agent_error":
        assert summary.episodes == 0 and summary.infra_failures == len(episodes) and summary.pass_hat_k == {}
    else:
        assert summary.episodes == len(episodes) and summary.infra_failures == 0
        assert summary.pass_hat_k[1] == 0.0


def test_a_batch_policy_that_only_emits_empty_messages_scores_zero_not_nothing() -> None:
    batch = AsyncEnvBatch.from_domain("mock", 4)
    episodes = batch.run(lambda conversations: [AssistantMessage(content="")] * len(conversations))
    assert {e.termination for e in episodes} == {"invalid_action"} and len(episodes) == 4
    summary = summarize(episodes)
    assert summary.episodes == 4 and summary.pass_hat_k == {1: 0.0}


def test_a_batch_policy_that_raises_fails_every_turn_it_was_asked_for() -> None:
    calls = []

    def policy(conversations: list[Any]) -> list[Any]:
        calls.append(len(conversations))
        raise RuntimeError("batched sampler crashed")

    episodes = AsyncEnvBatch.from_domain("mock", 3).run(policy)
    assert calls == [3] and len(episodes) == 3
    assert all(e.termination == "invalid_action" and "sampler crashed" in e.error for e in episodes)
