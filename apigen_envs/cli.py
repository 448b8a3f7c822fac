"""The ``apigen-envs`` command line.

Subcommands: ``domains``, ``tasks``, ``run`` (collect episodes and report pass^k), ``report`` (metrics and
pages from episode files), ``serve-local`` (start the offline local model server).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apigen_envs.cli_helpers import (
    LLM_AGENTS,
    OFFLINE_AGENTS,
    USERS,
    add_domain_options,
    agent_only,
    build_agent,
    build_user,
    check_reachable,
    domain_of,
    fail,
    model_endpoint,
    use_help_formatter,
    user_only,
)
from apigen_envs.errors import ApigenError
from apigen_envs.http_transport import TRANSPORTS


def _load_episodes_noting_skips(paths: Sequence[str | Path]) -> list[Any]:
    """``load_episodes``, saying on stderr when a truncated last line (an interrupted write) was skipped."""
    import warnings

    from apigen_envs.episodes_io import TruncatedLineWarning, load_episodes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedLineWarning)
        episodes = load_episodes(paths)
    for warning in caught:
        if issubclass(warning.category, TruncatedLineWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return episodes


def _check_agent_episodes(own: Sequence[Any], failures: Sequence[str]) -> int:
    """Say on stderr what kept agent episodes out of the metrics; 1 when none could be scored or some were lost.

    Args:
        own: The agent's episodes of this run's tasks (resumed ones included).
        failures: Episodes the collector could not run or write (``episode_id: reason``).

    Returns:
        The exit code: 0, or 1 when no agent episode could be scored or an episode could not be written.
    """
    code = 0
    if failures:
        print(
            f"error: {len(failures)} episode(s) could not be run or written (rerun the command to retry them); "
            f"first: {failures[0]}",
            file=sys.stderr,
        )
        code = 1
    infra = [ep for ep in own if ep.is_infra_failure]
    first = next((f"{ep.termination}: {ep.error}" for ep in infra if ep.error), infra[0].termination if infra else "")
    if len(infra) == len(own):
        reason = f"all {len(own)} failed for infrastructure reasons; first: {first}" if own else "none were run"
        print(f"error: no agent episode could be scored: {reason}", file=sys.stderr)
        return 1
    if infra:
        print(
            f"warning: {len(infra)} of {len(own)} agent episodes failed for infrastructure reasons and are left out "
            f"of the metrics; first: {first}",
            file=sys.stderr,
        )
    return code


def cmd_domains(args: argparse.Namespace) -> int:
    """List the built-in domains with their sizes."""
    from apigen_envs.registry import GYM_IDS, list_domains

    ids = {domain: env_id for env_id, domain in GYM_IDS.items()}
    for name in list_domains():
        try:
            domain = domain_of(args, name)
        except ApigenError as exc:
            print(f"{name:<8} unavailable: {exc}")
            continue
        splits = ", ".join(f"{k}={len(v)}" for k, v in domain.splits.items())
        tables = ", ".join(f"{k}={v}" for k, v in domain.snapshot.size().items())
        print(f"{name:<8} {ids.get(name, '-'):<18} tools={len(domain.tools):<3} tasks: {splits:<22} db: {tables}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """List a domain's tasks, or show one."""
    import json

    domain = domain_of(args)
    if args.show:
        print(json.dumps(domain.task(args.show).model_dump(), indent=2, ensure_ascii=False))
        return 0
    for task in domain.task_list(args.split):
        first = " ".join(task.instruction.split())[:90]
        print(f"{task.id:<24} {task.split:<6} actions={len(task.actions):<2} outputs={len(task.outputs)}  {first}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Collect episodes, then print pass^k beside the do-nothing baseline and write the report."""
    from tqdm import tqdm

    from apigen_envs.baselines.noop import NoopAgent
    from apigen_envs.baselines.oracle import OracleAgent
    from apigen_envs.collect import Collector
    from apigen_envs.metrics import format_partial, format_table, partial_credit, summarize_groups
    from apigen_envs.report import write_report

    if args.retries < 0:
        return fail("--retries must be >= 0", 2)
    domain = domain_of(args)
    tasks = list(domain.task_list(args.split))
    if args.tasks:
        tasks = [domain.task(t) for t in args.tasks.split(",")]
    if args.num_tasks:
        tasks = tasks[: args.num_tasks]
    if not tasks:
        return fail(f"no tasks selected in domain {domain.name!r}")
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{domain.name}-{args.agent}-{time.strftime('%Y%m%d-%H%M%S')}" / "episodes.jsonl"
    )
    needs_llm = args.agent in LLM_AGENTS or args.user != "scripted"
    with model_endpoint(args) if needs_llm else contextlib.nullcontext((None, args.model)) as (base_url, model):
        if needs_llm:
            check_reachable(base_url)
        agent, agent_config = build_agent(args, base_url, model)
        user, user_config = build_user(args, base_url, model)
        total = len(tasks) * args.trials
        print(f"running {agent.name} on {len(tasks)} {domain.name} tasks x {args.trials} trials -> {out}")
        conflict = args.on_conflict.replace("-", "_")
        collector: Any
        with tqdm(total=total, disable=args.quiet, unit="ep") as bar:
            if args.backend == "local" and args.processes > 1:
                from apigen_envs.collect import ProcessCollector

                collector = ProcessCollector(
                    args.domain,
                    functools.partial(agent_only, args, base_url, model),
                    functools.partial(user_only, args, base_url, model),
                    processes=args.processes,
                    trials=args.trials,
                    max_turns=args.max_turns,
                    concurrency=args.concurrency,
                    base_seed=args.seed,
                    data_dir=args.data_dir,
                    semantics=args.semantics,
                    agent_config=agent_config,
                    user_config=user_config,
                    on_progress=bar.update,
                    retries=args.retries,
                    on_conflict=conflict,
                    collect_results=False,  # the report reads the file; the parent stays a lean writer
                )
            elif args.backend == "ray":
                from apigen_envs.ray_backend import RayCollector

                collector = RayCollector(
                    args.domain,
                    functools.partial(agent_only, args, base_url, model),
                    functools.partial(user_only, args, base_url, model),
                    workers=args.workers,
                    trials=args.trials,
                    max_turns=args.max_turns,
                    concurrency=args.concurrency,
                    base_seed=args.seed,
                    data_dir=args.data_dir,
                    semantics=args.semantics,
                    address=args.address,
                    agent_config=agent_config,
                    user_config=user_config,
                    on_episode=lambda ep: bar.update(1),
                    retries=args.retries,
                    on_conflict=conflict,
                )
            else:
                collector = Collector(
                    domain,
                    agent,
                    user,
                    trials=args.trials,
                    max_turns=args.max_turns,
                    concurrency=args.concurrency,
                    base_seed=args.seed,
                    agent_config=agent_config,
                    user_config=user_config,
                    on_episode=lambda ep: bar.update(1),
                    retries=args.retries,
                    on_conflict=conflict,
                )
            collector.run(tasks, out=out)
    if collector.out_path is not None and collector.out_path != out:
        print(f"{out} holds a run with other settings; this run went to {collector.out_path}")
        out = collector.out_path
    task_ids = {t.id for t in tasks}
    own = [ep for ep in _load_episodes_noting_skips([out]) if ep.task_id in task_ids]
    episodes = list(own)
    baselines: list[tuple[Any, str]] = []
    if not args.no_baseline:
        # Do-nothing (what the verifier gives for no work) and the oracle (1.000 proves the tasks and the
        # verifier agree) beside the agent: the three together say what the agent's figure means.
        if args.agent != "noop":
            baselines.append((NoopAgent(), BASELINE_FILES[0]))
        if args.agent not in OFFLINE_AGENTS:
            baselines.append((OracleAgent(), BASELINE_FILES[1]))
    for baseline, name in baselines:
        # The oracle needs a step per gold call plus its closing line: a short --max-turns must not cut it.
        turns = args.max_turns if name == BASELINE_FILES[0] else max(args.max_turns, 60)
        runner = Collector(
            domain, baseline, trials=args.trials, max_turns=turns, base_seed=args.seed, on_conflict=conflict
        )
        runner.run(tasks, out=out.with_name(name))
        assert runner.out_path is not None
        episodes += [ep for ep in _load_episodes_noting_skips([runner.out_path]) if ep.task_id in task_ids]
    summaries = list(summarize_groups(episodes).values())
    print()
    print(format_table(summaries))
    actions = {t.id: t.actions for t in tasks}
    if args.agent in LLM_AGENTS:
        print()
        print("partial credit per episode (gold calls made with the right arguments, DB rows right, outputs said):")
        print(format_partial([partial_credit(ep, actions.get(ep.task_id)) for ep in own]))
    written = write_report(episodes, summaries, out.parent, title=f"{domain.name}: {agent.name}", actions=actions)
    print()
    for kind, path in written.items():
        print(f"{kind:>8}: {path}")
    return _check_agent_episodes(own, collector.failures)


