"""The model rewrite of recombined blueprints (APIGen-MT's reverse recombination, last step).

:func:`~apigen_envs.datagen.recombine.combine` merges the parts' actions and writes a template
instruction; with a model, that instruction is rewritten as one customer with one persona would say it,
the intents in a natural order, every fact the agent needs kept. The rewritten blueprint is validated
again like any other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from apigen_envs.datagen.proposers import JsonMode, Proposal, load_prompt, response_format
from apigen_envs.errors import LLMError
from apigen_envs.llm import LLMClient, LLMRequest, scan_json
from apigen_envs.task import Task

REWRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"instruction": {"type": "string", "minLength": 20}},
    "required": ["instruction"],
    "additionalProperties": False,
}
"""The JSON schema of a rewrite reply."""


@runtime_checkable
class InstructionRewriter(Protocol):
    """Rewrites a combined blueprint's instruction (None: keep the template's)."""

    async def arewrite(self, parts: Sequence[Task], proposal: Proposal, seed: int) -> str | None:
        """The new instruction, or None when no usable one came back."""
        ...


class LLMRewriter:
    """Asks a model for the combined instruction, in one voice (the first part's persona).

    Args:
        client: The model.
        json_mode: How to ask the server for JSON (see :data:`~apigen_envs.datagen.proposers.JsonMode`).
        temperature: Sampling temperature.

    """

    def __init__(self, client: LLMClient, json_mode: JsonMode = "off", temperature: float = 0.3) -> None:
        self.client = client
        self.json_mode: JsonMode = json_mode
        self.temperature = temperature

    def request(self, parts: Sequence[Task], proposal: Proposal, seed: int) -> LLMRequest:
        """The request for one rewrite."""
        body: dict[str, Any] = {
            "persona": proposal.persona or next((t.scenario.persona for t in parts if t.scenario.persona), None),
            "instructions": [t.instruction for t in parts],
            "template_join": proposal.instruction,
            "actions": [a.model_dump() for a in proposal.actions],
            "outputs": list(proposal.outputs),
        }
        messages = [
            {"role": "system", "content": load_prompt("recombine")},
            {"role": "user", "content": json.dumps(body, ensure_ascii=False)},
        ]
        fmt = response_format(REWRITE_SCHEMA, self.json_mode, "rewrite")
        return LLMRequest(messages, seed=seed, temperature=self.temperature, response_format=fmt)

    async def arewrite(self, parts: Sequence[Task], proposal: Proposal, seed: int) -> str | None:
        """Ask the model; None when the call fails or the reply holds no instruction."""
        try:
            completion = await self.client.acomplete(self.request(parts, proposal, seed))
        except LLMError:
            return None
        text = completion.message.content or ""
        found = [v for v, _, _ in scan_json(text) if isinstance(v, dict) and isinstance(v.get("instruction"), str)]
        if not found or not found[-1]["instruction"].strip():
            return None
        return str(found[-1]["instruction"]).strip()


async def rewrite_proposal(
    rewriter: InstructionRewriter, parts: Sequence[Task], proposal: Proposal, seed: int
) -> Proposal:
    """The combined proposal with its instruction rewritten by ``rewriter`` (unchanged when it gives none).

    Args:
        rewriter: The rewriter.
        parts: The combined blueprints.
        proposal: The combination from :func:`~apigen_envs.datagen.recombine.combine`.
        seed: Request seed.

    Returns:
        The proposal; ``extra["instruction_writer"]`` says ``llm`` when the rewrite was used.

    """
    text = await rewriter.arewrite(parts, proposal, seed)
    if not text:
        return proposal
    return dataclasses.replace(proposal, instruction=text, extra={**proposal.extra, "instruction_writer": "llm"})
