"""Whole collections through the real openai client while the model server misbehaves.

Each fault hits every third request. Transient faults must be retried so every episode completes; when the
server never recovers, every episode is still recorded (as an infrastructure failure), the run finishes, and
the JSONL holds exactly one line per episode.
"""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector
from apigen_envs.episodes_io import load_episodes
from apigen_envs.fake_server import Fault, ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.metrics import summarize

GOODBYE = "All set, goodbye."

TRANSIENT = {
    "timeout": lambda: Fault.delay(2.0, then=GOODBYE),
    "rate_limit": lambda: Fault.rate_limit(retry_after="0.05"),
    "server_error": lambda: Fault.server_error(503),
    "dropped_connection": lambda: Fault.drop(),
    "malformed_body": lambda: Fault.malformed(),
    "empty_choices": lambda: Fault.empty_choices(),
}

MODEL_MISTAKES = {
    "bad_json_arguments": {
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_account_details", "arguments": '{"account_'}}
        ],
    },
    "unknown_tool": {
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}],
    },
    "wrong_types": {
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "transfer_funds", "arguments": '{"amount": "lots"}'}}
        ],
    },
    "over_long_reply": "x" * 200_000,
    "no_content": {"content": None},
}


def faulty_handler(fault):
    counter = itertools.count()
    lock = threading.Lock()

    def handler(request):
        with lock:
            n = next(counter)
        return fault() if n % 3 == 0 else GOODBYE

    return handler


def client_for(server, **overrides):
    config = dict(
        model="scripted",
        base_url=server.base_url,
        timeout_s=0.5,
        max_retries=4,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        retry_after_max_s=0.2,
    )
    config.update(overrides)
    return OpenAIClient(LLMConfig(**config))


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_transient_faults_are_retried_and_every_episode_completes(fault, mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    with ScriptedServer(handler=faulty_handler(TRANSIENT[fault])) as server:
        agent = ToolCallingAgent(client_for(server))
        episodes = Collector(mock_domain, agent, trials=2, concurrency=8).run(out=out)
        requests = server.request_count
    assert len(episodes) == 10
    assert {ep.termination for ep in episodes} == {"user_stop"}, [ep.error for ep in episodes if ep.error]
    assert requests > 10  # the faulted requests were retried
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and len({json.loads(line)["episode_id"] for line in lines}) == 10


@pytest.mark.parametrize("mistake", sorted(MODEL_MISTAKES))
def test_malformed_model_output_never_crashes_the_run(mistake, mock_domain, tmp_path):
    reply = MODEL_MISTAKES[mistake]
    counter = itertools.count()

    def handler(request):
        return reply if next(counter) % 2 == 0 else GOODBYE

    with ScriptedServer(handler=handler) as server:
        episodes = Collector(mock_domain, ToolCallingAgent(client_for(server)), trials=1, concurrency=1).run(
            out=tmp_path / "e.jsonl"
        )
    assert len(episodes) == 5 and len(load_episodes([tmp_path / "e.jsonl"])) == 5
    assert not any(ep.is_infra_failure for ep in episodes)
    if isinstance(reply, dict) and reply.get("tool_calls"):
        tool_results = [m for ep in episodes for m in ep.messages if m.role == "tool"]
        assert tool_results and all(m.error for m in tool_results)
    assert all(ep.reward == 0.0 for ep in episodes)


def test_server_that_never_recovers_gives_recorded_failures_not_a_crash(mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    with ScriptedServer(handler=lambda request: Fault.server_error(500)) as server:
        episodes = Collector(
            mock_domain, ToolCallingAgent(client_for(server, max_retries=2)), trials=2, concurrency=4
        ).run(out=out)
    assert len(episodes) == 10 and len(load_episodes([out])) == 10
    assert {ep.termination for ep in episodes} == {"agent_error"}
    assert all("500" in ep.error and "attempt" in ep.error for ep in episodes)
    summary = summarize(episodes)
    assert summary.infra_failures == 10 and summary.episodes == 0


def test_dead_server_port_is_recorded_per_episode(mock_domain, tmp_path):
    client = OpenAIClient(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_base_s=0.01))
    episodes = Collector(mock_domain, ToolCallingAgent(client), trials=1).run(out=tmp_path / "e.jsonl")
    assert len(episodes) == 5 and {ep.termination for ep in episodes} == {"agent_error"}


def test_api_key_never_reaches_episodes_or_reports(mock_domain, tmp_path, monkeypatch):
    from apigen_envs.metrics import summarize_groups
    from apigen_envs.report import write_report

    secret = "sk-test-SECRET-123456"
    monkeypatch.setenv("APIGEN_TEST_KEY", secret)
    with ScriptedServer([GOODBYE], cycle=True) as server:
        config = LLMConfig(
            model="scripted",
            base_url=server.base_url.replace("http://", "http://user:pw@"),
            api_key_env="APIGEN_TEST_KEY",
        )
        agent = ToolCallingAgent(OpenAIClient(config))
        out = tmp_path / "eps.jsonl"
        episodes = Collector(mock_domain, agent, agent_config=config.public(), trials=1).run(out=out)
    assert len(episodes) == 5 and all(ep.termination == "user_stop" for ep in episodes)
    written = write_report(episodes, list(summarize_groups(episodes).values()), tmp_path / "rep")
    for path in [out, *written.values()]:
        data = path.read_bytes()
        assert secret.encode() not in data and b"user:pw" not in data, path
