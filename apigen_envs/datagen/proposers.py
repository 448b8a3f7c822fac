"""Blueprint proposers: an LLM that writes reasoning then strict JSON, and an offline template proposer.

Both return a :class:`Proposal` (or a :class:`ProposalError` saying why nothing usable came back), so the
validation stages and the feedback loop treat them alike.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apigen_envs.datagen.context import Context, render_context
from apigen_envs.llm import LLMClient, scan_json, undouble_braces
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


def parse_payload(text: str | None) -> ProposalPayload | ProposalError:
    """Find the JSON blueprint in a reply (after any reasoning) and validate its schema.

    The last JSON object with an ``instruction`` key wins, so reasoning may quote JSON before it.

    Args:
        text: The model's reply.

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
    try:
        return ProposalPayload.model_validate(candidates[-1])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors())
        return ProposalError("format", f"wrong schema: {problems}", text)


class LLMProposer:
    """Asks an LLM for a blueprint: reasoning first, then strict JSON ``{instruction, actions, outputs}``.

    Args:
        client: Any :class:`~apigen_envs.llm.LLMClient`.
        tools: The domain's tools (their schemas go into the prompt).
        temperature: Sampling temperature.
        system_prompt: Overrides the shipped ``proposer.md``.

    """

    name = "llm"

    def __init__(
        self, client: LLMClient, tools: ToolSet, temperature: float = 0.7, system_prompt: str | None = None
    ) -> None:
        self.client = client
        self.tools = tools
        self.temperature = temperature
        self.system_prompt = system_prompt or load_prompt("proposer")

    def messages(self, context: Context, feedback: str | None = None) -> list[dict[str, Any]]:
        """The chat messages sent for one proposal."""
        user = render_context(context, self.tools)
        if feedback:
            user += (
                "\n\n## Feedback on your previous attempt\n"
                f"{feedback}\n\nWrite a corrected blueprint that fixes every point."
            )
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def propose(self, context: Context, rng: random.Random, feedback: str | None = None) -> Proposal | ProposalError:
        """Ask the model once and parse its reply.

        Args:
            context: The sampled context.
            rng: Random source (gives the request's seed).
            feedback: Why the previous attempt was rejected.

        Returns:
            The proposal, or a format error.

        """
        completion = self.client.complete(
            self.messages(context, feedback), seed=rng.randrange(2**31), temperature=self.temperature
        )
        text = completion.message.content
        payload = parse_payload(text)
        if isinstance(payload, ProposalError):
            return payload
        reasoning = text[: text.rfind("{")].strip() if text else None
        return Proposal(
            instruction=payload.instruction,
            actions=tuple(payload.actions),
            outputs=tuple(payload.outputs),
            user_id=payload.user_id or context.user_id,
            proposer=self.name,
            intent=context.intent,
            reasoning=reasoning or None,
            persona=context.persona,
            extra={"model": completion.model, "usage": completion.usage.model_dump()},
        )


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
