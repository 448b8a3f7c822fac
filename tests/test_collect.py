from __future__ import annotations

import asyncio
import json

import pytest

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.collect import Collector, episode_seed
from apigen_envs.episodes_io import (
    EpisodeWriter,
    TruncatedLineWarning,
    existing_ids,
    iter_episodes,
    load_episodes,
)
from apigen_envs.errors import DataFileError
from apigen_envs.messages import AssistantMessage, Usage
from apigen_envs.metrics import summarize


class SeedRecordingAgent:
    name = "recorder"

    def __init__(self):
        self.seeds = []

    def act(self, conversation, context):
        self.seeds.append(context.seed)
        return AssistantMessage(content="Done.", usage=Usage(prompt_tokens=10, completion_tokens=2))

    async def aact(self, conversation, context):
        await asyncio.sleep(0)
        return self.act(conversation, context)


class FlakyAgent(OracleAgent):
    name = "flaky"

    async def aact(self, conversation, context):
        if context.task.id == "nickname":
            raise TimeoutError("model server timed out")
        return self.act(conversation, context)


def test_collect_oracle_and_noop(tmp_path, mock_domain):
    out = tmp_path / "eps.jsonl"
    eps = Collector(mock_domain, OracleAgent(), trials=3, concurrency=4).run(out=out)
    assert len(eps) == 15 and all(e.reward == 1.0 for e in eps)
    eps_noop = Collector(mock_domain, NoopAgent(), trials=3).run(out=out)
    assert all(e.reward == 0.0 for e in eps_noop)
    loaded = load_episodes([out])
    assert len(loaded) == 30 and len({e.episode_id + e.agent for e in loaded}) == 30
    s = summarize([e for e in loaded if e.agent == "oracle"])
    assert s.pass_hat_k == {1: 1.0, 2: 1.0, 3: 1.0}


def test_seeds_reach_agent_and_are_stable(mock_domain):
    agent = SeedRecordingAgent()
    eps = Collector(mock_domain, agent, trials=2, base_seed=11).run()
    expected = {episode_seed(11, e.task_id, e.trial) for e in eps}
    assert set(agent.seeds) == expected == {e.seed for e in eps}
    assert len(expected) == 10
    assert all(e.agent_usage.prompt_tokens == 10 for e in eps)


def test_resume_skips_done_and_repairs_partial_tail(tmp_path, mock_domain):
    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent(), trials=1).run(mock_domain.task_list()[:2], out=out)
    # simulate a kill in the middle of writing a third line
    with out.open("a") as fh:
        fh.write('{"schema_version": 1, "episode_id": "mock/clo')
    with pytest.warns(TruncatedLineWarning, match="skipped a truncated last line"):
        assert len(list(iter_episodes(out))) == 2
    assert existing_ids(out) == {"oracle||mock/transfer_50/0", "oracle||mock/nickname/0"}
    with pytest.warns(TruncatedLineWarning, match="set aside"):
        new = Collector(mock_domain, OracleAgent(), trials=2).run(out=out)
    assert len(new) == 8
    ids = [json.loads(line)["episode_id"] for line in out.read_text().splitlines()]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert Collector(mock_domain, OracleAgent(), trials=2).run(out=out) == []


def test_agent_failures_are_recorded_not_raised(tmp_path, mock_domain):
    eps = Collector(mock_domain, FlakyAgent(), trials=1).run(out=tmp_path / "e.jsonl")
    failed = [e for e in eps if e.task_id == "nickname"]
    assert failed[0].termination == "agent_error" and "timed out" in failed[0].error
    s = summarize(eps)
    assert s.infra_failures == 1 and s.episodes == 4 and s.pass_hat_k[1] == 1.0


def test_corrupt_episode_file_names_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"episode_id": "x"}\n{"also": "bad"}\n')
    with pytest.raises(DataFileError, match="bad.jsonl:1"):
        load_episodes([bad])
    with pytest.raises(DataFileError, match="not found"):
        load_episodes([tmp_path / "missing.jsonl"])


def test_writer_appends_whole_lines(tmp_path, mock_domain):
    eps = Collector(mock_domain, OracleAgent()).run(mock_domain.task_list()[:1])
    path = tmp_path / "w.jsonl"
    with EpisodeWriter(path) as writer:
        writer.write(eps[0])
        writer.write(eps[0])
    assert path.read_text().count("\n") == 2


def test_high_concurrency_in_one_process(mock_domain):
    class SlowAgent(NoopAgent):
        async def aact(self, conversation, context):
            await asyncio.sleep(0.05)
            return self.act(conversation, context)

    import time

    start = time.perf_counter()
    eps = Collector(mock_domain, SlowAgent(), trials=100, concurrency=500).run()
    elapsed = time.perf_counter() - start
    assert len(eps) == 500
    # 500 episodes x 1 agent turn x 50 ms run side by side, not one after another (25 s)
    assert elapsed < 5.0


def test_invalid_action_counts_against_the_agent(mock_domain):
    class EmptyAgent:
        name = "empty"

        async def aact(self, conversation, context):
            return AssistantMessage(content="")

    eps = Collector(mock_domain, EmptyAgent()).run(mock_domain.task_list()[:2])
    assert {e.termination for e in eps} == {"invalid_action"}
    assert all(not e.is_infra_failure and e.reward == 0.0 and "neither text nor tool calls" in e.error for e in eps)
    assert summarize(eps).episodes == 2


def test_user_turn_meta_is_kept_on_the_episode(mock_domain):
    from apigen_envs.protocols import UserTurn
    from apigen_envs.simulators.scripted_user import ScriptedUser

    class TracingUser(ScriptedUser):
        def respond(self, task, conversation, *, seed=None):
            turn = super().respond(task, conversation, seed=seed)
            return UserTurn(turn.content, turn.stop, turn.usage, meta={"candidates": 2, "seed": seed})

    eps = Collector(mock_domain, OracleAgent(), TracingUser()).run(mock_domain.task_list()[:1])
    trace = eps[0].user_trace
    assert len(trace) == 2 and trace[0]["candidates"] == 2 and trace[0]["turn"] == 0
