"""The ReAct agent: text-only prompting with "Thought: ... Action: {json}" turns.

The tools are described in the system prompt instead of being sent as native schemas, so any chat
model works. Each reply names one action: a tool call, or ``respond`` to speak to the customer. Tool
results come back as "API output: ..." user turns. Replies that do not follow the format are handled
without crashing: a reply without an action is taken as text for the customer, an action with broken
JSON becomes a call with raw arguments (the env answers with an error the model can correct), and an
empty reply asks the customer to repeat.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from apigen_envs.baselines.tool_calling import EMPTY_REPLY, resolve_temperature
from apigen_envs.llm import (
    LLMClient,
    LLMRequest,
    Plan,
    arun_plan,
    coerce_arguments,
    run_plan,
    scan_json,
    undouble_braces,
)
from apigen_envs.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from apigen_envs.protocols import AgentContext

RESPOND = "respond"
"""The pseudo-tool that sends text to the customer."""

_ACTION_RE = re.compile(r"^\W*action\s*:\s*", re.IGNORECASE | re.MULTILINE)
_THOUGHT_RE = re.compile(r"^\W*thought\s*:\s*", re.IGNORECASE)
_THOUGHT_PARAGRAPH_RE = re.compile(r"^\W*thought\s*:.*?(?:\n\s*\n|$)", re.IGNORECASE | re.DOTALL)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]+)"')
_NAME_KEYS = ("name", "tool", "tool_name", "action")
_ARG_KEYS = ("arguments", "parameters", "args", "kwargs", "input", "action_input")
_TEXT_KEYS = ("content", "message", "text", "response")

_FORMAT_WITH_THOUGHT = """# How to reply

Every reply has exactly two parts, in this format:

Thought: <your reasoning about what to do next; the customer does not see it>
Action: {"name": "<a tool name or respond>", "arguments": {<the arguments>}}

Take one action per reply. To talk to the customer, use the action
{"name": "respond", "arguments": {"content": "<your message to the customer>"}}.
After a tool action you receive its result as a message starting with "API output:".
The Action line must be valid JSON on a single line."""

_FORMAT_ACTION_ONLY = """# How to reply

Every reply is exactly one line in this format:

Action: {"name": "<a tool name or respond>", "arguments": {<the arguments>}}

