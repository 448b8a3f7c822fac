"""Play an episode at the keyboard: be the agent (with tool calls) or be the customer against a model agent.

``apigen-envs play`` (the agent's seat, the default) shows the policy summary and the tools, then reads
lines: plain text goes to the simulated customer, ``/call tool_name {"arg": ...}`` runs a tool, ``/tools``
and ``/policy`` show the references, ``/quit`` gives up. Tab completes commands, tool names and argument
names (through ``readline`` where the terminal has it). ``apigen-envs play --as user --model M --base-url U``
puts a model in the agent's seat and the person in the customer's: ``/stop`` ends the conversation.
Either way the episode runs through the episode runner (:mod:`apigen_envs.runner`), is scored by the
domain's verifier and is appended to an Episode JSONL file like any collected one.

``apigen-envs serve`` (also defined here) runs the env HTTP service of :mod:`apigen_envs.server`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from apigen_envs.cli_helpers import add_domain_options
from apigen_envs.episode import Episode
from apigen_envs.errors import ApigenError
from apigen_envs.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from apigen_envs.protocols import AgentContext, UserTurn
from apigen_envs.runner import run_episode
from apigen_envs.task import Task

COMMANDS: tuple[str, ...] = ("/call", "/tools", "/policy", "/help", "/quit")
"""Commands of the agent's seat."""

USER_COMMANDS: tuple[str, ...] = ("/stop", "/transfer", "/task", "/help", "/quit")
"""Commands of the customer's seat."""

DEFAULT_OUT = Path("runs") / "play" / "episodes.jsonl"

InputFn = Callable[[str], str]


