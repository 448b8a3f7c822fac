"""APIGen-MT phase 2: turn validated blueprints into trajectories by simulated agent-user interplay.

For every blueprint (a :class:`~apigen_envs.task.Task` with gold actions and required outputs) the agent
model talks to the simulated user for up to ``trials`` attempts. An attempt is kept only when the verifier
passes it: the final DB changes equal the gold changes and every required output appears. Every *distinct*
success is kept (distinct by the sequence of tool calls plus the final-state fingerprint), so two
different but valid ways of solving a task both become training data, while replays of the same path do
not. Optionally a blueprint stops early once it has ``stop_after`` distinct successes.

Episodes run through :class:`~apigen_envs.collect.Collector` (async, bounded concurrency, resumable). Every
attempt, failed or not, is appended to ``<out>.attempts.jsonl``; the kept trajectories are rewritten to
``<out>`` and the statistics to ``<out>.stats.json`` at the end of each run. Rerunning the same command
resumes: attempts already on disk are not run again. Attempts that fail for infrastructure reasons (LLM
server errors, user-simulator crashes, env bugs) are not counted as rejections; they are retried with a
new trial index, at most ``max_infra_retries`` times per blueprint.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from apigen_envs.collect import Collector, Job, episode_seed
from apigen_envs.domain import Domain, read_json, read_jsonl
from apigen_envs.episode import Episode
from apigen_envs.episodes_io import iter_episodes
from apigen_envs.errors import DataFileError
from apigen_envs.messages import AssistantMessage, UserMessage
from apigen_envs.protocols import Agent, UserSimulator
from apigen_envs.registry import load_domain
from apigen_envs.task import Task

PAPER_REFERENCE: Mapping[str, float] = MappingProxyType(
    {"trajectory_success_rate": 0.67, "avg_turns": 12.0, "avg_tool_calls": 7.0, "avg_user_turns": 6.0}
)
"""Phase-2 figures reported by the APIGen-MT paper (arXiv 2504.03601), for comparison in the stats file."""

STAT_DEFINITIONS: Mapping[str, str] = MappingProxyType(
    {
        "attempts": "episodes that ended for a reason attributable to the agent or user (infra failures excluded)",
        "trajectory_success_rate": "verified successes / attempts",
        "blueprint_success_rate": "blueprints with at least one kept trajectory / blueprints with an attempt",
        "avg_turns": "user messages + assistant messages per kept trajectory (tool results not counted)",
        "avg_tool_calls": "tool calls per kept trajectory",
        "avg_user_turns": "user messages per kept trajectory",
        "avg_agent_steps": "assistant messages (env steps) per kept trajectory",
    }
)
"""What each number in the stats file means."""


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, slots=True)
class Phase2Config:
    """Settings of a phase-2 run.

    Attributes:
        trials: Counted attempts per blueprint (the paper uses 3).
        stop_after: Stop a blueprint once it has this many distinct successes (None: run every trial).
        max_infra_retries: Extra attempts per blueprint to replace infrastructure failures (a blueprint runs
            at most ``trials + max_infra_retries`` episodes).
        max_turns: Agent steps per episode before truncation.
        concurrency: Episodes in flight at once.
        base_seed: Run seed; each episode's seed derives from it, the blueprint id and the trial.

    """

    trials: int = 3
    stop_after: int | None = None
    max_infra_retries: int = 2
    max_turns: int = 30
    concurrency: int = 32
    base_seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be >= 1 (or None to run every trial)")
        if self.max_infra_retries < 0:
            raise ValueError("max_infra_retries must be >= 0")
        if self.max_turns < 1 or self.concurrency < 1:
            raise ValueError("max_turns and concurrency must be >= 1")

    def public(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (recorded in the stats file)."""
        return {
            "trials": self.trials,
            "stop_after": self.stop_after,
            "max_infra_retries": self.max_infra_retries,
            "max_turns": self.max_turns,
            "concurrency": self.concurrency,
            "base_seed": self.base_seed,
        }


