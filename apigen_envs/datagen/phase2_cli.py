"""Command-line parts for phase 2 and export: ``apigen-envs trajectories`` and ``apigen-envs export``.

The main CLI (:mod:`apigen_envs.cli`) adds these subcommands with :func:`add_trajectories_parser` and
:func:`add_export_parser`; agent, user and model-endpoint options mean the same as for ``apigen-envs run``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from apigen_envs.cli_helpers import add_domain_options

AGENTS = ("oracle", "tool_calling", "react", "act", "fewshot")
USERS = ("scripted", "llm", "react", "verify", "reflection")


def add_trajectories_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``trajectories`` (APIGen-MT phase 2) to an argparse subparsers object.

    Args:
        subparsers: The result of ``parser.add_subparsers()``.

    Returns:
        The new subparser.

    """
    p = subparsers.add_parser(
        "trajectories",
        help="APIGen-MT phase 2: collect verified trajectories for blueprints",
        description="Run the agent against the simulated user on each blueprint for up to --trials attempts; "
        "keep every distinct verified success. Writes OUT (kept), OUT.attempts.jsonl and OUT.stats.json; "
        "rerun the same command to resume.",
    )
    add_domain_options(p)
    p.add_argument("--domain", default="retail")
    p.add_argument("--blueprints", help="blueprints file (JSON list or JSONL of tasks); default: the domain's tasks")
    p.add_argument("--split", default=None, help="with the domain's tasks: this split only")
    p.add_argument("--tasks", help="comma-separated blueprint ids")
    p.add_argument("--num-tasks", type=int, default=0, help="first N blueprints only")
    p.add_argument("--out", required=True, help="kept trajectories (Episode JSONL)")
    p.add_argument("--trials", type=int, default=3, help="attempts per blueprint")
    p.add_argument("--stop-after", type=int, default=None, help="stop a blueprint after N distinct successes")
    p.add_argument(
        "--max-infra-retries", type=int, default=2, help="re-runs of an attempt that failed for infrastructure reasons"
    )
    p.add_argument("--agent", choices=AGENTS, default="tool_calling")
    p.add_argument("--examples", help="few-shot examples (episodes JSONL) for --agent fewshot")
    p.add_argument("--user", choices=USERS, default="llm")
    p.add_argument("--best-of-n", type=int, default=1, help="sample N user turns and keep the critic's best")
    p.add_argument("--critic", choices=("llm", "rules"), default="llm", help="critic for --best-of-n")
    p.add_argument("--critic-model", default=None)
    p.add_argument("--critic-base-url", default=None)
    p.add_argument("--model", default=os.environ.get("APIGEN_MODEL", "local"))
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument(
        "--temperature", type=float, default=0.7, help="agent sampling temperature, per-episode seeds (default: 0.7)"
    )
    p.add_argument("--user-model", default=None)
    p.add_argument("--user-base-url", default=None)
    p.add_argument("--user-temperature", type=float, default=0.7, help="customer sampling temperature (default: 0.7)")
    p.add_argument("--no-local", dest="local_auto", action="store_false", help="never start the local model")
    p.add_argument("--max-turns", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_trajectories)
    return p


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` (episodes to training formats) to an argparse subparsers object.

    Args:
        subparsers: The result of ``parser.add_subparsers()``.

    Returns:
        The new subparser.

    """
    p = subparsers.add_parser(
        "export",
        help="export episodes as ShareGPT (APIGen-MT-5k), OpenAI messages or a Hugging Face parquet dataset",
    )
    p.add_argument("episodes", nargs="+", help="episode JSONL files (e.g. phase-2 trajectories)")
    p.add_argument(
        "--format",
        choices=("sharegpt", "openai", "hf"),
        default="sharegpt",
        help="record format; hf writes a Parquet dataset (needs a .parquet --out)",
    )
    p.add_argument("--hf-format", choices=("sharegpt", "openai"), default="sharegpt", help="row format for --format hf")
    p.add_argument("--out", required=True, help="output file (.json: one list; .jsonl; .parquet for hf)")
    p.add_argument("--all", dest="only_passed", action="store_false", help="also export failed episodes")
    p.add_argument("--no-system", dest="include_system", action="store_false", help="openai: no system message")
    p.add_argument("--meta", dest="include_meta", action="store_true", help="add episode ids, reward, fingerprint")
    p.set_defaults(func=cmd_export)
    return p


def _select_blueprints(args: argparse.Namespace, domain: Any) -> list[Any]:
    from apigen_envs.datagen.phase2 import load_blueprints

    tasks = load_blueprints(args.blueprints, domain.name) if args.blueprints else list(domain.task_list(args.split))
    if args.tasks:
        wanted = args.tasks.split(",")
        by_id = {t.id: t for t in tasks}
        missing = [t for t in wanted if t not in by_id]
        if missing:
            from apigen_envs.errors import DomainNotFoundError

            raise DomainNotFoundError(f"no blueprint(s) {', '.join(missing)}")
        tasks = [by_id[t] for t in wanted]
    if args.num_tasks:
        tasks = tasks[: args.num_tasks]
    return tasks


def _build_critic(args: argparse.Namespace, base_url: str | None, model: str) -> Any:
    from apigen_envs.datagen.best_of_n import LLMCritic, RuleCritic

    if args.critic == "rules":
        return RuleCritic()
    from apigen_envs.llm import LLMConfig, OpenAIClient

    config = LLMConfig(
        model=args.critic_model or model,
        base_url=args.critic_base_url or base_url,
        api_key_env=args.api_key_env,
        temperature=0.0,
    )
    return LLMCritic(OpenAIClient(config))


def cmd_trajectories(args: argparse.Namespace) -> int:
    """Run phase 2 and print acceptance rates and averages."""
    import contextlib

    from tqdm import tqdm

    from apigen_envs.cli_helpers import build_agent, build_user, check_reachable, domain_of, model_endpoint
    from apigen_envs.datagen.phase2 import Phase2Config, arun_phase2

    for name in ("trials", "max_turns", "concurrency", "best_of_n"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.stop_after is not None and args.stop_after < 1:
        print("error: --stop-after must be >= 1", file=sys.stderr)
        return 2
    domain = domain_of(args)
    tasks = _select_blueprints(args, domain)
    if not tasks:
        print(f"error: no blueprints selected in domain {domain.name!r}", file=sys.stderr)
        return 1
    config = Phase2Config(
        trials=args.trials,
        stop_after=args.stop_after,
        max_infra_retries=args.max_infra_retries,
        max_turns=args.max_turns,
        concurrency=args.concurrency,
        base_seed=args.seed,
    )
    needs_llm = args.agent != "oracle" or args.user != "scripted" or (args.best_of_n > 1 and args.critic == "llm")
    endpoint = model_endpoint(args) if needs_llm else contextlib.nullcontext((None, args.model))
    with endpoint as (base_url, model):
        if needs_llm:
            check_reachable(base_url)
        agent, agent_config = build_agent(args, base_url, model)
        user, user_config = build_user(args, base_url, model)
        if args.best_of_n > 1:
            from apigen_envs.datagen.best_of_n import BestOfNUser

            user = BestOfNUser(user, _build_critic(args, base_url, model), n=args.best_of_n)
            user_config = {**user.public(), "base_config": user_config}
        print(
            f"phase 2: {agent.name} on {len(tasks)} {domain.name} blueprints x up to {args.trials} trials -> {args.out}"
        )
        with tqdm(total=len(tasks) * args.trials, disable=args.quiet, unit="ep") as bar:
            result = _run(
                arun_phase2(
                    domain,
                    tasks,
                    agent,
                    user,
                    args.out,
                    config=config,
                    agent_config=agent_config,
                    user_config=user_config,
                    on_episode=lambda ep: bar.update(1),
                )
            )
    s = result.stats
    print(
        f"kept {s['kept']} trajectories from {s['successes']}/{s['attempts']} successful attempts "
        f"(trajectory success {_pct(s['trajectory_success_rate'])}, blueprints solved "
        f"{s['blueprints_solved']}/{s['blueprints']}, infra failures {s['infra_failures']})"
    )
    print(
        f"kept averages: turns {s['avg_turns']}, tool calls {s['avg_tool_calls']}, user turns {s['avg_user_turns']} "
        "(paper: 67% success, ~12 turns, ~7 tool calls, ~6 user turns)"
    )
    for label, path in (("kept", result.paths.trajectories), ("attempts", result.paths.attempts)):
        print(f"{label:>8}: {path}")
    print(f"{'stats':>8}: {result.paths.stats}")
    return 0


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def cmd_export(args: argparse.Namespace) -> int:
    """Export episode files to a training format."""
    from apigen_envs.episodes_io import load_episodes
    from apigen_envs.export import build_records, check_hf_path, export_hf, export_openai, export_sharegpt

    out = Path(args.out)
    if args.format == "hf":
        check_hf_path(out)  # before reading any episode: the name is wrong whatever they hold
    episodes = load_episodes(args.episodes)
    if args.format == "hf":
        dataset = export_hf(
            episodes,
            out,
            args.hf_format,
            only_passed=args.only_passed,
            include_system=args.include_system,
            include_meta=args.include_meta,
        )
        _, skipped = build_records(episodes, args.hf_format, only_passed=args.only_passed)
        written = len(dataset)
    else:
        if args.format == "sharegpt":
            summary = export_sharegpt(episodes, out, only_passed=args.only_passed, include_meta=args.include_meta)
        else:
            summary = export_openai(
                episodes,
                out,
                only_passed=args.only_passed,
                include_system=args.include_system,
                include_meta=args.include_meta,
            )
        written, skipped = summary.written, summary.skipped
    print(f"wrote {written} records to {out}" + (f"; skipped {json.dumps(skipped)}" if skipped else ""))
    return 0
