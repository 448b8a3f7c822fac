from __future__ import annotations

import asyncio
import json

import pytest

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.collect import Collector, episode_seed
from apigen_envs.episodes_io import (
    EpisodeWriter,
    ResumeConflictError,
    TruncatedLineWarning,
    existing_ids,
    iter_episodes,
    load_episodes,
)
from apigen_envs.errors import DataFileError, LLMError
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
    """The oracle, except that its model server gives up on one task (``fail_times`` times, then recovers)."""

    name = "flaky"

    def __init__(self, fail_times: int = 1_000):
        self.left = fail_times

    async def aact(self, conversation, context):
        if context.task.id == "nickname" and self.left > 0:
            self.left -= 1
            raise LLMError("model server timed out")
        return self.act(conversation, context)


def test_collect_oracle_and_noop(tmp_path, mock_domain):
    out = tmp_path / "eps.jsonl"
    eps = Collector(mock_domain, OracleAgent(), trials=3, concurrency=4).run(out=out)
    assert len(eps) == 15 and all(e.reward == 1.0 for e in eps)
    eps_noop = Collector(mock_domain, NoopAgent(), trials=3).run(out=tmp_path / "noop.jsonl")
    assert all(e.reward == 0.0 for e in eps_noop)
    loaded = load_episodes([out, tmp_path / "noop.jsonl"])
    assert len(loaded) == 30 and len({e.episode_id + e.agent for e in loaded}) == 30
    s = summarize([e for e in loaded if e.agent == "oracle"])
    assert s.pass_hat_k == {1: 1.0, 2: 1.0, 3: 1.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent": NoopAgent()}, "agent"),
        ({"agent_config": {"model": "other"}}, "model"),
        ({"agent_config": {"model": "m", "temperature": 0.7}}, "temperature"),
        ({"agent_config": {"model": "m", "constrain": True}}, "agent_options"),
        ({"user_config": {"model": "user-llm"}}, "user_model"),
        ({"base_seed": 1}, "base_seed"),
        ({"max_turns": 7}, "max_turns"),
    ],
)
def test_resume_with_other_settings_is_an_error_naming_the_field(tmp_path, mock_domain, change, field):
    out = tmp_path / "eps.jsonl"
    first = {"agent": OracleAgent(), "agent_config": {"model": "m"}}
    Collector(mock_domain, **first).run(mock_domain.task_list()[:1], out=out)
    before = out.read_bytes()
    with pytest.raises(ResumeConflictError, match=f"{field}="):
        Collector(mock_domain, **{**first, **change}).run(out=out)
    assert out.read_bytes() == before  # nothing merged, nothing lost
    # The same settings resume; the explicit option sends the other run to a new file (and resumes it there).
    assert len(Collector(mock_domain, **first).run(out=out)) == 4
    other = Collector(mock_domain, **{**first, **change}, on_conflict="new_file")
    assert len(other.run(out=out)) == 5 and other.out_path == tmp_path / "eps-2.jsonl"
    again = Collector(mock_domain, **{**first, **change}, on_conflict="new_file")
    assert again.run(out=out) == [] and again.out_path == tmp_path / "eps-2.jsonl"


def test_resume_key_covers_the_data(tmp_path, mock_domain):
    from dataclasses import replace

    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent()).run(mock_domain.task_list()[:1], out=out)
    edited = dict(mock_domain.tasks)
    task = edited["nickname"]
    edited["nickname"] = task.model_copy(update={"outputs": ("something else",)})
    other_data = replace(mock_domain, tasks=edited)
    with pytest.raises(ResumeConflictError, match="data="):
        Collector(other_data, OracleAgent()).run(out=out)
    legacy = tmp_path / "legacy.jsonl"
    episode = load_episodes([out])[0].model_copy(update={"run_settings": None})
    legacy.write_text(episode.model_dump_json() + "\n")
    with pytest.raises(ResumeConflictError, match="without run settings"):
        Collector(mock_domain, OracleAgent()).run(out=legacy)
    assert load_episodes([out])[0].run_settings == Collector(mock_domain, OracleAgent()).settings


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


def test_model_server_failures_are_retried_then_recorded_not_raised(tmp_path, mock_domain):
    eps = Collector(mock_domain, FlakyAgent(), trials=1, retries=2).run(out=tmp_path / "e.jsonl")
    failed = [e for e in eps if e.task_id == "nickname"]
    assert failed[0].termination == "agent_error" and "timed out" in failed[0].error
    assert failed[0].attempts == 3 and len(load_episodes([tmp_path / "e.jsonl"])) == 5  # only the last attempt
    s = summarize(eps)
    assert s.infra_failures == 1 and s.episodes == 4 and s.pass_hat_k[1] == 1.0


def test_a_transient_model_server_failure_is_retried_and_scored(mock_domain):
    eps = Collector(mock_domain, FlakyAgent(fail_times=1), retries=1).run()
    nickname = next(e for e in eps if e.task_id == "nickname")
    assert nickname.termination == "user_stop" and nickname.reward == 1.0 and nickname.attempts == 2
    assert all(e.attempts == 1 for e in eps if e.task_id != "nickname")
    unretried = Collector(mock_domain, FlakyAgent(fail_times=1), retries=0).run(mock_domain.task_list()[1:2])
    assert [(e.task_id, e.termination) for e in unretried] == [("nickname", "agent_error")]


def test_a_bug_in_the_agent_counts_against_it(mock_domain):
    class BuggyAgent(OracleAgent):
        name = "buggy"

        async def aact(self, conversation, context):
            raise KeyError("my parser broke")

    eps = Collector(mock_domain, BuggyAgent()).run()
    assert {e.termination for e in eps} == {"invalid_action"} and all("my parser broke" in e.error for e in eps)
    assert all(e.attempts == 1 for e in eps)  # not retried: it is not infrastructure
    assert summarize(eps).pass_hat_k == {1: 0.0}


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
