"""The env HTTP service and the RemoteEnv client, on a loopback server in a thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from apigen_envs.baselines.noop import NoopAgent
from apigen_envs.baselines.oracle import OracleAgent
from apigen_envs.errors import DomainNotFoundError, EnvStateError, InvalidActionError
from apigen_envs.messages import Message
from apigen_envs.protocols import AgentContext, UserTurn
from apigen_envs.registry import load_domain
from apigen_envs.remote import RemoteEnv, RemoteEnvError, httpx
from apigen_envs.server import ServerSettings, SessionStore, UserSpec, serve_in_thread
from apigen_envs.simulators.scripted_user import ScriptedUser
from apigen_envs.task import Task
from apigen_envs.testing import run_episode

TOKEN = "test-token-7f3a9c"
MOCK_TASKS = tuple(load_domain("mock").tasks)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(ServerSettings(token=TOKEN, max_body_bytes=64 * 1024, allow_reveal_task=True)) as srv:
        yield srv.base_url


@pytest.fixture()
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


def _session(http: httpx.Client, **body: object) -> dict:
    response = http.post("/sessions", json={"domain": "mock", **body})
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------- episodes
@pytest.mark.parametrize("task_id", MOCK_TASKS)
def test_oracle_scores_one_and_noop_zero_through_the_server(server: str, task_id: str) -> None:
    with RemoteEnv(server, domain="mock", token=TOKEN, reveal_task=True) as env:
        reward, messages = run_episode(env, OracleAgent(), task_id=task_id)
        assert reward == 1.0
        assert env.done and env.reward_info is not None and env.reward_info.reward == 1.0
        assert any(m.role == "tool" for m in messages)
        reward, _ = run_episode(env, NoopAgent(), task_id=task_id)
        assert reward == 0.0
        assert env.termination == "user_stop"


def test_remote_matches_local_env_exactly(server: str) -> None:
    from apigen_envs.env import ToolUseEnv

    task_id = MOCK_TASKS[0]
    local = ToolUseEnv("mock")
    with RemoteEnv(server, domain="mock", token=TOKEN, reveal_task=True) as remote:
        r_obs, r_info = remote.reset(seed=3, options={"task_id": task_id})
        l_obs, l_info = local.reset(seed=3, options={"task_id": task_id})
        assert r_obs == l_obs and isinstance(r_obs, tuple)
        assert r_info["tools"] == l_info["tools"] and r_info["system_prompt"] == l_info["system_prompt"]
        context = AgentContext(system_prompt=r_info["system_prompt"], tools=tuple(r_info["tools"]), task=remote.task)
        while not remote.done:
            action = OracleAgent().act(remote.messages, context)
            r = remote.step(action)
            lo = local.step(action)
            assert r[0] == lo[0] and r[1:4] == lo[1:4]
        assert r[4]["reward_info"] == lo[4]["reward_info"]
        episode = remote.episode()
        assert episode.reward == 1.0 and episode.task_id == task_id and episode.seed == 3
        assert episode.messages == list(local.messages)
        assert episode.diff == local.to_episode().diff and episode.agent == "remote"


def test_episode_records_agent_usage_and_names(http: httpx.Client) -> None:
    created = _session(http, task_index=0, agent="my-agent", agent_config={"model": "m"})
    sid = created["session_id"]
    step = {"role": "assistant", "content": "Done?", "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
    assert http.post(f"/sessions/{sid}/step", json=step).status_code == 200
    episode = http.get(f"/sessions/{sid}/episode").json()
    assert episode["agent"] == "my-agent" and episode["agent_config"] == {"model": "m"}
    assert episode["agent_usage"] == {"prompt_tokens": 10, "completion_tokens": 3}
    assert episode["user"] == "scripted"


def test_tool_call_with_dict_arguments_and_tool_error_observation(http: httpx.Client) -> None:
    sid = _session(http, task_index=0)["session_id"]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_account_details", "arguments": {"account_id": "x"}},
    }
    body = http.post(f"/sessions/{sid}/step", json={"role": "assistant", "tool_calls": [call]}).json()
    last = body["observation"][-1]
    assert last["role"] == "tool" and last["tool_call_id"] == "c1" and last["content"].startswith("Error:")
    assert body["reward"] == 0.0 and not body["terminated"] and body["info"]["turn"] == 1


# ---------------------------------------------------------------------------------------------- concurrency
def test_fifty_concurrent_sessions(server: str) -> None:
    async def one(i: int) -> float:
        env = RemoteEnv(server, domain="mock", token=TOKEN, reveal_task=True)
        try:
            _, info = await env.areset(seed=i, options={"task_id": MOCK_TASKS[i % len(MOCK_TASKS)]})
            context = AgentContext(system_prompt=info["system_prompt"], tools=tuple(info["tools"]), task=env.task)
            agent = OracleAgent()
            reward = 0.0
            while not env.done:
                _, reward, _, _, _ = await env.astep(await agent.aact(env.messages, context))
            episode = await env.aepisode()
            assert episode.reward == reward
            return reward
        finally:
            await env.aclose()

    async def main() -> list[float]:
        return await asyncio.gather(*(one(i) for i in range(50)))

    rewards = asyncio.run(main())
    assert rewards == [1.0] * 50


class SlowUser:
    """An async user simulator that waits like an LLM call would."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = ScriptedUser()

    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        time.sleep(self.delay)
        return self.inner.respond(task, conversation, seed=seed)

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        await asyncio.sleep(self.delay)
        return self.inner.respond(task, conversation, seed=seed)


