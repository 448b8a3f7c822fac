"""The multi-process collector: same episodes as one process, resumable, a dead worker loses nothing written."""

from __future__ import annotations

import functools
import json
import os

import pytest
from helpers.process_agents import AlwaysCrashOracle, broken_factory
from helpers.ray_agents import CrashOnceOracle, make_oracle

from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.collect import CollectError, Collector, ProcessCollector
from apigen_envs.episodes_io import load_episodes


def _key(episode) -> tuple:
    record = json.loads(episode.model_dump_json())
    messages = [{k: v for k, v in m.items() if k not in ("timestamp", "latency_s")} for m in record["messages"]]
    return (
        episode.episode_id,
        episode.reward,
        episode.termination,
        episode.seed,
        json.dumps(messages, sort_keys=True),
        episode.run_settings,
    )


def _ids(path) -> list[str]:
    return [json.loads(line)["episode_id"] for line in path.read_text().splitlines()]


@pytest.fixture
def parent_marker(monkeypatch):
    monkeypatch.setenv("APIGEN_TEST_PARENT", str(os.getpid()))


def test_same_episodes_as_one_process(tmp_path, mock_domain):
    single = Collector(mock_domain, OracleAgent(), trials=3, concurrency=4).run(out=tmp_path / "one.jsonl")
    many = ProcessCollector("mock", make_oracle, processes=2, trials=3, concurrency=4)
    episodes = many.run(out=tmp_path / "two.jsonl")
    assert not many.failures and many.worker_cpu_s > 0 and many.startup_s is not None
    assert sorted(map(_key, episodes)) == sorted(map(_key, single))
    assert sorted(map(_key, load_episodes([tmp_path / "two.jsonl"]))) == sorted(map(_key, single))
    ids = _ids(tmp_path / "two.jsonl")
    assert len(ids) == len(set(ids)) == 15


def test_resume_skips_written_episodes_and_mixes_with_single_process_files(tmp_path, mock_domain):
    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent(), trials=1).run(out=out)  # 5 episodes, by the one-process collector
    first = out.read_bytes()
    progress = []
    collector = ProcessCollector(
        "mock", make_oracle, processes=2, trials=3, concurrency=3, collect_results=False, on_progress=progress.append
    )
    assert collector.run(out=out) == []  # collect_results off: nothing parsed, nothing returned
    assert out.read_bytes().startswith(first) and sum(progress) == 10
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 15
    again = ProcessCollector("mock", make_oracle, processes=2, trials=3)
    assert again.run(out=out) == [] and _ids(out) == ids  # nothing left to run: no worker even starts


def test_one_worker_writes_in_job_order(tmp_path):
    out = tmp_path / "eps.jsonl"
    ProcessCollector("mock", make_oracle, processes=1, trials=2, concurrency=1).run(out=out)
    tasks = [t.split("/")[1] for t in _ids(out)]
    trials = [int(t.split("/")[2]) for t in _ids(out)]
    assert trials == sorted(trials) and tasks[:5] == tasks[5:]  # trial-major, as Collector.jobs orders them


def test_a_crashed_worker_loses_nothing_and_duplicates_nothing(tmp_path, mock_domain):
    marker = tmp_path / "crashed"
    out = tmp_path / "eps.jsonl"
    task_id = sorted(mock_domain.tasks)[2]
    factory = functools.partial(CrashOnceOracle, str(marker), task_id)
    collector = ProcessCollector("mock", factory, processes=2, trials=4, concurrency=4)
    episodes = collector.run(out=out)
    assert marker.exists(), "the worker never crashed: the test tests nothing"
    assert not collector.failures
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 20 and len(episodes) == 20
    assert all(ep.reward == 1.0 for ep in load_episodes([out]))


def test_an_episode_that_always_kills_its_worker_is_given_up(tmp_path, mock_domain, parent_marker):
    task_id = sorted(mock_domain.tasks)[0]
    out = tmp_path / "eps.jsonl"
    collector = ProcessCollector(
        "mock", functools.partial(AlwaysCrashOracle, task_id), processes=2, trials=1, concurrency=2, max_restarts=1
    )
    collector.run(out=out)
    lost = [f for f in collector.failures if f.startswith(f"mock/{task_id}/0:")]
    assert lost and "died 2 times" in lost[0]
    ids = _ids(out)
    assert f"mock/{task_id}/0" not in ids and len(ids) == len(set(ids)) >= 2
    # a resume runs what is missing again (and gives it up again), leaving the written lines alone
    before = out.read_bytes()
    ProcessCollector("mock", functools.partial(AlwaysCrashOracle, task_id), processes=1, trials=1, max_restarts=0).run(
        out=out
    )
    assert out.read_bytes().startswith(before)
    assert len(_ids(out)) == len(set(_ids(out)))


def test_a_worker_that_cannot_start_says_why(tmp_path, parent_marker):
    with pytest.raises(CollectError, match="no model configured in the worker"):
        ProcessCollector("mock", broken_factory, processes=2, trials=1).run(out=tmp_path / "eps.jsonl")


def test_settings_checked(tmp_path):
    with pytest.raises(ValueError):
        ProcessCollector("mock", make_oracle, processes=0)


@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
def test_cli_processes_and_transport(tmp_path, transport):
    from apigen_envs.cli import main
    from apigen_envs.fake_server import ScriptedServer

    out = tmp_path / "eps.jsonl"
    with ScriptedServer(["All set, goodbye."], cycle=True) as server:
        argv = ["run", "--domain", "mock", "--agent", "tool_calling", "--user", "scripted", "--model", "m"]
        argv += ["--base-url", server.base_url, "--trials", "2", "--out", str(out), "--quiet", "--no-baseline"]
        assert main([*argv, "--processes", "2", "--transport", transport]) == 0
        assert server.request_count == 4  # the mock test split: 2 tasks x 2 trials, one LLM call each
        ids = _ids(out)
        assert len(ids) == len(set(ids)) == 4
        assert {ep.agent_config["transport"] for ep in load_episodes([out])} == {transport}
        assert main([*argv, "--processes", "1", "--transport", transport]) == 0  # resumes: nothing left to run
        assert server.request_count == 4 and _ids(out) == ids
    assert main(["run", "--domain", "mock", "--agent", "oracle", "--processes", "0"]) == 2


def test_gc_is_tuned_during_a_run_and_restored_after(mock_domain):
    import gc

    from apigen_envs.collect import GC_THRESHOLDS

    seen = []

    class Recorder(OracleAgent):
        def act(self, conversation, context):  # type: ignore[no-untyped-def]
            seen.append(gc.get_threshold())
            return super().act(conversation, context)

    before = gc.get_threshold()
    Collector(mock_domain, Recorder(), trials=1).run()
    assert seen and set(seen) == {GC_THRESHOLDS}
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    seen.clear()
    Collector(mock_domain, Recorder(), trials=1, tune_gc=False).run()
    assert set(seen) == {before}


def test_a_failing_parent_stops_the_workers_and_a_resume_finishes(tmp_path):
    out = tmp_path / "eps.jsonl"

    def explode(count):
        raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the run

    collector = ProcessCollector("mock", make_oracle, processes=2, trials=4, concurrency=2, on_progress=explode)
    with pytest.raises(KeyboardInterrupt):
        collector.run(out=out)
    written = _ids(out)  # whole lines only
    assert 1 <= len(written) < 20 and len(written) == len(set(written))
    ProcessCollector("mock", make_oracle, processes=2, trials=4, concurrency=2).run(out=out)
    ids = _ids(out)
    assert ids[: len(written)] == written and len(ids) == len(set(ids)) == 20
