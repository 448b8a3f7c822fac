"""GRPO groups: G episodes of one task from the same DB start, with rewards, advantages and pass^k.

Every episode of a group runs through the episode runner (:func:`apigen_envs.runner.arun_episode`) on its
own copy-on-write view of the same base DB, with a different seed. Rewards come from
:func:`~apigen_envs.rl.rewards.episode_reward`; advantages are group-normalised (GRPO's
``(r - mean) / (std + eps)``, or Dr. GRPO's ``r - mean`` without std scaling) over the valid episodes, and
pass^k comes from :mod:`apigen_envs.metrics` over the very same episodes. A policy turn that cannot be
executed is an ``invalid_action`` episode with reward 0: it counts in the group (GRPO learns from it);
only infrastructure failures are left out, with advantage 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apigen_envs.collect import episode_seed
from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode
from apigen_envs.metrics import Summary, TaskStats, pass_hat_k, summarize, task_stats
from apigen_envs.protocols import UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.rl.rewards import RewardMode, check_mode, episode_reward
from apigen_envs.rl.samples import TrainerSample, to_trainer_sample
from apigen_envs.runner import arun_episode, as_agent

EnvFactory = Callable[[], ToolUseEnv]
"""A zero-argument callable returning a fresh env."""

DomainOrFactory = Domain | str | EnvFactory
"""What group rollouts run on: a Domain, a domain name, or an env factory."""


def group_advantages(
    rewards: Sequence[float],
    *,
    scale_std: bool = True,
    eps: float = 1e-6,
    valid: Sequence[bool] | None = None,
) -> list[float]:
    """Group-normalised advantages, as GRPO computes them.

    ``A_i = (r_i - mean(r)) / (std(r) + eps)`` with the population std; with ``scale_std=False`` it is
    ``r_i - mean(r)`` (Dr. GRPO, which drops the std term to avoid weighting easy and hard groups
    differently). A group whose rewards are all equal gets all-zero advantages, never NaN.

    Args:
        rewards: One reward per episode of the group.
        scale_std: Divide by the group's std (GRPO) or not (Dr. GRPO).
        eps: Added to the std to keep the division finite.
        valid: Per episode, whether it counts; invalid ones (infrastructure failures) get advantage 0.0
            and are left out of the mean and std.

    Returns:
        One advantage per reward.

    Raises:
        ValueError: When ``valid`` has the wrong length or ``eps`` is negative.

    """
    if eps < 0:
        raise ValueError("eps must be >= 0")
    mask = [True] * len(rewards) if valid is None else list(valid)
    if len(mask) != len(rewards):
        raise ValueError(f"valid has {len(mask)} entries for {len(rewards)} rewards")
    kept = np.array([r for r, ok in zip(rewards, mask, strict=True) if ok], dtype=np.float64)
    if kept.size == 0:
        return [0.0] * len(rewards)
    mean = float(kept.mean())
    std = float(kept.std())
    out = []
    for r, ok in zip(rewards, mask, strict=True):
        if not ok:
            out.append(0.0)
            continue
        centred = float(r) - mean
        # Exact zero for equal rewards, whatever eps is (eps=0 must not give 0/0).
        if centred == 0.0 or not scale_std:
            out.append(centred)
        else:
            out.append(centred / (std + eps))
    return out


@dataclass(frozen=True)
class Group:
    """G episodes of one task from the same DB start (a GRPO group).

    Attributes:
        task_id: The task.
        episodes: The episodes, in trial order.
        rewards: Training reward per episode (see ``reward_mode``).
        advantages: Group-normalised advantage per episode.
        seeds: Episode seeds.
        reward_mode: ``"binary"`` or ``"shaped"``.

    """

    task_id: str
    episodes: tuple[Episode, ...]
    rewards: tuple[float, ...]
    advantages: tuple[float, ...]
    seeds: tuple[int | None, ...]
    reward_mode: RewardMode = "binary"

    @property
    def size(self) -> int:
        """G, the number of episodes."""
        return len(self.episodes)

    @property
    def valid(self) -> tuple[bool, ...]:
        """Per episode, whether it counts (False for infrastructure failures)."""
        return tuple(not ep.is_infra_failure for ep in self.episodes)

    @property
    def mean_reward(self) -> float:
        """Mean training reward over valid episodes (0.0 when none is valid)."""
        kept = [r for r, ok in zip(self.rewards, self.valid, strict=True) if ok]
        return float(np.mean(kept)) if kept else 0.0

    @property
    def stats(self) -> TaskStats:
        """The group's per-task counts, as :func:`apigen_envs.metrics.task_stats` computes them."""
        rows = task_stats(self.episodes)
        return rows[0] if rows else TaskStats(self.task_id, 0, 0, 0, 0.0)

    def pass_hat_k(self, k: int) -> float | None:
        """pass^k of this task from the group's (binary) outcomes; None when fewer than k valid episodes."""
        return pass_hat_k([self.stats], k)

    def to_trainer_samples(self, *, include_system: bool = True) -> list[TrainerSample]:
        """One :class:`TrainerSample` per episode, carrying its reward and advantage."""
        return [
            to_trainer_sample(ep, self.reward_mode, advantage=adv, include_system=include_system)
            for ep, adv in zip(self.episodes, self.advantages, strict=True)
        ]


