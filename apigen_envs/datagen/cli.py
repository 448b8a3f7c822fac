"""``apigen-envs blueprints``: run phase 1 and write verified blueprints with train/test splits.

Hooked into the main CLI with ``add_blueprints_parser(sub)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from apigen_envs.cli_helpers import add_domain_options
from apigen_envs.errors import ApigenError


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace, model: str | None = None) -> Any:
    from apigen_envs.llm import LLMConfig, OpenAIClient

    return OpenAIClient(
        LLMConfig(
            model=model or args.model,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            timeout_s=args.request_timeout,
        )
    )


def _committee_models(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in (args.committee_models or "").split(",") if m.strip()]


def cmd_blueprints(args: argparse.Namespace) -> int:
    """Run the phase-1 pipeline and save the blueprints and statistics."""
    from apigen_envs.cli_helpers import domain_of
    from apigen_envs.datagen.committee import Committee
    from apigen_envs.datagen.context import ContextSampler
    from apigen_envs.datagen.phase1 import Phase1Config, Phase1Pipeline, write_blueprints
    from apigen_envs.datagen.proposers import LLMProposer, TemplateProposer
    from apigen_envs.datagen.rewrite import LLMRewriter

    if args.n < 1:
        return _fail("--n must be >= 1")
    if args.committee < 0:
        return _fail("--committee must be >= 0")
    if args.log_every < 1:
        return _fail("--log-every must be >= 1")
    if args.concurrency < 1:
        return _fail("--concurrency must be >= 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        return _fail("--max-tokens must be >= 1")
    members = _committee_models(args)
    if not 0.0 <= args.split_ratio <= 1.0:
        return _fail("--split-ratio must be within [0, 1]")
    needs_llm = args.proposer == "llm" or args.committee > 0 or bool(members)
    if needs_llm and not (args.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get(args.api_key_env)):
        return _fail(
            "the llm proposer and the committee need a model: give --base-url (any OpenAI-compatible server, "
            f"e.g. `apigen-envs serve-local`) or set ${args.api_key_env}"
        )
    domain = domain_of(args)
    client = _client(args) if needs_llm else None
    if args.proposer == "template":
        spec = getattr(domain, "datagen", None)
        templates = spec.template_module() if spec is not None else None
        if templates is None:
            module = f"apigen_envs.domains.{domain.name}.templates"
            try:
                templates = importlib.import_module(module)
            except ImportError:
                return _fail(
                    f"domain {domain.name!r} has no templates (no datagen slot, no {module}); use --proposer llm"
                )
        proposer: Any = TemplateProposer(templates, domain.snapshot)
    else:
        proposer = LLMProposer(
            client, domain.tools, temperature=args.temperature, policy=domain.policy, json_mode=args.json_mode
        )
    committee = None
    if members or args.committee:
        # A list of models makes one member each; a bare --committee N asks the one model N times.
        reviewers: Any = [_client(args, m) for m in members] if members else client
        committee = Committee(
            reviewers,
            size=args.committee or len(members),
            threshold=args.threshold,
            policy=domain.policy,
            json_mode=args.json_mode,
            diff_chars=args.diff_chars,
        )

    def progress(attempt: int, accepted: int) -> None:
        if not args.quiet and (attempt % args.log_every == 0 or accepted >= args.n):
            # A terminal gets one updating line; a log file gets one line per report.
            end = "" if sys.stderr.isatty() else "\n"
            print(f"\r  attempts {attempt:>6}  accepted {accepted:>6}/{args.n}", end=end, file=sys.stderr, flush=True)

    pipeline = Phase1Pipeline(
        domain,
        proposer,
        committee=committee,
        summariser=client if committee is not None and not args.no_summariser else None,
        recombiner=LLMRewriter(client, args.json_mode) if client is not None and args.recombine else None,
        sampler=(
            ContextSampler(
                domain,
                include_test_users=args.include_test_users,
                user_ids=[u.strip() for u in args.users.split(",") if u.strip()] if args.users else None,
            )
            if args.proposer == "llm"
            else None
        ),
        progress=progress,
    )
    config = Phase1Config(
        n=args.n,
        seed=args.seed,
        max_retries=args.retries,
        max_attempts=args.max_attempts,
        recombine=args.recombine,
        split_ratio=args.split_ratio,
        concurrency=args.concurrency,
        feedback=not args.no_feedback,
        time_limit_s=args.time_limit,
    )
    result = pipeline.run(config)
    if not args.quiet:
        print(file=sys.stderr)
    out = Path(args.out) if args.out else Path(f"{domain.name}_blueprints.jsonl")
    path, stats_path = write_blueprints(result.tasks, result.stats, out)
    print(result.stats.table())
    splits = {s: sum(t.split == s for t in result.tasks) for s in ("train", "test")}
    print(f"wrote {len(result.tasks)} blueprints to {path} (train={splits['train']}, test={splits['test']})")
    print(f"statistics: {stats_path}")
    if args.stats or args.compare:
        from apigen_envs.datagen.set_stats import compare

        print(compare(domain, result.tasks, args.compare, label="generated"))
    return 0


def add_blueprints_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``blueprints`` subcommand to the main CLI's subparsers.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The new subparser.

    """
    p = subparsers.add_parser("blueprints", help="generate verified task blueprints (APIGen-MT phase 1)")
    add_domain_options(p)
    p.add_argument("--domain", default="retail")
    p.add_argument("--n", type=int, default=200, help="accepted simple blueprints to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proposer", choices=("template", "llm"), default="template")
    p.add_argument("--model", default=os.environ.get("APIGEN_MODEL", "local"))
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument(
        "--committee", type=int, default=0, help="LLM reviewers asked of --model (0: no committee, recorded as skipped)"
    )
    p.add_argument(
        "--committee-models",
        default=None,
        help="comma-separated reviewer models on the same server, one member each (e.g. a,b,c)",
    )
    p.add_argument("--threshold", type=float, default=0.75, help="voted average needed to accept")
    p.add_argument("--retries", type=int, default=None, help="feedback rounds (default 3 retail, 5 airline)")
    p.add_argument("--max-attempts", type=int, default=None, help="contexts to try at most (default 4 * n)")
    p.add_argument("--recombine", type=int, default=0, help="multi-intent combinations to try")
    p.add_argument("--split-ratio", type=float, default=0.8, help="share of users in the train split")
    p.add_argument("--concurrency", type=int, default=1, help="attempts (proposals and reviews) in flight at once")
    p.add_argument(
        "--json-mode",
        choices=("json_schema", "llama", "json_object", "off"),
        default="off",
        help="ask for schema-constrained JSON: json_schema (OpenAI, vLLM, llama-server), llama "
        "(llama-cpp-python's json_object+schema), json_object, or off (free text, parsed leniently)",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="completion token cap per LLM call")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per LLM request")
    p.add_argument("--time-limit", type=float, default=None, help="seconds after which no new attempt starts")
    p.add_argument("--log-every", type=int, default=25, help="progress line every N attempts")
    p.add_argument("--no-feedback", action="store_true", help="retries do not see earlier attempts or feedback")
    p.add_argument("--no-summariser", action="store_true", help="committee feedback without the LLM summary")
    p.add_argument("--diff-chars", type=int, default=12000, help="length cap of the DB diff shown to reviewers")
    p.add_argument(
        "--include-test-users",
        action="store_true",
        help="also sample users of the domain's test-split tasks (excluded by default)",
    )
    p.add_argument(
        "--users",
        default=None,
        help="comma-separated user ids: LLM contexts are drawn for these customers only (default: every user not in "
        "the test split)",
    )
    p.add_argument("--out", help="blueprints file (.jsonl, or .json for a JSON list)")
    p.add_argument(
        "--stats", action="store_true", help="print the set's variety and difficulty figures (3-grams, refusals...)"
    )
    p.add_argument(
        "--compare",
        metavar="DIR",
        default=None,
        help="with --stats: the same figures for the tasks of a reference data directory (tau2 or tau-bench layout)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_blueprints)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand standalone (``python -m apigen_envs.datagen.cli``)."""
    parser = argparse.ArgumentParser(prog="apigen-envs")
    add_domain_options(parser, top_level=True)
    add_blueprints_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ApigenError, ValueError) as exc:
        return _fail(str(exc), 1)


if __name__ == "__main__":
    raise SystemExit(main())
