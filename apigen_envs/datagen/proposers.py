"""Blueprint proposers: an LLM that writes reasoning then strict JSON, and an offline template proposer.

Both return a :class:`Proposal` (or a :class:`ProposalError` saying why nothing usable came back), so the
validation stages and the feedback loop treat them alike.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apigen_envs.datagen.context import Context, render_context
from apigen_envs.errors import LLMError
from apigen_envs.llm import Completion, LLMClient, LLMRequest, scan_json, undouble_braces
from apigen_envs.task import Action, Task
from apigen_envs.tools import ToolSet


class ProposalPayload(BaseModel):
    """The strict JSON a proposer must produce."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=1)
    actions: list[Action]
    outputs: list[str] = Field(default_factory=list)
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A candidate blueprint.

    Attributes:
        instruction: What the simulated user wants, in the user's voice.
        actions: Gold actions.
        outputs: Information the agent must tell the user.
        user_id: The user the blueprint is about.
        proposer: Which proposer made it.
        intent: The template intent, if any.
        reasoning: The LLM's reasoning text, if any.
        persona: A persona for the user simulator.
        extra: Proposer-specific fields kept in provenance.

    """

    instruction: str
    actions: tuple[Action, ...]
    outputs: tuple[str, ...] = ()
    user_id: str | None = None
    proposer: str = "unknown"
    intent: str | None = None
    reasoning: str | None = None
    persona: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProposalError:
    """No usable proposal: the reply was not JSON, had the wrong schema, or a template found no record.

    Attributes:
        stage: ``"format"`` for malformed replies, ``"no_candidate"`` when a template found nothing to use.
        reason: What went wrong.
        raw: The raw reply, if any.

    """

    stage: str
    reason: str
    raw: str | None = None


@runtime_checkable
class Proposer(Protocol):
    """Anything that turns a context (and feedback on earlier attempts) into a proposal."""

    name: str

    def propose(self, context: Context, rng: random.Random, feedback: str | None = None) -> Proposal | ProposalError:
        """Propose one blueprint."""
        ...


def load_prompt(name: str) -> str:
    """A prompt file shipped in ``apigen_envs/datagen/prompts``.

    Args:
        name: File name without ``.md``.

    Returns:
        The prompt text.

    """
    return resources.files("apigen_envs.datagen").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")


def parse_payload(
    text: str | None, *, lenient: bool = False, tools: ToolSet | None = None
) -> ProposalPayload | ProposalError:
    """Find the JSON blueprint in a reply (after any reasoning) and validate its schema.

    The last JSON object with an ``instruction`` key wins, so reasoning may quote JSON before it.

    Args:
        text: The model's reply.
        lenient: Repair what small models commonly send (see :func:`normalise_payload`) before validating.
        tools: The domain's tools, for type repairs of arguments in lenient mode.

    Returns:
        The payload, or a format error naming the problem.

    """
    if not text or not text.strip():
        return ProposalError("format", "empty reply", text)
    found = [v for v, _, _ in scan_json(text) if isinstance(v, dict)]
    if not found:
        found = [v for v, _, _ in scan_json(undouble_braces(text)) if isinstance(v, dict)]
    candidates = [v for v in found if "instruction" in v]
    if not candidates:
        what = "no JSON object" if not found else "no JSON object with an 'instruction' key"
        return ProposalError("format", f"reply holds {what}", text)
    raw = candidates[-1]
    if lenient:
        raw, _ = normalise_payload(raw, tools)
    try:
        return ProposalPayload.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors())
        return ProposalError("format", f"wrong schema: {problems}", text)


_PAYLOAD_KEYS = frozenset(ProposalPayload.model_fields)
_ARGUMENT_ALIASES = ("arguments", "kwargs", "args", "parameters")


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """Coerce a JSON value to the type a parameter schema names, when the intent is unambiguous."""
    kind = schema.get("type")
    if kind == "integer" and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "number" and isinstance(value, str):
        try:
            return float(value.strip().lstrip("$"))
        except ValueError:
            return value
    if kind == "boolean" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if kind == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if kind == "array":
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            value = parsed if isinstance(parsed, list) else [value]
        items = schema.get("items")
        if isinstance(value, list) and isinstance(items, dict):
            return [_coerce(v, items) for v in value]
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props[k]) if k in props else v for k, v in value.items()}
    return value


def normalise_payload(raw: dict[str, Any], tools: ToolSet | None = None) -> tuple[dict[str, Any], list[str]]:
    """Repair a blueprint object the way small models get it wrong, and say what was repaired.

    Repairs: unknown top-level keys dropped (a ``thought``/``reasoning`` key is kept aside by the caller),
    a single action object or a single output string wrapped in a list, ``kwargs``/``args``/``parameters``
    read as ``arguments``, arguments given as JSON text parsed, keys besides ``name`` and ``arguments`` in
    an action dropped, numbers sent as strings (and the reverse) coerced to the tool parameter's type,
    outputs that are numbers turned into strings. Nothing is invented: a missing field stays missing.

    Args:
        raw: The JSON object.
        tools: The domain's tools (for argument types).

    Returns:
        (repaired object, list of repairs made).

    """
    notes: list[str] = []
    out = {k: v for k, v in raw.items() if k in _PAYLOAD_KEYS}
    dropped = sorted(set(raw) - _PAYLOAD_KEYS)
    if dropped:
        notes.append(f"dropped keys {dropped}")
    actions = out.get("actions")
    if isinstance(actions, dict):
        actions = [actions]
        notes.append("wrapped a single action in a list")
    if isinstance(actions, list):
        fixed = []
        for action in actions:
            if not isinstance(action, dict):
                fixed.append(action)
                continue
            args: Any = next((action[k] for k in _ARGUMENT_ALIASES if k in action), {})
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except ValueError:
                    pass
                else:
                    notes.append("parsed arguments given as JSON text")
            name = action.get("name")
            if tools is not None and isinstance(name, str) and name in tools and isinstance(args, dict):
                params = tools[name].schema["function"]["parameters"]
                coerced = _coerce(args, {"type": "object", **params})
                if coerced != args:
                    notes.append(f"coerced argument types of {name}")
                args = coerced
            extra = sorted(set(action) - {"name", *_ARGUMENT_ALIASES})
            if extra:
                notes.append(f"dropped action keys {extra}")
            fixed.append({"name": name, "arguments": args} if "name" in action else action)
        out["actions"] = fixed
    outputs = out.get("outputs")
    if isinstance(outputs, str | int | float) and not isinstance(outputs, bool):
        out["outputs"] = [str(outputs)] if str(outputs).strip() else []
        notes.append("wrapped a single output in a list")
    elif isinstance(outputs, list):
        out["outputs"] = [str(o) if isinstance(o, int | float) and not isinstance(o, bool) else o for o in outputs]
    elif outputs is None and "outputs" in out:
        out["outputs"] = []
    if isinstance(out.get("user_id"), int):
        out["user_id"] = str(out["user_id"])
    return out, notes


JsonMode = Literal["json_schema", "llama", "json_object", "off"]
"""How a proposer asks the server for JSON: ``json_schema`` (OpenAI structured outputs; vLLM, llama.cpp's
``llama-server``), ``llama`` (llama-cpp-python's ``{"type": "json_object", "schema": ...}``), ``json_object``
(JSON mode without a schema) or ``off`` (free text, parsed leniently)."""


def response_format(schema: dict[str, Any], mode: JsonMode, name: str = "blueprint") -> dict[str, Any] | None:
    """The ``response_format`` body field for a JSON schema in one of the :data:`JsonMode` dialects.

    Args:
        schema: The JSON schema.
        mode: The dialect.
        name: Schema name (OpenAI's ``json_schema.name``).

    Returns:
        The field, or None for ``off``.

    """
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if mode == "llama":
        return {"type": "json_object", "schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def _argument_schema(params: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameter schema without descriptions (the grammar needs types, not prose)."""
    if isinstance(params, dict):
        return {k: _argument_schema(v) for k, v in params.items() if k not in ("description", "title")}
    if isinstance(params, list):
        return [_argument_schema(v) for v in params]  # type: ignore[return-value]
    return params


def blueprint_schema(tools: ToolSet, reasoning_chars: int = 300, typed_arguments: bool = False) -> dict[str, Any]:
    """The JSON schema of a blueprint: known tool names, and optionally each action's arguments typed.

    A server enforcing it can only emit known tool names (with ``typed_arguments``, also their required
    arguments), so a small model's format errors become execution or policy errors that say something about
    the task.

    Args:
        tools: The domain's tools.
        reasoning_chars: 0 leaves the leading ``thought`` field out; any other value keeps it (a length cap
            is not put in the schema: llama.cpp's grammar unrolls ``maxLength`` and slows to a crawl).
        typed_arguments: Type each action's arguments by its tool's schema (an ``anyOf`` per tool). Off by
            default: with it, llama-cpp-python's grammar sampler took over 7 minutes for one reply on 2
            cores; tool names alone (an enum) ran at normal speed.

    Returns:
        The schema.

    """
    offered = [tool for tool in tools if tool.name != "think"]
    if typed_arguments:
        variants = []
        for tool in offered:
            params = _argument_schema(tool.schema["function"].get("parameters", {"type": "object"}))
            params = {"type": "object", **params, "additionalProperties": False}
            params.setdefault("properties", {})
            params.setdefault("required", [])
            variants.append(
                {
                    "type": "object",
                    "properties": {"name": {"const": tool.name}, "arguments": params},
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            )
        item: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    else:
        item = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.name for tool in offered]},
                "arguments": {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
    props: dict[str, Any] = {}
    required = []
    if reasoning_chars > 0:
        props["thought"] = {"type": "string"}
        required.append("thought")
    props |= {
        "user_id": {"type": "string"},
        # No maxLength: llama.cpp's grammar unrolls it into that many nested optional characters, which
        # made one constrained reply take over 10 minutes on 2 cores. The prompt asks for brevity instead.
        "instruction": {"type": "string", "minLength": 20},
        "actions": {"type": "array", "items": item, "minItems": 1, "maxItems": 8},
        "outputs": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    }
    required += ["user_id", "instruction", "actions", "outputs"]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def tool_signature(tool: Any) -> str:
    """A one-line signature of a tool for prompts: ``name(arg: type, ...) - description``."""
    fn = tool.schema["function"]
    params = fn.get("parameters", {})
    required = set(params.get("required", ()))
    args = []
    for name, spec in params.get("properties", {}).items():
        kind = " | ".join(json.dumps(v) for v in spec["enum"]) if "enum" in spec else spec.get("type", "any")
        if kind == "array" and isinstance(spec.get("items"), dict):
            inner = spec["items"]
            kind = f"list[{', '.join(inner.get('properties', {})) or inner.get('type', 'any')}]"
        args.append(f"{name}: {kind}" + ("" if name in required else " = optional"))
    return f"{fn['name']}({', '.join(args)}) - {fn.get('description', '').strip()}"


def _other_user(payload: ProposalPayload, expected: str | None) -> str | None:
    """A user id the payload names (its ``user_id``, or a ``user_id`` argument) other than ``expected``."""
    if not expected:
        return None
    if payload.user_id and payload.user_id != expected:
        return payload.user_id
    for action in payload.actions:
        named = action.arguments.get("user_id") if isinstance(action.arguments, dict) else None
        if isinstance(named, str) and named != expected:
            return named
    return None


@dataclass(frozen=True, slots=True)
class Round:
    """One earlier try of the same context: what the proposer sent and the feedback it got.

    Attributes:
        reply: The proposer's reply (its JSON), or None when no reply came back.
        feedback: Why it was rejected.

    """

    reply: str | None
    feedback: str


@runtime_checkable
class IterativeProposer(Protocol):
    """A proposer that sees every earlier try of a context and its feedback (an LLM), and can run async."""

    name: str

    async def apropose(
        self, context: Context, rng: random.Random, rounds: Sequence[Round] = ()
    ) -> Proposal | ProposalError:
        """Propose one blueprint, given the earlier rounds of this context."""
        ...


class LLMProposer:
    """Asks an LLM for a blueprint as JSON ``{thought, user_id, instruction, actions, outputs}``.

    The system prompt holds the instructions, the full policy and every tool's signature, and stays the
    same for a domain, so a server with a prompt cache (llama.cpp) reads it once. The context follows
    as the user message; each retry appends the previous reply as the assistant's turn and its feedback
    as the next user turn, so the model sees every earlier attempt and all feedback (the paper's loop).

    Args:
        client: Any :class:`~apigen_envs.llm.LLMClient`.
        tools: The domain's tools (their schemas go into the prompt and the output schema).
        temperature: Sampling temperature.
        system_prompt: Overrides the shipped ``proposer.md``.
        policy: The domain policy (put in the system prompt).
        json_mode: How to ask the server for JSON (see :data:`JsonMode`).
        lenient: Repair common small-model mistakes before validating (see :func:`normalise_payload`).
        reasoning_chars: 0 drops the ``thought`` field from the schema (see :func:`blueprint_schema`).

    """

    name = "llm"

    def __init__(
        self,
        client: LLMClient,
        tools: ToolSet,
        temperature: float = 0.7,
        system_prompt: str | None = None,
        *,
        policy: str = "",
        json_mode: JsonMode = "off",
        lenient: bool = True,
        reasoning_chars: int = 300,
    ) -> None:
        self.client = client
        self.tools = tools
        self.temperature = temperature
        base = system_prompt or load_prompt("proposer")
        signatures = "\n".join(f"- {tool_signature(t)}" for t in tools if t.name != "think")
        # Policy first: the reviewer's system prompt starts with the same text, so the cache serves both.
        self.system_prompt = (f"# Domain policy\n\n{policy}\n\n" if policy else "") + (
            f"{base}\n\n## Tools\n{signatures}"
        )
        self.json_mode: JsonMode = json_mode
        self.lenient = lenient
        self.schema = blueprint_schema(tools, reasoning_chars)
        self.model = getattr(getattr(client, "config", None), "model", None)

    def messages(
        self, context: Context, feedback: str | None = None, rounds: Sequence[Round] = ()
    ) -> list[dict[str, Any]]:
        """The chat messages sent for one proposal.

        Args:
            context: The sampled context.
            feedback: Feedback on the previous attempt when its reply is not known (older callers).
            rounds: Every earlier try of this context with its feedback, oldest first.

        Returns:
            The messages.

        """
        user = render_context(context, self.tools, include_policy=False)
        out = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
        for i, prior in enumerate(rounds, 1):
            # llama-cpp-python rejects an assistant message with null content: always send text.
            out.append({"role": "assistant", "content": prior.reply or "(no usable reply)"})
            out.append(
                {
                    "role": "user",
                    "content": f"Feedback on attempt {i}:\n{prior.feedback}\n\n"
                    "Write a corrected blueprint for the same user that fixes every point.",
                }
            )
        if feedback and not rounds:
            out[1]["content"] += (
                f"\n\n## Feedback on your previous attempt\n{feedback}\n\n"
                "Write a corrected blueprint that fixes every point."
            )
        return out

    def _request(
        self, context: Context, rng: random.Random, feedback: str | None, rounds: Sequence[Round]
    ) -> LLMRequest:
        return LLMRequest(
            self.messages(context, feedback, rounds),
            seed=rng.randrange(2**31),
            temperature=self.temperature,
            response_format=response_format(self.schema, self.json_mode),
        )

    def _proposal(self, context: Context, completion: Completion) -> Proposal | ProposalError:
        text = completion.message.content
        payload = parse_payload(text, lenient=self.lenient, tools=self.tools)
        if isinstance(payload, ProposalError):
            return payload
        other = _other_user(payload, context.user_id)
        if other is not None:
            # Small models copy a few-shot example wholesale, customer included; the context's customer is
            # the one whose records were sampled and shown.
            return ProposalError(
                "format",
                f"the blueprint is about user {other!r}, not the sampled customer {context.user_id!r}: write it "
                "for that customer and their records (the examples only show the form)",
                text,
            )
        raw = next((v for v, _, _ in reversed(scan_json(text or "")) if isinstance(v, dict) and "instruction" in v), {})
        thought = raw.get("thought") or raw.get("reasoning") if isinstance(raw, dict) else None
        reasoning = str(thought) if thought else (text[: text.rfind("{")].strip() if text else None)
        repairs = normalise_payload(raw, self.tools)[1] if self.lenient and isinstance(raw, dict) else []
        extra: dict[str, Any] = {"model": completion.model or self.model, "usage": completion.usage.model_dump()}
        if repairs:
            extra["repairs"] = repairs
        if context.family:
            extra["family"] = context.family
        extra["reply"] = text
        return Proposal(
            instruction=payload.instruction,
            actions=tuple(payload.actions),
            outputs=tuple(payload.outputs),
            user_id=payload.user_id or context.user_id,
            proposer=self.name,
            intent=context.intent,
            reasoning=reasoning or None,
            persona=context.persona,
            extra=extra,
        )

    def propose(self, context: Context, rng: random.Random, feedback: str | None = None) -> Proposal | ProposalError:
        """Ask the model once and parse its reply.

        Args:
            context: The sampled context.
            rng: Random source (gives the request's seed).
            feedback: Why the previous attempt was rejected.

        Returns:
            The proposal, or a format error (also when the server fails: recorded, never raised).

        """
        try:
            completion = self.client.complete(self._request(context, rng, feedback, ()))
        except LLMError as exc:
            return ProposalError("format", f"LLM call failed: {exc}")
        return self._proposal(context, completion)

    async def apropose(
        self, context: Context, rng: random.Random, rounds: Sequence[Round] = ()
    ) -> Proposal | ProposalError:
        """Async: ask the model once, showing every earlier round of this context.

        Args:
            context: The sampled context.
            rng: Random source (gives the request's seed).
            rounds: Earlier replies and their feedback, oldest first.

        Returns:
            The proposal, or a format error (also when the server fails: recorded, never raised).

        """
        try:
            completion = await self.client.acomplete(self._request(context, rng, None, rounds))
        except LLMError as exc:
            return ProposalError("format", f"LLM call failed: {exc}")
        return self._proposal(context, completion)


class TemplateProposer:
    """Offline proposer delegating to a domain's ``templates`` module (``INTENTS`` and ``propose``).

    Deterministic per seed: the template draws everything from the ``rng`` it is given. Feedback is not
    understood by templates; a retry simply draws again with a fresh random stream.

    Args:
        templates: A module (or object) with ``INTENTS`` and ``propose(snapshot, rng, intent=None)``, and
            optionally ``CYCLE``: the intents in the order a run takes them, repeats weighting families.
        snapshot: The domain's base DB.

    """

    name = "template"

    def __init__(self, templates: Any, snapshot: Any) -> None:
        if not hasattr(templates, "INTENTS") or not callable(getattr(templates, "propose", None)):
            raise TypeError("templates must define INTENTS and propose(snapshot, rng, intent=None)")
        self.templates = templates
        self.snapshot = snapshot
        # A template module may list intents in the order (and with the repeats) a run should take them.
        self.intents: tuple[str, ...] = tuple(getattr(templates, "CYCLE", None) or templates.INTENTS)

    def propose(self, context: Context, rng: random.Random, feedback: str | None = None) -> Proposal | ProposalError:
        """Ask the template for a task of the context's intent (or any intent).

        Args:
            context: The sampled context (only ``intent`` is used).
            rng: Random source.
            feedback: Ignored (recorded by the pipeline).

        Returns:
            The proposal, or a ``no_candidate`` error when the template found no usable record.

        """
        task = self.templates.propose(self.snapshot, rng, intent=context.intent)
        if task is None:
            return ProposalError("no_candidate", f"template {context.intent or 'any'!r} found no usable record")
        if not isinstance(task, Task):
            return ProposalError("format", f"template returned {type(task).__name__}, not a Task")
        return proposal_from_task(task, self.name, context.intent)


def proposal_from_task(task: Task, proposer: str, intent: str | None = None) -> Proposal:
    """Wrap an existing task as a proposal (templates, or re-validating stored blueprints).

    Args:
        task: The task.
        proposer: Proposer name to record.
        intent: Intent to record (defaults to the task's provenance ``intent``).

    Returns:
        The proposal.

    """
    return Proposal(
        instruction=task.instruction,
        actions=task.actions,
        outputs=task.outputs,
        user_id=task.user_id,
        proposer=proposer,
        intent=intent or task.provenance.get("intent"),
        persona=task.scenario.persona,
        extra={
            "scenario": task.scenario.model_dump(exclude_none=True),
            "template_id": task.id,
            **({"template_provenance": task.provenance} if task.provenance else {}),
        },
    )


def payload_json(proposal: Proposal) -> str:
    """The proposal's JSON as a proposer would write it (for prompts and logs)."""
    return json.dumps(
        {
            "instruction": proposal.instruction,
            "actions": [a.model_dump() for a in proposal.actions],
            "outputs": list(proposal.outputs),
        },
        ensure_ascii=False,
    )