@dataclass(frozen=True, slots=True)
class Phase2Paths:
    """The files of one phase-2 run, all derived from the trajectories path.

    Attributes:
        trajectories: Kept trajectories (Episode JSONL), rewritten at the end of each run.
        attempts: Every attempt (Episode JSONL), appended; the resume log.
        stats: Acceptance rates and averages (JSON).

    """

    trajectories: Path
    attempts: Path
    stats: Path

    @classmethod
    def for_output(cls, out: str | Path) -> Phase2Paths:
        """Paths for a trajectories file ``out`` (``x.jsonl`` -> ``x.attempts.jsonl``, ``x.stats.json``)."""
        out = Path(out)
        stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.stem
        return cls(out, out.with_name(f"{stem}.attempts.jsonl"), out.with_name(f"{stem}.stats.json"))


# ---------------------------------------------------------------------------------------------- blueprints
def _blueprint_from_raw(item: Any, index: int, domain: str) -> Task:
    """One blueprint from a raw dict: a Task record, ``{"task": {...}}``, or the tau-bench v1 shape."""
    if not isinstance(item, Mapping):
        raise TypeError(f"expected an object, got {type(item).__name__}")
    for key in ("task", "blueprint"):
        if isinstance(item.get(key), Mapping):
            item = item[key]
            break
    data = dict(item)
    if "scenario" not in data and "instruction" in data:
        # tau-bench v1 keeps the instruction at the top level.
        data["scenario"] = {"instruction": data.pop("instruction")}
    data.setdefault("id", f"bp_{index:05d}")
    data["id"] = str(data["id"])
    data.setdefault("domain", domain)
    return Task.model_validate(data)


