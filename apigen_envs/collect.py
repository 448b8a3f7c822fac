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
import contextlib
import gc
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episode import Episode, RunSettings
from apigen_envs.episodes_io import ConflictPolicy, EpisodeWriter, episode_line, resume_output
from apigen_envs.errors import ApigenError
from apigen_envs.protocols import Agent, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.runner import arun_episode, describe_error
from apigen_envs.task import Task

__all__ = [
    "CollectError",
    "Collector",
    "Job",
    "ProcessCollector",
    "data_fingerprint",
    "describe_error",
    "episode_seed",
    "run_settings",
    "tuned_gc",
]


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


AGENT_OPTIONS = ("constrain", "id_reminder", "ground_check")
"""Agent switches recorded in ``agent_config`` that change episodes, so they are part of the resume key."""


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
        agent_config: Agent settings (``model``, ``temperature``, the switches in :data:`AGENT_OPTIONS`).
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
        agent_options={k: bool(agent_config[k]) for k in AGENT_OPTIONS if k in agent_config},
        user=_name(user, "user"),
        user_model=None if user_model is None else str(user_model),
        user_temperature=user_config.get("temperature"),
        base_seed=base_seed,
        max_turns=max_turns,
        semantics=domain.semantics.label if getattr(domain, "semantics", None) is not None else None,
        data=data_fingerprint(domain),
    )


GC_THRESHOLDS = (50_000, 20, 10)
"""Collection thresholds while collecting (CPython's defaults: 700, 10, 10)."""


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """Cheaper garbage collection for a collection run; the previous settings come back on exit.

    What is alive when the run starts (modules, the domain, the agent) is frozen out of the collector's
    reach, so the episodes' garbage no longer makes every collection walk it again, and the first generation
    is collected every 50,000 allocations instead of 700. Measured on the mock domain at C = 256 with a
    scripted LLM (medians of 3 interleaved runs): 247 us of CPU per episode by default, 151 with the freeze
    alone, 126 with both; the share of CPU in the collector fell from ~25% to ~13%.
    """
    old = gc.get_threshold()
    # No full collection first (it cost ~50 ms a run, more with a large domain loaded): garbage frozen here
    # goes back to the oldest generation at unfreeze and is collected there like any other.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


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
        tune_gc: Run with :func:`tuned_gc` (the process's garbage collector settings are restored afterwards).
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
    tune_gc: bool = True
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
        loop = asyncio.get_running_loop()
        # Episodes that finish in the same event-loop pass are written together, in one system call, at the
        # end of that pass; an episode counts (results, on_episode) only once its line is in the file.
        unwritten: list[tuple[Episode, bytes]] = []
        callback_errors: list[Exception] = []

        def accept(episode: Episode) -> None:
            results.append(episode)
            if self.on_episode is not None:
                try:
                    self.on_episode(episode)
                except Exception as exc:  # noqa: BLE001 - raised from arun once the run is over
                    callback_errors.append(exc)

        def flush() -> None:
            batch = unwritten[:]
            unwritten.clear()
            if not batch or writer is None:
                return
            try:
                writer.write_lines([line for _, line in batch], [e.episode_id for e, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the whole batch is out of the file; a resume reruns it
                self.failures.extend(f"{e.episode_id}: {describe_error(exc)}" for e, _ in batch)
                return
            for episode, _ in batch:
                accept(episode)

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
                    line = episode_line(episode) if writer is not None else b""
                except Exception as exc:  # noqa: BLE001 - reported on self.failures and by the CLI
                    self.failures.append(f"{job.episode_id}: {describe_error(exc)}")
                    continue
                if writer is None:
                    accept(episode)
                    continue
                if not unwritten:
                    loop.call_soon(flush)
                unwritten.append((episode, line))

        try:
            with tuned_gc() if self.tune_gc else contextlib.nullcontext():
                await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(pending)) or 1)))
        finally:
            flush()  # what finished before an interrupt or an error is kept
            if writer is not None:
                writer.close()
        if callback_errors:
            raise callback_errors[0]  # the caller's on_episode failed; every episode is in the file regardless
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


