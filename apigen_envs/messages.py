"""Conversation records: system, user, assistant (with tool calls) and tool-result messages.

Every message converts to the OpenAI chat format through one method, ``to_openai()``, and back through
:func:`message_from_openai`, so agents, trainers and exporters share a single wire format.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from apigen_envs.text import TooDeepError, clean_json, clean_text, json_depth, may_nest_deeper

Text = Annotated[str, AfterValidator(clean_text)]
"""A str made encodable where it enters a record (lone surrogates become U+FFFD; see :mod:`apigen_envs.text`)."""

MAX_ARGUMENT_DEPTH = 32
"""Tool-call arguments nested deeper than this are dropped (real tools take a few levels at most; deeper values
would exhaust the recursion limit of whatever serialises or parses them)."""

TOO_DEEP_ARGUMENTS = f"<arguments nested deeper than {MAX_ARGUMENT_DEPTH} levels were dropped>"
"""What such arguments are replaced with: not JSON, so the env answers the call with a tool error that counts
against the agent, as for any other unparsable arguments."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Usage(_Frozen):
    """Token usage of one LLM call (or a sum of calls)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ToolCall(_Frozen):
    """One function call requested by the agent.

    ``arguments`` is normally a dict; a string holds raw JSON text that has not been parsed yet (the env
    parses it and answers with an error observation when it is not valid JSON).
    """

    id: Text
    name: Text
    arguments: dict[str, Any] | str = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _encodable_arguments(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        if isinstance(value, str):
            value = clean_text(value)
            return TOO_DEEP_ARGUMENTS if _json_text_too_deep(value) else value
        try:
            return clean_json(value, MAX_ARGUMENT_DEPTH)  # type: ignore[no-any-return]
        except TooDeepError:
            return TOO_DEEP_ARGUMENTS

    def arguments_json(self) -> str:
        """The arguments as a JSON string, as the OpenAI wire format carries them."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI ``tool_calls`` item format."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json()},
        }


class SystemMessage(_Frozen):
    """Instructions for the agent (policy, tool guidance)."""

    role: Literal["system"] = "system"
    content: Text

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI chat format."""
        return {"role": "system", "content": self.content}


class UserMessage(_Frozen):
    """A turn of the (simulated) customer."""

    role: Literal["user"] = "user"
    content: Text

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI chat format."""
        return {"role": "user", "content": self.content}


class AssistantMessage(_Frozen):
    """A turn of the agent: text for the user, tool calls, or both.

    ``usage`` and ``logprobs``/``token_ids`` are optional bookkeeping for RL trainers; they are not part of
    the OpenAI wire format and are left out by ``to_openai()``.
    """

    role: Literal["assistant"] = "assistant"
    content: Text | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None

    @property
    def is_empty(self) -> bool:
        """True when the message carries neither text nor tool calls."""
        return not self.tool_calls and not (self.content and self.content.strip())

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI chat format (content is "" rather than null, which some servers reject)."""
        out: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            out["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        return out


class ToolMessage(_Frozen):
    """The result of one tool call; ``error`` marks tool errors and rejected calls."""

    role: Literal["tool"] = "tool"
    tool_call_id: Text
    name: Text
    content: Text
    error: bool = False

    def to_openai(self) -> dict[str, Any]:
        """The message in OpenAI chat format."""
        return {"role": "tool", "tool_call_id": self.tool_call_id, "name": self.name, "content": self.content}


def _json_text_too_deep(text: str) -> bool:
    """Whether JSON text nests deeper than :data:`MAX_ARGUMENT_DEPTH` (unparsable text is not judged here)."""
    if not may_nest_deeper(text, MAX_ARGUMENT_DEPTH):
        return False
    try:
        value = json.loads(text)
    except RecursionError:
        return True
    except json.JSONDecodeError:
        return False
    return json_depth(value, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]
"""Any conversation message, discriminated by ``role``."""

_MESSAGE = TypeAdapter(Message)


def message_from_openai(data: dict[str, Any]) -> SystemMessage | UserMessage | AssistantMessage | ToolMessage:
    """Build a message from an OpenAI chat-format dict.

    Args:
        data: A dict with ``role`` and the role's fields; assistant ``tool_calls`` may be in OpenAI
            format (``{"id", "type", "function": {"name", "arguments"}}``).

    Returns:
        The typed message.

    Raises:
        pydantic.ValidationError: When the dict is not a valid message.

    """
    if data.get("role") == "assistant" and data.get("tool_calls"):
        calls = []
        for i, tc in enumerate(data["tool_calls"]):
            fn = tc.get("function", tc)
            args = fn.get("arguments", {})
            if isinstance(args, str):
                raw = args
                # Unparsable text is kept raw: the env answers it with an error observation. Text nested too
                # deeply to parse is kept raw as well; ToolCall then drops it (see MAX_ARGUMENT_DEPTH).
                with contextlib.suppress(json.JSONDecodeError, RecursionError):
                    args = json.loads(args) if args.strip() else {}
                if not isinstance(args, dict | str):
                    try:
                        args = json.dumps(args)
                    except RecursionError:
                        args = raw
            calls.append(ToolCall(id=tc.get("id") or f"call_{i}", name=fn.get("name", ""), arguments=args))
        data = {k: v for k, v in data.items() if k in ("role", "content", "usage")} | {"tool_calls": calls}
    elif data.get("role") in ("user", "system", "tool", "assistant"):
        allowed = {
            "user": ("role", "content"),
            "system": ("role", "content"),
            "tool": ("role", "content", "tool_call_id", "name", "error"),
            "assistant": ("role", "content", "usage"),
        }[data["role"]]
        data = {k: v for k, v in data.items() if k in allowed}
    return _MESSAGE.validate_python(data)


def assistant_text(content: str) -> AssistantMessage:
    """Shorthand for an assistant message that only talks to the user.

    Args:
        content: The text for the user.

    Returns:
        The assistant message.

    """
    return AssistantMessage(content=content)


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, call_id: str = "call_0") -> AssistantMessage:
    """Shorthand for an assistant message with a single tool call.

    Args:
        name: The tool name.
        arguments: The arguments as a dict or raw JSON text.
        call_id: The call id echoed by the tool result.

    Returns:
        The assistant message.

    """
    return AssistantMessage(tool_calls=(ToolCall(id=call_id, name=name, arguments=arguments or {}),))
