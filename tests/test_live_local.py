"""Live smoke test: a real local model (Qwen2.5-Coder-1.5B via llama-cpp-python) as agent and as customer.

Runs only where the server package is installed and the model is cached (or ``APIGEN_LIVE_LLM=1``, which
also allows the ~1.1 GB download). Checks that an episode completes and is scored, not that it succeeds:
a 1.5B model is a demo, not a benchmark. On 2 shared CPU cores the retail episode takes a few minutes
(the first agent turn reads ~5,600 prompt tokens); ``APIGEN_LIVE_DOMAIN=mock`` picks a faster domain.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from apigen_envs import local_model as lm

pytestmark = pytest.mark.live_llm

TERMINATIONS = {"user_stop", "transfer", "out_of_scope", "terminal_tool", "max_turns"}


def _skip_reason() -> str | None:
    if not lm.server_available():
        return 'llama-cpp-python[server] is not installed (pip install "apigen-envs[local]")'
    if not lm.is_cached() and not os.environ.get("APIGEN_LIVE_LLM"):
        return (
            f"the local model is not cached in {lm.default_cache_dir()} "
            "(run: python -m apigen_envs.local_model --ensure-only, or set APIGEN_LIVE_LLM=1 to download it)"
        )
    return None


@pytest.fixture(scope="module")
def server() -> Iterator[lm.LocalServer]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        model = lm.ensure_model()
    except lm.LocalModelError as exc:  # the registry could not be reached: infrastructure, not our code
        pytest.skip(f"the local model could not be fetched: {exc}")
    with lm.LocalServer(model, startup_timeout=180) as srv:
        yield srv


def _client(server: lm.LocalServer, max_tokens: int = 200):  # noqa: ANN202 - llm.py types
    from apigen_envs.llm import LLMConfig, OpenAIClient

    return OpenAIClient(
        LLMConfig(model=server.model, base_url=server.base_url, max_tokens=max_tokens, timeout_s=900, max_retries=0)
    )


def test_server_lists_the_model(server: lm.LocalServer) -> None:
    assert lm.find_running(server.base_url)
    assert server.startup_seconds is not None and server.startup_seconds < 180


def test_tool_call_is_parsed_from_the_reply(server: lm.LocalServer) -> None:
    from apigen_envs import load_domain

    domain = load_domain("mock")
    messages = [
        {"role": "system", "content": domain.system_prompt()},
        {"role": "user", "content": "Hi, I'm ana@example.com. Please move $50 from acc_1001 to acc_1002."},
    ]
    completion = _client(server).complete(messages, tools=list(domain.tools.schemas()), seed=0)
    calls = completion.message.tool_calls
    assert calls, f"no tool call in {completion.raw_content!r}"
    assert calls[0].name in domain.tools.names
    assert completion.usage.completion_tokens > 0


def test_episode_completes_and_is_scored(server: lm.LocalServer) -> None:
    from apigen_envs.baselines.tool_calling import ToolCallingAgent
    from apigen_envs.env import ToolUseEnv
    from apigen_envs.registry import list_domains
    from apigen_envs.simulators.llm_user import LLMUser
    from apigen_envs.testing import run_episode

    domain = os.environ.get("APIGEN_LIVE_DOMAIN") or ("retail" if "retail" in list_domains() else "mock")
    client = _client(server)
    env = ToolUseEnv(domain, user=LLMUser(client), max_turns=6)
    task_id = env.tasks[0].id
    started = time.perf_counter()
    reward, messages = run_episode(env, ToolCallingAgent(client), task_id=task_id, seed=0)
    elapsed = time.perf_counter() - started
    print(f"\n{domain}/{task_id}: reward {reward}, {env.termination}, {len(messages)} messages, {elapsed:.1f} s")
    for m in messages:
        print(f"  {m.role}: {str(m.to_openai().get('content') or m.to_openai().get('tool_calls'))[:160]}")
    assert env.done
    assert env.termination in TERMINATIONS
    assert env.reward_info is not None
    assert reward in (0.0, 1.0)
    assert any(m.role == "assistant" for m in messages)
    assert any(m.role == "user" for m in messages)
