"""Metrics over Episodes: pass^k (unbiased), pass@k, average reward, per-task tables, bootstrap CIs.

pass^k (tau-bench's consistency metric) is, per task with n valid trials of which c passed,
C(c, k) / C(n, k): the chance that k trials drawn without replacement all pass; it is averaged over tasks
that have at least k valid trials. pass@k is 1 - C(n - c, k) / C(n, k). Episodes that ended for
infrastructure reasons are left out of every metric and counted separately.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import comb

import numpy as np

from apigen_envs.episode import Episode


def pass_hat_k_task(n: int, c: int, k: int) -> float:
    """Unbiased pass^k for one task: C(c, k) / C(n, k).

    Args:
        n: Valid trials.
        c: Passed trials.
        k: k.

    Returns:
        The estimate in [0, 1].
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return comb(c, k) / comb(n, k)


def pass_at_k_task(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task: 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return 1.0 - comb(n - c, k) / comb(n, k)


@dataclass(frozen=True)
class TaskStats:
    """Per-task counts.

    Attributes:
        task_id: Task id.
        n: Valid trials.
        c: Passed trials.
        infra_failures: Episodes left out for infrastructure reasons.
        mean_reward: Mean reward over valid trials.
    """

    task_id: str
    n: int
    c: int
    infra_failures: int
    mean_reward: float


@dataclass
class Summary:
    """Metrics of one group of episodes (one agent / run).

    Attributes:
        label: Group label (agent name and model).
        episodes: Valid episodes counted.
        infra_failures: Episodes left out.
        tasks: Per-task stats.
        pass_hat_k: k -> pass^k.
        pass_at_k: k -> pass@k.
        pass_hat_k_ci: k -> (low, high) 95% bootstrap interval over tasks.
        avg_reward: Mean reward of valid episodes.
        avg_turns: Mean agent steps.
        tokens: Total prompt and completion tokens (agent + user).
        cost_usd: Estimated cost when prices were given.
        terminations: Termination -> count.
        semantics: The semantics profiles the episodes followed (one, unless files of different runs were mixed).
    """

    label: str
    episodes: int = 0
    infra_failures: int = 0
    tasks: list[TaskStats] = field(default_factory=list)
    pass_hat_k: dict[int, float] = field(default_factory=dict)
    pass_at_k: dict[int, float] = field(default_factory=dict)
    pass_hat_k_ci: dict[int, tuple[float, float]] = field(default_factory=dict)
    avg_reward: float = 0.0
    avg_turns: float = 0.0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    terminations: dict[str, int] = field(default_factory=dict)
    semantics: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return {
            "label": self.label,
            "episodes": self.episodes,
            "infra_failures": self.infra_failures,
            "avg_reward": self.avg_reward,
            "avg_turns": self.avg_turns,
            "pass_hat_k": {str(k): v for k, v in self.pass_hat_k.items()},
            "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()},
            "pass_hat_k_ci": {str(k): list(v) for k, v in self.pass_hat_k_ci.items()},
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "terminations": self.terminations,
            "semantics": self.semantics,
            "tasks": [t.__dict__ for t in self.tasks],
        }


def label_of(episode: Episode) -> str:
    """The grouping label of an episode: agent name, plus the model when recorded."""
    model = episode.agent_config.get("model")
    return f"{episode.agent}:{model}" if model else episode.agent


def task_stats(episodes: Iterable[Episode]) -> list[TaskStats]:
    """Per-task counts, sorted by task id.

    Args:
        episodes: Episodes of one group.

    Returns:
        One row per task.
    """
    valid: dict[str, list[float]] = defaultdict(list)
    infra: dict[str, int] = defaultdict(int)
    for ep in episodes:
        if ep.is_infra_failure:
            infra[ep.task_id] += 1
        else:
            valid[ep.task_id].append(ep.reward)
    rows = []
    for task_id in sorted(set(valid) | set(infra)):
        rewards = valid.get(task_id, [])
        rows.append(
            TaskStats(
                task_id=task_id,
                n=len(rewards),
                c=sum(1 for r in rewards if r >= 1.0),
                infra_failures=infra.get(task_id, 0),
                mean_reward=float(np.mean(rewards)) if rewards else 0.0,
            )
        )
    return rows


def pass_hat_k(rows: Sequence[TaskStats], k: int) -> float | None:
    """Mean per-task pass^k over tasks with at least k valid trials (None if there are none)."""
    values = [pass_hat_k_task(r.n, r.c, k) for r in rows if r.n >= k]
    return float(np.mean(values)) if values else None


def bootstrap_ci(
    rows: Sequence[TaskStats], k: int, *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of pass^k, resampling tasks with replacement.

    Args:
        rows: Per-task stats.
        k: k.
        samples: Bootstrap resamples.
        seed: RNG seed (the interval is reproducible).
        level: Coverage.

    Returns:
        (low, high), or None when no task has k valid trials.
    """
    values = np.array([pass_hat_k_task(r.n, r.c, k) for r in rows if r.n >= k])
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(
    episodes: Sequence[Episode],
    *,
    label: str = "",
    max_k: int | None = None,
    price_per_mtok: tuple[float, float] | None = None,
) -> Summary:
    """Compute every metric for one group of episodes.

    Args:
        episodes: The group's episodes.
        label: Label to report.
        max_k: Largest k (default: the smallest number of valid trials any task has, at least 1).
        price_per_mtok: (input, output) USD per million tokens, to estimate cost.

    Returns:
        The summary.
    """
    rows = task_stats(episodes)
    valid = [ep for ep in episodes if not ep.is_infra_failure]
    summary = Summary(label=label, episodes=len(valid), infra_failures=len(episodes) - len(valid), tasks=rows)
    for ep in episodes:
        summary.terminations[ep.termination] = summary.terminations.get(ep.termination, 0) + 1
    summary.semantics = sorted({ep.semantics or "unrecorded" for ep in episodes})
    if valid:
        summary.avg_reward = float(np.mean([ep.reward for ep in valid]))
        summary.avg_turns = float(np.mean([ep.num_turns for ep in valid]))
    trials = [r.n for r in rows if r.n > 0]
    top = max_k if max_k is not None else (max(trials) if trials else 0)
    for k in range(1, top + 1):
        value = pass_hat_k(rows, k)
        if value is None:
            continue
        summary.pass_hat_k[k] = value
        summary.pass_at_k[k] = float(np.mean([pass_at_k_task(r.n, r.c, k) for r in rows if r.n >= k]))
        ci = bootstrap_ci(rows, k)
        if ci is not None:
            summary.pass_hat_k_ci[k] = ci
    prompt = sum(ep.agent_usage.prompt_tokens + ep.user_usage.prompt_tokens for ep in episodes)
    completion = sum(ep.agent_usage.completion_tokens + ep.user_usage.completion_tokens for ep in episodes)
    summary.tokens = {"prompt": prompt, "completion": completion}
    if price_per_mtok is not None:
        summary.cost_usd = (prompt * price_per_mtok[0] + completion * price_per_mtok[1]) / 1e6
    return summary


def summarize_groups(episodes: Sequence[Episode], **kwargs: object) -> dict[str, Summary]:
    """Summaries per label (agent and model), in first-seen order.

    Args:
        episodes: Episodes of one or more agents.
        **kwargs: Passed to :func:`summarize`.

    Returns:
        Label -> summary.
    """
    groups: dict[str, list[Episode]] = {}
    for ep in episodes:
        groups.setdefault(label_of(ep), []).append(ep)
    return {label: summarize(eps, label=label, **kwargs) for label, eps in groups.items()}  # type: ignore[arg-type]


def format_table(summaries: Sequence[Summary]) -> str:
    """A plain-text table of pass^k per summary, for the terminal."""
    ks = sorted({k for s in summaries for k in s.pass_hat_k})
    head = f"{'agent':<32} {'semantics':<12} {'episodes':>8} {'infra':>5} {'avg_rew':>7} " + " ".join(
        f"{'pass^' + str(k):>8}" for k in ks
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        cells = " ".join(f"{s.pass_hat_k[k]:>8.3f}" if k in s.pass_hat_k else f"{'-':>8}" for k in ks)
        profile = ",".join(s.semantics)[:12]
        lines.append(
            f"{s.label[:32]:<32} {profile:<12} {s.episodes:>8} {s.infra_failures:>5} {s.avg_reward:>7.3f} {cells}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class PartialCredit:
    """How close one episode came, beside its 0/1 reward (for reading results, not for scoring).

    Attributes:
        episode_id: The episode.
        label: Its group label (agent and model).
        task_id: The task.
        reward: The verifier's reward.
        gold_calls: Gold actions the agent made with the same tool and arguments (None when the task's
            actions are unknown).
        gold_total: Gold actions of the task.
        rows_right: Gold rows whose final value equals the gold value.
        rows_total: The larger of the gold rows and the rows the episode changed (extra rows count against).
        outputs_said: Required outputs found in the agent's text.
        outputs_total: Required outputs of the task.
        termination: Why the episode ended.
    """

    episode_id: str
    label: str
    task_id: str
    reward: float
    gold_calls: int | None
    gold_total: int
    rows_right: int
    rows_total: int
    outputs_said: int
    outputs_total: int
    termination: str

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return dict(self.__dict__)


def _canonical(value: object) -> object:
    """Arguments compared as a model would mean them: numbers by value, text stripped, keys unordered."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return value.strip()
    return value


def gold_calls_made(episode: Episode, actions: Sequence[object]) -> int:
    """How many gold actions (objects with ``name`` and ``arguments``) the episode's agent made exactly.

    Each agent call can match one gold action; order does not matter.
    """
    from apigen_envs.messages import AssistantMessage

    made = [
        (call.name, _canonical(call.arguments))
        for m in episode.messages
        if isinstance(m, AssistantMessage)
        for call in m.tool_calls
        if isinstance(call.arguments, dict)
    ]
    count = 0
    for action in actions:
        key = (getattr(action, "name", None), _canonical(getattr(action, "arguments", {})))
        if key in made:
            made.remove(key)
            count += 1
    return count


def partial_credit(episode: Episode, actions: Sequence[object] | None = None) -> PartialCredit:
    """The episode's partial credit (see :class:`PartialCredit`).

    Args:
        episode: The episode.
        actions: The task's gold actions, when known.

    Returns:
        The record.
    """
    info = episode.reward_info
    outputs = info.outputs if info is not None else {}
    gold_rows = info.gold_rows if info is not None else len(episode.gold_diff)
    changed = info.changed_rows if info is not None else len(episode.diff)
    return PartialCredit(
        episode_id=episode.episode_id,
        label=label_of(episode),
        task_id=episode.task_id,
        reward=episode.reward,
        gold_calls=gold_calls_made(episode, actions) if actions is not None else None,
        gold_total=len(actions) if actions is not None else 0,
        rows_right=info.matched_rows if info is not None else 0,
        rows_total=max(gold_rows, changed),
        outputs_said=sum(outputs.values()),
        outputs_total=len(outputs),
        termination=episode.termination,
    )


def format_partial(credits: Sequence[PartialCredit]) -> str:
    """A plain-text table of partial credit per episode, for the terminal."""
    head = f"{'episode':<28} {'agent':<24} {'reward':>6} {'gold calls':>10} {'DB rows':>8} {'outputs':>8}  ended by"
    lines = [head, "-" * len(head)]
    for c in credits:
        calls = f"{c.gold_calls}/{c.gold_total}" if c.gold_calls is not None else "-"
        outputs = f"{c.outputs_said}/{c.outputs_total}" if c.outputs_total else "-"
        rows = f"{c.rows_right}/{c.rows_total}" if c.rows_total else "-"
        lines.append(
            f"{c.episode_id[:28]:<28} {c.label[:24]:<24} {c.reward:>6.1f} {calls:>10} {rows:>8} {outputs:>8}  "
            f"{c.termination}"
        )
    return "\n".join(lines)