BASELINE_FILES = ("baseline-noop.jsonl", "baseline-oracle.jsonl")
"""The do-nothing and oracle baselines ``run`` writes beside a run's episodes."""


def baseline_beside(paths: Sequence[str | Path]) -> list[Path]:
    """The given episode files plus the baselines beside each (:data:`BASELINE_FILES`) not already given.

    ``apigen-envs report runs/x/episodes.jsonl`` then rewrites the run's report with its baselines, as
    ``run`` wrote it.
    """
    given = [Path(p) for p in paths]
    seen = {p.resolve() for p in given}
    extra = []
    for path in given:
        for name in BASELINE_FILES:
            baseline = path.with_name(name)
            if baseline.is_file() and baseline.resolve() not in seen:
                seen.add(baseline.resolve())
                extra.append(baseline)
    return given + extra


def _gold_actions(args: argparse.Namespace, episodes: Sequence[Any]) -> dict[str, Any]:
    """Task id -> gold actions, for the domains the episodes come from (skipped when one cannot load)."""
    actions: dict[str, Any] = {}
    for name in sorted({ep.domain for ep in episodes}):
        try:
            domain = domain_of(args, name)
        except (ApigenError, ValueError):
            continue
        actions.update({t.id: t.actions for t in domain.task_list(None)})
    return actions


