"""`apigen-envs play`: the keyboard seats, driven in-process and through a pseudo-terminal."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from apigen_envs.episodes_io import load_episodes
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.messages import AssistantMessage, ToolCall
from apigen_envs.play import (
    COMMANDS,
    add_play_parser,
    add_serve_parser,
    cmd_play,
    completions,
    parse_call,
    policy_summary,
    tool_arguments,
)
from apigen_envs.registry import load_domain

REPO = Path(__file__).resolve().parents[1]
GOOD_LINES = (
    '/call find_customer_by_email {"email": "ana@example.com"}',
    '/call transfer_funds {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}',
    "Done: I moved $50 from acc_1001 to acc_1002.",
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_play_parser(sub)
    add_serve_parser(sub)
    return parser.parse_args(list(argv))


def _feeder(lines: Iterator[str] | tuple[str, ...]) -> object:
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


# ---------------------------------------------------------------------------------------------- helpers
def test_completions_cover_commands_tools_and_arguments() -> None:
    tools = tool_arguments(load_domain("mock").tools.schemas())
    assert completions("/c", "/c", tools, COMMANDS) == ["/call"]
    assert completions("/call find", "find", tools, COMMANDS) == ["find_customer_by_email"]
    assert completions("/tools get_", "get_", tools, COMMANDS) == ["get_account_details", "get_customer_details"]
    assert completions('/call transfer_funds {"', "", tools, COMMANDS) == [
        "amount",
        "from_account_id",
        "to_account_id",
    ]
    # Arguments already given are not offered again.
    assert completions('/call transfer_funds {"amount": 5, "', "", tools, COMMANDS) == [
        "from_account_id",
        "to_account_id",
    ]
    assert completions("hello th", "th", tools, COMMANDS) == []


def test_parse_call_accepts_good_calls_and_explains_bad_ones() -> None:
    names = ["find_customer_by_email"]
    msg = parse_call('/call find_customer_by_email {"email": "a@b.c"}', names, "h0")
    assert msg == AssistantMessage(
        tool_calls=(ToolCall(id="h0", name="find_customer_by_email", arguments={"email": "a@b.c"}),)
    )
    assert parse_call("/call find_customer_by_email", names, "h1").tool_calls[0].arguments == {}
    assert parse_call('/call find_customer_by_email{"email": "x"}', names, "h2").tool_calls[0].arguments == {
        "email": "x"
    }
    with pytest.raises(ValueError, match="Did you mean 'find_customer_by_email'"):
        parse_call("/call find_customer_by_mail {}", names, "h")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_call("/call find_customer_by_email {email: x}", names, "h")
    with pytest.raises(ValueError, match="JSON object"):
        parse_call("/call find_customer_by_email [1]", names, "h")
    with pytest.raises(ValueError, match="usage"):
        parse_call("/call", names, "h")


def test_policy_summary_is_short() -> None:
    text = "\n".join(f"rule {i}" for i in range(30))
    summary = policy_summary(text, max_lines=5)
    assert summary.count("\n") == 5 and "25 more lines" in summary


# ---------------------------------------------------------------------------------------------- agent seat
def test_agent_seat_scores_and_saves(tmp_path: Path) -> None:
    out = io.StringIO()
    lines = ("/tools", "/policy", "/nope", "/call no_such_tool {}", "", *GOOD_LINES)
    args = _args("play", "--domain", "mock", "--task", "transfer_50", "--out", str(tmp_path / "ep.jsonl"))
    assert cmd_play(args, input_fn=_feeder(lines), out=out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert "you are the agent" in text and "transfer_funds(" in text
    assert "unknown command '/nope'" in text and "unknown tool 'no_such_tool'" in text
    assert "tool[find_customer_by_email]: cus_ana" in text
    assert "reward: 1.0" in text and "database matches the goal: yes" in text
    (episode,) = load_episodes([tmp_path / "ep.jsonl"])
    assert episode.reward == 1.0 and episode.agent == "human" and episode.termination == "user_stop"
    assert [m.role for m in episode.messages].count("tool") == 2


def test_agent_seat_quit_is_scored_and_marked(tmp_path: Path) -> None:
    out = io.StringIO()
    args = _args("play", "--task", "transfer_50", "--out", str(tmp_path / "ep.jsonl"))
    assert cmd_play(args, input_fn=_feeder((GOOD_LINES[0], "/quit")), out=out) == 0  # type: ignore[arg-type]
    assert "abandoned (the player quit)" in out.getvalue() and "reward: 0.0" in out.getvalue()
    (episode,) = load_episodes([tmp_path / "ep.jsonl"])
    assert episode.termination == "agent_error" and episode.error == "the player quit"
    assert episode.is_infra_failure and episode.reward_info is not None and episode.reward_info.reward == 0.0
    # Closing the input (Ctrl-D) ends the same way.
    cmd_play(args, input_fn=_feeder(()), out=io.StringIO())  # type: ignore[arg-type]
    assert load_episodes([tmp_path / "ep.jsonl"])[-1].error == "input closed"


# ---------------------------------------------------------------------------------------------- user seat
AGENT_SCRIPT = (
    {
        "tool_calls": [
            {
                "id": "a1",
                "type": "function",
                "function": {"name": "find_customer_by_email", "arguments": '{"email": "ana@example.com"}'},
            }
        ]
    },
    {
        "tool_calls": [
            {
                "id": "a2",
                "type": "function",
                "function": {
                    "name": "transfer_funds",
                    "arguments": '{"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 50}',
                },
            }
        ]
    },
    "All set: $50 moved to your savings. Anything else?",
)


def test_user_seat_against_a_scripted_model_server(tmp_path: Path) -> None:
    out = io.StringIO()
    with ScriptedServer(AGENT_SCRIPT) as server:
        args = _args(
            "play", "--as", "user", "--model", "scripted", "--base-url", server.base_url,
            "--task", "transfer_50", "--out", str(tmp_path / "ep.jsonl"),
        )  # fmt: skip
        lines = ("/task", "Please move $50 from acc_1001 to acc_1002, I am ana@example.com.", "/stop No, thanks!")
        assert cmd_play(args, input_fn=_feeder(lines), out=out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert "you are the customer" in text and "agent -> transfer_funds(" in text
    assert "agent: All set" in text and "reward: 1.0" in text
    (episode,) = load_episodes([tmp_path / "ep.jsonl"])
    assert episode.user == "human" and episode.agent == "tool_calling" and episode.reward == 1.0
    assert episode.messages[-1].role == "user" and episode.messages[-1].content == "No, thanks!"


def test_user_seat_needs_a_model() -> None:
    from apigen_envs.errors import ApigenError

    args = _args("play", "--as", "user")
    args.model = None
    with pytest.raises(ApigenError, match="--model"):
        cmd_play(args, input_fn=_feeder(()), out=io.StringIO())  # type: ignore[arg-type]


def test_serve_parser_defaults_to_loopback() -> None:
    args = _args("serve")
    assert args.host == "127.0.0.1" and args.token is None and args.max_body == 1024 * 1024


# ---------------------------------------------------------------------------------------------- pseudo-terminal
def _spawn(tmp_path: Path, *argv: str) -> object:
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "TERM": "xterm", "INPUTRC": "/dev/null", "PYTHONPATH": str(REPO)}
    return pexpect.spawn(
        sys.executable, ["-m", "apigen_envs.play", *argv], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_agent_seat_in_a_pseudo_terminal_with_tab_completion(tmp_path: Path) -> None:
    child = _spawn(tmp_path, "play", "--domain", "mock", "--task", "transfer_50", "--out", "ep.jsonl")
    child.expect("agent> ")
    # Tab completes the tool name, then the argument name.
    child.send("/call find_cust\t")
    child.expect("find_customer_by_email")
    child.send('{"em\t')
    child.expect('email"')
    child.sendline(': "ana@example.com"}')
    child.expect("tool\\[find_customer_by_email\\]: cus_ana")
    child.expect("agent> ")
    child.sendline(GOOD_LINES[1])
    child.expect("tool\\[transfer_funds\\]")
    child.expect("agent> ")
    child.sendline(GOOD_LINES[2])
    child.expect("reward: 1.0")
    child.expect("episode saved")
    child.expect(pytest.importorskip("pexpect").EOF)
    child.close()
    assert child.exitstatus == 0
    (episode,) = load_episodes([tmp_path / "ep.jsonl"])
    assert episode.reward == 1.0 and episode.messages[1].tool_calls[0].arguments == {"email": "ana@example.com"}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_user_seat_in_a_pseudo_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    with ScriptedServer(AGENT_SCRIPT) as server:
        child = _spawn(
            tmp_path, "play", "--as", "user", "--model", "scripted", "--base-url", server.base_url,
            "--task", "transfer_50", "--out", "ep.jsonl",
        )  # fmt: skip
        child.expect("you> ")
        child.sendline("Hi, please move $50 from acc_1001 to my savings acc_1002. I am ana@example.com.")
        child.expect("agent: All set")
        child.expect("you> ")
        child.sendline("/stop Thanks!")
        child.expect("reward: 1.0")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
    assert load_episodes([tmp_path / "ep.jsonl"])[0].passed