@dataclass(frozen=True)
class GroupBatch:
    """Groups over many tasks, with metrics over all of them.

    Attributes:
        groups: One group per task, in the order the tasks were given.

    """

    groups: tuple[Group, ...]

    @property
    def episodes(self) -> list[Episode]:
        """Every episode of every group."""
        return [ep for g in self.groups for ep in g.episodes]

    def pass_hat_k(self, k: int) -> float | None:
        """pass^k over tasks with at least k valid episodes (same as :func:`apigen_envs.metrics.pass_hat_k`)."""
        return pass_hat_k(task_stats(self.episodes), k)

    def summary(self, **kwargs: Any) -> Summary:
        """The full :func:`apigen_envs.metrics.summarize` report over all groups' episodes."""
        return summarize(self.episodes, **kwargs)

    def to_trainer_samples(self, *, include_system: bool = True) -> list[TrainerSample]:
        """Trainer samples of every group, group after group."""
        return [s for g in self.groups for s in g.to_trainer_samples(include_system=include_system)]


def _make_group(
    task_id: str,
    episodes: Sequence[Episode],
    seeds: Sequence[int | None],
    reward_mode: RewardMode,
    scale_std: bool,
    eps: float,
) -> Group:
    rewards = [episode_reward(ep, reward_mode) for ep in episodes]
    valid = [not ep.is_infra_failure for ep in episodes]
    advantages = group_advantages(rewards, scale_std=scale_std, eps=eps, valid=valid)
    return Group(task_id, tuple(episodes), tuple(rewards), tuple(advantages), tuple(seeds), reward_mode)