def cmd_report(args: argparse.Namespace) -> int:
    """Metrics and report pages from episode files."""
    from apigen_envs.metrics import format_partial, format_table, partial_credit, summarize_groups
    from apigen_envs.report import write_report

    paths = baseline_beside(args.episodes)
    if len(paths) > len(args.episodes):
        print(f"adding the baselines beside the episodes: {', '.join(map(str, paths[len(args.episodes) :]))}")
    episodes = _load_episodes_noting_skips(paths)
    if not episodes:
        return fail("no episodes in the given files")
    price = (args.price_in, args.price_out) if args.price_in is not None and args.price_out is not None else None
    summaries = list(summarize_groups(episodes, max_k=args.max_k, price_per_mtok=price).values())
    print(format_table(summaries))
    actions = _gold_actions(args, episodes)
    scored = [ep for ep in episodes if ep.agent not in ("noop", "oracle")]
    if scored:
        print()
        print("partial credit per episode (gold calls made with the right arguments, DB rows right, outputs said):")
        print(format_partial([partial_credit(ep, actions.get(ep.task_id)) for ep in scored]))
    out_dir = Path(args.out) if args.out else Path(args.episodes[0]).parent
    for kind, path in write_report(episodes, summaries, out_dir, actions=actions).items():
        print(f"{kind:>8}: {path}")
    return 0


