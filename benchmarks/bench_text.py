"""What making text encodable costs per message (issue 18): the records' validators against plain models.

``Plain*`` are the same records without the text validators (what 0.1.0 built); the difference is the
per-message cost of :func:`apigen_envs.text.clean_text` / ``clean_json`` on clean input (the fast path) and on
input that needs repair. Also the env step, which builds one assistant and one tool message per call.

Run: pytest benchmarks/bench_text.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from apigen_envs import load_domain
from apigen_envs.env import ToolUseEnv
from apigen_envs.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage, tool_call
from apigen_envs.text import clean_text

ASCII = "I'd like to return the water bottle from order #W2378156, and exchange the keyboard for one in blue. " * 3
UNICODE = "Grüße aus München: ich möchte die Bestellung #W2378156 zurückgeben, danke schön. 😀 " * 3
REPAIR = UNICODE + "\ud83d"
ARGS = {"order_id": "#W2378156", "item_ids": ["1008292230", "6546364613"], "payment_method_id": "credit_card_1"}


class _Plain(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlainUserMessage(_Plain):
    role: str = "user"
    content: str


class PlainToolCall(_Plain):
    id: str
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class PlainAssistantMessage(_Plain):
    role: str = "assistant"
    content: str | None = None
    tool_calls: tuple[PlainToolCall, ...] = ()


class PlainToolMessage(_Plain):
    role: str = "tool"
    tool_call_id: str
    name: str
    content: str
    error: bool = False


@pytest.mark.parametrize("text", [ASCII, UNICODE, REPAIR], ids=["ascii", "unicode", "repair"])
def test_clean_text(benchmark, text):
    out = benchmark(clean_text, text)
    out.encode("utf-8")


@pytest.mark.parametrize("text", [ASCII, UNICODE], ids=["ascii", "unicode"])
def test_user_message_plain(benchmark, text):
    benchmark(PlainUserMessage, content=text)


@pytest.mark.parametrize("text", [ASCII, UNICODE, REPAIR], ids=["ascii", "unicode", "repair"])
def test_user_message(benchmark, text):
    benchmark(UserMessage, content=text)


def test_assistant_tool_call_plain(benchmark):
    benchmark(lambda: PlainAssistantMessage(tool_calls=(PlainToolCall(id="call_1", name="t", arguments=ARGS),)))


def test_assistant_tool_call(benchmark):
    benchmark(lambda: AssistantMessage(tool_calls=(ToolCall(id="call_1", name="t", arguments=ARGS),)))


def test_tool_message_plain(benchmark):
    benchmark(PlainToolMessage, tool_call_id="call_1", name="get_order_details", content=ASCII * 4)


def test_tool_message(benchmark):
    benchmark(ToolMessage, tool_call_id="call_1", name="get_order_details", content=ASCII * 4)


def test_env_step_tool_call(benchmark):
    env = ToolUseEnv(load_domain("mock"), max_turns=10**9)
    env.reset(options={"task_index": 0})
    action = tool_call("get_account_details", {"account_id": "acc_1001"})

    def step():
        if len(env._messages) > 40:
            env.reset(options={"task_index": 0})
        env.step(action)

    benchmark(step)
