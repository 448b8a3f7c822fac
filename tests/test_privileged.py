"""Agents never see the gold: only agents that declare ``privileged = True`` get the task in their context."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.collect import Collector
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import AssistantMessage
from apigen_envs.protocols import AgentContext
from apigen_envs.rl import FunctionAgent, rollout_group
from apigen_envs.runner import arun_episode, run_episode


class Spy:
    """Records the contexts it is given; declares nothing, so it is not privileged."""

    name = "spy"

    def __init__(self) -> None:
        self.contexts: list[AgentContext] = []

    def act(self, conversation: Any, context: AgentContext) -> AssistantMessage:
        self.contexts.append(context)
        return AssistantMessage(content="Done.")

    async def aact(self, conversation: Any, context: AgentContext) -> AssistantMessage:
        return self.act(conversation, context)


def test_no_entry_point_hands_the_task_to_an_ordinary_agent(mock_domain) -> None:
    spy = Spy()
    Collector(mock_domain, spy).run()
    run_episode(ToolUseEnv(mock_domain), spy, task_id="nickname")
    asyncio.run(arun_episode(ToolUseEnv(mock_domain), spy, task_id="nickname"))
    rollout_group(mock_domain, "nickname", spy, 2)
    rollout_group(mock_domain, "nickname", spy.act, 2)  # a bare function
    assert len(spy.contexts) == 5 + 1 + 1 + 2 + 2
    assert all(c.task is None for c in spy.contexts)
    assert all(c.system_prompt and c.tools for c in spy.contexts)


def test_privileged_agents_get_the_task_and_the_episode_says_so(mock_domain) -> None:
    episodes = Collector(mock_domain, OracleAgent()).run()
    assert all(e.passed and e.privileged for e in episodes)
    assert not any(e.privileged for e in Collector(mock_domain, NoopAgent()).run())

    seen: list[Any] = []

    def peek(conversation: Any, context: AgentContext) -> AssistantMessage:
        seen.append(context.task)
        return AssistantMessage(content="Done.")

    plain = run_episode(ToolUseEnv(mock_domain), peek, task_id="nickname")
    peek.privileged = True  # type: ignore[attr-defined]
    declared = run_episode(ToolUseEnv(mock_domain), peek, task_id="nickname")
    wrapped = run_episode(ToolUseEnv(mock_domain), FunctionAgent(peek, privileged=True), task_id="nickname")
    assert seen[0] is None and seen[1].id == seen[2].id == "nickname"
    assert (plain.privileged, declared.privileged, wrapped.privileged) == (False, True, True)


def test_an_oracle_that_is_not_given_the_task_fails_visibly(mock_domain) -> None:
    class Impostor(OracleAgent):
        privileged = False  # type: ignore[misc]

    episode = run_episode(ToolUseEnv(mock_domain), Impostor(), task_id="nickname")
    assert episode.termination == "invalid_action" and "needs context.task" in (episode.error or "")


@pytest.mark.skipif(
    importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None,
    reason="needs the server extra",
)
def test_the_server_reveals_the_task_only_when_its_setting_allows_and_records_it() -> None:
    from apigen_envs.remote import RemoteEnv, RemoteEnvError
    from apigen_envs.server import ServerSettings, serve_in_thread

    with serve_in_thread(ServerSettings()) as srv:
        with RemoteEnv(srv.base_url, reveal_task=True) as env, pytest.raises(RemoteEnvError, match="does not reveal"):
            env.reset(options={"task_id": "nickname"})
        with RemoteEnv(srv.base_url) as env:
            episode = run_episode(env, OracleAgent(), task_id="nickname")
        # Not revealed: even the oracle has no task, so its turn is unusable (and it is no privileged episode).
        assert episode.termination == "invalid_action" and not episode.privileged
    with (
        serve_in_thread(ServerSettings(allow_reveal_task=True)) as srv,
        RemoteEnv(srv.base_url, reveal_task=True) as env,
    ):
        episode = run_episode(env, OracleAgent(), task_id="nickname")
        assert episode.passed and episode.privileged and env.episode().privileged
