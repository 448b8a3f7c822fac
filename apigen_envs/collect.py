"""Rollout collection: run tasks x trials of an agent against a user simulator, concurrently.

Episodes run as asyncio tasks bounded by a concurrency limit, so hundreds can wait on an LLM server at once
in one process. Each finished episode is appended to a JSONL file as one flushed line; a killed run resumes
by skipping the episode ids already written, so nothing is lost or duplicated. Failures of the setup
(agent or user LLM errors, env bugs) are recorded with their own termination and left out of metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode
from apigen_envs.episodes_io import EpisodeWriter, existing_ids, run_key
from apigen_envs.errors import InvalidActionError
from apigen_envs.messages import Usage
from apigen_envs.protocols import Agent, AgentContext, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.task import Task


def episode_seed(base_seed: int, task_id: str, trial: int) -> int:
    """A stable 31-bit seed per (run seed, task, trial), independent of job order and concurrency.

    Args:
        base_seed: The run's seed.
        task_id: The task id.
        trial: The trial index.

    Returns:
        The episode seed.
    """
    digest = hashlib.blake2b(f"{base_seed}/{task_id}/{trial}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Job:
    """One episode to run.

    Attributes:
        task: The task.
        trial: Trial index (0-based).
        seed: Episode seed.
    """

    task: Task
    trial: int
    seed: int

    @property
    def episode_id(self) -> str:
        """The id the episode will carry."""
        return f"{self.task.domain}/{self.task.id}/{self.trial}"


def _name(obj: Any, default: str) -> str:
    return str(getattr(obj, "name", None) or type(obj).__name__ or default)


@dataclass
class Collector:
    """Runs an agent on tasks x trials and collects Episodes.

    Attributes:
        domain: The domain (object or name).
        agent: The policy under test.
        user: The user simulator (default: the deterministic scripted user).
        trials: Episodes per task (k for pass^k).
        max_turns: Agent steps per episode before truncation.
        concurrency: Episodes in flight at once.
        base_seed: Run seed; episode seeds derive from it.
        agent_config: Settings recorded on every episode (model, temperature, ...).
        user_config: User simulator settings recorded on every episode.
        data_dir: Data directory when ``domain`` is a name.
        on_episode: Called with each finished episode (progress bars, live metrics).
        failures: After a run, the episodes that could not be run or written (``episode_id: reason``); they
            are not in the file, so a resume runs them again. Empty when all went well.
    """

    domain: Domain | str
    agent: Agent
    user: UserSimulator | None = None
    trials: int = 1
    max_turns: int = 30
    concurrency: int = 32
    base_seed: int = 0
    agent_config: dict[str, Any] = field(default_factory=dict)
    user_config: dict[str, Any] = field(default_factory=dict)
    data_dir: str | Path | None = None
    on_episode: Callable[[Episode], None] | None = None
    failures: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.domain, str):
            self.domain = load_domain(self.domain, self.data_dir)
        if self.user is None:
            from apigen_envs.simulators.scripted_user import ScriptedUser

            self.user = ScriptedUser()
        if self.trials < 1 or self.concurrency < 1 or self.max_turns < 1:
            raise ValueError("trials, concurrency and max_turns must be >= 1")

    def jobs(self, tasks: Sequence[Task]) -> list[Job]:
        """The (task, trial) jobs for ``tasks``, trial-major so early results cover every task."""
        return [
            Job(task, trial, episode_seed(self.base_seed, task.id, trial))
            for trial in range(self.trials)
            for task in tasks
        ]

    async def run_job(self, job: Job) -> Episode:
        """Run one episode to the end and return its record (never raises for agent/user/env failures)."""
        assert isinstance(self.domain, Domain)
        env = ToolUseEnv(self.domain, user=self.user, task_ids=[job.task.id], max_turns=self.max_turns)
        meta: dict[str, Any] = {
            "agent": _name(self.agent, "agent"),
            "agent_config": dict(self.agent_config),
            "user": _name(self.user, "user"),
            "user_config": dict(self.user_config),
        }
        return await arun_episode(env, self.agent, task_id=job.task.id, seed=job.seed, trial=job.trial, meta=meta)

    async def arun(self, tasks: Sequence[Task] | None = None, out: str | Path | None = None) -> list[Episode]:
        """Run every job not already in ``out`` and return the new episodes.

        Args:
            tasks: Tasks to run (all of the domain's tasks when None).
            out: JSONL file to append to; its existing episode ids are skipped (resume).

        Returns:
            The episodes run by this call, in completion order (episodes that failed to run or to be written
            are left out and listed in :attr:`failures`).
        """
        assert isinstance(self.domain, Domain)
        task_list = list(tasks) if tasks is not None else list(self.domain.tasks.values())
        done = existing_ids(out) if out is not None else set()
        agent, model = _name(self.agent, "agent"), self.agent_config.get("model")
        pending = [job for job in self.jobs(task_list) if run_key(agent, model, job.episode_id) not in done]
        writer = EpisodeWriter(out) if out is not None else None
        results: list[Episode] = []
        self.failures = []
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in pending:
            queue.put_nowait(job)

        async def worker() -> None:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                # One episode that cannot be run or written must not stop the others: record it and go on
                # (it is not in the file, so a resume runs it again).
                try:
                    episode = await self.run_job(job)
                    if writer is not None:
                        writer.write(episode)
                except Exception as exc:  # noqa: BLE001 - reported on self.failures and by the CLI
                    self.failures.append(f"{job.episode_id}: {describe_error(exc)}")
                    continue
                results.append(episode)
                if self.on_episode is not None:
                    self.on_episode(episode)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(pending)) or 1)))
        finally:
            if writer is not None:
                writer.close()
        return results

    def run(self, tasks: Sequence[Task] | None = None, out: str | Path | None = None) -> list[Episode]:
        """Synchronous wrapper of :meth:`arun` (not callable from inside a running event loop).

        Args:
            tasks: Tasks to run (all when None).
            out: JSONL file to append to and resume from.

        Returns:
            The episodes run by this call.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(tasks, out))
        raise RuntimeError("Collector.run() was called inside an event loop; use `await collector.arun()`")


