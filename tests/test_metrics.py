from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apigen_envs.episode import Episode
from apigen_envs.metrics import (
    bootstrap_ci,
    format_table,
    pass_at_k_task,
    pass_hat_k_task,
    summarize,
    summarize_groups,
    task_stats,
)


def ep(task, trial, reward, termination="user_stop", agent="a", **kw):
    return Episode(
        episode_id=f"d/{task}/{trial}",
        domain="d",
        task_id=task,
        trial=trial,
        reward=reward,
        termination=termination,
        agent=agent,
        **kw,
    )


@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_hat_k_matches_brute_force(args):
    n, c, k = args
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(combinations(outcomes, k))
    assert pass_hat_k_task(n, c, k) == pytest.approx(sum(all(s) for s in subsets) / len(subsets))
    assert pass_at_k_task(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_invalid_counts_rejected():
    with pytest.raises(ValueError):
        pass_hat_k_task(3, 4, 1)
    with pytest.raises(ValueError):
        pass_hat_k_task(3, 1, 4)


def test_summary_leaves_out_infra_failures_and_averages_tasks():
    episodes = [
        ep("t1", 0, 1.0),
        ep("t1", 1, 1.0),
        ep("t1", 2, 0.0),
        ep("t1", 3, 1.0),
        ep("t2", 0, 0.0),
        ep("t2", 1, 1.0),
        ep("t2", 2, 0.0),
        ep("t2", 3, 0.0),
        ep("t2", 4, 0.0, termination="agent_error"),
    ]
    s = summarize(episodes)
    assert s.episodes == 8 and s.infra_failures == 1
    # t1: c=3/n=4, t2: c=1/n=4
    assert s.pass_hat_k[1] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert s.pass_hat_k[2] == pytest.approx((3 / 6 + 0) / 2)
    assert s.pass_hat_k[4] == pytest.approx(0.0)
    assert s.pass_at_k[2] == pytest.approx((1.0 + (1 - 3 / 6)) / 2)
    low, high = s.pass_hat_k_ci[1]
    assert 0.0 <= low <= s.pass_hat_k[1] <= high <= 1.0
    assert s.terminations == {"user_stop": 8, "agent_error": 1}
    assert [r.task_id for r in task_stats(episodes)] == ["t1", "t2"]


def test_groups_cost_and_table():
    episodes = [ep("t", 0, 1.0, agent="x", agent_config={"model": "m"}), ep("t", 0, 0.0, agent="noop")]
    episodes[0].agent_usage = episodes[0].agent_usage.model_copy(update={"prompt_tokens": 1_000_000})
    groups = summarize_groups(episodes, price_per_mtok=(2.0, 8.0))
    assert set(groups) == {"x:m", "noop"}
    assert groups["x:m"].cost_usd == pytest.approx(2.0) and groups["noop"].pass_hat_k[1] == 0.0
    table = format_table(list(groups.values()))
    assert "pass^1" in table and "x:m" in table and "1.000" in table


def test_bootstrap_is_reproducible_and_none_without_data():
    rows = task_stats([ep(f"t{i}", 0, float(i % 2)) for i in range(20)])
    assert bootstrap_ci(rows, 1) == bootstrap_ci(rows, 1)
    assert bootstrap_ci(rows, 2) is None
