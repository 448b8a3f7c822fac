"""Faults, kills and load: the run keeps going and nothing written is lost."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.collect import Collector
from apigen_envs.episodes_io import load_episodes

REPO = Path(__file__).resolve().parents[1]


def test_sigkill_at_random_points_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "episodes.jsonl"
    trials = 120  # 5 tasks x 120 trials = 600 episodes, several seconds of work
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "slow_collect.py"), str(out), str(trials)]
    rng = random.Random(1234)
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # kill once the run has written some more lines, plus a random extra delay (mid-write is fair game)
        before = out.read_text().count("\n") if out.exists() else 0
        target = before + rng.randint(1, 60)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_text().count("\n") >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        # every complete line written so far parses (a torn tail is allowed and repaired on resume)
        if out.exists():
            load_episodes([out])
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = out.read_text().splitlines()
    ids = [json.loads(line)["episode_id"] for line in lines]
    assert kills >= 4  # the run was really killed mid-way, repeatedly
    assert len(ids) == 5 * trials and len(set(ids)) == 5 * trials
    assert all(ep.reward == 1.0 for ep in load_episodes([out]))


@pytest.mark.slow
def test_soak_thousands_of_episodes_bounded_memory(mock_domain):
    class SleepyNoop(NoopAgent):
        async def aact(self, conversation, context):
            await asyncio.sleep(0.001)
            return self.act(conversation, context)

    count = {"n": 0}

    def on_episode(ep):
        count["n"] += 1

    tracemalloc.start()
    collector = Collector(mock_domain, SleepyNoop(), trials=600, concurrency=512, on_episode=on_episode)
    # stream episodes to disk rather than keep them: memory must not grow with the number of episodes
    episodes = asyncio.run(collector.arun(out=None))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(episodes) == count["n"] == 3000
    assert all(ep.termination == "user_stop" for ep in episodes)
    # 3,000 finished Episode records are kept in the returned list; the peak must stay well below 100 MB
    assert peak < 100 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
