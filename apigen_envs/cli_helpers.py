"""Helpers shared by the command-line entry points (``apigen-envs run``, ``trajectories``, ...).

They build agents and user simulators from parsed arguments and find the model server. Kept apart from
:mod:`apigen_envs.cli`, which assembles the subcommands from every module, so that those modules can use
them without importing the CLI back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apigen_envs.errors import ApigenError

OFFLINE_AGENTS = ("oracle", "noop")
"""Agents that need no model."""

LLM_AGENTS = ("tool_calling", "react", "act", "fewshot")
"""Agents backed by a model."""

USERS = ("scripted", "llm", "react", "verify", "reflection")
"""User simulator kinds."""


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default and no reST markup.

    Docstrings quote names in double backticks for the docs; in a terminal those are noise. An option's
    default is added to its help unless it is unset (None, False, empty) or the help already says it.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = action.nargs != 0 and default not in (None, False, "", argparse.SUPPRESS)
        shown = shown and not isinstance(default, list | tuple)
        if shown and action.option_strings and "%(default)" not in text and "default" not in text:
            text = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        return text or None

    def format_help(self) -> str:
        """The help text without double backticks."""
        return super().format_help().replace("``", "")


COMMON_HELP = {
    "--domain": "domain name",
    "--seed": "run seed; each episode's or attempt's seed derives from it",
    "--model": "model name ($APIGEN_MODEL)",
    "--api-key-env": "environment variable holding the API key",
    "--temperature": "sampling temperature",
    "--quiet": "no progress output",
    "--agent": "agent kind",
    "--user": "customer simulator",
    "--user-model": "customer model (default: --model)",
    "--user-base-url": "customer model server (default: --base-url)",
    "--critic-model": "critic model (default: --model)",
    "--critic-base-url": "critic model server (default: --base-url)",
    "--max-turns": "agent steps before an episode is cut off",
    "--concurrency": "episodes in flight at once",
    "--port": "TCP port",
    "--proposer": "who proposes blueprints: templates (offline) or an LLM",
}
"""Help for options that subcommands share, used where a subcommand gives none."""


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """Give a parser and all its subcommand parsers :class:`HelpFormatter` (argparse does not inherit it).

    Options without help text get the shared one from :data:`COMMON_HELP`.
    """
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if not action.help and action.option_strings:
            action.help = next((COMMON_HELP[o] for o in action.option_strings if o in COMMON_HELP), None)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_help_formatter(sub)


SEMANTICS_HELP = (
    "semantics profile: apigen, tau2 or tau-bench, optionally with options (e.g. tau2+seat_accounting); "
    "default: the data's own (apigen for the embedded data, else the layout's peer)"
)


def add_domain_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """Add ``--data-dir`` and ``--semantics`` (accepted before or after the subcommand).

    Args:
        parser: The parser (the top-level one, or a subcommand's).
        top_level: Defaults live on the top-level parser; a subcommand's copy only overrides when given.

    """
    default = None if top_level else argparse.SUPPRESS
    parser.add_argument("--data-dir", default=default, help="load domains from this folder (tau2 or tau-bench layout)")
    parser.add_argument("--semantics", default=default, help=SEMANTICS_HELP)


def domain_of(args: argparse.Namespace, name: str | None = None) -> Any:
    """The domain named by ``--domain`` (or ``name``), loaded with ``--data-dir`` and ``--semantics``."""
    from apigen_envs.registry import load_domain

    return load_domain(name or args.domain, getattr(args, "data_dir", None), getattr(args, "semantics", None))


def fail(message: str, code: int = 1) -> int:
    """Print ``error: message`` to stderr and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def model_endpoint(args: argparse.Namespace) -> Iterator[tuple[str | None, str]]:
    """Yield (base_url, model): the given server, or a local model started for the run."""
    if args.base_url or os.environ.get(args.api_key_env) or os.environ.get("OPENAI_BASE_URL") or not args.local_auto:
        yield args.base_url, args.model
        return
    from apigen_envs.local_model import LocalServer, ensure_model

    print("no API key or --base-url given: starting the local model (see `apigen-envs serve-local`)", file=sys.stderr)
    with LocalServer(ensure_model()) as server:
        yield server.base_url, server.model


def build_agent(args: argparse.Namespace, base_url: str | None, model: str) -> tuple[Any, dict[str, Any]]:
    """The agent named by ``--agent`` and its settings to record (no key, no credentials).

    Raises:
        ApigenError: When ``--agent fewshot`` has no ``--examples``.

    """
    if args.agent == "oracle":
        from apigen_envs.baselines.oracle import OracleAgent

        return OracleAgent(), {}
    if args.agent == "noop":
        from apigen_envs.baselines.noop import NoopAgent

        return NoopAgent(), {}
    from apigen_envs.llm import LLMConfig, OpenAIClient

    config = LLMConfig(
        model=model,
        base_url=base_url,
        api_key_env=args.api_key_env,
        temperature=args.temperature,
        transport=getattr(args, "transport", "aiohttp"),
    )
    client = OpenAIClient(config)
    if args.agent == "tool_calling":
        from apigen_envs.baselines.tool_calling import GROUND_CHECK_RETRIES, ID_REMINDER, ToolCallingAgent

        local = is_local_model(base_url, model)
        constrain = _switch(getattr(args, "constrain", "off"), local)
        reminder = _switch(getattr(args, "id_reminder", "off"), local)
        grounded = _switch(getattr(args, "ground_check", "off"), local)
        agent: Any = ToolCallingAgent(
            client,
            constrain=constrain,
            id_reminder=ID_REMINDER if reminder else None,
            ground_check=GROUND_CHECK_RETRIES if grounded else 0,
        )
    elif args.agent == "react":
        from apigen_envs.baselines.react import ReActAgent

        agent = ReActAgent(client)
    elif args.agent == "act":
        from apigen_envs.baselines.act import ActAgent

        agent = ActAgent(client)
    else:
        from apigen_envs.baselines.fewshot import FewShotAgent

        if not args.examples:
            raise ApigenError("--agent fewshot needs --examples FILE (episodes JSONL)")
        agent = FewShotAgent(client, Path(args.examples))
    return agent, {**config.public(), **_agent_options(agent)}


def is_local_model(base_url: str | None, model: str) -> bool:
    """Whether the endpoint is our local llama.cpp server (it enforces ``response_format`` schemas)."""
    from apigen_envs.local_model import MODEL_ALIAS

    return model == MODEL_ALIAS and bool(base_url) and "://127.0.0.1:" in (base_url or "")


def _switch(value: str, local: bool) -> bool:
    """``on`` / ``off``, or ``auto``: on for the local model only."""
    return value == "on" or (value == "auto" and local)


def _agent_options(agent: Any) -> dict[str, Any]:
    """Agent options that change its episodes (recorded in the run settings, so part of the resume key)."""
    from apigen_envs.collect import AGENT_OPTIONS

    options = {}
    for name in AGENT_OPTIONS:
        if hasattr(agent, name):
            value = getattr(agent, name)
            options[name] = bool(value)  # on/off (the Episode format's agent_options); counts are in public()
    return options


def build_user(args: argparse.Namespace, base_url: str | None, model: str) -> tuple[Any, dict[str, Any]]:
    """The user simulator named by ``--user`` and its settings to record.

    The LLM customer nudges an agent that did not act on a confirmed proposal only where the domain's
    semantics profile allows it (``Semantics.user_nudges``: the ``apigen`` profile, not the peers').
    """
    from apigen_envs.simulators.scripted_user import ScriptedUser

    if args.user == "scripted":
        return ScriptedUser(), {"strategy": "scripted"}
    from apigen_envs.llm import LLMConfig, OpenAIClient
    from apigen_envs.simulators.llm_user import LLMUser

    config = LLMConfig(
        model=args.user_model or model,
        base_url=args.user_base_url or base_url,
        api_key_env=args.api_key_env,
        temperature=args.user_temperature,
        transport=getattr(args, "transport", "aiohttp"),
    )
    nudges = bool(getattr(domain_of(args).semantics, "user_nudges", False)) if getattr(args, "domain", None) else True
    user = LLMUser(OpenAIClient(config), strategy=args.user, nudges=nudges)
    return user, {"strategy": args.user, "nudges": nudges, **config.public()}


def agent_only(args: argparse.Namespace, base_url: str | None, model: str) -> Any:
    """Build just the agent (a picklable factory for Ray workers)."""
    return build_agent(args, base_url, model)[0]


def user_only(args: argparse.Namespace, base_url: str | None, model: str) -> Any:
    """Build just the user simulator (a picklable factory for Ray workers)."""
    return build_user(args, base_url, model)[0]


def check_reachable(base_url: str | None, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when the model server cannot be reached at all."""
    import urllib.error
    import urllib.request

    if not base_url:
        return
    url = base_url.rstrip("/") + "/models"
    try:
        urllib.request.urlopen(url, timeout=timeout).close()  # noqa: S310 - URL given by the user
    except urllib.error.HTTPError:
        return  # the server answers (perhaps needing a key); requests will tell
    except (urllib.error.URLError, OSError) as exc:
        raise ApigenError(f"cannot reach the model server at {base_url} ({exc})") from None
