"""Collector throughput against a fixed-latency LLM: episodes/s as a fraction of the ideal C/L.

Each mock episode costs exactly one agent LLM call (the scripted user stops after the agent's first reply), so
with latency L and concurrency C the ideal is C / L episodes per second. Two agents are measured:
- ``http``: ToolCallingAgent over the real ``openai`` client against ``ScriptedServer`` (the whole stack; the
  other transports, aiohttp by default, are measured side by side in ``bench_transport.py``);
- ``sleep``: an agent that awaits ``asyncio.sleep(L)`` (the collector and env alone, no HTTP client).

Run: pytest benchmarks/bench_collect.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from apigen_envs import load_domain
from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.messages import AssistantMessage

LATENCY_S = 0.05


class SleepAgent:
    name = "sleep"

    async def aact(self, conversation, context):
        await asyncio.sleep(LATENCY_S)
        return AssistantMessage(content="All set, goodbye.")

    def act(self, conversation, context):
        raise NotImplementedError


def _measure(benchmark, agent, concurrency: int) -> None:
    domain = load_domain("mock")
    trials = max(1, concurrency * 4 // len(domain.tasks))
    episodes = trials * len(domain.tasks)

    def run():
        eps = Collector(domain, agent, trials=trials, concurrency=concurrency).run()
        assert len(eps) == episodes and all(e.termination == "user_stop" for e in eps)

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    rate = episodes / benchmark.stats["median"]
    ideal = concurrency / LATENCY_S
    benchmark.extra_info.update(
        episodes=episodes, episodes_per_s=round(rate, 1), ideal_per_s=ideal, fraction_of_ideal=round(rate / ideal, 3)
    )


@pytest.mark.parametrize("concurrency", [64, 256, 512])
def test_collector_sleep_agent(benchmark, concurrency):
    _measure(benchmark, SleepAgent(), concurrency)


SERVER_SCRIPT = """
import sys
from apigen_envs.fake_server import ScriptedServer
with ScriptedServer(["All set, goodbye."], cycle=True, latency_s=float(sys.argv[1])) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def server_url():
    # The model server runs in its own process, as a real one would, so it does not share the GIL.
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(LATENCY_S)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), "the scripted model server did not start"
    yield url
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.parametrize("concurrency", [64, 256, 512])
def test_collector_openai_client(benchmark, concurrency, server_url):
    config = LLMConfig(model="scripted", base_url=server_url, max_retries=0, timeout_s=120, transport="openai")
    client = OpenAIClient(config)
    _measure(benchmark, ToolCallingAgent(client), concurrency)
