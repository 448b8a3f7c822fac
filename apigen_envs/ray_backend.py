"""Distributed rollouts on Ray: the Collector's jobs spread over worker actors, one JSONL on the driver.

Each worker is a Ray actor that loads the domain once (one snapshot per worker process) and builds its agent
and user simulator from picklable factories, then runs small chunks of jobs with the same async episode loop
as :class:`~apigen_envs.collect.Collector`. The driver hands out chunks, streams finished episodes into the
resumable JSONL as they arrive, and re-submits the chunk of a worker that died, so a killed worker loses no
episode and, because only the driver writes, none is written twice.

Requires the ``ray`` extra (``pip install "apigen-envs[ray]"``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_envs.collect import Collector, Job, episode_seed, run_settings
from apigen_envs.episode import Episode
from apigen_envs.episodes_io import ConflictPolicy, EpisodeWriter, episode_line, resume_output
from apigen_envs.errors import EpisodeWriteError
from apigen_envs.registry import load_domain
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.task import Task


class _Worker:
    """Ray actor body: one domain snapshot, one agent and one user per worker process."""

    def __init__(
        self, domain: str, data_dir: str | None, settings: dict[str, Any], semantics: str | None = None
    ) -> None:
        self._settings = settings
        self._domain = load_domain(domain, data_dir, semantics)
        self._collector = Collector(
            self._domain,
            settings["agent_factory"](),
            settings["user_factory"]() if settings["user_factory"] else None,
            max_turns=settings["max_turns"],
            base_seed=settings["base_seed"],
            agent_config=settings["agent_config"],
            user_config=settings["user_config"],
            retries=settings["retries"],
        )

    def ping(self) -> int:
        """Readiness probe; returns the number of tasks the worker's domain holds."""
        return len(self._domain.tasks)

    def run_chunk(self, jobs: list[tuple[str, int, int]], concurrency: int) -> list[str]:
        """Run (task_id, trial, seed) jobs concurrently; return the episodes as JSON lines.

        An episode that cannot be serialised comes back as a line ``{"_failed": "episode_id: reason"}``, so one
        bad record never fails the whole chunk.
        """

        async def run_all() -> list[Episode]:
            semaphore = asyncio.Semaphore(concurrency)

            async def one(task_id: str, trial: int, seed: int) -> Episode:
                async with semaphore:
                    return await self._collector.run_job(Job(self._domain.task(task_id), trial, seed))

            return list(await asyncio.gather(*(one(*job) for job in jobs)))

        lines = []
        for ep in asyncio.run(run_all()):
            try:
                lines.append(episode_line(ep).decode("utf-8"))
            except EpisodeWriteError as exc:
                lines.append(json.dumps({"_failed": f"{ep.episode_id}: {exc}"}))
        return lines


