"""Plugging the envs into RL training loops: GRPO groups, trainer samples, batched stepping, TRL rewards.

Four pieces, each usable alone:

* **Groups** (:func:`rollout_group`, :func:`rollout_groups` and their async twins): G episodes of one task
  from the same DB start with different seeds, with rewards, group-normalised advantages (GRPO's
  ``(r - mean) / (std + eps)``, or Dr. GRPO's ``r - mean`` without std scaling) and pass^k computed by
  :mod:`apigen_envs.metrics` from the very same episodes.
* **Trainer samples** (:func:`to_trainer_sample`, :func:`tokenize_sample`): an Episode becomes OpenAI chat
  messages (system prompt first), the tool schemas, the reward and a per-message ``policy_mask``; token ids
  and logprobs the policy sampled are passed through untouched. Given any tokenizer with a chat template,
  :func:`tokenize_sample` builds ``input_ids`` and a token-level ``assistant_mask`` by incremental
  templating (see its docstring).
* **Batched stepping** (:class:`AsyncEnvBatch`): N envs stepped concurrently, with one batched policy
  call per step across all live envs (``policy(list_of_conversations) -> list_of_actions``); envs finish
  at different times and are refilled from a job queue (auto-reset). Gymnasium's own vector envs work
  too: see :func:`make_vector_env`.
* **TRL glue** (:func:`step_prompts`, :class:`EnvStepReward`): prompts cut from gold trajectories and a
  reward function that scores a completion by running it in the env (see :class:`EnvStepReward`).

Rewards: ``"binary"`` (default) is the verifier's 1.0/0.0. ``"shaped"`` is
:attr:`apigen_envs.verify.RewardInfo.shaped`, a dense score in [0, 1] (fraction of gold rows matched,
penalising extra changed rows, averaged with the fraction of required outputs found). Shaping is a
training signal only: pass^k and success always use the binary reward.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from apigen_envs.collect import arun_episode as collect_episode
from apigen_envs.collect import describe_error as _describe
from apigen_envs.collect import episode_seed
from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv, to_assistant_message
from apigen_envs.episode import Episode
from apigen_envs.errors import InvalidActionError
from apigen_envs.llm import build_assistant_message
from apigen_envs.messages import AssistantMessage, Message, ToolCall, Usage
from apigen_envs.metrics import Summary, TaskStats, pass_hat_k, summarize, task_stats
from apigen_envs.protocols import AgentContext, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.task import Task

RewardMode = Literal["binary", "shaped"]
"""Which reward a trainer sees: the verifier's binary reward or the shaped breakdown score."""

REWARD_MODES: tuple[str, ...] = ("binary", "shaped")

Conversation = list[dict[str, Any]]
"""OpenAI chat-format messages, system prompt first."""

EnvFactory = Callable[[], ToolUseEnv]
"""A zero-argument callable returning a fresh env."""

DomainOrFactory = Domain | str | EnvFactory
"""What group rollouts run on: a Domain, a domain name, or an env factory."""


# ============================================================================================ rewards
def _check_mode(reward_mode: str) -> None:
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")


def episode_reward(episode: Episode, reward_mode: RewardMode = "binary") -> float:
    """The training reward of an episode.

    Args:
        episode: A finished episode.
        reward_mode: ``"binary"``: the verifier's reward. ``"shaped"``: ``RewardInfo.shaped``, a dense
            score in [0, 1] meant for shaping only.

    Returns:
        The reward; 0.0 for episodes that could not be scored (infrastructure failures).

    Raises:
        ValueError: On an unknown reward mode.

    """
    _check_mode(reward_mode)
    if reward_mode == "binary" or episode.reward_info is None:
        return float(episode.reward)
    return float(episode.reward_info.shaped)


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


