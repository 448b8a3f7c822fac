"""Batched stepping: N envs stepped concurrently with one batched policy call per step, and Gymnasium vectors.

:class:`AsyncEnvBatch` steps N envs with one batched policy call per step across all live envs
(``policy(list_of_conversations) -> list_of_actions``); envs finish at different times and are refilled
from a job queue (auto-reset). Gymnasium's own vector envs work too: see :func:`make_vector_env`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode
from apigen_envs.messages import AssistantMessage
from apigen_envs.protocols import UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.rl.groups import run_sync
from apigen_envs.rl.trl_reward import closing_turn, gold_call
from apigen_envs.runner import Act, EpisodePlan, Reset, RunOptions, Sent, Step, acarry_out, advance, start
from apigen_envs.task import Task

Conversation = list[dict[str, Any]]
"""OpenAI chat-format messages, system prompt first."""


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
        terminated: The episode ended (user stop, terminal tool, invalid action, failure).
        truncated: ``max_turns`` was reached.
        info: The env's info dict (``termination``, ``reward_info`` and ``error`` once the episode ended).

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
    """N envs stepped concurrently, with one batched policy call per step: a scheduler over the episode runner.

    Each env's episode is an :func:`~apigen_envs.runner.episode_plan`, the same step machine every other
    caller runs, so a turn means the same here as anywhere: a turn that cannot be executed ends that env's
    episode as ``invalid_action`` (reward 0, counted), a wrong tool call is answered with an error tool
    message, and only infrastructure failures are left out of metrics. The batch carries out each plan's
    resets and steps concurrently and answers the plans' policy requests together.

    Low level: :meth:`areset` and :meth:`astep` (a mapping env index -> action; the envs' user-simulator
    calls run concurrently). High level: :meth:`arun` drives a batched policy over a queue of jobs; envs
    that finish early take the next job (auto-reset) so the batch stays full, and each step makes one
    policy call over the live envs only.

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
        self._slots: list[_Slot | None] = [None] * len(self.envs)

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
        """Indices of envs whose episode waits for the policy's next turn."""
        return tuple(i for i, slot in enumerate(self._slots) if slot is not None and slot.waiting is not None)

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

    # ----------------------------------------------------------------- scheduling
    async def _advance(self, index: int, sent: Sent) -> StepResult:
        """Run env ``index``'s plan until it asks the policy again or ends; its resets and steps are awaited."""
        slot = self._slots[index]
        assert slot is not None
        env = self.envs[index]
        slot.waiting = None
        while True:
            request = advance(slot.plan, sent)
            if isinstance(request, Episode):
                slot.episode = request
                break
            if isinstance(request, Act):
                slot.waiting = request
                break
            sent = await acarry_out(env, None, request)
            if isinstance(request, Reset | Step) and sent.error is None:
                slot.seen = sent.value  # the env's own (observation, ..., info): no need to rebuild it
        return self._result(index, slot)

    def _result(self, index: int, slot: _Slot) -> StepResult:
        env = self.envs[index]
        observation, info = (slot.seen[0], dict(slot.seen[-1])) if slot.seen else ((), {})
        if slot.episode is None:
            return StepResult(index, observation, 0.0, False, False, info)
        episode = slot.episode
        if episode.termination not in (None, info.get("termination")):
            # The runner ended it (an unusable turn, a failure): the env's last result predates that.
            observation = tuple(m.to_openai() for m in env.messages)
        info.update(
            task_id=episode.task_id,
            turn=episode.num_turns,
            termination=episode.termination,
            reward_info=episode.reward_info,
            error=episode.error,
        )
        truncated = episode.termination == "max_turns"
        return StepResult(index, observation, episode.reward, not truncated, truncated, info)

    def _open(self, index: int, run: RunOptions) -> None:
        """Give env ``index`` a new episode plan (started by the next :meth:`_advance`)."""
        self._slots[index] = _Slot(start(self.envs[index], _BATCH_AGENT, run)[1])

    async def areset(
        self,
        *,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[dict[str, Any] | None] | None = None,
        indices: Sequence[int] | None = None,
        agent_name: str = "batch_policy",
        agent_config: Mapping[str, Any] | None = None,
    ) -> list[StepResult]:
        """Start an episode on envs concurrently.

        Args:
            seeds: One seed per reset env.
            options: One options dict per reset env (``{"task_id": ...}``).
            indices: Which envs (default: all).
            agent_name: Name recorded on the episodes.
            agent_config: Settings recorded on the episodes.

        Returns:
            One result per reset env (reward 0; ``terminated`` if the user ended at once).

        """
        idx = list(range(len(self.envs))) if indices is None else list(indices)
        seed_list = list(seeds) if seeds is not None else [None] * len(idx)
        opt_list = list(options) if options is not None else [None] * len(idx)
        if len(seed_list) != len(idx) or len(opt_list) != len(idx):
            raise ValueError(f"need one seed and one options entry per env ({len(idx)})")
        fields = {"agent": agent_name, "agent_config": dict(agent_config or {})}
        for i, seed, opts in zip(idx, seed_list, opt_list, strict=True):
            self._open(i, {"options": opts, "seed": seed, "fields": fields})
        return list(await asyncio.gather(*(self._advance(i, Sent()) for i in idx)))

    async def astep(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        """Give the policy's turns to the given envs and step them concurrently.

        Args:
            actions: Env index -> action (an AssistantMessage, an OpenAI assistant dict or a str). Whatever
                cannot be executed ends that env's episode as ``invalid_action``.

        Returns:
            Env index -> result.

        Raises:
            ValueError: When an index has no episode in progress.

        """
        live = set(self.active)
        bad = [i for i in actions if i not in live]
        if bad:
            raise ValueError(f"envs {bad} have no episode in progress (reset them first)")
        return await self._answer({i: Sent(a) for i, a in actions.items()})

    async def _answer(self, sent: Mapping[int, Sent]) -> dict[int, StepResult]:
        results = await asyncio.gather(*(self._advance(i, s) for i, s in sent.items()))
        return {r.index: r for r in results}

    def episode(self, index: int, *, trial: int | None = None, **fields: Any) -> Episode:
        """The Episode record of env ``index`` (its finished episode, or the one in progress as it stands).

        Args:
            index: The env.
            trial: Trial index to record (default: the job's).
            **fields: Episode fields to set on the record.

        Returns:
            The record.

        """
        slot = self._slots[index]
        if trial is not None:
            fields["trial"] = trial
        if slot is not None and slot.episode is not None:
            return slot.episode.model_copy(update=fields) if fields else slot.episode
        return self.envs[index].to_episode(**fields)

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

        An exception raised by the policy is the failure of every turn it was asked for: each of those
        episodes ends as the runner decides (``invalid_action``, or ``agent_error`` for an
        :class:`~apigen_envs.errors.InfrastructureError`).

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
        fields = {"agent": agent_name, "agent_config": dict(agent_config or {})}
        episodes: list[Episode] = []

        async def fill(indices: Sequence[int]) -> None:
            started = []
            for i in indices:
                if queue:
                    job = queue.popleft()
                    options = {"task_id": job.task_id} if job.task_id else None
                    self._open(i, {"options": options, "seed": job.seed, "trial": job.trial, "fields": fields})
                    started.append(i)
            await self._answer({i: Sent() for i in started})
            collect(started)

        def collect(indices: Sequence[int]) -> list[int]:
            ended = []
            for i in indices:
                slot = self._slots[i]
                if slot is not None and slot.episode is not None and not slot.reported:
                    slot.reported = True
                    ended.append(i)
                    episodes.append(slot.episode)
                    if on_episode is not None:
                        on_episode(slot.episode)
            return ended

        await fill(range(len(self.envs)))
        while True:
            live = list(self.active)
            if not live:
                if not queue or not auto_reset:
                    break
                await fill(range(len(self.envs)))
                continue
            await self._answer(await self._ask(policy, live))
            ended = collect(live)
            if auto_reset and ended:
                await fill(ended)
        return episodes

    async def _ask(self, policy: BatchPolicy, live: Sequence[int]) -> dict[int, Sent]:
        """One batched policy call for the live envs: their actions, or the policy's failure for each."""
        try:
            actions: Any = policy([self.conversation(i) for i in live])
            if inspect.isawaitable(actions):
                actions = await actions
            actions = list(actions)
        except Exception as exc:  # noqa: BLE001 - the policy's failure, judged per episode by the runner
            return dict.fromkeys(live, Sent(error=exc))
        if len(actions) != len(live):
            raise ValueError(f"the policy returned {len(actions)} actions for {len(live)} conversations")
        return {i: Sent(a) for i, a in zip(live, actions, strict=True)}

    def run(self, policy: BatchPolicy, jobs: Sequence[BatchJob] | None = None, **kwargs: Any) -> list[Episode]:
        """Synchronous wrapper of :meth:`arun` (not callable inside a running event loop)."""
        return run_sync(self.arun(policy, jobs, **kwargs), "run")  # type: ignore[no-any-return]


@dataclass(eq=False)
class _Slot:
    """One env's episode in the batch: its plan, what it waits for, and its record once finished."""

    plan: EpisodePlan
    waiting: Act | None = None
    episode: Episode | None = None
    reported: bool = False
    seen: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class _BatchAgent:
    """Stands for the batched policy in each env's plan (the batch itself answers the policy requests)."""

    name: str = "batch_policy"
    privileged: bool = False

    def act(self, conversation: Sequence[Any], context: Any) -> Any:
        """Never called: the batch answers its plans' policy requests with one batched call."""
        raise RuntimeError("AsyncEnvBatch answers policy requests itself")

    async def aact(self, conversation: Sequence[Any], context: Any) -> Any:
        """Never called (see :meth:`act`)."""
        return self.act(conversation, context)


_BATCH_AGENT = _BatchAgent()


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


class OracleBatchPolicy:
    """A batched policy that replays each task's gold actions (for tests, benchmarks and sanity checks).

    It identifies the task of a conversation by its first user message (the scripted user's opening,
    :func:`~apigen_envs.simulators.customer_lines.scripted_opening`, or the task's instruction), then
    issues the next gold action (counting tool results so far) and finally a closing message stating the
    required outputs. It is privileged, like the oracle agent.

    Args:
        domain: The domain whose tasks are replayed.

    """

    def __init__(self, domain: Domain | str = "mock") -> None:
        dom = domain if isinstance(domain, Domain) else load_domain(domain)
        from apigen_envs.simulators.customer_lines import scripted_opening

        self._by_instruction: dict[str, Task] = {t.instruction: t for t in dom.tasks.values()}
        self._by_instruction.update({scripted_opening(t): t for t in dom.tasks.values()})
        self.calls = 0

    def act(self, conversation: Sequence[Mapping[str, Any]]) -> AssistantMessage:
        """The next gold turn for one conversation."""
        opening = next((m.get("content") for m in conversation if m.get("role") == "user"), None)
        task = self._by_instruction.get(opening or "")
        if task is None:
            return AssistantMessage(content="Sorry, I cannot help with that.")
        done = sum(1 for m in conversation if m.get("role") == "tool")
        if done < len(task.actions):
            return gold_call(task, done)
        return closing_turn(task)

    def __call__(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[AssistantMessage]:
        """One action per conversation (one call per batched step)."""
        self.calls += 1
        return [self.act(c) for c in conversations]
