"""The function-calling agent: the policy as system prompt, the tools as native OpenAI tool schemas.

Small local models often write tool calls as JSON text instead of using ``tool_calls``; the client's
fallback parser (:func:`apigen_envs.llm.parse_text_tool_calls`) already turns those into calls. Two
further guards keep episodes going with weak models: after a tool result the model is reminded to answer
the customer in plain language (otherwise it tends to repeat calls), and an empty reply becomes a short
request to repeat rather than an invalid action.

Three options help small models further:

* ``constrain=True`` sends the tools' JSON schemas as a ``response_format`` (``json_object`` with a
  ``schema``, which llama.cpp compiles into a grammar): every reply is then one JSON object, either a
  well-formed call of a known tool with schema-valid arguments or ``{"name": "respond", "arguments":
  {"content": ...}}`` for the customer. Only servers that enforce such a schema should get it (the
  local llama.cpp server does); the free-text path stays the default elsewhere.
* ``id_reminder`` adds a short system note on the identification step until the agent's first tool call
  (small models otherwise act on orders before finding the customer's user id).
* ``ground_check=N`` regenerates, up to N times, a reply whose tool call carries an identifier (an
  ``*_id``, ``*_ids``, email, zip or name argument) that nobody wrote: neither the customer nor a tool
  result (:func:`ungrounded_arguments`). A 1.5B model otherwise opens with
  ``find_user_id_by_email("jane.doe1234@example.com")``. The agent only re-asks its own model; the
  environment is unchanged and still executes whatever call the agent finally sends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from apigen_envs.llm import LLMClient, LLMRequest, Plan, arun_plan, run_plan
from apigen_envs.messages import AssistantMessage, Message, ToolMessage, UserMessage
from apigen_envs.protocols import AgentContext

RESPOND = "respond"
"""The pseudo-tool of the constrained format that speaks to the customer."""

ID_REMINDER = (
    "Reminder: before you look up or change any order, reservation or account, identify the customer as the "
    "policy says: ask for what the policy accepts (for example email, or name and zip code, or user id) and "
    "find their user id with the lookup tool. Then get the user's details and act. Never guess an email, "
    "name, zip code or id: use only what the customer wrote; if they have not given it, ask them."
)
"""System note shown until the agent's first tool call (``id_reminder``)."""

_IDENTIFIER_ARGUMENT = re.compile(r"(?:^|_)(?:ids?|email|zip|first_name|last_name)$")


def ungrounded_arguments(message: AssistantMessage, conversation: Sequence[Message]) -> list[tuple[str, str, str]]:
    """Identifier arguments of a reply's tool calls whose value nobody wrote in the conversation.

    An argument counts as an identifier when its name ends in ``id``, ``ids``, ``email`` or ``zip`` or is
    ``first_name`` / ``last_name``; its value (each item of a list) must appear, case-insensitively and
    without a leading ``#``, in a customer message or a tool result. Free text (``summary``, ``reason``,
    ``expression``, addresses) is not checked.

    Args:
        message: The agent's reply.
        conversation: The conversation before it.

    Returns:
        ``(tool, argument, value)`` for each value not found; empty when all are grounded.

    """
    if not message.tool_calls:
        return []
    seen = "\n".join(m.content.lower() for m in conversation if isinstance(m, UserMessage | ToolMessage) and m.content)
    missing = []
    for call in message.tool_calls:
        if not isinstance(call.arguments, dict):
            continue
        for name, value in call.arguments.items():
            if not _IDENTIFIER_ARGUMENT.search(name):
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    continue
                text = str(item).strip().lower().lstrip("#")
                if text and text not in seen:
                    missing.append((call.name, name, str(item)))
    return missing


GROUND_CHECK_RETRIES = 2
"""Regenerations the command line's ``--ground-check`` allows."""


def ungrounded_note(missing: Sequence[tuple[str, str, str]]) -> str:
    """The system note that asks the model again after :func:`ungrounded_arguments` found values."""
    listed = "; ".join(f"{tool}({argument}={value!r})" for tool, argument, value in missing)
    return (
        f"Your reply called {listed}, but nobody in this conversation wrote that value: not the customer, not a "
        "tool result. Never guess an id, email, name or zip code. Ask the customer for it, or use a value a tool "
        "returned."
    )


