"""The issue-18 soak: 10,000 episodes under mixed faults, SIGKILLed at random points and resumed; 0 lost, 0 twice.

Faults (see ``tests/helpers/soak_collect.py``): model-server faults (timeouts, 429, 503, dropped connections,
malformed bodies, and servers that never recover), model mistakes (bad JSON, unknown tools, wrong types,
20k-character replies, empty replies, arguments nested 5,000 deep), lone surrogates in model text, tool
arguments, tool names, user lines and user traces, and SIGKILLs of the collector. Run it alone with
``python -m pytest -q -p no:cacheprovider tests/test_soak.py -s`` to see its figures.
"""

from __future__ import annotations

import collections
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apigen_envs.episodes_io import corrupt_path, load_episodes

REPO = Path(__file__).resolve().parents[1]
TASKS = 5  # the mock domain
TRIALS = 2000


class LineCounter:
    """Counts the lines of a growing file, reading only what was appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def __call__(self) -> int:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                if size < self.offset:  # a resume cut a torn tail: count again from the start
                    self.offset, self.lines = 0, 0
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return 0
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        return self.lines


@pytest.mark.slow
def test_soak_ten_thousand_episodes_mixed_faults_and_sigkills(tmp_path):
    out = tmp_path / "episodes.jsonl"
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "soak_collect.py"), str(out), str(TRIALS)]
    rng = random.Random(18)
    started = time.perf_counter()
    kills = 0
    lines = LineCounter(out)
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = lines() + rng.randint(200, 2500)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and lines() < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.02))  # mid-write is fair game
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    out.read_bytes().decode("utf-8")  # strict: nothing unencodable was written
    episodes = load_episodes([out])  # every line is a valid Episode
    ids = [ep.episode_id for ep in episodes]
    expected = {f"mock/{task}/{trial}" for task in _task_ids() for trial in range(TRIALS)}
    terminations = collections.Counter(ep.termination for ep in episodes)
    figures = {
        "episodes": len(ids),
        "lost": len(expected - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "sigkills": kills,
        "set_aside_tails": corrupt_path(out).read_bytes().count(b"\n") if corrupt_path(out).exists() else 0,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "terminations": dict(terminations),
        "last_run": last,
    }
    print("\nsoak figures:", json.dumps(figures))
    assert kills >= 3  # the run really was killed, repeatedly
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and len(ids) == TASKS * TRIALS
    assert last["failures"] == []
    assert terminations["agent_error"] > 0 and terminations["user_stop"] > 0  # the faults really happened
    assert any("\ufffd" in m.content for ep in episodes[:500] for m in ep.messages if isinstance(m.content, str))


def _task_ids() -> list[str]:
    from apigen_envs import load_domain

    return list(load_domain("mock").tasks)
