"""Reverse task recombination: join accepted simple blueprints of one user into a longer multi-intent task.

The combined actions are the parts' actions in order, with repeated identical lookups (the same user
identification twice) kept once. The combined task is validated again: it is re-executed and the policy
predicates run over the combined trace, since parts valid alone can conflict together (a cancel and a
return of the same order), then triviality, de-duplication and the committee.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from apigen_envs.datagen.proposers import Proposal, load_prompt
from apigen_envs.errors import LLMError
from apigen_envs.llm import LLMClient, scan_json
from apigen_envs.task import Action, Task
from apigen_envs.tools import ToolSet


def merge_actions(parts: Sequence[Task], tools: ToolSet) -> tuple[Action, ...]:
    """Concatenate the parts' actions, dropping repeats of an identical read-only call.

    Args:
        parts: The blueprints, in the order to perform them.
        tools: The domain's tools (to tell readers from writers).

    Returns:
        The combined actions.

    """
    seen: set[str] = set()
    out: list[Action] = []
    for task in parts:
        for action in task.actions:
            writer = action.name in tools and tools[action.name].mutates
            key = action.model_dump_json()
            if not writer and key in seen:
                continue
            seen.add(key)
            out.append(action)
    return tuple(out)


def join_instructions(parts: Sequence[Task]) -> str:
    """The offline combined instruction: the parts' instructions as numbered requests.

    Args:
        parts: The blueprints.

    Returns:
        The instruction.

    """
    lines = ["You have several requests for the agent in this one conversation; raise them in this order."]
    lines += [f"{i}. {task.instruction.strip()}" for i, task in enumerate(parts, 1)]
    return "\n".join(lines)


def llm_instruction(client: LLMClient, parts: Sequence[Task], actions: Sequence[Action], seed: int) -> str | None:
    """Ask an LLM for one natural instruction covering every part.

    Args:
        client: The LLM.
        parts: The blueprints.
        actions: The combined actions.
        seed: Request seed.

    Returns:
        The instruction, or None when the reply is unusable (the caller falls back to the template join).

    """
    body: dict[str, Any] = {
        "instructions": [t.instruction for t in parts],
        "actions": [a.model_dump() for a in actions],
    }
    messages = [
        {"role": "system", "content": load_prompt("recombine")},
        {"role": "user", "content": json.dumps(body, ensure_ascii=False)},
    ]
    try:
        text = client.complete(messages, seed=seed, temperature=0.3).message.content
    except LLMError:
        return None
    found = [v for v, _, _ in scan_json(text or "") if isinstance(v, dict) and isinstance(v.get("instruction"), str)]
    if not found or not found[-1]["instruction"].strip():
        return None
    return str(found[-1]["instruction"]).strip()


def combine(
    parts: Sequence[Task],
    tools: ToolSet,
    rng: random.Random,
    client: LLMClient | None = None,
) -> Proposal:
    """Build the combined proposal of several blueprints of one user.

    Args:
        parts: Two or more accepted blueprints of the same user.
        tools: The domain's tools.
        rng: Random source (the LLM's seed).
        client: Optional LLM writing the combined instruction.

    Returns:
        The proposal (to be validated again).

    Raises:
        ValueError: With fewer than two parts or parts of different users.

    """
    if len(parts) < 2:
        raise ValueError("recombination needs at least two blueprints")
    users = {t.user_id for t in parts}
    if len(users) != 1:
        raise ValueError(f"recombination needs blueprints of one user, got {sorted(map(str, users))}")
    actions = merge_actions(parts, tools)
    outputs = tuple(dict.fromkeys(o for t in parts for o in t.outputs))
    instruction = None
    if client is not None:
        instruction = llm_instruction(client, parts, actions, rng.randrange(2**31))
    writer = "llm" if instruction else "template_join"
    return Proposal(
        instruction=instruction or join_instructions(parts),
        actions=actions,
        outputs=outputs,
        user_id=parts[0].user_id,
        proposer="recombination",
        intent="+".join(str(t.provenance.get("intent") or "task") for t in parts),
        persona=parts[0].scenario.persona,
        extra={"recombined_from": [t.id for t in parts], "instruction_writer": writer},
    )
