"""Reliability round 2 (issue 18): the faults found by attacking 0.1.0, one regression test (or more) each.

1. lone UTF-16 surrogates in model content, tool arguments, tool results, user turns and client steps;
   one unwritable episode never aborts the others;
2. resume keeps a complete last line that lacks its newline and sets a truncated one aside;
3. a session's size is capped (413) and clients can ask for only the new messages;
4. nested arguments, non-UTF-8 bodies and bad seeds are 4xx, and slow clients are cut off;
5. a client-chosen LLM URL never receives the server's API key;
7. the CLI says why no agent episode could be scored, and exits quietly on a closed pipe.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector
from apigen_envs.domain import Domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.episodes_io import EpisodeWriter, TruncatedLineWarning, corrupt_path, existing_ids, load_episodes
from apigen_envs.errors import EpisodeWriteError
from apigen_envs.fake_server import ScriptedServer
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.messages import tool_call
from apigen_envs.protocols import UserTurn
from apigen_envs.registry import load_domain
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.tools import ToolSet

REPO = Path(__file__).resolve().parents[1]
LONE = "\ud83d"  # a high surrogate without its pair: what the JSON escape "\ud83d" alone decodes to
GOODBYE = "All set, goodbye."


def client_for(server: ScriptedServer) -> OpenAIClient:
    return OpenAIClient(
        LLMConfig(model="scripted", base_url=server.base_url, timeout_s=5, max_retries=1, backoff_base_s=0.01)
    )


def alternate(reply: object) -> object:
    counter = itertools.count()
    return lambda request: reply if next(counter) % 2 == 0 else GOODBYE


def assert_clean_jsonl(path: Path, count: int) -> list[dict]:
    data = path.read_bytes()
    data.decode("utf-8")  # strict: every byte written is valid UTF-8
    lines = data.splitlines()
    assert data.endswith(b"\n") and len(lines) == count
    records = [json.loads(line) for line in lines]
    assert len({r["episode_id"] for r in records}) == count
    return records


# ---------------------------------------------------------------------------------------------- 1. surrogates
@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(f"Let me check {LONE} that for you.", id="content"),
        pytest.param(
            {
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "function": {"name": "get_account_details", "arguments": f'{{"account_id": "a{LONE}"}}'},
                    }
                ],
            },
            id="arguments",
        ),
        pytest.param(
            {"content": "", "tool_calls": [{"id": f"c{LONE}", "function": {"name": f"t{LONE}", "arguments": "{}"}}]},
            id="tool-name-and-id",
        ),
    ],
)
def test_lone_surrogate_from_the_model_never_kills_the_run(reply, mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    with ScriptedServer(handler=alternate(reply)) as server:
        episodes = Collector(mock_domain, ToolCallingAgent(client_for(server)), trials=2, concurrency=4).run(out=out)
    assert len(episodes) == 10 and not any(ep.is_infra_failure for ep in episodes), [ep.error for ep in episodes]
    records = assert_clean_jsonl(out, 10)
    assert any("\ufffd" in json.dumps(r["messages"], ensure_ascii=False) for r in records)
    assert len(load_episodes([out])) == 10


def _echo_domain(mock_domain) -> Domain:
    tools = ToolSet(list(mock_domain.tools))

    @tools.tool
    def echo_raw(db, text: str) -> str:
        """Return text with a lone surrogate, as a tool reading bad data might.

        Args:
            text: Anything.
        """
        return f"{text} {LONE}"

    return Domain("mock", mock_domain.snapshot, tools, "policy", mock_domain.tasks)


def test_lone_surrogate_in_a_tool_result_is_replaced(mock_domain, tmp_path):
    domain = _echo_domain(mock_domain)
    env = ToolUseEnv(domain)
    env.reset(options={"task_id": "nickname"})
    obs, *_ = env.step(tool_call("echo_raw", {"text": "hi"}))
    assert obs[-1] == {"role": "tool", "tool_call_id": "call_0", "name": "echo_raw", "content": "hi \ufffd"}

    class EchoAgent(OracleAgent):
        def act(self, conversation, context):
            if not any(m.role == "tool" for m in conversation):
                return tool_call("echo_raw", {"text": "x"})
            return super().act(conversation, context)

    out = tmp_path / "eps.jsonl"
    episodes = Collector(domain, EchoAgent(name="echo"), trials=2).run(out=out)
    assert len(episodes) == 10 and not any(ep.is_infra_failure for ep in episodes)
    assert_clean_jsonl(out, 10)


def test_airline_calculate_with_a_lone_surrogate_gets_a_tool_error():
    env = ToolUseEnv("airline")
    env.reset(seed=0)
    action = {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "function": {"name": "calculate", "arguments": '{"expression": "1+\\ud83d"}'}}],
    }
    obs, *_ = env.step(action)
    assert obs[-1]["role"] == "tool" and obs[-1]["content"] == "Error: Invalid characters in expression"
    assert not env.done and env.termination is None  # a tool error for the agent, not an env_error
    obs, *_ = env.step(tool_call("calculate", {"expression": f"2 * {LONE}3"}, call_id="c2"))
    assert obs[-1]["content"].startswith("Error:") and not env.done


class SurrogateUser(ScriptedUser):
    """The scripted user, with lone surrogates in its lines and in its trace."""

    def respond(self, task, conversation, *, seed=None):
        turn = super().respond(task, conversation, seed=seed)
        return UserTurn(f"{turn.content} {LONE}" if turn.content else "", turn.stop, turn.usage, {"raw": LONE})


def test_lone_surrogates_from_the_user_simulator_and_its_trace_are_written(mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    episodes = Collector(mock_domain, OracleAgent(), SurrogateUser(), trials=1).run(out=out)
    assert len(episodes) == 5
    records = assert_clean_jsonl(out, 5)
    assert all(r["user_trace"] and r["user_trace"][0]["raw"] == "\ufffd" for r in records)  # repaired on entry
    assert all(ep.reward == 1.0 for ep in load_episodes([out]))


class BadTraceUser(ScriptedUser):
    """A user simulator whose trace for one task holds something no JSON writer can serialise."""

    def respond(self, task, conversation, *, seed=None):
        turn = super().respond(task, conversation, seed=seed)
        meta = {"obj": object()} if task.id == "nickname" else None
        return UserTurn(turn.content, turn.stop, turn.usage, meta)


def test_an_unwritable_episode_is_recorded_and_does_not_abort_the_others(mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    collector = Collector(mock_domain, OracleAgent(), BadTraceUser(), trials=2, concurrency=3)
    episodes = collector.run(out=out)
    assert len(episodes) == 8  # the two "nickname" episodes could not be written; the other 8 were
    assert len(collector.failures) == 2 and all("nickname" in f for f in collector.failures)
    assert_clean_jsonl(out, 8)
    again = collector.run(out=out)  # a resume runs exactly the missing ones again
    assert len(again) == 0 and len(collector.failures) == 2


class DiskFull:
    """A file that writes part of what it is given, then fails as a full disk does."""

    def __init__(self, real, keep: float) -> None:
        self.real, self.keep = real, keep

    def __getattr__(self, name):
        return getattr(self.real, name)

    def write(self, data):
        self.real.write(data[: int(len(data) * self.keep)])
        raise OSError(28, "No space left on device")


def test_a_failed_write_leaves_no_partial_line(mock_domain, tmp_path):
    episodes = Collector(mock_domain, OracleAgent(), trials=1).run()
    out = tmp_path / "eps.jsonl"
    writer = EpisodeWriter(out)
    writer.write(episodes[0])
    real = writer._fh

    writer._fh = DiskFull(real, keep=1 / 2)
    with pytest.raises(EpisodeWriteError, match="No space left"):
        writer.write(episodes[1])
    writer._fh = real
    writer.write(episodes[2])
    writer.close()
    assert [r["episode_id"] for r in assert_clean_jsonl(out, 2)] == [episodes[0].episode_id, episodes[2].episode_id]


def test_write_lines_is_all_or_nothing(mock_domain, tmp_path):
    from apigen_envs.episodes_io import episode_line

    episodes = Collector(mock_domain, OracleAgent(), trials=1).run()
    out = tmp_path / "eps.jsonl"
    writer = EpisodeWriter(out)
    writer.write_lines([episode_line(episodes[0])], [episodes[0].episode_id])
    real = writer._fh

    writer._fh = DiskFull(real, keep=1 / 3)
    with pytest.raises(EpisodeWriteError, match="2 episodes was not written.*No space left"):
        writer.write_lines([episode_line(e) for e in episodes[1:3]], [e.episode_id for e in episodes[1:3]])
    writer._fh = real
    writer.write_lines([episode_line(e) for e in episodes[3:]], [e.episode_id for e in episodes[3:]])
    writer.close()
    kept = [r["episode_id"] for r in assert_clean_jsonl(out, 3)]
    assert kept == [episodes[0].episode_id, *(e.episode_id for e in episodes[3:])]


def test_collector_writes_what_finishes_together_in_one_call(mock_domain, tmp_path, monkeypatch):
    calls: list[int] = []
    original = EpisodeWriter.write_lines

    def counting(self, lines, episode_ids):
        calls.append(len(lines))
        return original(self, lines, episode_ids)

    monkeypatch.setattr(EpisodeWriter, "write_lines", counting)
    out = tmp_path / "eps.jsonl"
    episodes = Collector(mock_domain, OracleAgent(), trials=4, concurrency=20).run(out=out)
    assert len(episodes) == 20 and sum(calls) == 20
    assert len(calls) < 20  # episodes that ended in the same event-loop pass shared a write
    assert_clean_jsonl(out, 20)


def test_collector_batch_that_fails_to_write_is_reported_and_rerun(mock_domain, tmp_path, monkeypatch):
    original = EpisodeWriter.write_lines
    failed: list[int] = []

    def first_batch_fails(self, lines, episode_ids):
        if not failed:
            failed.append(len(lines))
            raise EpisodeWriteError("disk full")
        return original(self, lines, episode_ids)

    monkeypatch.setattr(EpisodeWriter, "write_lines", first_batch_fails)
    out = tmp_path / "eps.jsonl"
    collector = Collector(mock_domain, OracleAgent(), trials=2, concurrency=4)
    episodes = collector.run(out=out)
    assert len(collector.failures) == failed[0] and all("disk full" in f for f in collector.failures)
    assert len(episodes) == 10 - failed[0]  # only what is in the file counts as run
    if failed[0] < 10:
        assert_clean_jsonl(out, 10 - failed[0])
    else:
        assert out.read_bytes() == b""  # every episode ended in one pass: one batch, not written
    again = collector.run(out=out)  # a resume runs exactly the unwritten ones
    assert len(again) == failed[0] and not collector.failures
    assert_clean_jsonl(out, 10)


# ---------------------------------------------------------------------------------------------- 2. resume
def test_complete_last_line_without_newline_is_kept_and_counted(mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent(), trials=2).run(out=out)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))  # the kill fell between the record and its newline
    assert len(existing_ids(out)) == 10
    rerun = Collector(mock_domain, OracleAgent(), trials=2).run(out=out)
    assert rerun == []
    assert_clean_jsonl(out, 10)
    assert not corrupt_path(out).exists()


def test_truncated_last_line_is_set_aside_and_its_episode_rerun(mock_domain, tmp_path):
    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent(), trials=2).run(out=out)
    data = out.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[last_start : last_start + (len(data) - last_start) // 2]
    out.write_bytes(data[:last_start] + torn)
    assert len(existing_ids(out)) == 9
    with pytest.warns(TruncatedLineWarning, match="set aside"):
        rerun = Collector(mock_domain, OracleAgent(), trials=2).run(out=out)
    assert len(rerun) == 1
    assert_clean_jsonl(out, 10)
    assert corrupt_path(out).read_bytes() == torn + b"\n"  # not lost without a word


def test_report_says_when_it_skips_a_truncated_line(mock_domain, tmp_path, capsys):
    from apigen_envs.cli import main

    out = tmp_path / "eps.jsonl"
    Collector(mock_domain, OracleAgent(), trials=1).run(out=out)
    out.write_bytes(out.read_bytes() + b'{"episode_id": "mock/x/0", "messa')
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert "skipped a truncated last line" in err and str(out) in err


# ---------------------------------------------------------------------------------------------- server helpers
fastapi = pytest.importorskip("fastapi")

from apigen_envs.remote import RemoteEnv, httpx  # noqa: E402
from apigen_envs.server import ServerSettings, serve_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def server():
    settings = ServerSettings(
        max_body_bytes=256 * 1024, max_session_bytes=300_000, header_timeout_s=1.0, allow_reveal_task=True
    )
    with serve_in_thread(settings) as srv:
        yield srv


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def _session(http, **body) -> str:
    response = http.post("/sessions", json={"domain": "mock", "task_index": 0, **body})
    assert response.status_code == 201, response.text
    return response.json()["session_id"]


def _post_raw(http, path: str, raw: bytes):
    return http.post(path, content=raw, headers={"content-type": "application/json"})


# ---------------------------------------------------------------------------------------------- 1. client steps
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"content": "hi \\ud83d there"}', id="content"),
        pytest.param(
            b'{"content": "", "tool_calls": [{"id": "c\\udc00", "function": {"name": "get_account_details",'
            b' "arguments": {"account_id": "acc\\ud83d"}}}]}',
            id="arguments",
        ),
        pytest.param(
            b'{"content": "", "tool_calls": [{"id": "c", "function": {"name": "get_account_details",'
            b' "arguments": "{\\"account_id\\": \\"acc\\\\ud83d\\"}"}}]}',
            id="arguments-as-text",
        ),
    ],
)
def test_lone_surrogate_in_a_client_step_is_answered_and_the_episode_stays_readable(http, raw):
    sid = _session(http)
    response = _post_raw(http, f"/sessions/{sid}/step", raw)
    assert response.status_code == 200, response.text
    assert "\ufffd" in response.content.decode("utf-8")
    episode = http.get(f"/sessions/{sid}/episode")
    assert episode.status_code == 200 and "\ufffd" in episode.content.decode("utf-8")


def test_lone_surrogate_in_session_fields_keeps_the_episode_readable(http):
    raw = b'{"domain": "mock", "task_index": 0, "agent": "a\\ud83d", "agent_config": {"note": "\\udc00"}}'
    response = _post_raw(http, "/sessions", raw)
    assert response.status_code == 201, response.text
    sid = response.json()["session_id"]
    assert http.post(f"/sessions/{sid}/step", json={"content": "Bye."}).status_code == 200
    episode = http.get(f"/sessions/{sid}/episode")
    assert episode.status_code == 200
    assert episode.json()["agent"] == "a\ufffd" and episode.json()["agent_config"] == {"note": "\ufffd"}


# ---------------------------------------------------------------------------------------------- 3. session size
def test_a_session_past_its_size_limit_gets_413_and_the_episode_ends(http):
    sid = _session(http)
    chunk = "x" * 120_000 + "?"  # a question keeps the scripted user talking
    assert http.post(f"/sessions/{sid}/step", json={"content": chunk}).status_code == 200
    assert http.post(f"/sessions/{sid}/step", json={"content": chunk}).status_code == 200
    refused = http.post(f"/sessions/{sid}/step", json={"content": chunk})
    assert refused.status_code == 413 and "300000 bytes" in refused.json()["detail"]
    episode = http.get(f"/sessions/{sid}/episode").json()
    assert episode["termination"] == "invalid_action" and "limit" in episode["error"]
    assert len(episode["messages"]) == 5  # the refused step was not applied
    assert http.post(f"/sessions/{sid}/step", json={"content": "more"}).status_code == 409


def test_step_since_returns_only_the_new_messages(http):
    sid = _session(http)
    full = http.post(f"/sessions/{sid}/step", json={"content": "Which account?"}).json()
    assert full["observation_start"] == 0 and len(full["observation"]) == 3
    tail = http.post(f"/sessions/{sid}/step?since=3", json={"content": "And the amount?"}).json()
    assert tail["observation_start"] == 3 and [m["role"] for m in tail["observation"]] == ["assistant", "user"]
    assert tail["observation"][0]["content"] == "And the amount?"
    assert http.post(f"/sessions/{sid}/step?since=99", json={"content": "x"}).status_code == 422


def test_remote_env_asks_only_for_the_new_messages(server):
    from apigen_envs.protocols import AgentContext

    task_id = "transfer_50"
    local = ToolUseEnv("mock")
    sizes: list[tuple[str, int]] = []

    def record(response):
        response.read()
        if "/step" in str(response.request.url):
            sizes.append((str(response.request.url), len(response.json()["observation"])))

    with RemoteEnv(server.base_url, domain="mock", reveal_task=True) as remote:
        remote.reset(seed=1, options={"task_id": task_id})
        _, info = local.reset(seed=1, options={"task_id": task_id})
        remote._sync().event_hooks["response"] = [record]
        context = AgentContext(system_prompt=info["system_prompt"], tools=tuple(info["tools"]), task=remote.task)
        while not remote.done:
            action = OracleAgent().act(remote.messages, context)
            r_obs, *_ = remote.step(action)
            l_obs, *_ = local.step(action)
            assert r_obs == l_obs
        assert remote.observation == tuple(m.to_openai() for m in local.messages)
    steps = sizes
    assert len(steps) >= 2 and all("since=" in url for url, _ in steps)
    assert max(n for _, n in steps) <= 3 < len(local.messages)  # each step brought only its own messages


# ---------------------------------------------------------------------------------------------- 4. status codes
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 500, 995, 5_000, 100_000])
@pytest.mark.parametrize("as_text", [False, True], ids=["dict", "text"])
def test_deeply_nested_arguments_are_refused_or_a_tool_error_never_500(http, depth, as_text):
    sid = _session(http)
    args = '{"account_id": ' + _deep(depth) + "}"
    call = {"id": "c", "function": {"name": "get_account_details", "arguments": "ARGS"}}
    raw = json.dumps({"content": "", "tool_calls": [call]})
    raw = raw.replace('"ARGS"', json.dumps(args) if as_text else args)
    response = _post_raw(http, f"/sessions/{sid}/step", raw.encode())
    assert response.status_code in (200, 422), response.text[:300]
    if response.status_code == 200:
        last = response.json()["observation"][-1]
        assert last["role"] == "tool" and last["content"].startswith("Error:")
    else:
        assert "nested deeper" in response.json()["detail"]
    assert http.get(f"/sessions/{sid}/episode").status_code == 200


def test_deeply_nested_arguments_from_a_model_count_against_the_agent(mock_domain, tmp_path):
    reply = {"content": "", "tool_calls": [{"id": "c", "function": {"name": "think", "arguments": _deep(50_000)}}]}
    with ScriptedServer(handler=alternate(reply)) as server:
        episodes = Collector(mock_domain, ToolCallingAgent(client_for(server)), trials=1).run(out=tmp_path / "e.jsonl")
    assert len(episodes) == 5 and not any(ep.is_infra_failure for ep in episodes), [ep.error for ep in episodes]
    tool_results = [m for ep in episodes for m in ep.messages if m.role == "tool"]
    assert tool_results and all(m.error for m in tool_results)


def test_deeply_nested_arguments_in_a_local_step_are_a_tool_error(mock_env):
    mock_env.reset(options={"task_id": "nickname"})
    action = {"tool_calls": [{"id": "c", "function": {"name": "think", "arguments": '{"t": ' + _deep(5000) + "}"}}]}
    obs, *_ = mock_env.step(action)
    assert obs[-1]["content"].startswith("Error:") and mock_env.termination is None


def test_non_utf8_body_is_400(http):
    sid = _session(http)
    response = _post_raw(http, f"/sessions/{sid}/step", b'{"content": "\xff\xfe caf\xe9"}')
    assert response.status_code == 400 and "UTF-8" in response.json()["detail"]


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5])
def test_bad_seed_is_422(http, seed):
    response = http.post("/sessions", json={"domain": "mock", "seed": seed})
    assert response.status_code == 422, response.text


def test_api_key_without_base_url_is_422(http):
    response = http.post("/sessions", json={"domain": "mock", "user": {"kind": "llm", "api_key": "sk-x"}})
    assert response.status_code == 422 and "sk-x" not in response.text


# ---------------------------------------------------------------------------------------------- 4. slow clients
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it was still open after ``within``."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts file handles through /proc")
def test_slow_clients_are_cut_off_and_their_sockets_freed():
    settings = ServerSettings(header_timeout_s=0.5, body_timeout_s=0.5, max_connections=40, allow_reveal_task=True)
    with serve_in_thread(settings) as srv:
        before = _open_fds()
        slow_heads = []
        for _ in range(30):  # slowloris: a request head that never ends
            sock = socket.create_connection((srv.host, srv.port))
            sock.sendall(b"POST /sessions HTTP/1.1\r\nHost: x\r\n")
            slow_heads.append(sock)
        slow_body = socket.create_connection((srv.host, srv.port))
        slow_body.sendall(
            b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        for sock in slow_heads[:10]:  # trickling bytes does not reset the deadline
            sock.sendall(b"X-A")
        # Meanwhile, real clients are served as usual.
        with RemoteEnv(srv.base_url, domain="mock", reveal_task=True) as env:
            from apigen_envs.testing import run_episode

            rewards = [run_episode(env, OracleAgent(), task_id=task)[0] for task in load_domain("mock").tasks]
        assert rewards == [1.0] * 5
        answers = [_closed_by_server(sock, within=10) for sock in slow_heads]
        assert all(a is not None for a in answers), "a slow client's connection was still open"
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
        body_answer = _closed_by_server(slow_body, within=10)
        assert body_answer is not None and body_answer.startswith(b"HTTP/1.1 408")
        for sock in [*slow_heads, slow_body]:
            sock.close()
        # The server is still answering, and the handles of the slow clients were given back.
        with httpx.Client(base_url=srv.base_url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
        deadline = time.monotonic() + 5
        while _open_fds() > before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_fds() <= before + 2


def test_connections_past_the_limit_are_refused_at_once():
    with serve_in_thread(ServerSettings(max_connections=5, header_timeout_s=5)) as srv:
        held = [socket.create_connection((srv.host, srv.port)) for _ in range(5)]
        time.sleep(0.2)  # let the server register them
        extra = socket.create_connection((srv.host, srv.port))
        answer = _closed_by_server(extra, within=5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503")
        for sock in [*held, extra]:
            sock.close()


# ---------------------------------------------------------------------------------------------- 5. API key
def test_client_chosen_llm_url_never_receives_the_servers_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-secret")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-server")
    settings = ServerSettings(allow_client_base_url=True)
    with (
        ScriptedServer(["Hi, I need help with my account."], cycle=True) as llm,
        serve_in_thread(settings) as srv,
        httpx.Client(base_url=srv.base_url, timeout=30) as http,
    ):
        for user, expected in (
            ({"kind": "llm", "base_url": llm.base_url}, "Bearer not-needed"),
            ({"kind": "llm", "base_url": llm.base_url, "api_key": "sk-client-own"}, "Bearer sk-client-own"),
        ):
            response = http.post("/sessions", json={"domain": "mock", "task_index": 0, "user": user})
            assert response.status_code == 201, response.text
            episode = http.get(f"/sessions/{response.json()['session_id']}/episode").text
            assert "sk-client-own" not in episode and "sk-server-secret" not in episode
            headers = llm.request_headers[-1]
            assert headers["authorization"] == expected
            assert "openai-organization" not in headers
        assert all("sk-server-secret" not in json.dumps(h) for h in llm.request_headers)
    # The server's own LLM URL still gets the server's key: the test can tell the two apart.
    with (
        ScriptedServer(["Hi, I need help."], cycle=True) as llm,
        serve_in_thread(ServerSettings(user_base_url=llm.base_url)) as srv,
        httpx.Client(base_url=srv.base_url, timeout=30) as http,
    ):
        assert http.post("/sessions", json={"domain": "mock", "user": {"kind": "llm"}}).status_code == 201
        assert llm.request_headers[-1]["authorization"] == "Bearer sk-server-secret"


# ---------------------------------------------------------------------------------------------- 7. CLI
def test_run_where_every_agent_episode_fails_for_infrastructure_says_why_and_exits_1(tmp_path, monkeypatch, capsys):
    from apigen_envs.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    argv = ["run", "--domain", "mock", "--agent", "tool_calling", "--user", "scripted", "--no-local"]
    argv += ["--trials", "1", "--num-tasks", "2", "--out", str(tmp_path / "eps.jsonl"), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "no agent episode could be scored" in err and "no API key" in err


def test_run_whose_episodes_are_scored_exits_0_without_an_infrastructure_note(tmp_path, capsys):
    from apigen_envs.cli import main

    with ScriptedServer([GOODBYE], cycle=True) as llm:
        argv = ["run", "--domain", "mock", "--agent", "tool_calling", "--user", "scripted", "--trials", "1"]
        argv += ["--base-url", llm.base_url, "--out", str(tmp_path / "eps.jsonl"), "--quiet", "--no-baseline"]
        assert main(argv) == 0
    assert "infrastructure" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["tasks", "--domain", "retail"], 128 + signal.SIGPIPE),
        (["domains"], 128 + signal.SIGPIPE),
        (["--help"], 0),  # argparse itself drops help it cannot write
    ],
)
def test_a_closed_stdout_pipe_ends_quietly(argv, code):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write hits a broken pipe
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "apigen_envs.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr.decode()[-2000:]
    assert proc.returncode == code


def test_truncated_tail_warning_is_a_warning_not_an_error(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"episode_id": "x"')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_episodes([path]) == []
    assert [w.category for w in caught] == [TruncatedLineWarning]


def test_a_failing_on_episode_callback_is_raised_after_every_episode_is_written(mock_domain, tmp_path):
    def broken(episode):
        raise RuntimeError("progress bar broke")

    out = tmp_path / "eps.jsonl"
    collector = Collector(mock_domain, OracleAgent(), trials=2, concurrency=4, on_episode=broken)
    with pytest.raises(RuntimeError, match="progress bar broke"):
        collector.run(out=out)
    assert_clean_jsonl(out, 10)  # the callback's failure cost no episode