# ---------------------------------------------------------------------------------------------- processes
class CollectError(ApigenError):
    """A multi-process run could not go on: its worker processes cannot start."""


_CHUNK = 16  # jobs per message to a worker: few messages, small loss of balance at the end of a run


def _share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` split into ``parts`` near-equal integers."""
    return total // parts + (1 if index < total % parts else 0)


@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    """What a worker process needs to build its collector (picklable)."""

    domain: str
    data_dir: str | None
    semantics: str | None
    agent_factory: Callable[[], Agent]
    user_factory: Callable[[], UserSimulator] | None
    max_turns: int
    base_seed: int
    agent_config: dict[str, Any]
    user_config: dict[str, Any]
    retries: int
    concurrency: int
    tune_gc: bool


def _worker_main(jobs_in: Any, results_out: Any, spec: _WorkerSpec) -> None:
    """Body of one worker process: one event loop running the jobs it is sent, episodes sent back as lines.

    Messages in: a list of ``(task_id, trial, seed)`` jobs, or None (no more jobs: finish and exit). Messages
    out: ``("ready",)``, ``("fatal", reason)`` when setup failed, ``("done", [(episode_id, line, failure)])``
    batches, where ``line`` is the episode's JSONL line or None and ``failure`` the reason it has none, and
    ``("stats", cpu_seconds)`` last.
    """
    import signal
    import threading

    # Ctrl-C reaches the whole process group: the parent alone decides how the run stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        domain = load_domain(spec.domain, spec.data_dir, spec.semantics)
        collector = Collector(
            domain,
            spec.agent_factory(),
            spec.user_factory() if spec.user_factory is not None else None,
            max_turns=spec.max_turns,
            base_seed=spec.base_seed,
            agent_config=spec.agent_config,
            user_config=spec.user_config,
            retries=spec.retries,
            tune_gc=False,  # tuned once for the whole process below
        )
        _ = collector.settings
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which stops the run with it
        results_out.send(("fatal", describe_error(exc)))
        return
    if spec.tune_gc:
        tuned_gc().__enter__()  # for the life of the process, which is this run's
    results_out.send(("ready",))

    async def run() -> None:
        from apigen_envs.episodes_io import episode_line

        loop = asyncio.get_running_loop()
        semaphore = asyncio.Semaphore(spec.concurrency)
        outbox: list[tuple[str, bytes | None, str | None]] = []
        running: set[asyncio.Task[None]] = set()
        finished = asyncio.Event()
        state = {"stopping": False, "flush_scheduled": False}

        def flush() -> None:
            state["flush_scheduled"] = False
            if outbox:
                # Every episode finished in one loop pass goes in one message: a send per pass, not per episode.
                results_out.send(("done", outbox[:]))
                outbox.clear()

        def finish(episode_id: str, line: bytes | None, failure: str | None) -> None:
            outbox.append((episode_id, line, failure))
            if not state["flush_scheduled"]:
                state["flush_scheduled"] = True
                loop.call_soon(flush)

        async def one(task_id: str, trial: int, seed: int) -> None:
            job_id = f"{domain.name}/{task_id}/{trial}"
            async with semaphore:
                try:
                    episode = await collector.run_job(Job(domain.task(task_id), trial, seed))
                    finish(episode.episode_id, episode_line(episode), None)
                except Exception as exc:  # noqa: BLE001 - reported to the parent, as Collector.arun does
                    finish(job_id, None, describe_error(exc))

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if state["stopping"] and not running:
                finished.set()

        def receive(message: Any) -> None:
            if message is None:
                state["stopping"] = True
                if not running:
                    finished.set()
                return
            for job in message:
                task = loop.create_task(one(*job))
                running.add(task)
                task.add_done_callback(done)

        def reader() -> None:
            # A thread blocks on the pipe so the event loop never does; EOF (the parent died) means stop.
            while True:
                try:
                    message = jobs_in.recv()
                except (EOFError, OSError):
                    message = None
                loop.call_soon_threadsafe(receive, message)
                if message is None:
                    return

        threading.Thread(target=reader, name="jobs-reader", daemon=True).start()
        await finished.wait()
        flush()

    asyncio.run(run())
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    results_out.send(("stats", usage.ru_utime + usage.ru_stime))


@dataclass
class _Slot:
    """The parent's view of one worker process."""

    process: Any
    jobs_out: Any
    results_in: Any
    concurrency: int
    inflight: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    ready: bool = False
    alive: bool = True


@dataclass
class ProcessCollector:
    """Runs tasks x trials in several worker processes on this machine, one JSONL writer, no Ray.

    Each worker process loads the domain once, builds its agent and user simulator from picklable factories
    and runs its share of the episodes on its own event loop (so a run uses every core). The parent hands out
    jobs, keeps each worker's share of :attr:`concurrency` busy, and alone appends to the output file, as
    :class:`Collector` does: resumable the same way (the same settings and resume key), never a duplicate.
    A worker that dies loses only its unfinished episodes: they run again on a fresh worker (written lines
    are never touched), at most :attr:`max_restarts` times per episode, then are listed in :attr:`failures`.

    Attributes:
        domain: Domain name (each worker loads it).
        agent_factory: Picklable ``() -> Agent``, called once in each worker (and once here, for the settings).
        user_factory: Picklable ``() -> UserSimulator`` (None: the scripted user).
        processes: Worker processes.
        trials: Episodes per task.
        max_turns: Agent steps per episode.
        concurrency: Episodes in flight in all workers together (split evenly between them).
        base_seed: Run seed.
        data_dir: Data directory for the domain.
        semantics: Semantics profile name or label (default: the data's own).
        agent_config: Settings recorded on every episode.
        user_config: User settings recorded on every episode.
        on_episode: Called here with each written episode (parses it: costs the parent CPU).
        on_progress: Called here with the number of episodes just written (cheap; for progress bars).
        retries: Re-runs of a job whose episode failed for infrastructure reasons (inside the worker).
        on_conflict: When ``out`` holds a run with other settings (see :class:`Collector`).
        collect_results: Parse the written episodes and return them from :meth:`run` (off: return []).
        max_restarts: Times one episode may be re-run after the worker running it died.
        start_method: ``multiprocessing`` start method. None: ``"forkserver"`` where there is one (safe with
            threads; the server imports the package once, so each worker starts without re-importing it),
            else ``"spawn"``. Not ``"fork"``: the parent may run threads (a progress bar, a local model server).
        tune_gc: Tune each worker's garbage collector after setup (see :func:`tuned_gc`).
        failures: After a run, the episodes not written (``episode_id: reason``); a resume runs them again.
        out_path: The file the last :meth:`run` wrote to.
        startup_s: Seconds from the start of the last :meth:`run` until every worker was ready.
        worker_cpu_s: CPU seconds the last :meth:`run`'s workers used, as they reported on exit (forkserver
            workers are not this process's children, so ``RUSAGE_CHILDREN`` does not see them).
    """

    domain: str
    agent_factory: Callable[[], Agent]
    user_factory: Callable[[], UserSimulator] | None = None
    processes: int = 2
    trials: int = 1
    max_turns: int = 30
    concurrency: int = 32
    base_seed: int = 0
    data_dir: str | Path | None = None
    semantics: str | None = None
    agent_config: dict[str, Any] = field(default_factory=dict)
    user_config: dict[str, Any] = field(default_factory=dict)
    on_episode: Callable[[Episode], None] | None = None
    on_progress: Callable[[int], None] | None = None
    retries: int = 2
    on_conflict: ConflictPolicy = "error"
    collect_results: bool = True
    max_restarts: int = 3
    start_method: str | None = None
    tune_gc: bool = True
    failures: list[str] = field(default_factory=list, init=False)
    out_path: Path | None = field(default=None, init=False)
    startup_s: float | None = field(default=None, init=False)
    worker_cpu_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.processes < 1 or self.trials < 1 or self.concurrency < 1 or self.max_turns < 1:
            raise ValueError("processes, trials, concurrency and max_turns must be >= 1")
        if self.retries < 0 or self.max_restarts < 0:
            raise ValueError("retries and max_restarts must be >= 0")

    def _spec(self, concurrency: int) -> _WorkerSpec:
        return _WorkerSpec(
            domain=self.domain,
            data_dir=None if self.data_dir is None else str(self.data_dir),
            semantics=self.semantics,
            agent_factory=self.agent_factory,
            user_factory=self.user_factory,
            max_turns=self.max_turns,
            base_seed=self.base_seed,
            agent_config=self.agent_config,
            user_config=self.user_config,
            retries=self.retries,
            concurrency=concurrency,
            tune_gc=self.tune_gc,
        )

    def _start(self, ctx: Any, concurrency: int) -> _Slot:
        jobs_in, jobs_out = ctx.Pipe(duplex=False)
        results_in, results_out = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_worker_main, args=(jobs_in, results_out, self._spec(concurrency)), name="apigen-worker", daemon=True
        )
        process.start()
        jobs_in.close()  # the child's ends: closed here, so a dead child reads as EOF
        results_out.close()
        return _Slot(process, jobs_out, results_in, concurrency)

    def run(self, tasks: Sequence[Task] | None = None, out: str | Path | None = None) -> list[Episode]:
        """Run every job not already in ``out`` and return the new episodes (see :meth:`Collector.arun`).

        Args:
            tasks: Tasks to run (all of the domain's when None).
            out: JSONL file to append to; its existing episodes are skipped (resume).

        Returns:
            The episodes written by this call in completion order ([] when :attr:`collect_results` is off).

        Raises:
            ResumeConflictError: When ``out`` holds a run with other settings (``on_conflict="error"``).
            CollectError: When the workers cannot start (the reason they gave), or keep dying at start.
        """
        import multiprocessing
        from multiprocessing.connection import wait

        from apigen_envs.episodes_io import EpisodeWriter
        from apigen_envs.errors import EpisodeWriteError
        from apigen_envs.simulators.scripted_user import ScriptedUser

        domain = load_domain(self.domain, self.data_dir, self.semantics)
        task_list = list(tasks) if tasks is not None else list(domain.tasks.values())
        user = self.user_factory() if self.user_factory is not None else ScriptedUser()
        settings = run_settings(
            domain,
            self.agent_factory(),
            user,
            agent_config=self.agent_config,
            user_config=self.user_config,
            base_seed=self.base_seed,
            max_turns=self.max_turns,
        )
        done: set[str] = set()
        if out is not None:
            self.out_path, done = resume_output(out, settings, self.on_conflict)
        self.failures = []
        queue = [
            (f"{task.domain}/{task.id}/{trial}", (task.id, trial, episode_seed(self.base_seed, task.id, trial)))
            for trial in range(self.trials)
            for task in task_list
            if f"{task.domain}/{task.id}/{trial}" not in done
        ]
        queue.reverse()  # pop() from the end hands jobs out in trial-major order
        if not queue:
            return []
        started = time.perf_counter()
        self.startup_s = None
        self.worker_cpu_s = 0.0
        method = self.start_method
        if method is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            # Imported once in the fork server (if it is not running yet), not again in every worker.
            ctx.set_forkserver_preload(["apigen_envs.collect", "apigen_envs.llm", "aiohttp"])
        count = min(self.processes, len(queue))
        shares = [max(1, _share(self.concurrency, count, i)) for i in range(count)]
        slots = [self._start(ctx, share) for share in shares]
        deaths: dict[str, int] = {}
        start_failures = 0
        results: list[Episode] = []
        writer = EpisodeWriter(self.out_path) if self.out_path is not None else None
        parse = self.collect_results or self.on_episode is not None

        def accept(batch: list[tuple[str, bytes | None, str | None]], slot: _Slot) -> None:
            lines: list[tuple[str, bytes]] = []
            for episode_id, line, failure in batch:
                slot.inflight.pop(episode_id, None)
                if line is None:
                    self.failures.append(f"{episode_id}: {failure}")
                else:
                    lines.append((episode_id, line))
            if writer is not None and lines:
                try:
                    # The worker's batch in one write call: all of it is in the file, or none of it.
                    writer.write_lines([line for _, line in lines], [episode_id for episode_id, _ in lines])
                except EpisodeWriteError as exc:
                    self.failures.extend(f"{episode_id}: {exc}" for episode_id, _ in lines)
                    lines = []
            written = 0
            for _, line in lines:
                written += 1
                if parse:
                    episode = Episode.model_validate_json(line)
                    if self.collect_results:
                        results.append(episode)
                    if self.on_episode is not None:
                        self.on_episode(episode)
            if written and self.on_progress is not None:
                self.on_progress(written)

        def feed(slot: _Slot) -> None:
            # A little more than its share in flight, so its event loop never waits on this process.
            cap = slot.concurrency + max(1, slot.concurrency // 4)
            while queue and slot.alive and len(slot.inflight) < cap:
                chunk = []
                while queue and len(chunk) < _CHUNK and len(slot.inflight) < cap:
                    episode_id, job = queue.pop()
                    slot.inflight[episode_id] = job
                    chunk.append(job)
                try:
                    slot.jobs_out.send(chunk)
                except OSError:
                    return  # it died: its sentinel tells, and its jobs go back to the queue then

        def bury(slot: _Slot) -> None:
            """A worker died: take what it sent before dying, then requeue what it did not finish."""
            nonlocal start_failures
            slot.alive = False
            with contextlib.suppress(EOFError, OSError):
                while slot.results_in.poll():
                    message = slot.results_in.recv()
                    if message[0] == "done":
                        accept(message[1], slot)
                    elif message[0] == "fatal":
                        raise CollectError(f"a worker process could not start: {message[1]}")
            slot.results_in.close()
            slot.jobs_out.close()
            slot.process.join(timeout=5)
            if not slot.ready:
                start_failures += 1
                if start_failures > self.max_restarts * max(1, count):
                    raise CollectError(f"worker processes keep dying at start (exit code {slot.process.exitcode})")
            for episode_id, job in slot.inflight.items():
                deaths[episode_id] = deaths.get(episode_id, 0) + 1
                if deaths[episode_id] > self.max_restarts:
                    self.failures.append(
                        f"{episode_id}: its worker process died {deaths[episode_id]} times "
                        f"(last exit code {slot.process.exitcode})"
                    )
                else:
                    queue.append((episode_id, job))
            slot.inflight.clear()

        completed = False
        try:
            for slot in slots:
                feed(slot)
            while any(s.inflight for s in slots if s.alive) or queue:
                for index, slot in enumerate(slots):
                    if not slot.alive and queue:
                        slots[index] = self._start(ctx, slot.concurrency)
                        feed(slots[index])
                by_handle: dict[Any, tuple[str, _Slot]] = {}
                for slot in slots:
                    if slot.alive:
                        by_handle[slot.results_in] = ("results", slot)
                        by_handle[slot.process.sentinel] = ("exit", slot)
                for handle in wait(list(by_handle)):
                    kind, slot = by_handle[handle]
                    if not slot.alive:
                        continue
                    if kind == "exit":
                        bury(slot)
                        continue
                    try:
                        message = slot.results_in.recv()
                    except (EOFError, OSError):
                        bury(slot)
                        continue
                    if message[0] == "done":
                        accept(message[1], slot)
                        feed(slot)
                    elif message[0] == "ready":
                        slot.ready = True
                        if self.startup_s is None and all(s.ready for s in slots):
                            self.startup_s = round(time.perf_counter() - started, 3)
                    elif message[0] == "fatal":
                        raise CollectError(f"a worker process could not start: {message[1]}")
            completed = True
        finally:
            for slot in slots:
                if slot.alive and not completed:
                    # Interrupted or failed: stop at once; what was written stays, a resume runs the rest.
                    slot.process.terminate()
                elif slot.alive:
                    with contextlib.suppress(OSError):
                        slot.jobs_out.send(None)
            for slot in slots:
                if slot.alive:
                    slot.process.join(timeout=10)
                    if slot.process.is_alive():
                        slot.process.terminate()
                        slot.process.join(timeout=5)
                    with contextlib.suppress(EOFError, OSError):
                        while slot.results_in.poll():
                            message = slot.results_in.recv()
                            if message[0] == "stats":
                                self.worker_cpu_s += message[1]
                    slot.jobs_out.close()
                    slot.results_in.close()
            if writer is not None:
                writer.close()
        return results