# ============================================================================================ policies
class FunctionAgent:
    """An :class:`~apigen_envs.protocols.Agent` made from a function ``(conversation, context) -> action``.

    The function may be sync or async and may return an :class:`AssistantMessage`, an OpenAI assistant
    dict or a string (text for the user).

    Args:
        fn: The policy function.
        name: Name recorded on episodes.

    """

    def __init__(self, fn: Callable[[Sequence[Message], AgentContext], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or "function_policy"

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Call the function (it must not be async here)."""
        result = self.fn(conversation, context)
        if inspect.isawaitable(result):
            raise TypeError("an async policy function needs the async API (aact / arollout_group)")
        return to_assistant_message(result)

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Call the function, awaiting it when it is async."""
        result = self.fn(conversation, context)
        if inspect.isawaitable(result):
            result = await result
        return to_assistant_message(result)


def as_agent(policy: Any) -> Any:
    """An object with ``aact`` from an Agent, an object with only ``act``, or a plain function.

    Args:
        policy: An :class:`~apigen_envs.protocols.Agent`, or a callable ``(conversation, context)``.

    Returns:
        Something with ``name`` and ``async aact(conversation, context)``.

    Raises:
        TypeError: When ``policy`` is none of these.

    """
    if hasattr(policy, "aact"):
        return policy
    if hasattr(policy, "act"):
        return FunctionAgent(policy.act, getattr(policy, "name", None) or type(policy).__name__)
    if callable(policy):
        return FunctionAgent(policy)
    raise TypeError(f"a policy must be an Agent or a callable (conversation, context); got {type(policy).__name__}")


async def arun_episode(
    env: ToolUseEnv,
    policy: Any,
    *,
    task_id: str,
    seed: int | None = None,
    trial: int = 0,
    agent_config: Mapping[str, Any] | None = None,
) -> Episode:
    """Run one episode of ``task_id`` on ``env`` to the end and return its record.

    Agent, user-simulator and env failures are recorded on the episode (``agent_error``, ``user_error``,
    ``env_error``) rather than raised, as the collector does, so one bad rollout never sinks a group.

    Args:
        env: The env (it is reset).
        policy: An Agent or a callable ``(conversation, context)`` (see :func:`as_agent`).
        task_id: The task to run.
        seed: Episode seed (reaches the user simulator and ``context.seed``).
        trial: Trial index recorded on the episode.
        agent_config: Settings recorded on the episode and passed as ``context.extra``.

    Returns:
        The episode.

    """
    agent = as_agent(policy)
    meta: dict[str, Any] = {
        "agent": str(getattr(agent, "name", None) or type(agent).__name__),
        "agent_config": dict(agent_config or {}),
        "user": str(getattr(env.user, "name", None) or type(env.user).__name__),
    }
    return await collect_episode(env, agent, task_id=task_id, seed=seed, trial=trial, meta=meta)


# ============================================================================================ groups
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
    _check_mode(reward_mode)
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
    _check_mode(reward_mode)
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


def _run_sync(coro: Awaitable[Any], name: str) -> Any:
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
    return _run_sync(arollout_group(domain_or_env_factory, task_id, policy, G, **kwargs), "rollout_group")


def rollout_groups(
    domain_or_env_factory: DomainOrFactory,
    task_ids: Sequence[str],
    policy: Any,
    G: int,  # noqa: N803
    **kwargs: Any,
) -> GroupBatch:
    """Synchronous wrapper of :func:`arollout_groups` (not callable inside a running event loop)."""
    return _run_sync(arollout_groups(domain_or_env_factory, task_ids, policy, G, **kwargs), "rollout_groups")


# ============================================================================================ samples
class TrainerSample(BaseModel):
    """One episode as a trainer consumes it.

    All per-message lists are aligned with ``messages``.

    Attributes:
        messages: OpenAI chat-format messages, the system prompt first (unless left out).
        tools: OpenAI tool schemas offered to the policy.
        reward: The training reward (see ``reward_mode``).
        reward_mode: ``"binary"`` or ``"shaped"``.
        advantage: The group advantage, when the sample came from a group.
        policy_mask: True for assistant messages the policy produced; False for system, user and tool.
        token_ids: Per message, the token ids the policy sampled (None where not recorded).
        logprobs: Per message, the sampled tokens' logprobs (None where not recorded).
        episode_id: The episode id.
        task_id: The task id.
        trial: Trial index.
        seed: Episode seed.
        termination: Why the episode ended.
        reward_info: The verifier's breakdown as a dict (None when not scored).

    """

    model_config = ConfigDict(frozen=True)

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    reward: float
    reward_mode: RewardMode = "binary"
    advantage: float | None = None
    policy_mask: list[bool]
    token_ids: list[list[int] | None]
    logprobs: list[list[float] | None]
    episode_id: str = ""
    task_id: str = ""
    trial: int = 0
    seed: int | None = None
    termination: str | None = None
    reward_info: dict[str, Any] | None = None


def to_trainer_sample(
    episode: Episode,
    reward_mode: RewardMode = "binary",
    *,
    advantage: float | None = None,
    include_system: bool = True,
) -> TrainerSample:
    """Turn an episode into chat messages, tool schemas, reward and a per-message policy mask.

    Assistant messages that carry ``token_ids`` / ``logprobs`` (set by a policy that samples tokens
    itself) pass them through, so a trainer never re-tokenises what the policy generated.

    Args:
        episode: The episode.
        reward_mode: ``"binary"`` (verifier) or ``"shaped"`` (``RewardInfo.shaped``, shaping only).
        advantage: A group advantage to attach.
        include_system: Put the system prompt first (the policy saw it).

    Returns:
        The sample.

    Raises:
        ValueError: On an unknown reward mode.

    """
    reward = episode_reward(episode, reward_mode)
    messages: list[dict[str, Any]] = []
    mask: list[bool] = []
    token_ids: list[list[int] | None] = []
    logprobs: list[list[float] | None] = []
    if include_system and episode.system_prompt:
        messages.append({"role": "system", "content": episode.system_prompt})
        mask.append(False)
        token_ids.append(None)
        logprobs.append(None)
    for msg in episode.messages:
        messages.append(msg.to_openai())
        is_policy = isinstance(msg, AssistantMessage)
        mask.append(is_policy)
        ids = msg.token_ids if is_policy else None  # type: ignore[union-attr]
        lps = msg.logprobs if is_policy else None  # type: ignore[union-attr]
        token_ids.append(list(ids) if ids is not None else None)
        logprobs.append(list(lps) if lps is not None else None)
    return TrainerSample(
        messages=messages,
        tools=list(episode.tools),
        reward=reward,
        reward_mode=reward_mode,
        advantage=advantage,
        policy_mask=mask,
        token_ids=token_ids,
        logprobs=logprobs,
        episode_id=episode.episode_id,
        task_id=episode.task_id,
        trial=episode.trial,
        seed=episode.seed,
        termination=episode.termination,
        reward_info=episode.reward_info.model_dump() if episode.reward_info is not None else None,
    )


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be split into per-message segments."""


@dataclass(frozen=True)
class TokenizedSample:
    """A conversation as token ids with a token-level mask of what the policy produced.

    Attributes:
        input_ids: The token ids of the whole templated conversation.
        assistant_mask: Per token, True where the policy produced it (assistant message bodies).
        logprobs: Per token, the sampled logprob (0.0 elsewhere); None unless every policy message
            carried logprobs.
        spans: Per message, the ``(start, end)`` token range it occupies (assistant headers such as
            ``<|im_start|>assistant`` belong to the message's span but are not masked).

    """

    input_ids: list[int]
    assistant_mask: list[bool]
    logprobs: list[float] | None
    spans: list[tuple[int, int]]


def _render(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    generation_prompt: bool,
    kwargs: Mapping[str, Any],
) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tools=list(tools) if tools else None,
        add_generation_prompt=generation_prompt,
        tokenize=False,
        **kwargs,
    )
    if not isinstance(text, str):
        raise ChatTemplateError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not text")
    return text


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def _suffix(longer: str, prefix: str, index: int, what: str) -> str:
    if not longer.startswith(prefix):
        raise ChatTemplateError(
            f"the chat template is not prefix-stable at message {index} ({what}): rendering more messages "
            "changed the text of earlier ones (templates that rewrite past turns, e.g. drop earlier "
            "reasoning, need one tokenisation per assistant turn instead)"
        )
    return longer[len(prefix) :]


def tokenize_sample(
    sample: TrainerSample | Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    policy_mask: Sequence[bool] | None = None,
    token_ids: Sequence[Sequence[int] | None] | None = None,
    logprobs: Sequence[Sequence[float] | None] | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> TokenizedSample:
    """Token ids and a token-level assistant mask, by incremental chat templating.

    Works with any tokenizer that has ``apply_chat_template(messages, tools=..., add_generation_prompt=...,
    tokenize=False)`` and ``encode(text, add_special_tokens=False)`` (every Hugging Face tokenizer with
    a chat template). The approach:

    1. Render growing prefixes of the conversation as text: ``T(k)`` is the template of the first k
       messages, and ``T+(k)`` the same with the generation prompt (the assistant header) added.
    2. Message k's text is the difference ``T(k+1) - T(k)``. For an assistant message it is split into the
       header ``T+(k) - T(k)`` (not the policy's, mask False) and the body ``T(k+1) - T+(k)`` (the policy's,
       mask True, including the end-of-turn marker the model must learn to emit).
    3. Each piece is tokenised on its own and the pieces are concatenated. Pieces meet at template
       markers, so this matches tokenising the whole text for usual templates, and the prompt prefix of
       every assistant turn is exactly what the model saw at sampling time.
    4. When an assistant message carries the ``token_ids`` the policy sampled, they replace the body's
       tokens (nothing is re-tokenised); template text after the decoded ids (such as the newline after
       ``<|im_end|>``) is added unmasked when it can be identified.

    A template that is not prefix-stable (it rewrites earlier turns as the conversation grows) raises
    :class:`ChatTemplateError` naming the message.

    Args:
        sample: A :class:`TrainerSample` or a list of OpenAI chat messages.
        tokenizer: The tokenizer.
        tools: Tool schemas for the template (default: the sample's).
        policy_mask: Per message, whether the policy produced it (default: the sample's, else assistant
            messages).
        token_ids: Per message, sampled token ids (default: the sample's).
        logprobs: Per message, sampled logprobs (default: the sample's).
        chat_template_kwargs: Extra keyword arguments for ``apply_chat_template``.

    Returns:
        The tokenised conversation.

    Raises:
        ChatTemplateError: When the template cannot be split per message.
        ValueError: When per-message lists do not match the messages.

    """
    if isinstance(sample, TrainerSample):
        messages: list[Mapping[str, Any]] = list(sample.messages)
        tools = sample.tools if tools is None else tools
        policy_mask = sample.policy_mask if policy_mask is None else policy_mask
        token_ids = sample.token_ids if token_ids is None else token_ids
        logprobs = sample.logprobs if logprobs is None else logprobs
    else:
        messages = list(sample)
    n = len(messages)
    mask_in = list(policy_mask) if policy_mask is not None else [m.get("role") == "assistant" for m in messages]
    ids_in = list(token_ids) if token_ids is not None else [None] * n
    lps_in = list(logprobs) if logprobs is not None else [None] * n
    for name, values in (("policy_mask", mask_in), ("token_ids", ids_in), ("logprobs", lps_in)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} messages")
    kwargs = dict(chat_template_kwargs or {})
    input_ids: list[int] = []
    assistant_mask: list[bool] = []
    token_logprobs: list[float] = []
    spans: list[tuple[int, int]] = []
    have_logprobs = any(mask_in)

    def emit(ids: Sequence[int], produced: bool, lps: Sequence[float] | None = None) -> None:
        input_ids.extend(ids)
        assistant_mask.extend([produced] * len(ids))
        token_logprobs.extend(lps if lps is not None else [0.0] * len(ids))

    previous = ""
    for k, message in enumerate(messages):
        start = len(input_ids)
        full = _render(tokenizer, messages[: k + 1], tools, False, kwargs)
        if message.get("role") == "assistant":
            with_header = _render(tokenizer, messages[:k], tools, True, kwargs) if k else ""
            header = _suffix(with_header, previous, k, "generation prompt") if k else ""
            body = _suffix(full, with_header, k, "assistant message")
            emit(_encode(tokenizer, header), False)
            produced = bool(mask_in[k])
            ids, lps = ids_in[k], lps_in[k]
            if lps is not None and ids is not None and len(lps) != len(ids):
                raise ValueError(f"message {k}: {len(lps)} logprobs for {len(ids)} token ids")
            if ids is not None:
                emit(list(ids), produced, list(lps) if lps is not None else None)
                decoded = (
                    tokenizer.decode(list(ids), skip_special_tokens=False) if hasattr(tokenizer, "decode") else None
                )
                if isinstance(decoded, str) and decoded and body.startswith(decoded):
                    emit(_encode(tokenizer, body[len(decoded) :]), False)
            else:
                emit(_encode(tokenizer, body), produced)
            if produced and (lps is None or ids is None):
                have_logprobs = False
        else:
            emit(_encode(tokenizer, _suffix(full, previous, k, "message")), bool(mask_in[k]))
        previous = full
        spans.append((start, len(input_ids)))
    return TokenizedSample(
        input_ids=input_ids,
        assistant_mask=assistant_mask,
        logprobs=token_logprobs if have_logprobs else None,
        spans=spans,
    )


# ============================================================================================ batching
@dataclass(frozen=True, slots=True)
class BatchJob:
    """One episode for :meth:`AsyncEnvBatch.arun`.

    Attributes:
        task_id: The task (None: drawn by the env's RNG).
        seed: Episode seed.
        trial: Trial index recorded on the episode.

    """

    task_id: str | None = None
    seed: int | None = None
    trial: int = 0


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one env returned from a batched step (Gymnasium's 5-tuple plus the env's index).

    Attributes:
        index: The env's index in the batch.
        observation: The conversation the agent can see (no system prompt).
        reward: Non-zero only at the end.
        terminated: The episode ended (user stop, terminal tool, failure).
        truncated: ``max_turns`` was reached.
        info: The env's info dict (``error`` set when the action was rejected).

    """

    index: int
    observation: tuple[dict[str, Any], ...]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        """Terminated or truncated."""
        return self.terminated or self.truncated


BatchPolicy = Callable[[list[Conversation]], Sequence[Any] | Awaitable[Sequence[Any]]]
"""``policy(conversations) -> actions``: one action per conversation, sync or async."""


class AsyncEnvBatch:
    """N envs stepped concurrently, with one batched policy call per step.

    Low level: :meth:`areset` and :meth:`astep` (a mapping env index -> action; the envs' user-simulator
    calls run concurrently). High level: :meth:`arun` drives a batched policy over a queue of jobs; envs
    that finish early take the next job (auto-reset) so the batch stays full, and each step makes one
    policy call over the live envs only. An action an env rejects ends that env's episode as an
    ``agent_error`` instead of failing the batch.

    Args:
        envs: The envs (:class:`ToolUseEnv`, or Gymnasium wrappers of one).
        include_system: Put the system prompt first in the conversations given to the policy.

    """

    def __init__(self, envs: Sequence[Any], *, include_system: bool = True) -> None:
        if not envs:
            raise ValueError("AsyncEnvBatch needs at least one env")
        unwrapped = [getattr(e, "unwrapped", e) for e in envs]
        for i, env in enumerate(unwrapped):
            if not isinstance(env, ToolUseEnv):
                raise TypeError(f"env {i} is a {type(env).__name__}, not a ToolUseEnv")
        self.envs: tuple[ToolUseEnv, ...] = tuple(unwrapped)
        self.include_system = include_system
        self._started = [False] * len(self.envs)
        self._failed: list[str | None] = [None] * len(self.envs)

    @classmethod
    def from_domain(
        cls,
        domain: Domain | str,
        n: int,
        *,
        user: UserSimulator | None = None,
        max_turns: int = 30,
        task_ids: Sequence[str] | None = None,
        split: str | None = None,
        include_system: bool = True,
    ) -> AsyncEnvBatch:
        """N envs over one domain, sharing its snapshot and user simulator.

        Args:
            domain: A Domain or a domain name.
            n: How many envs.
            user: The user simulator (default: the scripted user).
            max_turns: Agent steps per episode.
            task_ids: Restrict the envs' tasks.
            split: Restrict the envs' tasks to a split.
            include_system: Put the system prompt first in conversations.

        Returns:
            The batch.

        """
        if n < 1:
            raise ValueError("n must be >= 1")
        dom = domain if isinstance(domain, Domain) else load_domain(domain)
        envs = [ToolUseEnv(dom, user=user, max_turns=max_turns, task_ids=task_ids, split=split) for _ in range(n)]
        return cls(envs, include_system=include_system)

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def active(self) -> tuple[int, ...]:
        """Indices of envs with an episode in progress."""
        return tuple(
            i for i, env in enumerate(self.envs) if self._started[i] and not env.done and self._failed[i] is None
        )

    @property
    def all_done(self) -> bool:
        """True when no env has an episode in progress."""
        return not self.active

    def conversation(self, index: int) -> Conversation:
        """The conversation of env ``index`` as the policy sees it (system prompt first by default)."""
        env = self.envs[index]
        out = [m.to_openai() for m in env.messages]
        if self.include_system:
            out.insert(0, {"role": "system", "content": env.system_prompt})
        return out

    def tools(self, index: int) -> list[dict[str, Any]]:
        """The tool schemas of env ``index``."""
        return list(self.envs[index].tool_schemas)

    async def _reset_one(self, index: int, seed: int | None, options: dict[str, Any] | None) -> StepResult:
        env = self.envs[index]
        self._started[index] = True
        self._failed[index] = None
        try:
            obs, info = await env.areset(seed=seed, options=options)
        except Exception as exc:  # noqa: BLE001 - the env marked itself done (user_error); report, don't raise
            if not env.done:
                raise
            info = {"task_id": env.task.id, "termination": env.termination, "error": _describe(exc)}
            return StepResult(index, tuple(m.to_openai() for m in env.messages), 0.0, True, False, info)
        return StepResult(index, obs, 0.0, env.done, False, info)

    async def areset(
        self,
        *,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[dict[str, Any] | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> list[StepResult]:
        """Reset envs concurrently.

        Args:
            seeds: One seed per reset env.
            options: One options dict per reset env (``{"task_id": ...}``).
            indices: Which envs (default: all).

        Returns:
            One result per reset env (reward 0; ``terminated`` if the user ended at once).

        """
        idx = list(range(len(self.envs))) if indices is None else list(indices)
        seed_list = list(seeds) if seeds is not None else [None] * len(idx)
        opt_list = list(options) if options is not None else [None] * len(idx)
        if len(seed_list) != len(idx) or len(opt_list) != len(idx):
            raise ValueError(f"need one seed and one options entry per env ({len(idx)})")
        return list(
            await asyncio.gather(*(self._reset_one(i, s, o) for i, s, o in zip(idx, seed_list, opt_list, strict=True)))
        )

    async def _step_one(self, index: int, action: Any) -> StepResult:
        env = self.envs[index]
        try:
            obs, reward, terminated, truncated, info = await env.astep(action)
        except InvalidActionError as exc:
            self._failed[index] = _describe(exc)
            info = {"task_id": env.task.id, "termination": "agent_error", "error": self._failed[index]}
            return StepResult(index, tuple(m.to_openai() for m in env.messages), 0.0, True, False, info)
        except Exception as exc:  # noqa: BLE001 - a user-simulator failure already ended the episode
            if not env.done:
                raise
            info = {"task_id": env.task.id, "termination": env.termination, "error": _describe(exc)}
            return StepResult(index, tuple(m.to_openai() for m in env.messages), 0.0, True, False, info)
        return StepResult(index, obs, reward, terminated, truncated, info)

    async def astep(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        """Step the given envs concurrently.

        Args:
            actions: Env index -> action (an AssistantMessage, an OpenAI assistant dict or a str).

        Returns:
            Env index -> result.

        Raises:
            ValueError: When an index has no episode in progress.

        """
        live = set(self.active)
        bad = [i for i in actions if i not in live]
        if bad:
            raise ValueError(f"envs {bad} have no episode in progress (reset them first)")
        results = await asyncio.gather(*(self._step_one(i, a) for i, a in actions.items()))
        return {r.index: r for r in results}

    def episode(self, index: int, *, trial: int = 0, **fields: Any) -> Episode:
        """The Episode record of env ``index`` (normally after its episode ended)."""
        if self._failed[index] is not None:
            fields.setdefault("termination", "agent_error")
            fields.setdefault("error", self._failed[index])
        return self.envs[index].to_episode(trial=trial, **fields)

    async def arun(
        self,
        policy: BatchPolicy,
        jobs: Sequence[BatchJob] | None = None,
        *,
        auto_reset: bool = True,
        agent_name: str = "batch_policy",
        agent_config: Mapping[str, Any] | None = None,
        on_episode: Callable[[Episode], None] | None = None,
    ) -> list[Episode]:
        """Run jobs to completion with one batched policy call per step.

        Args:
            policy: ``policy(conversations) -> actions`` (sync or async), one action per conversation, in
                order; it is only given the live envs' conversations.
            jobs: The episodes to run (default: one per env, on task index ``i % len(tasks)``, seed i).
            auto_reset: Envs that finish take the next job. Without it there may be at most one job per
                env and finished envs stay idle.
            agent_name: Name recorded on episodes.
            agent_config: Settings recorded on episodes.
            on_episode: Called with each finished episode.

        Returns:
            The episodes, in completion order.

        Raises:
            ValueError: When the policy returns the wrong number of actions, or too many jobs are given
                without auto-reset.

        """
        if jobs is None:
            jobs = [BatchJob(env.tasks[i % len(env.tasks)].id, seed=i, trial=0) for i, env in enumerate(self.envs)]
        if not auto_reset and len(jobs) > len(self.envs):
            raise ValueError(f"{len(jobs)} jobs for {len(self.envs)} envs need auto_reset=True")
        queue = deque(jobs)
        current: dict[int, BatchJob] = {}
        episodes: list[Episode] = []
        meta = {"agent": agent_name, "agent_config": dict(agent_config or {})}

        async def start(indices: Sequence[int]) -> None:
            assigned = []
            for i in indices:
                if not queue:
                    break
                current[i] = queue.popleft()
                assigned.append(i)
            if not assigned:
                return
            await self.areset(
                seeds=[current[i].seed for i in assigned],
                options=[{"task_id": current[i].task_id} if current[i].task_id else None for i in assigned],
                indices=assigned,
            )
            finish([i for i in assigned if self.envs[i].done])

        def finish(indices: Sequence[int]) -> None:
            for i in indices:
                job = current.pop(i)
                user = self.envs[i].user
                ep = self.episode(
                    i, trial=job.trial, user=str(getattr(user, "name", None) or type(user).__name__), **meta
                )
                episodes.append(ep)
                if on_episode is not None:
                    on_episode(ep)

        await start(range(len(self.envs)))
        while True:
            live = [i for i in self.active if i in current]
            if not live:
                if not queue or not auto_reset:
                    break
                await start(range(len(self.envs)))
                continue
            actions = policy([self.conversation(i) for i in live])
            if inspect.isawaitable(actions):
                actions = await actions
            actions = list(actions)  # type: ignore[arg-type]
            if len(actions) != len(live):
                raise ValueError(f"the policy returned {len(actions)} actions for {len(live)} conversations")
            results = await self.astep(dict(zip(live, actions, strict=True)))
            ended = [i for i, r in results.items() if r.done]
            finish(ended)
            if auto_reset and ended:
                await start(ended)
        return episodes

    def run(self, policy: BatchPolicy, jobs: Sequence[BatchJob] | None = None, **kwargs: Any) -> list[Episode]:
        """Synchronous wrapper of :meth:`arun` (not callable inside a running event loop)."""
        return _run_sync(self.arun(policy, jobs, **kwargs), "run")  # type: ignore[no-any-return]


def make_vector_env(
    domain: str = "mock",
    n: int = 2,
    *,
    asynchronous: bool = False,
    **env_kwargs: Any,
) -> Any:
    """A Gymnasium vector env of ``n`` ToolUseEnvs.

    ``gymnasium.vector.SyncVectorEnv`` works as is: our spaces are custom ``gym.Space`` subclasses, which
    Gymnasium batches as tuples, so observations come back as a tuple of conversations and actions go in
    as a tuple of assistant turns (or strings). ``AsyncVectorEnv`` works too, but only with
    ``shared_memory=False`` (which this function sets): shared memory needs fixed-shape numeric arrays,
    and conversations are variable-length Python objects, so they are pickled through the worker pipes
    instead. Each worker process loads the domain once. For LLM-bound training prefer
    :class:`AsyncEnvBatch`, which overlaps user-simulator calls in one process without pickling.

    Args:
        domain: Domain name (must be importable in worker processes).
        n: Number of envs.
        asynchronous: AsyncVectorEnv (subprocesses) instead of SyncVectorEnv.
        **env_kwargs: Passed to each :class:`ToolUseEnv` (``task_ids``, ``max_turns``, ...).

    Returns:
        The vector env (Gymnasium's default next-step autoreset).

    """
    import functools

    from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

    if n < 1:
        raise ValueError("n must be >= 1")
    factory = functools.partial(ToolUseEnv, domain, **env_kwargs)
    fns = [factory] * n
    if asynchronous:
        return AsyncVectorEnv(fns, shared_memory=False)
    return SyncVectorEnv(fns)


# ============================================================================================ TRL glue
def _gold_call(task: Task, index: int) -> AssistantMessage:
    action = task.actions[index]
    return AssistantMessage(
        tool_calls=(ToolCall(id=f"gold_{index}", name=action.name, arguments=dict(action.arguments)),)
    )


def _closing(task: Task) -> AssistantMessage:
    outputs = ", ".join(task.outputs)
    return AssistantMessage(content=f"All done. {outputs}." if outputs else "All done.")


def _num_steps(task: Task) -> int:
    # One step per gold action, plus a final text step when the task has required outputs to state.
    return len(task.actions) + (1 if task.outputs and "outputs" in task.reward_basis else 0)


def gold_turn(task: Task, step: int) -> AssistantMessage:
    """The gold assistant turn at ``step`` of a task, as :func:`step_prompts` numbers steps.

    Args:
        task: The task.
        step: The step index: a gold action's index, or ``len(task.actions)`` for the closing message
            that states the required outputs.

    Returns:
        The gold tool call, or the closing text.

    Raises:
        ValueError: When the step is out of range.

    """
    if 0 <= step < len(task.actions):
        return _gold_call(task, step)
    if step == len(task.actions):
        return _closing(task)
    raise ValueError(f"step {step} out of range for task {task.id!r} ({len(task.actions)} gold actions)")


def step_prompts(
    domain: Domain | str,
    *,
    task_ids: Sequence[str] | None = None,
    split: str | None = None,
    steps: Literal["last", "all"] = "last",
    include_system: bool = True,
    user: UserSimulator | None = None,
) -> list[dict[str, Any]]:
    """Prompts cut from gold trajectories, for single-step RL (e.g. TRL's GRPOTrainer).

    Step k of a task is the conversation after the user's opening message and the first k gold actions
    (each an assistant tool call with its tool result). The policy's job at step k is the (k+1)-th gold
    action, or, at the final step of a task with required outputs, a reply stating them. Score
    completions with :class:`EnvStepReward`.

    Args:
        domain: A Domain or a domain name.
        task_ids: Tasks to use (default: all, or those of ``split``).
        split: Restrict to a split when ``task_ids`` is None.
        steps: ``"last"``: one prompt per task (its final step). ``"all"``: one per step.
        include_system: Put the system prompt first.
        user: User simulator for the opening message (default: scripted, which opens with the task's
            instruction).

    Returns:
        Rows ``{"prompt": [messages], "task_id": str, "step": int}`` (a ``datasets.Dataset.from_list``
        input; TRL passes ``task_id`` and ``step`` on to reward functions).

    """
    if steps not in ("last", "all"):
        raise ValueError(f"steps must be 'last' or 'all', got {steps!r}")
    dom = domain if isinstance(domain, Domain) else load_domain(domain)
    tasks = [dom.task(t) for t in task_ids] if task_ids is not None else list(dom.task_list(split))
    rows: list[dict[str, Any]] = []
    for task in tasks:
        total = _num_steps(task)
        if total == 0:
            continue
        wanted = [total - 1] if steps == "last" else list(range(total))
        env = ToolUseEnv(dom, user=user, task_ids=[task.id], max_turns=total + 2)
        env.reset(seed=0, options={"task_id": task.id})
        done = 0
        for k in wanted:
            while done < k and not env.done:
                env.step(_gold_call(task, done))
                done += 1
            if env.done:
                break
            prompt = [m.to_openai() for m in env.messages]
            if include_system:
                prompt.insert(0, {"role": "system", "content": env.system_prompt})
            rows.append({"prompt": prompt, "task_id": task.id, "step": k})
    return rows


class EnvStepReward:
    """A reward function that scores a completion by running it in the env (TRL ``reward_funcs`` form).

    For a prompt made by :func:`step_prompts` at step k of a task, the completion is parsed as one
    assistant turn (native-looking JSON tool calls, ``<tool_call>`` tags or fenced JSON become tool
    calls; anything else is text for the user). Then a fresh env episode runs: the first k gold actions,
    the policy's turn, the remaining gold actions, and a closing message stating the required outputs;
    the scripted user answers as usual. The reward is the verifier's (binary, or shaped) on that episode.

    So the reward measures the policy's step by its effect on the outcome: a wrong write, a skipped
    write, a missing output or ending the conversation early scores 0; the gold action scores 1. Read-only
    calls cannot change the outcome, so any valid read at a read step scores 1 (the gold continuation
    supplies what it needed).

    Calling it records every reward in :attr:`rewards` (so tests and logs can check where rewards came
    from). It is safe to use from one trainer process; create one per process.

    Args:
        domain: A Domain or a domain name.
        reward_mode: ``"binary"`` or ``"shaped"``.
        user: User simulator (default: scripted).
        seed: Episode seed.
        keep_episodes: Keep every scored episode in :attr:`episodes` (for inspection; grows without bound).

    """

    def __init__(
        self,
        domain: Domain | str = "mock",
        *,
        reward_mode: RewardMode = "binary",
        user: UserSimulator | None = None,
        seed: int = 0,
        keep_episodes: bool = False,
    ) -> None:
        _check_mode(reward_mode)
        self.domain = domain if isinstance(domain, Domain) else load_domain(domain)
        self.reward_mode: RewardMode = reward_mode
        self.user = user
        self.seed = seed
        self.rewards: list[float] = []
        self.episodes: list[Episode] = []
        self.keep_episodes = keep_episodes
        self.__name__ = f"apigen_{self.domain.name}_{reward_mode}"

    def parse(self, completion: Any) -> AssistantMessage:
        """Turn a completion (text, or TRL's conversational ``[{"role": "assistant", ...}]``) into a turn."""
        content: Any = completion
        calls = None
        if isinstance(completion, list):
            last = next((m for m in reversed(completion) if isinstance(m, Mapping)), {})
            content, calls = last.get("content"), last.get("tool_calls")
        elif isinstance(completion, Mapping):
            content, calls = completion.get("content"), completion.get("tool_calls")
        if content is not None and not isinstance(content, str):
            content = str(content)
        return build_assistant_message(content, calls, self.domain.tools.schemas(), Usage())

    def episode(self, task_id: str, step: int, completion: Any) -> Episode:
        """The episode that scores ``completion`` at ``step`` of ``task_id`` (see the class docstring)."""
        task = self.domain.task(task_id)
        total = _num_steps(task)
        if not 0 <= step < max(total, 1):
            raise ValueError(f"step {step} out of range for task {task_id!r} ({total} steps)")
        env = ToolUseEnv(self.domain, user=self.user, task_ids=[task.id], max_turns=total + 4)
        env.reset(seed=self.seed, options={"task_id": task.id})
        turns: list[AssistantMessage] = [_gold_call(task, i) for i in range(min(step, len(task.actions)))]
        try:
            policy_turn = self.parse(completion)
            policy_turn = to_assistant_message(policy_turn)
        except InvalidActionError as exc:
            return env.to_episode(termination="agent_error", error=_describe(exc), agent="policy")
        turns.append(policy_turn)
        turns.extend(_gold_call(task, i) for i in range(step + 1, len(task.actions)))
        turns.append(_closing(task))
        for turn in turns:
            if env.done:
                break
            env.step(turn)
        return env.to_episode(agent="policy")

    def score(self, task_id: str, step: int, completion: Any) -> float:
        """The reward of one completion."""
        ep = self.episode(task_id, step, completion)
        if self.keep_episodes:
            self.episodes.append(ep)
        return episode_reward(ep, self.reward_mode)

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        *,
        task_id: Sequence[str],
        step: Sequence[int],
        **kwargs: Any,
    ) -> list[float]:
        """Score a batch (TRL passes the dataset's ``task_id`` and ``step`` columns as keyword lists)."""
        if not len(completions) == len(task_id) == len(step):
            raise ValueError(f"got {len(completions)} completions, {len(task_id)} task ids and {len(step)} steps")
        out = [self.score(t, int(s), c) for t, s, c in zip(task_id, step, completions, strict=True)]
        self.rewards.extend(out)
        return out


class OracleBatchPolicy:
    """A batched policy that replays each task's gold actions (for tests, benchmarks and sanity checks).

    It identifies the task of a conversation by its first user message, which the scripted user opens
    with the task's instruction, then issues the next gold action (counting tool results so far) and
    finally a closing message stating the required outputs. It is privileged, like the oracle agent.

    Args:
        domain: The domain whose tasks are replayed.

    """

    def __init__(self, domain: Domain | str = "mock") -> None:
        dom = domain if isinstance(domain, Domain) else load_domain(domain)
        self._by_instruction: dict[str, Task] = {t.instruction: t for t in dom.tasks.values()}
        self.calls = 0

    def act(self, conversation: Sequence[Mapping[str, Any]]) -> AssistantMessage:
        """The next gold turn for one conversation."""
        opening = next((m.get("content") for m in conversation if m.get("role") == "user"), None)
        task = self._by_instruction.get(opening or "")
        if task is None:
            return AssistantMessage(content="Sorry, I cannot help with that.")
        done = sum(1 for m in conversation if m.get("role") == "tool")
        if done < len(task.actions):
            return _gold_call(task, done)
        return _closing(task)

    def __call__(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[AssistantMessage]:
        """One action per conversation (one call per batched step)."""
        self.calls += 1
        return [self.act(c) for c in conversations]
