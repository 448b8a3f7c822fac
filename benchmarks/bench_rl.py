"""Throughput of the async batch API: 256 mock envs, an instantaneous scripted batched policy.

The policy (``OracleBatchPolicy``) replays gold actions, so every episode passes and the numbers measure
the batch machinery, the envs and the verifier alone. Episodes/s and env steps/s are reported from the
median round. A group-rollout figure (GRPO groups through ``rollout_groups``) is measured too.

Run: pytest benchmarks/bench_rl.py --benchmark-only
     python benchmarks/bench_rl.py            # plain medians, no pytest
"""

from __future__ import annotations

import statistics
import time

import pytest

from apigen_envs import load_domain
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.rl import AsyncEnvBatch, BatchJob, OracleBatchPolicy, rollout_groups

N_ENVS = 256
EPISODES_PER_ENV = 4


def _jobs(domain, n: int) -> list[BatchJob]:
    tasks = list(domain.tasks)
    return [BatchJob(tasks[i % len(tasks)], seed=i, trial=i // len(tasks)) for i in range(n)]


def run_batch(domain, n_envs: int = N_ENVS, episodes_per_env: int = EPISODES_PER_ENV) -> tuple[int, int, float]:
    """One timed run: (episodes, env steps, seconds)."""
    batch = AsyncEnvBatch.from_domain(domain, n_envs)
    policy = OracleBatchPolicy(domain)
    jobs = _jobs(domain, n_envs * episodes_per_env)
    start = time.perf_counter()
    episodes = batch.run(policy, jobs)
    elapsed = time.perf_counter() - start
    assert len(episodes) == len(jobs) and all(ep.reward == 1.0 for ep in episodes)
    return len(episodes), sum(ep.num_turns for ep in episodes), elapsed


@pytest.fixture(scope="module")
def domain():
    return load_domain("mock")


def test_async_batch_throughput(benchmark, domain):
    counts: list[tuple[int, int]] = []

    def run():
        n, steps, _ = run_batch(domain)
        counts.append((n, steps))

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    episodes, steps = counts[-1]
    median = benchmark.stats["median"]
    benchmark.extra_info.update(
        envs=N_ENVS, episodes=episodes, episodes_per_s=episodes / median, steps_per_s=steps / median
    )


def test_group_rollout_throughput(benchmark, domain):
    group_size = 8
    tasks = list(domain.tasks)

    def run():
        batch = rollout_groups(domain, tasks, OracleAgent(), group_size, concurrency=N_ENVS)
        assert all(g.rewards == (1.0,) * group_size for g in batch.groups)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(episodes_per_s=len(tasks) * group_size / benchmark.stats["median"])


def main(rounds: int = 7) -> None:
    """Print median episodes/s and steps/s of the batch API."""
    domain = load_domain("mock")
    run_batch(domain)  # warm-up: gold caches, imports
    results = [run_batch(domain) for _ in range(rounds)]
    median = statistics.median(r[2] for r in results)
    episodes, steps = results[0][0], results[0][1]
    print(
        f"AsyncEnvBatch, {N_ENVS} mock envs, {episodes} episodes/round ({steps} steps), {rounds} rounds: "
        f"median {median * 1000:.1f} ms -> {episodes / median:,.0f} episodes/s, {steps / median:,.0f} steps/s"
    )


if __name__ == "__main__":
    main()
