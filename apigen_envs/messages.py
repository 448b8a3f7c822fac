"""Conversation records: system, user, assistant (with tool calls) and tool-result messages.

Every message converts to the OpenAI chat format through one method, ``to_openai()``, and back through
:func:`message_from_openai`, so agents, trainers and exporters share a single wire format.
:func:`to_assistant_message` is the one place where whatever a policy produced becomes an assistant turn
or an :class:`~apigen_envs.errors.InvalidActionError`.

Tool-call arguments are kept writable whatever a model sends: arguments nested deeper than
:data:`MAX_ARGUMENT_DEPTH` levels, or holding values JSON cannot encode, are replaced by a short marker
text. The env answers such a call with an error observation (the text is not valid JSON), and the
episode record stays serialisable (pydantic refuses to write JSON nested deeper than ~250 levels, and
``json`` recurses once per level).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from apigen_envs.db import json_encoder
from apigen_envs.errors import InvalidActionError
from apigen_envs.text import TooDeepError, clean_json, clean_text, json_depth, may_nest_deeper

Text = Annotated[str, AfterValidator(clean_text)]
"""A str made encodable where it enters a record (lone surrogates become U+FFFD; see :mod:`apigen_envs.text`)."""

MAX_ARGUMENT_DEPTH = 32
"""Tool-call arguments nested deeper than this are dropped (real tools take a few levels at most; deeper values
would exhaust the recursion limit of whatever serialises or parses them)."""

TOO_DEEP_ARGUMENTS = f"<arguments nested deeper than {MAX_ARGUMENT_DEPTH} levels were dropped>"
"""What such arguments are replaced with: not JSON, so the env answers the call with a tool error that counts
against the agent, as for any other unparsable arguments."""

_JSON_LEAVES = (str, int, float, bool, type(None))
_dumps_unicode = json_encoder(ensure_ascii=False)


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
    # The JSON text of the arguments, cached: the call is frozen, and every observation and export writes it.
    _arguments_json: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # By field values only: the cached JSON text must not make equal calls differ.
        return type(other) is type(self) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    __hash__ = _Frozen.__hash__

    @field_validator("arguments")
    @classmethod
    def _encodable_arguments(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        # Any nesting or value a model sends must not crash the env or the episode writer later on.
        if isinstance(value, str):
            value = clean_text(value)
            return TOO_DEEP_ARGUMENTS if _json_text_too_deep(value) else value
        problem = _dict_problem(value)
        if problem is not None:
            return TOO_DEEP_ARGUMENTS if "nested" in problem else f"<tool arguments dropped: {problem}>"
        try:
            return clean_json(value, MAX_ARGUMENT_DEPTH)  # type: ignore[no-any-return]
        except TooDeepError:
            return TOO_DEEP_ARGUMENTS

    def arguments_json(self) -> str:
        """The arguments as a JSON string, as the OpenAI wire format carries them (computed once)."""
        arguments = self.arguments
        if isinstance(arguments, str):
            return arguments
        private = self.__pydantic_private__
        text = private["_arguments_json"]  # type: ignore[index]
        if text is None:
            # Written straight into the private slot: a cache, not a field (pydantic's setattr costs more).
            text = private["_arguments_json"] = _dumps_unicode(arguments)  # type: ignore[index]
        return text

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

    @classmethod
    def of_call(cls, call: ToolCall, content: str, error: bool) -> ToolMessage:
        """The result message of a call, built from values already valid (no validation pass).

        The id and name come from the validated call; only the content is new, and it is made encodable
        here as the validator would. Equal to ``ToolMessage(tool_call_id=call.id, name=call.name,
        content=content, error=error)`` at a fraction of the cost: the env builds one per tool call.
        """
        message = cls.__new__(cls)
        _setattr(
            message,
            "__dict__",
            {
                "role": "tool",
                "tool_call_id": call.id,
                "name": call.name,
                "content": clean_text(content),
                "error": error,
            },
        )
        _setattr(message, "__pydantic_fields_set__", {"tool_call_id", "name", "content", "error"})
        _setattr(message, "__pydantic_extra__", None)
        _setattr(message, "__pydantic_private__", None)
        return message


_setattr = object.__setattr__


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


def _dict_problem(value: dict[str, Any]) -> str | None:
    """Why parsed arguments cannot be kept (too deep, or not JSON values), or None. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
            if not all(isinstance(k, _JSON_LEAVES) for k in node):
                return "keys that are not JSON strings"
        elif isinstance(node, list | tuple):
            children = node
        elif isinstance(node, _JSON_LEAVES):
            continue
        else:
            return f"a {type(node).__name__} value, which is not JSON"
        if depth > MAX_ARGUMENT_DEPTH:
            return f"nested more than {MAX_ARGUMENT_DEPTH} levels deep"
        stack.extend((child, depth + 1) for child in children)
    return None


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
        ValueError: When ``tool_calls`` is not a list of call objects.

    """
    if data.get("role") == "assistant" and data.get("tool_calls"):
        if not isinstance(data["tool_calls"], list | tuple):
            raise ValueError(f"tool_calls must be a list, got {type(data['tool_calls']).__name__}")
        calls = []
        for i, tc in enumerate(data["tool_calls"]):
            fn = tc.get("function", tc) if isinstance(tc, dict) else None
            if not isinstance(fn, dict):
                raise ValueError(f"tool call {i} must be an object with a 'function' object")
            calls.append(ToolCall(id=tc.get("id") or f"call_{i}", name=fn.get("name", ""), arguments=_arguments(fn)))
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


def _arguments(fn: dict[str, Any]) -> dict[str, Any] | str:
    """A call's arguments: a dict when the text parses to an object, else the raw text (the env rejects it)."""
    args = fn.get("arguments", {})
    if not isinstance(args, str):
        return args if isinstance(args, dict) else _as_json_text(args)
    if not args.strip():
        return {}
    if _json_text_too_deep(args):
        return args  # ToolCall swaps it for a marker
    try:
        parsed = json.loads(args)
    except (json.JSONDecodeError, RecursionError):
        return args
    return parsed if isinstance(parsed, dict) else args


def _as_json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value).__name__)


def to_assistant_message(action: Any) -> AssistantMessage:
    """Normalise what a policy produced into an :class:`AssistantMessage`.

    Accepts an AssistantMessage, a plain string (text for the user) or an OpenAI-format assistant dict.
    Every failure to read the action (wrong type, another role, malformed fields, an empty turn) is one
    error type, so callers can count it against the policy.

    Args:
        action: The policy's output.

    Returns:
        The assistant message.

    Raises:
        InvalidActionError: For anything else, or a message with neither text nor tool calls.

    """
    if isinstance(action, AssistantMessage):
        msg = action
    elif isinstance(action, str):
        msg = AssistantMessage(content=action)
    elif isinstance(action, dict):
        if action.get("role", "assistant") != "assistant":
            raise InvalidActionError(f"an action must be an assistant message, got role {action.get('role')!r}")
        try:
            msg = message_from_openai({**action, "role": "assistant"})  # type: ignore[assignment]
        except ValidationError as exc:
            raise InvalidActionError(f"malformed assistant message: {exc.errors()[0]['msg']}") from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidActionError(f"malformed assistant message: {exc}") from None
    else:
        raise InvalidActionError(
            f"an action must be an AssistantMessage, an OpenAI assistant dict or a str; got {type(action).__name__}"
        )
    if msg.is_empty:
        raise InvalidActionError("the assistant message has neither text nor tool calls")
    return msg


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