@dataclass
class _EnvSource:
    """Builds one fresh env per episode from a Domain, a name or a factory."""

    source: DomainOrFactory
    user: UserSimulator | None
    max_turns: int | None
    data_dir: str | Path | None
    _domain: Domain | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.source, Domain):
            self._domain = self.source
        elif isinstance(self.source, str):
            self._domain = load_domain(self.source, self.data_dir)
        elif not callable(self.source):
            raise TypeError(f"expected a Domain, a domain name or an env factory; got {type(self.source).__name__}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError("max_turns must be >= 1")

    def make(self, task_id: str) -> ToolUseEnv:
        if self._domain is not None:
            return ToolUseEnv(self._domain, user=self.user, task_ids=[task_id], max_turns=self.max_turns or 30)
        env = self.source()  # type: ignore[operator]
        env = getattr(env, "unwrapped", env)  # gymnasium.make wraps envs; the async API is on the env itself
        if not isinstance(env, ToolUseEnv):
            raise TypeError(f"the env factory returned {type(env).__name__}, not a ToolUseEnv")
        if self.user is not None:
            env.user = self.user
        if self.max_turns is not None:
            env.max_turns = self.max_turns
        return env


def _seeds_for(task_id: str, group_size: int, seeds: Sequence[int] | None, base_seed: int) -> list[int]:
    if group_size < 1:
        raise ValueError("the group size G must be >= 1")
    if seeds is None:
        return [episode_seed(base_seed, task_id, trial) for trial in range(group_size)]
    if len(seeds) != group_size:
        raise ValueError(f"got {len(seeds)} seeds for a group of {group_size}")
    return [int(s) for s in seeds]


async def _agroup(
    source: _EnvSource,
    task_id: str,
    agent: Any,
    seeds: Sequence[int],
    limit: asyncio.Semaphore,
    agent_config: Mapping[str, Any] | None,
    reward_mode: RewardMode,
    scale_std: bool,
    eps: float,
) -> Group:
    async def one(trial: int, seed: int) -> Episode:
        async with limit:
            env = source.make(task_id)
            return await arun_episode(env, agent, task_id=task_id, seed=seed, trial=trial, agent_config=agent_config)

    episodes = await asyncio.gather(*(one(i, s) for i, s in enumerate(seeds)))
    return _make_group(task_id, episodes, seeds, reward_mode, scale_std, eps)


async def arollout_group(
    domain_or_env_factory: DomainOrFactory,
    task_id: str,
    policy: Any,
    G: int,  # noqa: N803 - the group size is called G in every GRPO paper
    *,
    user: UserSimulator | None = None,
    seeds: Sequence[int] | None = None,
    base_seed: int = 0,
    max_turns: int | None = None,
    concurrency: int | None = None,
    reward_mode: RewardMode = "binary",
    scale_std: bool = True,
    eps: float = 1e-6,
    agent_config: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Group:
    """Run G episodes of one task concurrently and return them as a GRPO group.

    Every episode gets its own copy-on-write view of the same base DB, so all start from the same state;
    they differ only by seed (which reaches the user simulator and the policy's ``context.seed``).

    Args:
        domain_or_env_factory: A :class:`Domain`, a domain name, or a zero-argument env factory.
        task_id: The task.
        policy: An Agent or a callable ``(conversation, context) -> action`` (sync or async).
        G: Episodes in the group.
        user: User simulator (default: the env's, else the scripted user).
        seeds: G episode seeds; by default derived from ``base_seed``, the task and the trial index
            with :func:`apigen_envs.collect.episode_seed` (the collector's seeds).
        base_seed: Run seed used when ``seeds`` is None.
        max_turns: Agent steps per episode (default 30, or the factory env's own setting).
        concurrency: Episodes in flight at once (default: all G).
        reward_mode: ``"binary"`` or ``"shaped"`` training reward.
        scale_std: GRPO std scaling; False gives Dr. GRPO's unscaled advantages.
        eps: Added to the group std.
        agent_config: Settings recorded on episodes and passed as ``context.extra``.
        data_dir: Data directory when the domain is given by name.

    Returns:
        The group.

    Raises:
        ValueError: On a bad G, seeds, reward mode or concurrency.
        KeyError: When the task id is unknown (with a did-you-mean hint from the domain).

    """
    check_mode(reward_mode)
    seed_list = _seeds_for(task_id, G, seeds, base_seed)
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    source = _EnvSource(domain_or_env_factory, user, max_turns, data_dir)
    if source._domain is not None:
        source._domain.task(task_id)  # fail fast on an unknown id, before any episode starts
    limit = asyncio.Semaphore(concurrency or G)
    return await _agroup(source, task_id, as_agent(policy), seed_list, limit, agent_config, reward_mode, scale_std, eps)


async def arollout_groups(
    domain_or_env_factory: DomainOrFactory,
    task_ids: Sequence[str],
    policy: Any,
    G: int,  # noqa: N803
    *,
    user: UserSimulator | None = None,
    base_seed: int = 0,
    max_turns: int | None = None,
    concurrency: int = 64,
    reward_mode: RewardMode = "binary",
    scale_std: bool = True,
    eps: float = 1e-6,
    agent_config: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> GroupBatch:
    """One group of G episodes per task, all tasks' episodes sharing one concurrency limit.

    Args:
        domain_or_env_factory: A :class:`Domain`, a domain name, or a zero-argument env factory.
        task_ids: The tasks (one group each, in this order).
        policy: An Agent or a callable ``(conversation, context) -> action``.
        G: Episodes per group.
        user: User simulator.
        base_seed: Run seed; episode seeds derive from it, the task and the trial index.
        max_turns: Agent steps per episode.
        concurrency: Episodes in flight at once across all groups.
        reward_mode: ``"binary"`` or ``"shaped"``.
        scale_std: GRPO std scaling (False: Dr. GRPO).
        eps: Added to each group's std.
        agent_config: Settings recorded on episodes.
        data_dir: Data directory when the domain is given by name.

    Returns:
        The groups, with pass^k over all of them.

    """
    check_mode(reward_mode)
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    source = _EnvSource(domain_or_env_factory, user, max_turns, data_dir)
    if source._domain is not None:
        for task_id in task_ids:
            source._domain.task(task_id)
    agent = as_agent(policy)
    limit = asyncio.Semaphore(concurrency)
    groups = await asyncio.gather(
        *(
            _agroup(
                source,
                task_id,
                agent,
                _seeds_for(task_id, G, None, base_seed),
                limit,
                agent_config,
                reward_mode,
                scale_std,
                eps,
            )
            for task_id in task_ids
        )
    )
    return GroupBatch(tuple(groups))


def run_sync(coro: Awaitable[Any], name: str) -> Any:
    """Run a coroutine to the end from sync code; inside a running event loop, close it and raise.

    Raises:
        RuntimeError: When called inside an event loop (the async twin ``a<name>`` must be awaited there).

    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    coro.close()  # type: ignore[attr-defined]
    raise RuntimeError(f"{name}() was called inside an event loop; use `await a{name}(...)`")


def rollout_group(
    domain_or_env_factory: DomainOrFactory,
    task_id: str,
    policy: Any,
    G: int,
    **kwargs: Any,  # noqa: N803
) -> Group:
    """Synchronous wrapper of :func:`arollout_group` (not callable inside a running event loop)."""
    return run_sync(arollout_group(domain_or_env_factory, task_id, policy, G, **kwargs), "rollout_group")


def rollout_groups(
    domain_or_env_factory: DomainOrFactory,
    task_ids: Sequence[str],
    policy: Any,
    G: int,  # noqa: N803
    **kwargs: Any,
) -> GroupBatch:
    """Synchronous wrapper of :func:`arollout_groups` (not callable inside a running event loop)."""
    return run_sync(arollout_groups(domain_or_env_factory, task_ids, policy, G, **kwargs), "rollout_groups")