def test_slow_user_does_not_block_other_sessions() -> None:
    delay, n = 0.3, 20
    with serve_in_thread(ServerSettings(), user_factory=lambda spec, settings: SlowUser(delay)) as srv:

        async def one(i: int) -> None:
            async with RemoteEnv(srv.base_url, domain="mock") as env:
                await env.areset(options={"task_index": i % len(MOCK_TASKS)})
                await env.astep("Shall I proceed?")

        async def main() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - start

        elapsed = asyncio.run(main())
    # Two user turns per session: serialised this would take n * 2 * delay = 12 s.
    assert elapsed < n * 2 * delay / 3, elapsed


# ---------------------------------------------------------------------------------------------- bad requests
def test_unknown_session_is_404(http: httpx.Client) -> None:
    for method, path in (
        ("POST", "/sessions/nope/step"),
        ("GET", "/sessions/nope/episode"),
        ("DELETE", "/sessions/nope"),
    ):
        response = http.request(method, path, json={"content": "hi"} if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert "unknown session" in response.json()["detail"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ({"role": "assistant", "content": ""}, "neither text nor tool calls"),
        ({"role": "user", "content": "hi"}, "role"),
        ({"content": "x", "tool_calls": [{"id": "a", "function": {"arguments": "{}"}}]}, "name"),
        ({"content": 5}, "content"),
    ],
)
def test_malformed_action_is_422_with_reason(http: httpx.Client, action: dict, reason: str) -> None:
    sid = _session(http, task_index=0)["session_id"]
    response = http.post(f"/sessions/{sid}/step", json=action)
    assert response.status_code == 422
    assert reason in str(response.json()["detail"])


