from __future__ import annotations

import functools
import json

import pytest

ray = pytest.importorskip("ray")

import helpers.ray_agents  # noqa: E402
from helpers.ray_agents import CrashOnceOracle, make_oracle  # noqa: E402

from apigen_envs.episodes_io import load_episodes  # noqa: E402
from apigen_envs.ray_backend import RayCollector  # noqa: E402

# the test helpers are not installed on the workers' path: ship them by value
ray.cloudpickle.register_pickle_by_value(helpers.ray_agents)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_collects_every_episode_once_and_resumes(ray_local, tmp_path):
    out = tmp_path / "eps.jsonl"
    collector = RayCollector("mock", make_oracle, workers=2, trials=4, chunk_size=3)
    episodes = collector.run(out=out)
    assert len(episodes) == 20 and all(ep.reward == 1.0 for ep in episodes)
    ids = [json.loads(line)["episode_id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 20
    # resuming a finished run does nothing, and a larger run adds only the new trials
    assert RayCollector("mock", make_oracle, workers=2, trials=4).run(out=out) == []
    more = RayCollector("mock", make_oracle, workers=2, trials=6).run(out=out)
    assert len(more) == 10 and len(load_episodes([out])) == 30


def test_killed_worker_loses_no_episode(ray_local, tmp_path):
    marker = tmp_path / "crashed"
    factory = functools.partial(CrashOnceOracle, str(marker), "nickname")
    out = tmp_path / "eps.jsonl"
    episodes = RayCollector("mock", factory, workers=2, trials=3, chunk_size=2).run(out=out)
    assert marker.exists()  # a worker really died mid-run
    ids = sorted(json.loads(line)["episode_id"] for line in out.read_text().splitlines())
    assert len(ids) == len(set(ids)) == 15
    assert len(episodes) == 15 and all(ep.reward == 1.0 for ep in episodes)


def test_cli_run_with_ray_backend(ray_local, tmp_path, capsys):
    from apigen_envs.cli import main

    out = tmp_path / "run" / "episodes.jsonl"
    argv = ["run", "--domain", "mock", "--agent", "oracle", "--user", "scripted", "--trials", "2"]
    assert main([*argv, "--backend", "ray", "--workers", "2", "--out", str(out), "--quiet"]) == 0
    assert len(load_episodes([out])) == 4  # mock's test split: 2 tasks x 2 trials
    assert "oracle" in capsys.readouterr().out