class QuitGame(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt, not an error
    """The person typed ``/quit`` (or closed the input).

    A ``BaseException``, like ``KeyboardInterrupt``: giving up is not a turn of the policy, so it passes
    through the episode runner (which judges every ``Exception`` a policy raises) back to ``play``.
    """


# ---------------------------------------------------------------------------------------------- completion
def tool_arguments(schemas: Sequence[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Tool name -> argument names, from OpenAI tool schemas."""
    out: dict[str, tuple[str, ...]] = {}
    for schema in schemas:
        fn = schema.get("function", schema)
        out[fn["name"]] = tuple(fn.get("parameters", {}).get("properties", {}))
    return out


def completions(buffer: str, text: str, tools: dict[str, tuple[str, ...]], commands: Sequence[str]) -> list[str]:
    """Candidates for the word being completed.

    Args:
        buffer: The whole line typed so far (up to the cursor).
        text: The word under completion (readline splits on spaces, quotes, braces, commas, colons).
        tools: Tool name -> argument names.
        commands: The seat's commands.

    Returns:
        Sorted candidates: commands at the start of the line, tool names after ``/call `` (and
        ``/tools ``), argument names inside the JSON after the tool name.

    """
    stripped = buffer.lstrip()
    if " " not in stripped:
        return sorted(c for c in commands if c.startswith(text))
    command, _, rest = stripped.partition(" ")
    if command not in ("/call", "/tools"):
        return []
    rest = rest.lstrip()
    if " " not in rest and "{" not in rest:
        return sorted(name for name in tools if name.startswith(text))
    if command != "/call":
        return []
    name = rest.split(" ", 1)[0].split("{", 1)[0]
    used = {a for a in tools.get(name, ()) if f'"{a}"' in rest}
    # Bare names: GNU readline treats the opening quote as a quoted word and closes it itself.
    return sorted(a for a in tools.get(name, ()) if a.startswith(text) and a not in used)


def install_completer(tools: dict[str, tuple[str, ...]], commands: Sequence[str]) -> bool:
    """Wire :func:`completions` into ``readline`` (Tab). Returns False where readline is unavailable."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input still works
        return False

    def complete(text: str, state: int) -> str | None:
        matches = completions(readline.get_line_buffer()[: readline.get_endidx()], text, tools, commands)
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(' \t\n{},:"')
    # libedit (macOS) and GNU readline spell the binding differently.
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    return True


# ---------------------------------------------------------------------------------------------- display
@dataclass
class Transcript:
    """Prints the messages not shown yet, as a readable chat."""

    out: TextIO
    shown: int = 0
    width: int = 2000

    def say(self, text: str = "") -> None:
        """Print a line and flush (pseudo-terminals and pipes must see it before the next prompt)."""
        print(text, file=self.out, flush=True)

    def show_new(self, messages: Sequence[Message]) -> None:
        """Print messages from index ``shown`` on."""
        for msg in messages[self.shown :]:
            self.say(self.render(msg))
        self.shown = len(messages)

    def render(self, msg: Message) -> str:
        """One message as text."""
        if isinstance(msg, UserMessage):
            return f"customer: {msg.content}"
        if isinstance(msg, AssistantMessage):
            parts = [f"agent: {msg.content}"] if msg.content else []
            parts += [f"agent -> {c.name}({c.arguments_json()})" for c in msg.tool_calls]
            return "\n".join(parts)
        if isinstance(msg, ToolMessage):
            flag = " ERROR" if msg.error else ""
            return f"tool[{msg.name}]{flag}: {msg.content[: self.width]}"
        return f"{msg.role}: {msg.content}"


def policy_summary(policy: str, max_lines: int = 12) -> str:
    """The policy's first non-empty lines (the whole text is one ``/policy`` away)."""
    lines = [line for line in policy.splitlines() if line.strip()]
    more = len(lines) - max_lines
    text = "\n".join(lines[:max_lines])
    return text + (f"\n... ({more} more lines: /policy)" if more > 0 else "")


def tools_table(schemas: Sequence[dict[str, Any]]) -> str:
    """One line per tool: name, arguments, first line of the description."""
    rows = []
    for schema in schemas:
        fn = schema.get("function", schema)
        props = fn.get("parameters", {}).get("properties", {})
        required = set(fn.get("parameters", {}).get("required", ()))
        args = ", ".join(a if a in required else f"{a}?" for a in props)
        desc = (fn.get("description") or "").strip().splitlines()
        rows.append(f"  {fn['name']}({args})  {desc[0] if desc else ''}")
    return "\n".join(rows)


def parse_call(line: str, tool_names: Sequence[str], call_id: str) -> AssistantMessage:
    """Parse ``/call tool_name {json}`` into an assistant message with one tool call.

    Raises:
        ValueError: With a message for the person: unknown tool, bad JSON, arguments not an object.

    """
    rest = line.strip()[len("/call") :].strip()
    if not rest:
        raise ValueError('usage: /call tool_name {"arg": "value"}')
    name, _, raw = rest.partition(" ")
    if "{" in name:  # "/call tool{...}" without a space
        name, raw = name.split("{", 1)[0], "{" + rest.split("{", 1)[1]
    if name not in tool_names:
        from apigen_envs.errors import did_you_mean

        raise ValueError(f"unknown tool {name!r}.{did_you_mean(name, tool_names)} /tools lists them")
    raw = raw.strip() or "{}"
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"arguments are not valid JSON ({exc.msg} at column {exc.colno}): {raw}") from None
    if not isinstance(args, dict):
        raise ValueError('arguments must be a JSON object, like {"email": "ana@example.com"}')
    return AssistantMessage(tool_calls=(ToolCall(id=call_id, name=name, arguments=args),))


# ---------------------------------------------------------------------------------------------- seats
HELP_WORDS = frozenset({"/help", "help", "?", "/?", "/h", "h"})
"""Lines that show the help instead of being sent (a newcomer types ``help`` before ``/help``)."""


def _read(input_fn: InputFn, prompt: str) -> str:
    try:
        return input_fn(prompt)
    except EOFError:
        raise QuitGame("input closed") from None


AGENT_HELP = (
    "Type a message for the customer, or:\n"
    '  /call tool_name {"arg": "value"}   run a tool (Tab completes tool and argument names)\n'
    "  /tools [name]   list tools (or one tool's schema)     /policy   the full policy\n"
    "  /quit           give up (the episode is still scored and saved)"
)

USER_HELP = (
    "You are the customer. Type what you say to the agent, or:\n"
    "  /stop [last words]   end the conversation (goal met or given up)\n"
    "  /transfer            ask for a human agent and end\n"
    "  /task                show your situation again          /quit   give up"
)


@dataclass
class HumanAgent:
    """An agent that is a person at the keyboard (for the agent's seat).

    Attributes:
        input_fn: Reads a line.
        screen: Where the conversation is shown.
        env: The env (for the task header shown before the first turn).
        name: Name recorded on episodes.

    """

    input_fn: InputFn
    screen: Transcript
    env: Any
    name: str = "human"
    calls: int = field(default=0, init=False)
    _greeted: bool = field(default=False, init=False)

    def _greet(self, context: AgentContext) -> None:
        schemas = list(context.tools)
        if self.input_fn is input:
            install_completer(tool_arguments(schemas), COMMANDS)
        self.screen.say(f"== {self.env.domain.name} / task {self.env.task.id}: you are the agent ==")
        self.screen.say("Policy summary:")
        self.screen.say(policy_summary(context.system_prompt))
        self.screen.say("Tools:")
        self.screen.say(tools_table(schemas))
        self.screen.say(AGENT_HELP)
        self.screen.say()
        self._greeted = True

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Show what happened since the last turn, then read the person's next turn.

        Raises:
            QuitGame: On ``/quit`` or closed input.

        """
        if not self._greeted:
            self._greet(context)
        self.screen.show_new(conversation)
        schemas = list(context.tools)
        names = [s["function"]["name"] for s in schemas]
        while True:
            line = _read(self.input_fn, "agent> ").strip()
            if not line:
                continue
            if line == "/quit":
                raise QuitGame("the player quit")
            if line.lower() in HELP_WORDS:
                self.screen.say(AGENT_HELP)
                continue
            if line == "/policy":
                self.screen.say(context.system_prompt)
                continue
            if line.startswith("/tools"):
                wanted = line[len("/tools") :].strip()
                if wanted:
                    match = [s for s in schemas if s["function"]["name"] == wanted]
                    self.screen.say(json.dumps(match[0], indent=2) if match else f"unknown tool {wanted!r}")
                else:
                    self.screen.say(tools_table(schemas))
                continue
            if line.startswith("/call"):
                try:
                    action = parse_call(line, names, f"human_{self.calls}")
                except ValueError as exc:
                    self.screen.say(f"! {exc}")
                    continue
                self.calls += 1
            elif line.startswith("/"):
                self.screen.say(f"! unknown command {line.split()[0]!r}; commands: {', '.join(COMMANDS)}")
                continue
            else:
                action = AssistantMessage(content=line)
            self.screen.shown = len(conversation) + 1  # the person's own turn is already on screen
            return action

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act` (blocks on the keyboard; meant for one interactive episode)."""
        return self.act(conversation, context)


def play_as_agent(
    env: Any, *, input_fn: InputFn, out: TextIO, seed: int | None, options: dict[str, Any]
) -> tuple[Episode | None, str | None]:
    """Run the agent's seat through the episode runner until the episode ends or the person quits.

    Returns:
        (the episode, None) when it ended normally, else (None, why it was abandoned).

    """
    screen = Transcript(out)
    try:
        episode = run_episode(env, HumanAgent(input_fn, screen, env), options=options, seed=seed)
    except QuitGame as exc:
        return None, str(exc)
    screen.show_new(env.messages)
    return episode, None


@dataclass
class HumanUser:
    """A user simulator that is a person at the keyboard (for the customer's seat).

    Attributes:
        input_fn: Reads a line (``input`` by default).
        screen: Where the conversation is shown.
        name: Name recorded on episodes.

    """

    input_fn: InputFn
    screen: Transcript
    name: str = "human"
    quit_requested: bool = field(default=False, init=False)

    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Show what the agent did since the last turn, then read the person's reply."""
        self.screen.show_new(conversation)
        while True:
            try:
                line = _read(self.input_fn, "you> ").strip()
            except QuitGame:
                line = "/quit"
            if not line:
                continue
            if line.lower() in HELP_WORDS:
                self.screen.say(USER_HELP)
                continue
            if line == "/task":
                self.screen.say(task.scenario.instruction)
                continue
            if line == "/quit":
                self.quit_requested = True
                return UserTurn("", stop="stop")
            if line.startswith("/stop"):
                return UserTurn(line[len("/stop") :].strip(), stop="stop")
            if line.startswith("/transfer"):
                return UserTurn(line[len("/transfer") :].strip(), stop="transfer")
            if line.startswith("/"):
                self.screen.say(f"! unknown command {line.split()[0]!r}; commands: {', '.join(USER_COMMANDS)}")
                continue
            self.screen.shown = len(conversation) + 1  # the person's own line is already on screen
            return UserTurn(line)

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond` (blocks on the keyboard; meant for one interactive episode)."""
        return self.respond(task, conversation, seed=seed)


def play_as_user(
    env: Any, agent: Any, user: HumanUser, *, seed: int | None, options: dict[str, Any]
) -> tuple[Episode, str | None]:
    """Run the customer's seat: the model agent acts, the person answers (through ``env.user``).

    Returns:
        (the episode, None when it ended normally, else why it was abandoned).

    """
    screen = user.screen
    task = env.domain.task(options["task_id"]) if "task_id" in options else None
    if task is None:
        index = int(options.get("task_index", 0))
        task = env.tasks[index]
    screen.say(f"== {env.domain.name} / task {task.id}: you are the customer ==")
    screen.say("Your situation:")
    screen.say(task.scenario.instruction)
    screen.say(USER_HELP)
    screen.say("agent: Hello! How can I help you today?")
    episode = run_episode(env, agent, task_id=task.id, seed=seed)
    screen.show_new(env.messages)
    return episode, "the player quit" if user.quit_requested else None


# ---------------------------------------------------------------------------------------------- commands
def _report(env: Any, screen: Transcript, abandoned: str | None) -> Any:
    info = env.reward_info if env.done else env.score()
    screen.say()
    if abandoned:
        screen.say(f"== abandoned ({abandoned}); scored as it stands ==")
    else:
        screen.say(f"== episode ended: {env.termination} ==")
    screen.say(f"reward: {info.reward if info else 0.0}")
    if info is not None:
        if info.db_match is not None:
            screen.say(f"database matches the goal: {'yes' if info.db_match else 'no'}")
        for output, found in info.outputs.items():
            screen.say(f"required output {output!r}: {'said' if found else 'missing'}")
    return info


def _options(args: argparse.Namespace) -> dict[str, Any]:
    if args.task:
        return {"task_id": args.task}
    if args.task_index is not None:
        return {"task_index": args.task_index}
    return {}


def cmd_play(args: argparse.Namespace, *, input_fn: InputFn | None = None, out: TextIO | None = None) -> int:
    """Run ``apigen-envs play``.

    Args:
        args: Parsed arguments (see :func:`add_play_parser`).
        input_fn: Line reader (default ``input``, with readline completion on a terminal).
        out: Output stream (default stdout).

    Returns:
        The exit code.

    """
    from apigen_envs.cli_helpers import domain_of
    from apigen_envs.env import ToolUseEnv
    from apigen_envs.episodes_io import EpisodeWriter

    input_fn = input_fn or input
    out = out or sys.stdout
    screen = Transcript(out)
    domain = domain_of(args)
    options = _options(args)
    agent_name, agent_config = "human", {}
    user_name, user_config = "scripted", {"strategy": "scripted"}
    episode: Episode | None = None
    if args.seat == "user":
        if not args.model:
            raise ApigenError("--as user needs --model (and --base-url for a local server)")
        from apigen_envs.baselines.tool_calling import ToolCallingAgent
        from apigen_envs.llm import LLMConfig, OpenAIClient

        config = LLMConfig(
            model=args.model, base_url=args.base_url, api_key_env=args.api_key_env, temperature=args.temperature
        )
        agent = ToolCallingAgent(OpenAIClient(config))
        human = HumanUser(input_fn, screen)
        if input_fn is input:
            install_completer({}, USER_COMMANDS)
        env = ToolUseEnv(domain, user=human, split=args.split, max_turns=args.max_turns)
        if not options:
            options = {"task_index": 0}
        episode, abandoned = play_as_user(env, agent, human, seed=args.seed, options=options)
        agent_name, agent_config = agent.name, agent.public()
        user_name, user_config = "human", {}
    else:
        from apigen_envs.simulators.scripted_user import ScriptedUser

        env = ToolUseEnv(domain, user=ScriptedUser(), split=args.split, max_turns=args.max_turns)
        episode, abandoned = play_as_agent(env, input_fn=input_fn, out=out, seed=args.seed, options=options)
    info = _report(env, screen, abandoned)
    fields: dict[str, Any] = {
        "agent": agent_name,
        "agent_config": agent_config,
        "user": user_name,
        "user_config": user_config,
    }
    if abandoned:
        # Left out of metrics: a person giving up says nothing about the other side's skill.
        fields.update(termination="agent_error" if args.seat == "agent" else "user_error", error=abandoned)
        episode = env.to_episode(**fields)
        if info is not None:
            episode = episode.model_copy(update={"reward_info": info})
    else:
        assert episode is not None
        episode = episode.model_copy(update=fields)
    path = Path(args.out)
    with EpisodeWriter(path) as writer:
        writer.write(episode)
    screen.say(f"episode saved to {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run ``apigen-envs serve`` (blocks until interrupted)."""
    from apigen_envs.server import ServerSettings, resolve_token, run_server

    token = resolve_token(args.token)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(
            "warning: serving beyond loopback without a token; anyone who can reach the port can use it",
            file=sys.stderr,
        )
    settings = ServerSettings(
        token=token,
        idle_timeout_s=args.idle_timeout,
        max_sessions=args.max_sessions,
        max_body_bytes=args.max_body,
        max_session_bytes=args.max_session_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        data_dir=getattr(args, "data_dir", None),
        semantics=getattr(args, "semantics", None),
        user_model=args.user_model,
        user_base_url=args.user_base_url,
        api_key_env=args.api_key_env,
        allow_client_base_url=args.allow_client_base_url,
        allow_reveal_task=args.allow_reveal_task,
    )
    auth = "bearer token required" if token else "no auth"
    print(f"apigen-envs env server on http://{args.host}:{args.port} ({auth}); docs at /docs", file=sys.stderr)
    run_server(settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def add_play_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``play`` subcommand to an argparse subparsers object (sets ``func``)."""
    p = subparsers.add_parser("play", help="play an episode at the keyboard (as the agent or the customer)")
    add_domain_options(p)
    p.add_argument("--domain", default="mock")
    p.add_argument("--task", help="task id (default: the first task, or one drawn with --seed)")
    p.add_argument("--task-index", type=int, default=None, help="play the task at this index (default: random)")
    p.add_argument("--split", default=None, help="pick tasks from this split only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--as", dest="seat", choices=("agent", "user"), default="agent", help="which seat you take")
    p.add_argument("--model", default=os.environ.get("APIGEN_MODEL"), help="the model agent (--as user)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server of the model agent")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-turns", type=int, default=30)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="episodes JSONL to append to")
    p.set_defaults(func=cmd_play)
    return p


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand (the env HTTP service) to an argparse subparsers object."""
    p = subparsers.add_parser("serve", help="serve the envs over HTTP (sessions API; see /docs)")
    add_domain_options(p)
    p.add_argument("--host", default="127.0.0.1", help="interface (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None, help="bearer token (prefer $APIGEN_SERVER_TOKEN: argv shows in ps)")
    p.add_argument("--idle-timeout", type=float, default=600.0, help="seconds before an idle session is dropped")
    p.add_argument("--max-sessions", type=int, default=1024, help="open sessions at most")
    p.add_argument("--max-body", type=int, default=1024 * 1024, help="largest request body in bytes")
    p.add_argument("--max-session-bytes", type=int, default=8 * 1024 * 1024, help="conversation a session may hold")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds allowed for a request's headers")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds allowed for a request's body")
    p.add_argument("--max-connections", type=int, default=2048, help="open connections allowed at once")
    p.add_argument("--user-model", default=os.environ.get("APIGEN_MODEL", "local"), help="model of LLM users")
    p.add_argument("--user-base-url", default=None, help="OpenAI-compatible server of LLM users")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument(
        "--allow-client-base-url", action="store_true", help="let clients choose the LLM user's server (SSRF risk)"
    )
    p.add_argument(
        "--allow-reveal-task",
        action="store_true",
        help="let clients ask for the task's gold (reveal_task), for privileged agents such as the oracle",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="server log level",
    )
    p.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apigen_envs.play {play,serve} ...`` (the same subcommands as ``apigen-envs``)."""
    parser = argparse.ArgumentParser(prog="apigen-envs")
    add_domain_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True)
    add_play_parser(sub)
    add_serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ApigenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