async def arun_episode(
    env: ToolUseEnv, agent: Agent, *, task_id: str, seed: int | None, trial: int, meta: dict[str, Any]
) -> Episode:
    """Run one episode of ``task_id`` on ``env`` with ``agent`` and return its record.

    Failures are recorded, never raised: a user-simulator or agent exception ends the episode as
    ``user_error`` / ``agent_error`` (left out of metrics); an unusable agent turn ends it as
    ``invalid_action`` (counted against the agent).

    Args:
        env: The env (it is reset).
        agent: The policy.
        task_id: The task to run.
        seed: Episode seed (reaches the user simulator and ``context.seed``).
        trial: Trial index recorded on the episode.
        meta: Episode fields describing the run (agent, agent_config, user, user_config).

    Returns:
        The episode.

    """
    agent_usage = Usage()
    try:
        _, info = await env.areset(seed=seed, options={"task_id": task_id})
    except Exception as exc:  # noqa: BLE001 - any user-simulator failure is recorded, not raised
        return env.to_episode(trial=trial, termination="user_error", error=describe_error(exc), **meta)
    context = AgentContext(
        system_prompt=info["system_prompt"],
        tools=tuple(info["tools"]),
        task=env.task,
        seed=seed,
        extra=dict(meta.get("agent_config") or {}),
    )
    while not env.done:
        try:
            action = await agent.aact(env.messages, context)
        except Exception as exc:  # noqa: BLE001 - recorded as an agent failure
            return env.to_episode(
                trial=trial, termination="agent_error", error=describe_error(exc), agent_usage=agent_usage, **meta
            )
        if getattr(action, "usage", None) is not None:
            agent_usage = agent_usage + action.usage
        try:
            await env.astep(action)
        except InvalidActionError as exc:
            # The policy's own fault (empty or malformed turn): the episode ends and counts as a failure.
            env.end("invalid_action", describe_error(exc))
        except Exception as exc:  # noqa: BLE001 - user failure (env already marked done)
            if env.done:
                break
            return env.to_episode(
                trial=trial, termination="agent_error", error=describe_error(exc), agent_usage=agent_usage, **meta
            )
    return env.to_episode(trial=trial, agent_usage=agent_usage, **meta)


def describe_error(exc: BaseException) -> str:
    """A one-line description of an exception for episode records: ``Type: message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