CONSTRAINED_FORMAT = (
    "# How to reply\n\nReply with exactly one JSON object. To call a tool: "
    '{"name": "<tool name>", "arguments": {<the arguments>}}. To write to the customer: '
    '{"name": "respond", "arguments": {"content": "<your message>"}}. One action per reply.'
)
"""Added to the system prompt with ``constrain=True``."""


def tool_call_schema(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A JSON schema matching one call of any tool (with its argument schema) or a ``respond`` message.

    Args:
        tools: OpenAI tool schemas (``{"type": "function", "function": {...}}`` or the bare function).

    Returns:
        ``{"anyOf": [...]}`` with one object schema per tool plus ``respond``.

    """
    variants = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        # Keep only what grammar compilers understand: types, properties, required, enums, items.
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"enum": [fn["name"]]}, "arguments": _plain_schema(params)},
                "required": ["name", "arguments"],
            }
        )
    variants.append(
        {
            "type": "object",
            "properties": {
                "name": {"enum": [RESPOND]},
                "arguments": {
                    "type": "object",
                    "properties": {"content": {"type": "string"}},
                    "required": ["content"],
                },
            },
            "required": ["name", "arguments"],
        }
    )
    return {"anyOf": variants}


_SCHEMA_KEYS = ("type", "properties", "required", "enum", "items", "anyOf", "minimum", "maximum")


def _plain_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: _plain_schema(v) for k, v in schema.items() if k in _SCHEMA_KEYS}
        if "properties" in schema:
            out["properties"] = {k: _plain_schema(v) for k, v in schema["properties"].items()}
        return out
    if isinstance(schema, list):
        return [_plain_schema(v) for v in schema]
    return schema


def response_format_for(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``response_format`` that constrains a reply to :func:`tool_call_schema` (llama.cpp's form)."""
    return {"type": "json_object", "schema": tool_call_schema(tools)}


def unwrap_respond(message: AssistantMessage) -> AssistantMessage:
    """Turn a constrained ``{"name": "respond", ...}`` reply into plain text for the customer."""
    if message.tool_calls or not message.content:
        return message
    try:
        value = json.loads(message.content)
    except ValueError:
        return message
    if isinstance(value, dict) and value.get("name") == RESPOND:
        args = value.get("arguments")
        text = args.get("content") if isinstance(args, dict) else None
        if isinstance(text, str):
            return message.model_copy(update={"content": text})
    return message


PLAIN_LANGUAGE_NUDGE = (
    "The tool results are above. If you now have what you need, reply to the customer in plain language. "
    "Call another tool only if you still need to look something up or to act."
)
"""System note appended after a tool result (set ``nudge=None`` to turn it off)."""

EMPTY_REPLY = "Sorry, I did not catch that. Could you please repeat your last message?"
"""Said in place of an empty model reply, so the episode continues."""


def ensure_unique_call_ids(message: AssistantMessage, conversation: Sequence[Message]) -> AssistantMessage:
    """Rename tool-call ids that clash with ids already used in the conversation (or in the message).

    Ids parsed from text are derived from the text, so a model repeating itself would reuse them, and
    tool results must map to exactly one call.

    Args:
        message: The new assistant message.
        conversation: The conversation so far.

    Returns:
        The message, with fresh ids where needed.

    """
    if not message.tool_calls:
        return message
    used = {c.id for m in conversation if isinstance(m, AssistantMessage) for c in m.tool_calls}
    calls = []
    changed = False
    for i, call in enumerate(message.tool_calls):
        if call.id in used:
            n = 0
            while f"{call.id}_{len(conversation)}_{i}_{n}" in used:
                n += 1
            call = call.model_copy(update={"id": f"{call.id}_{len(conversation)}_{i}_{n}"})
            changed = True
        used.add(call.id)
        calls.append(call)
    return message.model_copy(update={"tool_calls": tuple(calls)}) if changed else message


def resolve_temperature(own: float | None, context: AgentContext) -> float | None:
    """The agent's temperature, else the collector's ``context.extra["temperature"]``, else None."""
    if own is not None:
        return own
    value = context.extra.get("temperature")
    return float(value) if isinstance(value, int | float) else None


class ToolCallingAgent:
    """An agent using native function calling through an :class:`~apigen_envs.llm.LLMClient`.

    Args:
        client: The model client.
        name: Name recorded on episodes.
        temperature: Sampling temperature (None: ``context.extra["temperature"]`` or the client default).
        nudge: System note added after a tool result; None disables it.
        empty_reply: Text used when the model returns neither text nor tool calls.
        constrain: Send the tools' JSON schemas as ``response_format`` (servers that enforce it only).
        id_reminder: System note on the identification step, shown until the first tool call; None
            disables it.
        ground_check: Regenerations of a reply whose tool call uses an identifier nobody wrote
            (:func:`ungrounded_arguments`); 0 disables the check. The last reply is sent either way.

    """

    def __init__(
        self,
        client: LLMClient,
        *,
        name: str = "tool_calling",
        temperature: float | None = None,
        nudge: str | None = PLAIN_LANGUAGE_NUDGE,
        empty_reply: str = EMPTY_REPLY,
        constrain: bool = False,
        id_reminder: str | None = None,
        ground_check: int = 0,
    ) -> None:
        if ground_check < 0:
            raise ValueError("ground_check must be >= 0")
        self.client = client
        self.name = name
        self.temperature = temperature
        self.nudge = nudge
        self.empty_reply = empty_reply
        self.constrain = constrain
        self.id_reminder = id_reminder
        self.ground_check = ground_check

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, client={self.client!r})"

    def public(self) -> dict[str, Any]:
        """Settings to record on episodes (no secrets)."""
        config = getattr(self.client, "config", None)
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "temperature": self.temperature,
            "nudge": self.nudge is not None,
            "constrain": self.constrain,
            "id_reminder": self.id_reminder is not None,
            "ground_check": self.ground_check,
            "llm": config.public() if hasattr(config, "public") else type(self.client).__name__,
        }

    def system_prompt(self, context: AgentContext) -> str:
        """The system prompt sent to the model (the domain policy; subclasses add to it)."""
        if self.constrain:
            return f"{context.system_prompt}\n\n{CONSTRAINED_FORMAT}"
        return context.system_prompt

    def build_messages(self, conversation: Sequence[Message], context: AgentContext) -> list[dict[str, Any]]:
        """The OpenAI chat messages for the next call.

        Args:
            conversation: The conversation so far.
            context: The episode context.

        Returns:
            System prompt, the conversation, and the plain-language note when the last message is a
            tool result.

        """
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt(context)}]
        messages.extend(m.to_openai() for m in conversation)
        if self.nudge and conversation and isinstance(conversation[-1], ToolMessage):
            messages.append({"role": "system", "content": self.nudge})
        acted = any(isinstance(m, AssistantMessage) and m.tool_calls for m in conversation)
        if self.id_reminder and not acted:
            messages.append({"role": "system", "content": self.id_reminder})
        return messages

    def plan(self, conversation: Sequence[Message], context: AgentContext) -> Plan[AssistantMessage]:
        """The turn as a plan of LLM requests (drive it with :func:`~apigen_envs.llm.run_plan`)."""
        tools = list(context.tools)
        messages = self.build_messages(conversation, context)
        usage = None
        for attempt in range(self.ground_check + 1):
            completion = yield LLMRequest(
                messages,
                tools=tools or None,
                # Another seed per attempt: the same seed would sample the same call again.
                seed=None if context.seed is None else context.seed + 1000 * attempt,
                temperature=resolve_temperature(self.temperature, context),
                response_format=response_format_for(tools) if self.constrain and tools else None,
            )
            usage = completion.usage if usage is None else usage + completion.usage
            message = completion.message
            if self.constrain:
                message = unwrap_respond(message)
            missing = ungrounded_arguments(message, conversation) if attempt < self.ground_check else []
            if not missing:
                break
            messages = [*messages, {"role": "system", "content": ungrounded_note(missing)}]
        if message.usage is None or attempt:
            message = message.model_copy(update={"usage": usage})
        if message.is_empty:
            return AssistantMessage(content=self.empty_reply, usage=message.usage)
        return ensure_unique_call_ids(message, conversation)

    def act(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Next assistant message: tool calls or text for the customer.

        Raises:
            LLMError: When the client fails.

        """
        return run_plan(self.client, self.plan(conversation, context))

    async def aact(self, conversation: Sequence[Message], context: AgentContext) -> AssistantMessage:
        """Async twin of :meth:`act`."""
        return await arun_plan(self.client, self.plan(conversation, context))