def cmd_serve_local(args: argparse.Namespace) -> int:
    """Start the offline local model server (downloads and verifies the weights once)."""
    from apigen_envs.local_model import main as local_main

    argv = ["--port", str(args.port)] if args.port else []
    if args.ensure_only:
        argv.append("--ensure-only")
    return local_main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="apigen-envs", description=__doc__.splitlines()[0])
    add_domain_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("domains", help="list domains")
    add_domain_options(p)
    p.set_defaults(func=cmd_domains)

    p = sub.add_parser("tasks", help="list or show tasks")
    add_domain_options(p)
    p.add_argument("--domain", default="retail", help="domain name")
    p.add_argument("--split", default=None, help="only this split (train or test); default: all")
    p.add_argument("--show", metavar="TASK_ID", help="print one task as JSON")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("run", help="collect episodes and report pass^k")
    add_domain_options(p)
    p.add_argument("--domain", default="retail", help="domain name")
    p.add_argument("--split", default="test", help="task split")
    p.add_argument("--tasks", help="comma-separated task ids")
    p.add_argument("--num-tasks", type=int, default=0, help="first N tasks only")
    p.add_argument("--trials", type=int, default=3, help="episodes per task (k for pass^k)")
    p.add_argument(
        "--agent",
        choices=OFFLINE_AGENTS + LLM_AGENTS,
        default="tool_calling",
        help="oracle (replays the gold calls), noop (does nothing) or a model-backed agent",
    )
    p.add_argument("--examples", help="few-shot examples (episodes JSONL) for --agent fewshot")
    for flag, what in (
        (
            "--constrain",
            "constrain replies to the tools' JSON schemas via response_format (servers that enforce it, like "
            "llama.cpp)",
        ),
        ("--id-reminder", "a short system note on identifying the customer until the first tool call"),
        (
            "--ground-check",
            "ask the model again (up to twice) when a tool call uses an id, email, name or zip that neither the "
            "customer nor a tool wrote",
        ),
    ):
        p.add_argument(
            flag,
            choices=("auto", "on", "off"),
            default="auto",
            help=f"tool_calling: {what}; auto: on for the local model only",
        )
    p.add_argument("--user", choices=USERS, default="llm", help="customer simulator")
    p.add_argument("--model", default=os.environ.get("APIGEN_MODEL", "local"), help="agent model ($APIGEN_MODEL)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="agent sampling temperature; each episode has its own seed, so trials differ (default: %(default)s)",
    )
    p.add_argument("--user-model", default=None, help="customer model (default: --model)")
    p.add_argument("--user-base-url", default=None, help="customer model server (default: --base-url)")
    p.add_argument(
        "--user-temperature", type=float, default=0.7, help="customer sampling temperature (default: %(default)s)"
    )
    p.add_argument("--no-local", dest="local_auto", action="store_false", help="never start the local model")
    p.add_argument("--max-turns", type=int, default=30, help="agent steps before the episode is cut off (scores 0)")
    p.add_argument("--concurrency", type=int, default=32, help="episodes in flight at once")
    p.add_argument("--seed", type=int, default=0, help="run seed; each episode's seed derives from it")
    p.add_argument("--out", help="episodes JSONL (resumed if it exists and was written with the same settings)")
    p.add_argument(
        "--on-conflict",
        choices=("error", "new-file"),
        default="error",
        help="when --out holds a run with other settings: stop with an error naming the setting, or write to "
        "the next free NAME-N.jsonl",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="re-runs of an episode that failed for infrastructure reasons"
    )
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run episodes here or on Ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--workers", type=int, default=2, help="Ray worker actors")
    p.add_argument("--no-baseline", action="store_true", help="skip the do-nothing and oracle baselines")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes on this machine, each with its own event loop; --concurrency is split between "
        "them and this process alone writes --out (local backend)",
    )
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=TRANSPORTS[0],
        help="HTTP client for the model server: aiohttp (default), httpx, or the openai package's client",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="metrics and report from episode files")
    p.add_argument(
        "episodes", nargs="+", help="episode JSONL files (a baseline-noop.jsonl beside each is added when present)"
    )
    p.add_argument("--out", help="report folder (default: next to the first file)")
    p.add_argument("--max-k", type=int, default=None, help="largest k of pass^k (default: the trials per task)")
    p.add_argument("--price-in", type=float, default=None, help="USD per million prompt tokens")
    p.add_argument("--price-out", type=float, default=None, help="USD per million completion tokens")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve-local", help="serve the offline local model on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--ensure-only", action="store_true", help="download/verify only, do not serve")
    p.set_defaults(func=cmd_serve_local)

    from apigen_envs.datagen.cli import add_blueprints_parser
    from apigen_envs.datagen.phase2_cli import add_export_parser, add_trajectories_parser
    from apigen_envs.play import add_play_parser, add_serve_parser

    add_blueprints_parser(sub)
    add_trajectories_parser(sub)
    add_export_parser(sub)
    add_play_parser(sub)
    add_serve_parser(sub)
    use_help_formatter(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``apigen-envs``.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The exit code (141, as for a process ended by SIGPIPE, when the reader of stdout went away).
    """
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a pipe closed early fails here (also after --help), not at interpreter exit
    except BrokenPipeError:
        # `apigen-envs tasks | head`: the reader has all it wants. Stop quietly, as Unix tools do; stdout goes
        # to /dev/null so the interpreter's final flush does not fail again. Files written so far are complete
        # lines (a run resumes), and SIGPIPE itself stays ignored so a closed socket cannot kill a collection.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("trials", "concurrency", "max_turns", "processes"):
        if getattr(args, name, 1) < 1:
            return fail(f"--{name.replace('_', '-')} must be >= 1", 2)
    try:
        return int(args.func(args) or 0)
    except (ApigenError, ValueError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted; rerun the same command to resume", 130)


if __name__ == "__main__":
    raise SystemExit(main())
