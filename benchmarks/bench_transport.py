"""The collector through a real HTTP client, per transport: episodes/s as a fraction of C/L, and CPU per call.

The scripted OpenAI-compatible server (``python -m apigen_envs.fake_server``) runs in a process of its own
and answers every chat request after L = 50 ms. Each mock episode costs exactly one agent LLM call (the
scripted user stops after the agent's first reply), so with concurrency C the ideal is C / L episodes/s.

Measured per transport (``aiohttp``, ``httpx``, ``openai``), interleaved within one run:

* ``collect``: the whole collector (env, agent, HTTP client) in one process, C = 64 / 256 / 512;
* ``processes``: the multi-process collector (one event loop per worker process, one JSONL writer);
* ``calls``: the LLM client alone (``acomplete`` with C in flight): client CPU per call.

Every figure carries ``os.getloadavg()`` at its start: the machine may be shared.

Run the table (what the README quotes)::

    python benchmarks/bench_transport.py --rounds 3

or through pytest-benchmark::

    pytest benchmarks/bench_transport.py --benchmark-only -o addopts=""
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apigen_envs import load_domain
from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector, ProcessCollector
from apigen_envs.http_transport import TRANSPORTS
from apigen_envs.llm import LLMConfig, OpenAIClient

LATENCY_S = 0.05
CONCURRENCY = (64, 256, 512)
TARGETS = {64: 0.8, 256: 0.5, 512: 0.3}


@contextlib.contextmanager
def server_process(latency_s: float = LATENCY_S) -> Iterator[tuple[str, int]]:
    """The scripted server in its own process: yields (base URL, pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apigen_envs.fake_server", "--latency", str(latency_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the scripted model server did not start"
        yield url, proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process (the multi-process collector's workers report their own)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def client_config(url: str, transport: str) -> LLMConfig:
    """The agent's LLM settings for the benchmark (no retries: a failure must show)."""
    return LLMConfig(model="scripted", base_url=url, max_retries=0, timeout_s=120, transport=transport)  # type: ignore[arg-type]


def agent_factory(url: str, transport: str) -> ToolCallingAgent:
    """A picklable factory of the benchmark's agent (used by the worker processes)."""
    return ToolCallingAgent(OpenAIClient(client_config(url, transport)))


def _figures(kind: str, transport: str, concurrency: int, episodes: int, wall: float, cpu: float, srv: float, load):
    rate = episodes / wall
    return {
        "kind": kind,
        "transport": transport,
        "C": concurrency,
        "episodes": episodes,
        "per_s": round(rate, 1),
        "fraction": round(rate / (concurrency / LATENCY_S), 3),
        "client_cpu_us": round(cpu / episodes * 1e6, 1),
        "server_cpu_us": round(srv / episodes * 1e6, 1),
        "load": load,
    }


def measure_collect(url: str, pid: int, transport: str, concurrency: int, processes: int = 1, waves: int = 8) -> dict:
    """One collector run of ``waves * C`` episodes; returns its figures."""
    domain = load_domain("mock")
    trials = max(1, concurrency * waves // len(domain.tasks))
    episodes = trials * len(domain.tasks)
    load = tuple(round(x, 2) for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "episodes.jsonl"
        if processes > 1:
            collector: ProcessCollector | Collector = ProcessCollector(
                "mock",
                _AgentFactory(url, transport),
                processes=processes,
                trials=trials,
                concurrency=concurrency,
                collect_results=False,
            )
        else:
            collector = Collector(domain, agent_factory(url, transport), trials=trials, concurrency=concurrency)
        cpu0, srv0, t0 = own_cpu_s(), process_cpu_s(pid), time.perf_counter()
        collector.run(out=out)
        wall = time.perf_counter() - t0
        cpu, srv = own_cpu_s() - cpu0, process_cpu_s(pid) - srv0
        if isinstance(collector, ProcessCollector):
            cpu += collector.worker_cpu_s  # the workers (children of the fork server, not of this process)
        written = sum(1 for _ in out.open("rb"))
    assert written == episodes and not collector.failures, collector.failures[:3]
    kind = "collect" if processes == 1 else f"processes={processes}"
    figures = _figures(kind, transport, concurrency, episodes, wall, cpu, srv, load)
    if isinstance(collector, ProcessCollector):
        figures["startup_s"] = collector.startup_s  # worker start-up, included in the wall time above
    return figures


def measure_calls(url: str, pid: int, transport: str, concurrency: int = 64, calls: int = 2000) -> dict:
    """The LLM client alone: ``calls`` acomplete calls with ``concurrency`` in flight."""
    client = OpenAIClient(client_config(url, transport))
    messages = [{"role": "system", "content": "You are a helpful agent."}, {"role": "user", "content": "Hello."}]
    load = tuple(round(x, 2) for x in os.getloadavg())

    async def run() -> None:
        remaining = iter(range(calls))

        async def worker() -> None:
            for _ in remaining:
                await client.acomplete(messages)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await client.aclose()

    cpu0, srv0, t0 = own_cpu_s(), process_cpu_s(pid), time.perf_counter()
    asyncio.run(run())
    wall = time.perf_counter() - t0
    return _figures("calls", transport, concurrency, calls, wall, own_cpu_s() - cpu0, process_cpu_s(pid) - srv0, load)


class _AgentFactory:
    """Picklable ``() -> agent`` for the worker processes."""

    def __init__(self, url: str, transport: str) -> None:
        self.url, self.transport = url, transport

    def __call__(self) -> ToolCallingAgent:
        return agent_factory(self.url, self.transport)


# ---------------------------------------------------------------------------------------------- pytest
@pytest.fixture(scope="module")
def server():
    with server_process() as started:
        yield started


def _record(benchmark, figures: dict) -> None:
    benchmark.extra_info.update(figures)
    print(f"\n{figures}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("concurrency", CONCURRENCY)
def test_collect(benchmark, server, concurrency, transport):
    result: dict = {}
    benchmark.pedantic(lambda: result.update(measure_collect(*server, transport, concurrency)), rounds=1)
    _record(benchmark, result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_processes(benchmark, server, transport):
    result: dict = {}
    benchmark.pedantic(lambda: result.update(measure_collect(*server, transport, 512, processes=2)), rounds=1)
    _record(benchmark, result)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_cpu_per_call(benchmark, server, transport):
    result: dict = {}
    benchmark.pedantic(lambda: result.update(measure_calls(*server, transport)), rounds=1)
    _record(benchmark, result)


# ---------------------------------------------------------------------------------------------- table
def main(argv: list[str] | None = None) -> int:
    """Run every measurement ``--rounds`` times, transports interleaved, and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--processes", type=int, default=2, help="worker processes for the multi-process rows")
    parser.add_argument("--skip", default="", help="comma-separated kinds to skip: collect, processes, calls")
    parser.add_argument(
        "--waves", type=int, default=8, help="episodes per run = waves x C (more waves: less start-up per episode)"
    )
    args = parser.parse_args(argv)
    transports = args.transports.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    rows: dict[tuple[str, str, int], list[dict]] = {}
    with server_process() as (url, pid):
        for round_number in range(args.rounds):
            for transport in transports:  # innermost loops interleave the transports
                plan = []
                if "calls" not in skip:
                    plan.append(("calls", 64, lambda t=transport: measure_calls(url, pid, t)))
                if "collect" not in skip:
                    plan += [
                        ("collect", c, lambda t=transport, c=c: measure_collect(url, pid, t, c, waves=args.waves))
                        for c in levels
                    ]
                if "processes" not in skip and args.processes > 1:
                    plan.append(
                        (
                            f"processes={args.processes}",
                            512,
                            lambda t=transport: measure_collect(
                                url, pid, t, 512, processes=args.processes, waves=args.waves
                            ),
                        )
                    )
                for kind, c, run in plan:
                    figures = run()
                    rows.setdefault((kind, transport, c), []).append(figures)
                    print(f"round {round_number + 1}: {figures}", file=sys.stderr, flush=True)
    print(
        f"{'kind':<12} {'transport':<9} {'C':>4} {'ep/s':>8} {'% of C/L':>9} {'client us':>10} {'server us':>10}  load"
    )
    for (kind, transport, c), runs in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        runs = sorted(runs, key=lambda r: r["per_s"])
        mid = runs[len(runs) // 2]
        loads = ", ".join(f"{r['load'][0]:.2f}" for r in runs)
        print(
            f"{kind:<12} {transport:<9} {c:>4} {mid['per_s']:>8.1f} {mid['fraction'] * 100:>8.1f}% "
            f"{mid['client_cpu_us']:>10.1f} {mid['server_cpu_us']:>10.1f}  [{loads}]"
        )
    print(
        f"(median of {args.rounds} rounds, {args.waves} waves of C episodes per run; load = 1-minute load average "
        "at the start of each round's run)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
