"""Scale: per-env memory with 10,000 live envs on one snapshot, and Ray throughput with 1 and 2 workers.

Run: pytest benchmarks/bench_scale.py --benchmark-only
"""

from __future__ import annotations

import functools
import sys

import pytest

from apigen_envs import load_domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import tool_call
from benchmarks.memory import bytes_per_item

LATENCY_S = 0.05


@pytest.mark.parametrize("domain_name", ["retail", "airline"])
def test_memory_10k_live_envs(benchmark, domain_name):
    domain = load_domain(domain_name)
    task = domain.task_list()[0]
    read = "get_user_details"
    action = tool_call(read, {"user_id": task.user_id})

    def make():
        env = ToolUseEnv(domain)
        env.reset(options={"task_id": task.id})
        env.step(action)
        return env

    per_env = bytes_per_item(make, 10_000)
    benchmark.extra_info.update(bytes_per_env=round(per_env), live_envs=10_000, db=domain.snapshot.size())
    benchmark.pedantic(make, rounds=20)


def make_agent(base_url: str):
    """Agent factory for Ray workers (module-level so it pickles)."""
    from apigen_envs.baselines.tool_calling import ToolCallingAgent
    from apigen_envs.llm import LLMConfig, OpenAIClient

    return ToolCallingAgent(OpenAIClient(LLMConfig(model="scripted", base_url=base_url, max_retries=2)))


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_throughput(benchmark, workers):
    ray = pytest.importorskip("ray")
    from apigen_envs.fake_server import ScriptedServer
    from apigen_envs.ray_backend import RayCollector

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    trials = 60  # 5 mock tasks x 60 = 300 episodes, one LLM call each
    with ScriptedServer(["All set, goodbye."], cycle=True, latency_s=LATENCY_S) as server:
        factory = functools.partial(make_agent, server.base_url)

        def run():
            eps = RayCollector("mock", factory, workers=workers, trials=trials, concurrency=64, chunk_size=75).run()
            assert len(eps) == 300

        benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info.update(workers=workers, episodes=300, episodes_per_s=round(300 / benchmark.stats["median"], 1))