@dataclass
class RayCollector:
    """Runs tasks x trials on a Ray cluster and appends the episodes to one JSONL file.

    Attributes:
        domain: Domain name (each worker loads it once).
        agent_factory: Picklable callable building the agent inside a worker.
        user_factory: Picklable callable building the user simulator (None: scripted user).
        workers: Number of worker actors.
        trials: Episodes per task.
        max_turns: Agent steps per episode.
        concurrency: Episodes in flight per worker.
        chunk_size: Jobs per request to a worker; a dead worker's chunk is re-run elsewhere.
        base_seed: Run seed.
        data_dir: Data directory for the domain.
        semantics: Semantics profile name or label (default: the data's own).
        address: Ray cluster address (None starts or joins a local instance).
        agent_config: Settings recorded on episodes.
        user_config: User settings recorded on episodes.
        max_resubmits: How many times one chunk may be re-run after worker failures.
        on_episode: Called on the driver with each finished episode.
        failures: After a run, the episodes that could not be serialised or written (``episode_id: reason``);
            they are not in the file, so a resume runs them again.
        retries: Re-runs of a job whose episode failed for infrastructure reasons (inside the worker).
        on_conflict: What to do when ``out`` holds a run with other settings (see
            :class:`~apigen_envs.collect.Collector`).
        out_path: The file the last :meth:`run` wrote to.
    """

    domain: str
    agent_factory: Callable[[], Any]
    user_factory: Callable[[], Any] | None = None
    workers: int = 2
    trials: int = 1
    max_turns: int = 30
    concurrency: int = 32
    chunk_size: int = 16
    base_seed: int = 0
    data_dir: str | None = None
    semantics: str | None = None
    address: str | None = None
    agent_config: dict[str, Any] = field(default_factory=dict)
    user_config: dict[str, Any] = field(default_factory=dict)
    max_resubmits: int = 3
    on_episode: Callable[[Episode], None] | None = None
    failures: list[str] = field(default_factory=list, init=False)
    retries: int = 2
    on_conflict: ConflictPolicy = "error"
    out_path: Path | None = field(default=None, init=False)

    def _start_workers(self, ray: Any) -> list[Any]:
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        actor = ray.remote(max_restarts=-1, max_task_retries=0)(_Worker)
        settings = {
            "agent_factory": self.agent_factory,
            "user_factory": self.user_factory,
            "max_turns": self.max_turns,
            "base_seed": self.base_seed,
            "agent_config": self.agent_config,
            "user_config": self.user_config,
            "retries": self.retries,
        }
        workers = [actor.remote(self.domain, self.data_dir, settings, self.semantics) for _ in range(self.workers)]
        ray.get([w.ping.remote() for w in workers])
        return workers

    def run(self, tasks: Sequence[Task] | None = None, out: str | Path | None = None) -> list[Episode]:
        """Run every job not already in ``out``; return the episodes of this call.

        Args:
            tasks: Tasks (all of the domain's when None).
            out: JSONL file to append to and resume from.

        Returns:
            The new episodes, in completion order.
        """
        import ray

        domain = load_domain(self.domain, self.data_dir, self.semantics)
        task_list = list(tasks) if tasks is not None else list(domain.tasks.values())
        done: set[str] = set()
        if out is not None:
            # The same settings the workers' collectors record, so the resume check sees what they write.
            user = self.user_factory() if self.user_factory else ScriptedUser()
            settings = run_settings(
                domain,
                self.agent_factory(),
                user,
                agent_config=self.agent_config,
                user_config=self.user_config,
                base_seed=self.base_seed,
                max_turns=self.max_turns,
            )
            self.out_path, done = resume_output(out, settings, self.on_conflict)
        jobs = [
            (task.id, trial, episode_seed(self.base_seed, task.id, trial))
            for trial in range(self.trials)
            for task in task_list
            if f"{task.domain}/{task.id}/{trial}" not in done
        ]
        chunks = [jobs[i : i + self.chunk_size] for i in range(0, len(jobs), self.chunk_size)]
        if not chunks:
            return []
        workers = self._start_workers(ray)
        writer = EpisodeWriter(self.out_path) if out is not None and self.out_path is not None else None
        results: list[Episode] = []
        self.failures = []
        pending: dict[Any, tuple[int, int, int]] = {}  # ref -> (chunk index, worker index, attempts)
        queue = list(range(len(chunks)))
        attempts = [0] * len(chunks)
        busy: dict[int, int] = dict.fromkeys(range(len(workers)), 0)
        try:
            while queue or pending:
                # keep two chunks per worker in flight so workers never idle between chunks
                for w in range(len(workers)):
                    while queue and busy[w] < 2:
                        index = queue.pop(0)
                        ref = workers[w].run_chunk.remote(chunks[index], self.concurrency)
                        pending[ref] = (index, w, attempts[index])
                        busy[w] += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index, w, _ = pending.pop(ref)
                    busy[w] -= 1
                    try:
                        lines = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                        attempts[index] += 1
                        if attempts[index] > self.max_resubmits:
                            raise RuntimeError(f"chunk {index} failed {attempts[index]} times: {exc}") from exc
                        queue.append(index)  # the actor restarts; its chunk runs again, nothing was written
                        continue
                    for line in lines:
                        if line.startswith('{"_failed"'):
                            self.failures.append(json.loads(line)["_failed"])
                            continue
                        episode = Episode.model_validate_json(line)
                        if writer is not None:
                            try:
                                writer.write(episode)
                            except EpisodeWriteError as exc:
                                self.failures.append(f"{episode.episode_id}: {exc}")
                                continue
                        results.append(episode)
                        if self.on_episode is not None:
                            self.on_episode(episode)
        finally:
            if writer is not None:
                writer.close()
            for worker in workers:
                ray.kill(worker)
        return results
