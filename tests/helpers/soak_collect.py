"""The soak run of issue 18: one resumable collection under mixed faults, fast enough to kill and resume often.

Every episode is the tool-calling agent through the real :class:`~apigen_envs.llm.OpenAIClient` (retries,
backoff, failure classification, reply parsing) on the mock domain; only the HTTP transport is replaced by
an in-process fake server, so 10,000 episodes take seconds rather than minutes. Per request the fake server
picks, from a hash of the conversation (the same episode meets the same faults after a resume):

* server faults: timeouts, 429 with Retry-After, 503, dropped connections, malformed bodies (retried), and
  for about 1% of episodes a server that never recovers (recorded as ``agent_error``);
* model mistakes: bad JSON arguments, unknown tools, wrong argument types, 20k-character replies, no
  content, arguments nested 5,000 levels deep;
* lone UTF-16 surrogates in the reply text, in tool arguments and in tool names;

and the user simulator puts lone surrogates in some of its lines and in its trace. The parent test SIGKILLs
this process at random points and runs it again until the file is complete.

Usage: ``python tests/helpers/soak_collect.py OUT TRIALS [CONCURRENCY]``; prints one JSON line of figures.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from typing import Any

import openai

from apigen_envs.baselines.tool_calling import ToolCallingAgent
from apigen_envs.collect import Collector
from apigen_envs.fake_server import completion_body
from apigen_envs.llm import LLMConfig, OpenAIClient
from apigen_envs.protocols import UserTurn
from apigen_envs.simulators.scripted_user import ScriptedUser

LONE = "\ud83d"
_HTTPX = sys.modules[openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]]
_REQUEST = _HTTPX.Request("POST", "http://soak.invalid/v1/chat/completions")


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"content": "", "tool_calls": [{"id": "c1", "function": {"name": name, "arguments": arguments}}]}


MISTAKES: tuple[Any, ...] = (
    _call("get_account_details", '{"account_'),  # bad JSON
    _call("rm_rf", "{}"),  # unknown tool
    _call("transfer_funds", '{"amount": "lots"}'),  # wrong types
    "x" * 20_000 + "?",  # an over-long reply (with a question, so the user answers)
    {"content": None},  # nothing at all
    _call("think", '{"thought": ' + "[" * 5000 + "]" * 5000 + "}"),  # nested past any recursion limit
    f"Let me look {LONE} into that. Which account?",  # surrogate in content
    _call("get_account_details", f'{{"account_id": "acc_1001{LONE}"}}'),  # surrogate in arguments
    _call(f"get_account{LONE}", "{}"),  # surrogate in the tool name
    _call("get_account_details", '{"account_id": "acc_1001"}'),  # a fine call
)
GOODBYE = (f"All set {LONE}, goodbye.", "All set, goodbye.")


def _roll(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "big")


class FakeServer:
    """Stands in for ``openai.AsyncOpenAI``: ``post()`` answers like an OpenAI-compatible server with faults."""

    def __init__(self) -> None:
        self.requests = 0
        self.faults = 0

    async def post(self, path: str, *, body: dict[str, Any], cast_to: Any) -> Any:
        self.requests += 1
        messages = body["messages"]
        episode = (messages[1].get("content") if len(messages) > 1 else "", body.get("seed"))
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        roll = _roll(episode, turn, self.requests)  # the attempt counter makes retries meet new luck
        if _roll(episode) % 100 == 0:
            self.faults += 1
            raise _status(500)  # this episode's server never recovers
        if roll % 100 < 12:
            self.faults += 1
            raise _server_fault(roll // 100 % 5)
        # The first reply of an episode is a mistake (or a fine call); later ones say goodbye.
        reply = MISTAKES[_roll(episode, "first") % len(MISTAKES)] if turn == 0 else GOODBYE[_roll(episode, turn) % 2]
        return cast_to.model_validate(completion_body(reply, body, self.requests))

    async def close(self) -> None:
        """Nothing to close (the protocol of the real client)."""


def _status(code: int, headers: dict[str, str] | None = None) -> Exception:
    response = _HTTPX.Response(code, headers=headers or {}, request=_REQUEST, json={"error": {"message": "soak"}})
    kind = openai.RateLimitError if code == 429 else openai.InternalServerError
    return kind(f"Error code: {code}", response=response, body=None)


def _server_fault(kind: int) -> Exception:
    if kind == 0:
        return openai.APITimeoutError(request=_REQUEST)
    if kind == 1:
        return _status(429, {"retry-after": "0"})
    if kind == 2:
        return _status(503)
    if kind == 3:
        return openai.APIConnectionError(request=_REQUEST)  # a dropped connection
    return openai.APIResponseValidationError(_HTTPX.Response(200, request=_REQUEST), None, message="malformed")


class SoakClient(OpenAIClient):
    """The real client (retries, parsing) with the fake server in place of the HTTP transport."""

    def __init__(self, config: LLMConfig, server: FakeServer) -> None:
        super().__init__(config)
        self._fake = server

    def _async_client(self) -> Any:
        return self._fake


class SurrogateUser(ScriptedUser):
    """The scripted user; every fifth episode's lines and trace carry lone surrogates."""

    async def arespond(self, task, conversation, *, seed=None):  # type: ignore[no-untyped-def]
        turn = self.respond(task, conversation, seed=seed)
        if seed is None or seed % 5:
            return turn
        text = f"{turn.content} {LONE}" if turn.content else turn.content
        return UserTurn(text, turn.stop, turn.usage, {"candidates": [f"raw {LONE}"]})


def main(out: str, trials: int, concurrency: int) -> dict[str, Any]:
    """Run (or resume) the soak collection and return its figures."""
    started = time.perf_counter()
    server = FakeServer()
    config = LLMConfig(
        model="soak", base_url="http://soak.invalid/v1", max_retries=3, backoff_base_s=0.0, retry_after_max_s=0.0
    )
    collector = Collector(
        "mock",
        ToolCallingAgent(SoakClient(config, server)),
        SurrogateUser(),
        trials=trials,
        concurrency=concurrency,
        max_turns=8,
        agent_config={"model": "soak"},
    )
    episodes = collector.run(out=out)
    return {
        "episodes_this_run": len(episodes),
        "failures": collector.failures,
        "requests": server.requests,
        "server_faults": server.faults,
        "wall_s": round(time.perf_counter() - started, 2),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    figures = main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 256)
    print(json.dumps(figures))