def test_non_json_body_is_422(http: httpx.Client) -> None:
    sid = _session(http, task_index=0)["session_id"]
    response = http.post(f"/sessions/{sid}/step", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_remote_env_maps_errors_to_local_types(server: str) -> None:
    with RemoteEnv(server, domain="mock", token=TOKEN) as env:
        with pytest.raises(EnvStateError):
            env.step("hello")
        env.reset(options={"task_index": 0})
        with pytest.raises(InvalidActionError, match="neither text nor tool calls"):
            env.step({"role": "assistant", "content": "  "})
        with pytest.raises(InvalidActionError):
            env.step(42)
        with pytest.raises(EnvStateError):
            env.task  # noqa: B018 - not revealed
        with pytest.raises(DomainNotFoundError):
            env.reset(options={"task_id": "no-such-task"})
    with RemoteEnv(server, domain="nope", token=TOKEN) as env, pytest.raises(DomainNotFoundError, match="nope"):
        env.reset()
    with pytest.raises(RemoteEnvError, match="cannot reach"):
        RemoteEnv("http://127.0.0.1:9", token=TOKEN, timeout_s=2).reset()


def test_step_after_end_is_409(http: httpx.Client, server: str) -> None:
    sid = _session(http, task_index=0)["session_id"]
    body = http.post(f"/sessions/{sid}/step", json={"content": "Bye."}).json()
    assert body["terminated"] and body["info"]["termination"] == "user_stop"
    assert body["info"]["reward_info"]["reward"] == 0.0
    again = http.post(f"/sessions/{sid}/step", json={"content": "Hello again"})
    assert again.status_code == 409 and "ended" in again.json()["detail"]
    with RemoteEnv(server, token=TOKEN) as env:
        env.reset(options={"task_index": 0})
        env.step("Bye.")
        with pytest.raises(EnvStateError):
            env.step("more")


def test_oversize_payload_is_413(http: httpx.Client) -> None:
    sid = _session(http, task_index=0)["session_id"]
    big = {"content": "x" * (100 * 1024)}
    response = http.post(f"/sessions/{sid}/step", json=big)
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts received bytes
        yield b'{"content": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    chunked = http.post(f"/sessions/{sid}/step", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    # The session is still usable after the refusals.
    assert http.post(f"/sessions/{sid}/step", json={"content": "Shall I?"}).status_code == 200


def test_token_required_and_never_echoed(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as anon:
        assert anon.get("/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = anon.post("/sessions", json={"domain": "mock"}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in response.text
        assert anon.get("/openapi.json").status_code == 401
    with RemoteEnv(server, token="wrong") as env, pytest.raises(RemoteEnvError) as info:
        env.reset()
    assert info.value.status == 401
    assert TOKEN not in repr(ServerSettings(token=TOKEN))
    assert TOKEN not in repr(RemoteEnv(server, token=TOKEN))


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    from apigen_envs.server import TOKEN_ENV, resolve_token

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert resolve_token(None) == TOKEN and resolve_token("cli") == "cli"
    with RemoteEnv(server) as env:
        _, info = env.reset(options={"task_index": 0})
        assert info["task_id"] == MOCK_TASKS[0]
    monkeypatch.setenv(TOKEN_ENV, "")
    assert resolve_token(None) is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"domain": "nope"}, 404),
        ({"domain": "mock", "task_id": "nope"}, 404),
        ({"domain": "mock", "task_index": 999}, 422),
        ({"domain": "mock", "task_index": -1}, 422),
        ({"domain": "mock", "task_id": MOCK_TASKS[0], "task_index": 0}, 422),
        ({"domain": "mock", "max_turns": 0}, 422),
        ({"domain": "mock", "split": "no-such-split"}, 404),
        ({"domain": "mock", "bogus": 1}, 422),
        ({"domain": "mock", "user": {"kind": "llm", "base_url": "http://127.0.0.1:9/v1"}}, 403),
    ],
)
def test_bad_session_requests(http: httpx.Client, body: dict, status: int) -> None:
    response = http.post("/sessions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_max_sessions_is_429_and_delete_frees_room() -> None:
    with serve_in_thread(ServerSettings(max_sessions=2)) as srv, httpx.Client(base_url=srv.base_url) as http:
        first = _session(http)["session_id"]
        _session(http)
        full = http.post("/sessions", json={"domain": "mock"})
        assert full.status_code == 429 and "maximum" in full.json()["detail"]
        assert http.delete(f"/sessions/{first}").status_code == 204
        _session(http)
        assert http.get("/healthz").json()["sessions"] == 2


def test_idle_sessions_are_reaped() -> None:
    settings = ServerSettings(idle_timeout_s=0.3, reap_interval_s=0.05)
    with serve_in_thread(settings) as srv, httpx.Client(base_url=srv.base_url) as http:
        idle = _session(http)["session_id"]
        busy = _session(http)["session_id"]
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert http.post(f"/sessions/{busy}/step", json={"content": "Anything else?"}).status_code == 200
            time.sleep(0.1)
        assert http.post(f"/sessions/{idle}/step", json={"content": "hi"}).status_code == 404
        assert http.get(f"/sessions/{busy}/episode").status_code == 200
        assert http.get("/healthz").json()["sessions"] == 1


def test_session_store_reap_skips_sessions_mid_step() -> None:
    from apigen_envs.server import Session

    store = SessionStore(max_sessions=2, idle_timeout_s=10)
    a = Session(id="a", env=None, request=None, user_name="u", user_config={})  # type: ignore[arg-type]
    b = Session(id="b", env=None, request=None, user_name="u", user_config={})  # type: ignore[arg-type]
    store.add(a)
    store.add(b)

    async def hold() -> list[str]:
        async with b.lock:
            return store.reap(now=time.monotonic() + 11)

    assert asyncio.run(hold()) == ["a"]
    assert "b" in store and "a" not in store
    assert store.has_room()


def test_llm_user_spec_uses_server_defaults() -> None:
    from apigen_envs.server import default_user_factory

    settings = ServerSettings(user_model="m1", user_base_url="http://127.0.0.1:1/v1")
    user = default_user_factory(UserSpec(kind="llm", strategy="verify"), settings)
    assert type(user).__name__ == "LLMUser"
    assert user.public()["llm"]["model"] == "m1"  # type: ignore[attr-defined]
    assert user.public()["strategy"] == "verify"  # type: ignore[attr-defined]
    with pytest.raises(PermissionError):
        default_user_factory(UserSpec(kind="llm", base_url="http://evil.example/v1"), settings)
    allowed = ServerSettings(allow_client_base_url=True)
    assert default_user_factory(UserSpec(kind="llm", base_url="http://127.0.0.1:2/v1"), allowed) is not None


# ---------------------------------------------------------------------------------------------- discovery
def test_domains_and_health(http: httpx.Client) -> None:
    domains = {d["name"]: d for d in http.get("/domains").json()}
    assert "mock" in domains
    assert domains["mock"]["tasks"] == len(MOCK_TASKS)
    assert "transfer_funds" in domains["mock"]["tools"]
    health = http.get("/healthz").json()
    assert health["status"] == "ok" and health["max_sessions"] == 1024


def test_openapi_lists_routes_and_models(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/sessions",
        "/sessions/{session_id}/step",
        "/sessions/{session_id}/episode",
        "/sessions/{session_id}",
        "/domains",
        "/healthz",
    }
    assert "post" in paths["/sessions"] and "delete" in paths["/sessions/{session_id}"]
    step_body = paths["/sessions/{session_id}/step"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert step_body["$ref"].endswith("/AssistantAction")
    episode = paths["/sessions/{session_id}/episode"]["get"]["responses"]["200"]["content"]["application/json"]
    assert episode["schema"]["$ref"].endswith("/Episode")
    schemas = spec["components"]["schemas"]
    assert {"CreateSessionRequest", "StepResult", "SessionCreated", "RewardInfo", "ErrorBody"} <= set(schemas)
    assert "404" in paths["/sessions/{session_id}/step"]["post"]["responses"]


class NudgingUser(SlowUser):
    """A scripted customer carrying the LLM customer's ``nudges`` switch (unset until the server sets it)."""

    nudges: bool | None = None


def test_the_customer_nudge_follows_the_domain_profile() -> None:
    """The server sets an LLM customer's stop-guard nudge from the domain's semantics profile."""
    made: list[NudgingUser] = []

    def factory(spec: UserSpec, settings: ServerSettings) -> NudgingUser:
        made.append(NudgingUser(0.0))
        return made[-1]

    expected = bool(load_domain("mock").semantics.user_nudges)
    with (
        serve_in_thread(ServerSettings(), user_factory=factory) as srv,
        RemoteEnv(srv.base_url, domain="mock") as env,
    ):
        env.reset(options={"task_index": 0})
    assert made and made[0].nudges is expected