def load_blueprints(path: str | Path, domain: str) -> list[Task]:
    """Load blueprints from a JSON list, a ``{"tasks": [...]}`` / ``{"blueprints": [...]}`` object, or JSONL.

    Each item is a Task record (``domain`` filled in when missing), a wrapper ``{"task": {...}}`` as phase 1
    may write with its review metadata, or a tau-bench v1 task (``instruction`` at the top level). Items
    without an ``id`` get ``bp_00000``, ``bp_00001``... by position.

    Args:
        path: The file.
        domain: The domain name to fill in.

    Returns:
        The blueprints, in file order.

    Raises:
        DataFileError: For an unreadable file, a bad item (naming its position) or duplicate ids.

    """
    path = Path(path)
    raw = read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)
    if isinstance(raw, Mapping):
        for key in ("blueprints", "tasks"):
            if isinstance(raw.get(key), list):
                raw = raw[key]
                break
    if not isinstance(raw, list):
        raise DataFileError(f"{path}: expected a list of blueprints (or an object with 'blueprints'/'tasks')")
    tasks: list[Task] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        try:
            task = _blueprint_from_raw(item, index, domain)
        except (ValidationError, TypeError, ValueError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise DataFileError(f"{path}: blueprint #{index}: {reason}") from None
        if task.id in seen:
            raise DataFileError(f"{path}: blueprint #{index}: duplicate id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def with_blueprints(domain: Domain, blueprints: Sequence[Task]) -> Domain:
    """A domain sharing ``domain``'s snapshot, tools and policy whose tasks are exactly ``blueprints``.

    The env and the verifier look tasks up by id in the domain, so blueprints that are not among the
    domain's own tasks need a domain of their own; the snapshot is shared, not copied.

    Raises:
        ValueError: When two blueprints share an id or a blueprint belongs to another domain.

    """
    ids = [t.id for t in blueprints]
    if len(set(ids)) != len(ids):
        raise ValueError("blueprint ids must be unique")
    foreign = sorted({t.domain for t in blueprints} - {domain.name})
    if foreign:
        raise ValueError(f"blueprints of domain(s) {foreign} cannot run in domain {domain.name!r}")
    return replace(domain, tasks={t.id: t for t in blueprints}, splits={})


# ---------------------------------------------------------------------------------------------- signatures
def call_sequence(episode: Episode) -> tuple[tuple[str, str], ...]:
    """The episode's tool calls in order, as ``(name, canonical JSON arguments)`` pairs."""
    out: list[tuple[str, str]] = []
    for msg in episode.messages:
        if isinstance(msg, AssistantMessage):
            for call in msg.tool_calls:
                args = call.arguments
                text = args if isinstance(args, str) else json.dumps(args, sort_keys=True, ensure_ascii=False)
                out.append((call.name, text))
    return tuple(out)


def trajectory_signature(episode: Episode) -> tuple[tuple[tuple[str, str], ...], str]:
    """What makes two successes the same trajectory: the tool-call sequence and the final-state fingerprint."""
    fingerprint = episode.reward_info.fingerprint if episode.reward_info is not None else ""
    return call_sequence(episode), fingerprint


def trajectory_counts(episode: Episode) -> dict[str, int]:
    """Turn, tool-call and user-turn counts of one episode (see :data:`STAT_DEFINITIONS`)."""
    users = sum(1 for m in episode.messages if isinstance(m, UserMessage))
    assistants = [m for m in episode.messages if isinstance(m, AssistantMessage)]
    return {
        "turns": users + len(assistants),
        "tool_calls": sum(len(m.tool_calls) for m in assistants),
        "user_turns": users,
        "agent_steps": len(assistants),
    }


# ---------------------------------------------------------------------------------------------- bookkeeping
@dataclass
class BlueprintRecord:
    """Everything phase 2 learned about one blueprint.

    Attributes:
        task_id: The blueprint id.
        episodes: Its attempts (infra failures included), by trial.
        kept: Its distinct verified successes, in trial order.
        duplicates: Successes dropped because an earlier one had the same signature.

    """

    task_id: str
    episodes: list[Episode] = field(default_factory=list)
    kept: list[Episode] = field(default_factory=list)
    duplicates: int = 0

    @property
    def attempts(self) -> int:
        """Counted attempts (infra failures excluded)."""
        return sum(1 for e in self.episodes if not e.is_infra_failure)

    @property
    def infra_failures(self) -> int:
        """Attempts that failed for infrastructure reasons."""
        return sum(1 for e in self.episodes if e.is_infra_failure)

    @property
    def successes(self) -> int:
        """Verified successes, duplicates included."""
        return sum(1 for e in self.episodes if not e.is_infra_failure and e.passed)

    def refresh(self) -> None:
        """Sort attempts by trial and recompute the distinct successes."""
        self.episodes.sort(key=lambda e: e.trial)
        seen: set[tuple[Any, ...]] = set()
        self.kept, self.duplicates = [], 0
        for episode in self.episodes:
            if episode.is_infra_failure or not episode.passed:
                continue
            signature = trajectory_signature(episode)
            if signature in seen:
                self.duplicates += 1
                continue
            seen.add(signature)
            self.kept.append(episode)

    def next_trial(self, config: Phase2Config) -> int | None:
        """The trial index to run next, or None when this blueprint is finished."""
        if config.stop_after is not None and len(self.kept) >= config.stop_after:
            return None
        if self.attempts >= config.trials or len(self.episodes) >= config.trials + config.max_infra_retries:
            return None
        return max((e.trial for e in self.episodes), default=-1) + 1

    def summary(self, config: Phase2Config) -> dict[str, Any]:
        """The blueprint's line in the stats file."""
        first = next((e.trial for e in self.kept), None)
        return {
            "attempts": self.attempts,
            "infra_failures": self.infra_failures,
            "successes": self.successes,
            "kept": len(self.kept),
            "duplicates": self.duplicates,
            "acceptance": _ratio(self.successes, self.attempts),
            "first_success_trial": first,
            "stopped_early": bool(self.kept) and self.attempts < config.trials,
            "infra_exhausted": self.attempts < config.trials
            and len(self.episodes) >= config.trials + config.max_infra_retries,
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _mean(values: Sequence[float]) -> float | None:
    return round(math.fsum(values) / len(values), 3) if values else None


@dataclass(frozen=True, slots=True)
class Phase2Result:
    """The outcome of a phase-2 run.

    Attributes:
        kept: The kept trajectories, blueprint by blueprint, in trial order.
        stats: The statistics written to the stats file.
        paths: Where the files are.
        new_episodes: How many episodes this call ran (the rest were resumed from disk).

    """

    kept: tuple[Episode, ...]
    stats: dict[str, Any]
    paths: Phase2Paths
    new_episodes: int


def compute_stats(records: Iterable[BlueprintRecord], config: Phase2Config) -> dict[str, Any]:
    """Acceptance rates per blueprint and overall, and averages over the kept trajectories.

    Args:
        records: The blueprints' records (refreshed).
        config: The run settings.

    Returns:
        A JSON-ready dict (see :data:`STAT_DEFINITIONS` for what the numbers mean).

    """
    records = list(records)
    kept = [e for r in records for e in r.kept]
    counts = [trajectory_counts(e) for e in kept]
    attempts = sum(r.attempts for r in records)
    successes = sum(r.successes for r in records)
    attempted = [r for r in records if r.attempts]
    all_eps = [e for r in records for e in r.episodes]
    infra_by_kind: dict[str, int] = {}
    for e in all_eps:
        if e.is_infra_failure:
            infra_by_kind[e.termination] = infra_by_kind.get(e.termination, 0) + 1
    return {
        "blueprints": len(records),
        "blueprints_attempted": len(attempted),
        "blueprints_solved": sum(1 for r in records if r.kept),
        "blueprint_success_rate": _ratio(sum(1 for r in attempted if r.kept), len(attempted)),
        "attempts": attempts,
        "successes": successes,
        "trajectory_success_rate": _ratio(successes, attempts),
        "kept": len(kept),
        "duplicates_dropped": sum(r.duplicates for r in records),
        "infra_failures": sum(r.infra_failures for r in records),
        "infra_failures_by_kind": infra_by_kind,
        "avg_turns": _mean([c["turns"] for c in counts]),
        "avg_tool_calls": _mean([c["tool_calls"] for c in counts]),
        "avg_user_turns": _mean([c["user_turns"] for c in counts]),
        "avg_agent_steps": _mean([c["agent_steps"] for c in counts]),
        "tokens": {
            "agent_prompt": sum(e.agent_usage.prompt_tokens for e in all_eps),
            "agent_completion": sum(e.agent_usage.completion_tokens for e in all_eps),
            "user_prompt": sum(e.user_usage.prompt_tokens for e in all_eps),
            "user_completion": sum(e.user_usage.completion_tokens for e in all_eps),
        },
        "config": config.public(),
        "paper_reference": dict(PAPER_REFERENCE),
        "definitions": dict(STAT_DEFINITIONS),
        "per_blueprint": {r.task_id: r.summary(config) for r in records},
    }


# ---------------------------------------------------------------------------------------------- runner
@dataclass
class _PlannedCollector(Collector):
    """A Collector that runs an explicit list of ``(task id, trial)`` jobs instead of tasks x trials."""

    planned: tuple[tuple[str, int], ...] = ()

    def jobs(self, tasks: Sequence[Task]) -> list[Job]:
        """The planned jobs for ``tasks`` (seeds derived exactly as the base Collector derives them)."""
        by_id = {t.id: t for t in tasks}
        return [
            Job(by_id[task_id], trial, episode_seed(self.base_seed, task_id, trial))
            for task_id, trial in self.planned
            if task_id in by_id
        ]


def _agent_name(agent: Any) -> str:
    return str(getattr(agent, "name", None) or type(agent).__name__)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load_previous(paths: Phase2Paths, agent: str, model: Any, ids: set[str]) -> list[Episode]:
    """Attempts of this agent/model on these blueprints already on disk (the resume state)."""
    if not paths.attempts.exists():
        return []
    return [
        e
        for e in iter_episodes(paths.attempts)
        if e.task_id in ids and e.agent == agent and (e.agent_config.get("model") or "") == (model or "")
    ]


async def arun_phase2(
    domain: Domain | str,
    blueprints: Sequence[Task] | None,
    agent: Agent,
    user: UserSimulator,
    out: str | Path,
    *,
    config: Phase2Config | None = None,
    agent_config: Mapping[str, Any] | None = None,
    user_config: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> Phase2Result:
    """Run phase 2 (see the module docstring) and write trajectories, attempts and stats.

    Args:
        domain: The domain (object or name).
        blueprints: The blueprints; None runs the domain's own tasks.
        agent: The agent model (any :class:`~apigen_envs.protocols.Agent`).
        user: The simulated user (e.g. an LLMUser, optionally wrapped in a BestOfNUser).
        out: The kept-trajectories JSONL file; attempts and stats go next to it.
        config: Run settings.
        agent_config: Recorded on every episode; its ``"model"`` is part of the resume key.
        user_config: Recorded on every episode.
        data_dir: Data directory when ``domain`` is a name.
        on_episode: Called with each finished attempt (progress bars).

    Returns:
        The kept trajectories and the stats.

    """
    config = config or Phase2Config()
    base = domain if isinstance(domain, Domain) else load_domain(domain, data_dir)
    tasks = list(blueprints) if blueprints is not None else list(base.tasks.values())
    if not tasks:
        raise ValueError("phase 2 needs at least one blueprint")
    run_domain = with_blueprints(base, tasks)
    paths = Phase2Paths.for_output(out)
    agent_cfg = dict(agent_config or {})
    records = {t.id: BlueprintRecord(t.id) for t in tasks}
    for episode in _load_previous(paths, _agent_name(agent), agent_cfg.get("model"), set(records)):
        records[episode.task_id].episodes.append(episode)
    new_episodes = 0
    while True:
        for record in records.values():
            record.refresh()
        planned: list[tuple[str, int]] = []
        for record in records.values():
            trial = record.next_trial(config)
            if trial is None:
                continue
            # Without early stopping every remaining counted trial can run at once (more concurrency);
            # with it, one trial per blueprint per round, so no attempt runs after the blueprint is done.
            budget = config.trials + config.max_infra_retries - len(record.episodes)
            needed = 1 if config.stop_after is not None else min(config.trials - record.attempts, budget)
            planned.extend((record.task_id, trial + i) for i in range(needed))
        if not planned:
            break
        collector = _PlannedCollector(
            run_domain,
            agent,
            user,
            trials=1,
            max_turns=config.max_turns,
            concurrency=config.concurrency,
            base_seed=config.base_seed,
            agent_config=agent_cfg,
            user_config=dict(user_config or {}),
            on_episode=on_episode,
            retries=0,  # phase 2 retries infrastructure failures itself, counting each attempt
            planned=tuple(planned),
        )
        ran = await collector.arun(tasks, out=paths.attempts)
        if not ran:
            break  # everything planned was already on disk under another key: nothing more to learn
        new_episodes += len(ran)
        for episode in ran:
            records[episode.task_id].episodes.append(episode)
    for record in records.values():
        record.refresh()
    kept = tuple(e for r in records.values() for e in r.kept)
    _write_atomic(paths.trajectories, "".join(e.model_dump_json() + "\n" for e in kept))
    stats = compute_stats(records.values(), config)
    stats["domain"] = run_domain.name
    stats["agent"] = _agent_name(agent)
    stats["agent_config"] = agent_cfg
    _write_atomic(paths.stats, json.dumps(stats, indent=2, ensure_ascii=False, default=str) + "\n")
    return Phase2Result(kept=kept, stats=stats, paths=paths, new_episodes=new_episodes)


def run_phase2(
    domain: Domain | str,
    blueprints: Sequence[Task] | None,
    agent: Agent,
    user: UserSimulator,
    out: str | Path,
    **kwargs: Any,
) -> Phase2Result:
    """Synchronous wrapper of :func:`arun_phase2` (not callable inside a running event loop).

    Args:
        domain: The domain (object or name).
        blueprints: The blueprints; None runs the domain's own tasks.
        agent: The agent model.
        user: The simulated user.
        out: The kept-trajectories JSONL file.
        **kwargs: Keyword arguments of :func:`arun_phase2`.

    Returns:
        The kept trajectories and the stats.

    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_phase2(domain, blueprints, agent, user, out, **kwargs))
    raise RuntimeError("run_phase2() was called inside an event loop; use `await arun_phase2(...)`")