Take one action per reply. To talk to the customer, use the action
{"name": "respond", "arguments": {"content": "<your message to the customer>"}}.
After a tool action you receive its result as a message starting with "API output:".
The Action line must be valid JSON on a single line."""


def describe_tools(tools: Sequence[dict[str, Any]]) -> str:
    """The tools as compact JSON lines (name, description, parameters) for a text prompt."""
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        entry = {"name": fn.get("name"), "description": fn.get("description", ""), "parameters": fn.get("parameters")}
        lines.append(json.dumps(entry, ensure_ascii=False))
    return "\n".join(lines)


def _action_json(name: str, arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def _first_action(segment: str) -> dict[str, Any] | None:
    for candidate in (segment, undouble_braces(segment)) if "{{" in segment else (segment,):
        for value, _, _ in scan_json(candidate):
            if isinstance(value, dict) and any(isinstance(value.get(k), str) for k in _NAME_KEYS):
                return value
    return None


def parse_action(text: str | None, call_id: str, tool_names: Sequence[str] = ()) -> AssistantMessage:
    """Turn a ReAct/Act reply into an assistant message.

    Args:
        text: The model's reply.
        call_id: Id for a tool call made by this reply.
        tool_names: Known tool names (used to recover a call whose JSON is broken).

    Returns:
        A tool call (the thought, if any, as content), or text for the customer.

    """
    text = (text or "").strip()
    if not text:
        return AssistantMessage(content=EMPTY_REPLY)
    matches = list(_ACTION_RE.finditer(text))
    if matches:
        thought = _THOUGHT_RE.sub("", text[: matches[-1].start()]).strip() or None
        segment = text[matches[-1].end() :].strip()
    else:
        thought, segment = None, text
    action = _first_action(segment)
    if action is not None:
        name = next(action[k] for k in _NAME_KEYS if isinstance(action.get(k), str))
        raw_args = next((action[k] for k in _ARG_KEYS if k in action), {})
        if name == RESPOND:
            if isinstance(raw_args, dict):
                said = next((raw_args[k] for k in _TEXT_KEYS if isinstance(raw_args.get(k), str)), "")
            else:
                said = str(raw_args)
            return AssistantMessage(content=said.strip() or EMPTY_REPLY)
        # Unknown names go through: the env answers "unknown tool", which the model can correct.
        call = ToolCall(id=call_id, name=name, arguments=coerce_arguments(raw_args))
        return AssistantMessage(content=thought, tool_calls=(call,))
    if matches:
        named = _NAME_RE.search(segment)
        if named and named.group(1) in tool_names:
            raw = segment[segment.find("{") :] if "{" in segment else segment
            return AssistantMessage(
                content=thought, tool_calls=(ToolCall(id=call_id, name=named.group(1), arguments=raw),)
            )
        return AssistantMessage(content=segment or thought or EMPTY_REPLY)
    # No action at all: the model spoke to the customer directly; drop a leading thought paragraph.
    said = _THOUGHT_PARAGRAPH_RE.sub("", text, count=1).strip()
    return AssistantMessage(content=said or EMPTY_REPLY)


class ReActAgent:
    """A text-only agent that writes a thought, then one JSON action per turn.

    Args:
        client: The model client (called without native tools).
        name: Name recorded on episodes.
        thoughts: Ask for a thought before each action (False gives the Act agent).
        temperature: Sampling temperature (None: ``context.extra["temperature"]`` or the client default).
        max_observation_chars: Truncate tool outputs shown to the model (None keeps them whole).

    """

    def __init__(
        self,
        client: LLMClient,
        *,
        name: str = "react",
        thoughts: bool = True,
        temperature: float | None = None,
        max_observation_chars: int | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.thoughts = thoughts
        self.temperature = temperature
        self.max_observation_chars = max_observation_chars

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, client={self.client!r})"

    def public(self) -> dict[str, Any]:
        """Settings to record on episodes (no secrets)."""
        config = getattr(self.client, "config", None)
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "thoughts": self.thoughts,
            "temperature": self.temperature,
            "llm": config.public() if hasattr(config, "public") else type(self.client).__name__,
        }

    def system_prompt(self, context: AgentContext) -> str:
        """Policy, tool descriptions and the reply format."""
        fmt = _FORMAT_WITH_THOUGHT if self.thoughts else _FORMAT_ACTION_ONLY
        return f"{context.system_prompt}\n\n# Tools\n\n{describe_tools(context.tools)}\n\n{fmt}"

    def _render_assistant(self, msg: AssistantMessage) -> str:
        if not msg.tool_calls:
            return f"Action: {_action_json(RESPOND, {'content': msg.content or ''})}"
        lines = []
        if self.thoughts and msg.content:
            lines.append(f"Thought: {msg.content}")
        lines.extend(f"Action: {_action_json(c.name, c.arguments)}" for c in msg.tool_calls)
        return "\n".join(lines)

    def build_messages(self, conversation: Sequence[Message], context: AgentContext) -> list[dict[str, Any]]:
        """The text-only chat history: actions as assistant text, tool results as "API output" turns."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt(context)}]
        for msg in conversation:
            if isinstance(msg, AssistantMessage):
                entry = {"role": "assistant", "content": self._render_assistant(msg)}
            elif isinstance(msg, ToolMessage):
                output = msg.content
                if self.max_observation_chars is not None and len(output) > self.max_observation_chars:
                    output = output[: self.max_observation_chars] + " ...(truncated)"
                entry = {"role": "user", "content": f"API output: {output}"}
            elif isinstance(msg, UserMessage):
                entry = {"role": "user", "content": msg.content}
            else:
                continue
            if messages[-1]["role"] == entry["role"] != "system":
                messages[-1] = {"role": entry["role"], "content": f"{messages[-1]['content']}\n{entry['content']}"}
            else:
                messages.append(entry)
        return messages

    def plan(self, conversation: Sequence[Message], context: AgentContext) -> Plan[AssistantMessage]:
        """The turn as a plan of LLM requests (drive it with :func:`~apigen_envs.llm.run_plan`)."""
        completion = yield LLMRequest(
            self.build_messages(conversation, context),
            seed=context.seed,
            temperature=resolve_temperature(self.temperature, context),
        )
        calls_so_far = sum(len(m.tool_calls) for m in conversation if isinstance(m, AssistantMessage))
        names = [t.get("function", t).get("name", "") for t in context.tools]
        text = completion.raw_content if completion.raw_content is not None else completion.message.content
        message = parse_action(text, f"{self.name}_{calls_so_far}", names)
        return message.model_copy(update={"usage": completion.usage})

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Next assistant message: one tool call or text for the customer.

        Raises:
            LLMError: When the client fails.

        """
        return run_plan(self.client, self.plan(conversation, context))

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act`."""
        return await arun_plan(self.client, self.plan(conversation, context))
