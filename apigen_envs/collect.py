"""Rollout collection: run tasks x trials of an agent against a user simulator, concurrently.

Episodes run as asyncio tasks bounded by a concurrency limit, so hundreds can wait on an LLM server at once
in one process, each through the episode runner (:mod:`apigen_envs.runner`), which decides every outcome.
Each finished episode is appended to a JSONL file as one flushed line; a killed run resumes by skipping the
episode ids already written, so nothing is lost or duplicated. Every episode carries the run's
:class:`~apigen_envs.episode.RunSettings` (the resume key): resuming into a file written with other settings
is an error naming the differing field (or, on request, goes to a new file), never a silent merge. Failures
of the setup (the model server, the user simulator, env bugs) are retried ``retries`` times, then recorded
with their own termination and left out of metrics.
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
from apigen_envs.episode import Episode, RunSettings
from apigen_envs.episodes_io import ConflictPolicy, EpisodeWriter, resume_output
from apigen_envs.protocols import Agent, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.runner import arun_episode, describe_error
from apigen_envs.task import Task

__all__ = ["Collector", "Job", "data_fingerprint", "describe_error", "episode_seed", "run_settings"]


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


def data_fingerprint(domain: Domain) -> str:
    """A short hash of a domain's data source and task set (part of the resume key).

    Args:
        domain: The domain.

    Returns:
        16 hex digits.

    """
    digest = hashlib.blake2b(f"{domain.name}\0{domain.source}\0".encode(), digest_size=8)
    for task_id in sorted(domain.tasks):
        digest.update(domain.tasks[task_id].model_dump_json().encode())
    return digest.hexdigest()


def run_settings(
    domain: Domain,
    agent: Any,
    user: Any,
    *,
    agent_config: dict[str, Any],
    user_config: dict[str, Any],
    base_seed: int,
    max_turns: int,
) -> RunSettings:
    """The settings that make a run's episodes what they are (see :class:`~apigen_envs.episode.RunSettings`).

    Args:
        domain: The domain.
        agent: The agent (its name is used).
        user: The user simulator (its name is used).
        agent_config: Agent settings (``model``, ``temperature``).
        user_config: User simulator settings (``model``, ``temperature``).
        base_seed: The run seed.
        max_turns: Agent steps per episode.

    Returns:
        The settings.

    """
    model, user_model = agent_config.get("model"), user_config.get("model")
    return RunSettings(
        agent=_name(agent, "agent"),
        model=None if model is None else str(model),
        temperature=agent_config.get("temperature"),
        user=_name(user, "user"),
        user_model=None if user_model is None else str(user_model),
        user_temperature=user_config.get("temperature"),
        base_seed=base_seed,
        max_turns=max_turns,
        semantics=domain.semantics.label if getattr(domain, "semantics", None) is not None else None,
        data=data_fingerprint(domain),
    )


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
        retries: Re-runs of a job whose episode failed for infrastructure reasons (the last attempt is kept).
        on_conflict: When ``out`` holds episodes of a run with other settings: ``"error"`` (raise
            :class:`~apigen_envs.episodes_io.ResumeConflictError` naming the field) or ``"new_file"`` (write
            to the first ``<name>-N.jsonl`` that is missing or holds this run; :attr:`out_path` tells which).
        out_path: The file the last :meth:`arun` wrote to (set by it).
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
    retries: int = 2
    on_conflict: ConflictPolicy = "error"
    out_path: Path | None = field(default=None, init=False)
    _settings: RunSettings | None = field(default=None, init=False, repr=False)
    failures: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.domain, str):
            self.domain = load_domain(self.domain, self.data_dir)
        if self.user is None:
            from apigen_envs.simulators.scripted_user import ScriptedUser

            self.user = ScriptedUser()
        if self.trials < 1 or self.concurrency < 1 or self.max_turns < 1:
            raise ValueError("trials, concurrency and max_turns must be >= 1")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")

    @property
    def settings(self) -> RunSettings:
        """The run's settings, recorded on every episode and checked on resume."""
        if self._settings is None:
            assert isinstance(self.domain, Domain)
            self._settings = run_settings(
                self.domain,
                self.agent,
                self.user,
                agent_config=self.agent_config,
                user_config=self.user_config,
                base_seed=self.base_seed,
                max_turns=self.max_turns,
            )
        return self._settings

    def jobs(self, tasks: Sequence[Task]) -> list[Job]:
        """The (task, trial) jobs for ``tasks``, trial-major so early results cover every task."""
        return [
            Job(task, trial, episode_seed(self.base_seed, task.id, trial))
            for trial in range(self.trials)
            for task in tasks
        ]

    async def run_job(self, job: Job) -> Episode:
        """Run one episode to the end and return its record (never raises for agent/user/env failures).

        An infrastructure failure is retried up to :attr:`retries` times; the episode returned is the first
        that is not one, or the last attempt.
        """
        assert isinstance(self.domain, Domain)
        fields: dict[str, Any] = {"user_config": dict(self.user_config), "run_settings": self.settings}
        for attempt in range(1, self.retries + 2):
            env = ToolUseEnv(self.domain, user=self.user, task_ids=[job.task.id], max_turns=self.max_turns)
            episode = await arun_episode(
                env,
                self.agent,
                task_id=job.task.id,
                seed=job.seed,
                trial=job.trial,
                agent_config=self.agent_config,
                fields={**fields, "attempts": attempt},
            )
            if not episode.is_infra_failure:
                break
        return episode

    async def arun(self, tasks: Sequence[Task] | None = None, out: str | Path | None = None) -> list[Episode]:
        """Run every job not already in ``out`` and return the new episodes.

        Args:
            tasks: Tasks to run (all of the domain's tasks when None).
            out: JSONL file to append to; its existing episode ids are skipped (resume).

        Returns:
            The episodes run by this call, in completion order (episodes that failed to run or to be written
            are left out and listed in :attr:`failures`).

        Raises:
            ResumeConflictError: When ``out`` holds episodes of a run with other settings (and
                :attr:`on_conflict` is ``"error"``).
        """
        assert isinstance(self.domain, Domain)
        task_list = list(tasks) if tasks is not None else list(self.domain.tasks.values())
        done: set[str] = set()
        if out is not None:
            self.out_path, done = resume_output(out, self.settings, self.on_conflict)
        pending = [job for job in self.jobs(task_list) if job.episode_id not in done]
        writer = EpisodeWriter(self.out_path) if out is not None and self.out_path is not None else None
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
