"""Conformance checks for domains, usable by third-party domain authors in their own tests.

``check_domain(domain)`` runs every check and returns a report; ``assert_domain_ok(domain)`` raises with
the list of problems. The checks: tool schemas are well-formed; rows are plain JSON objects; every task's
gold actions name known tools with valid arguments and replay without tool errors; the oracle passes and the
do-nothing agent fails every task; the env passes Gymnasium's ``check_env``; and the shared snapshot's
content is unchanged (rows read with ``get`` are shared, so a tool that mutates one instead of calling
``edit`` shows up here). Each check can fail (the tests build a domain that breaks each one).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from apigen_envs.domain import Domain
from apigen_envs.errors import ToolCallError
from apigen_envs.messages import Message
from apigen_envs.protocols import Agent
from apigen_envs.runner import run_episode as _run


@dataclass
class DomainReport:
    """What :func:`check_domain` found.

    Attributes:
        domain: Domain name.
        tasks_checked: Number of tasks checked.
        oracle_passed: Tasks the oracle passed.
        noop_passed: Tasks the do-nothing agent passed (should be none).
        gold_errors: task id -> messages of gold actions that raised tool errors (each is also a problem).
        problems: Human-readable problems; empty when the domain conforms.
    """

    domain: str
    tasks_checked: int = 0
    oracle_passed: list[str] = field(default_factory=list)
    noop_passed: list[str] = field(default_factory=list)
    gold_errors: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def run_episode(env: Any, agent: Agent, *, task_id: str, seed: int | None = 0) -> tuple[float, list[Message]]:
    """Run one episode of ``agent`` on ``env`` and return (reward, messages).

    A thin synchronous wrapper of :func:`apigen_envs.runner.run_episode`: the same turn loop and outcome
    rule as every other runner (an unusable turn ends the episode with reward 0).

    Args:
        env: The env (a ToolUseEnv, or a RemoteEnv).
        agent: The policy (privileged agents such as the oracle are given the task).
        task_id: The task to run.
        seed: Episode seed.

    Returns:
        The final reward and the conversation.
    """
    episode = _run(env, agent, task_id=task_id, seed=seed)
    return float(episode.reward), list(episode.messages)


def check_domain(
    domain: Domain, *, task_ids: Sequence[str] | None = None, run_env_checker: bool = True
) -> DomainReport:
    """Check that a domain conforms to what the env, verifier and pipeline expect.

    Args:
        domain: The domain to check.
        task_ids: Restrict the task checks to these ids (all tasks when None).
        run_env_checker: Also run Gymnasium's ``check_env``.

    Returns:
        The report; ``report.problems`` lists every failure.
    """
    from apigen_envs.baselines.noop import NoopAgent
    from apigen_envs.baselines.oracle import OracleAgent
    from apigen_envs.env import ToolUseEnv

    report = DomainReport(domain=domain.name)
    for schema in domain.tools.schemas():
        fn = schema.get("function", {})
        try:
            json.dumps(schema)
        except TypeError as exc:
            report.problems.append(f"tool {fn.get('name')!r}: schema is not JSON ({exc})")
        if not fn.get("description"):
            report.problems.append(f"tool {fn.get('name')!r}: no description")
    before = domain.snapshot.content_hash()
    for name, rows in domain.snapshot.tables.items():
        for key, row in rows.items():
            problem = _json_problem(row)
            if problem is not None:
                report.problems.append(f"table {name!r} row {key!r}: rows must be plain JSON objects ({problem})")
                break
    tasks = [domain.task(t) for t in task_ids] if task_ids is not None else list(domain.tasks.values())
    env = ToolUseEnv(domain, task_ids=[t.id for t in tasks] or None)
    oracle, noop = OracleAgent(), NoopAgent()
    for task in tasks:
        report.tasks_checked += 1
        for i, action in enumerate(task.actions):
            try:
                domain.tools[action.name].validate(action.arguments)
            except (ToolCallError, ValidationError) as exc:
                report.problems.append(f"task {task.id!r} action {i}: {exc}")
        gold = domain.verifier.gold(task)
        if gold.errors:
            report.gold_errors[task.id] = [msg for _, msg in gold.errors]
            for index, msg in gold.errors:
                report.problems.append(f"task {task.id!r} gold action {index}: it errors when replayed ({msg})")
        if run_episode(env, oracle, task_id=task.id)[0] >= 1.0:
            report.oracle_passed.append(task.id)
        else:
            report.problems.append(f"task {task.id!r}: the oracle does not pass it")
        if run_episode(env, noop, task_id=task.id)[0] >= 1.0:
            report.noop_passed.append(task.id)
            report.problems.append(f"task {task.id!r}: the do-nothing agent passes it (trivial task)")
    if domain.snapshot.content_hash() != before:
        report.problems.append("the shared snapshot changed during the checks (a tool wrote to a row it did not edit)")
    if run_env_checker:
        from gymnasium.utils.env_checker import check_env

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                check_env(ToolUseEnv(domain, task_ids=[t.id for t in tasks] or None), skip_render_check=True)
            except AssertionError as exc:
                report.problems.append(f"gymnasium check_env failed: {exc}")
    return report


def _json_problem(row: object) -> str | None:
    """Why a row is not a plain JSON object, or None when it is."""
    if not isinstance(row, dict):
        return f"got {type(row).__name__}"
    try:
        json.dumps(row, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def assert_domain_ok(domain: Domain, **kwargs: object) -> DomainReport:
    """Run :func:`check_domain` and raise ``AssertionError`` listing the problems, if any.

    Args:
        domain: The domain to check.
        **kwargs: Passed to :func:`check_domain`.

    Returns:
        The report when there is no problem.
    """
    report = check_domain(domain, **kwargs)  # type: ignore[arg-type]
    if report.problems:
        raise AssertionError(f"domain {domain.name!r} does not conform:\n- " + "\n- ".join(report.problems))
    return report
