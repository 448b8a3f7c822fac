"""Reverse task recombination: join accepted simple blueprints of one user into a longer multi-intent task.

The combined actions are the parts' actions in order, with repeated identical lookups (the same user
identification twice) kept once and a hand-off to a person moved to the end (it ends the conversation).
Without a model, the combined instruction reads like one customer: the first part's persona, the requests
in order joined by linking words, and each known fact and behaviour note stated once under one set of
headers. The combined task is validated again: it is re-executed and the policy
predicates run over the combined trace, since parts valid alone can conflict together (a cancel and a
return of the same order), then triviality, de-duplication and the committee.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any

from apigen_envs.datagen.proposers import Proposal, load_prompt
from apigen_envs.errors import LLMError
from apigen_envs.llm import LLMClient, scan_json
from apigen_envs.peer_tasks import compose_instruction
from apigen_envs.task import Action, Task, UserScenario
from apigen_envs.tools import ToolSet

HANDOFF = "transfer_to_human_agents"
"""The tool that ends a conversation by handing it to a person: a combination keeps it last."""
_FACT = re.compile(r"[\w.+-]*[\d@][\w.@+-]*\w")
_LINKS = ("Also, ", "On top of that, ", "Separately, ", "While you're at it, ", "One more thing: ", "And ")


def order_parts(parts: Sequence[Task]) -> list[Task]:
    """The parts in a natural order: requests that end with a hand-off to a person come last.

    Args:
        parts: The blueprints.

    Returns:
        The parts, stably reordered.

    """
    handing = [t for t in parts if any(a.name == HANDOFF for a in t.actions)]
    return [t for t in parts if t not in handing] + handing


def merge_actions(parts: Sequence[Task], tools: ToolSet) -> tuple[Action, ...]:
    """Concatenate the parts' actions, dropping repeats of an identical read-only call; one hand-off, last
    (the person it goes to takes every request that needs one).

    Args:
        parts: The blueprints, in the order to perform them.
        tools: The domain's tools (to tell readers from writers).

    Returns:
        The combined actions.

    """
    seen: set[str] = set()
    out: list[Action] = []
    handoff: list[Action] = []
    for task in parts:
        for action in task.actions:
            if action.name == HANDOFF:
                handoff.append(action)
                continue
            writer = action.name in tools and tools[action.name].mutates
            key = action.model_dump_json()
            if not writer and key in seen:
                continue
            seen.add(key)
            out.append(action)
    return (*out, *handoff[:1])


def join_instructions(parts: Sequence[Task]) -> str:
    """The parts' instructions as numbered requests (the fallback for parts without structured scenarios).

    Args:
        parts: The blueprints.

    Returns:
        The instruction.

    """
    lines = ["You have several requests for the agent in this one conversation; raise them in this order."]
    lines += [f"{i}. {task.instruction.strip()}" for i, task in enumerate(parts, 1)]
    return "\n".join(lines)


def merge_scenarios(parts: Sequence[Task], rng: random.Random) -> UserScenario | None:
    """One customer's scenario for all parts: the first part's persona, the requests one after another in
    that customer's words, and each known fact, unknown fact and behaviour note once.

    Args:
        parts: The blueprints, in order.
        rng: Picks the linking words.

    Returns:
        The scenario, or None when a part has no structured reason for calling (then the caller joins the
        instructions instead).

    """
    if any(not t.scenario.reason_for_call for t in parts):
        return None
    reasons: list[str] = []
    for index, task in enumerate(parts):
        text = str(task.scenario.reason_for_call).strip()
        if index:
            text = rng.choice(_LINKS) + text[0].lower() + text[1:]
        reasons.append(text)

    def union(field_name: str) -> str | None:
        sentences: dict[str, None] = {}
        stated: set[str] = set()
        for task in parts:
            value = getattr(task.scenario, field_name)
            for sentence in re.split(r"(?<=[.!?])\s+", str(value or "").strip()):
                # The same fact in other words (the parts share the customer's identification) is said
                # once: a sentence whose ids and addresses were all stated already adds nothing.
                facts = set(_FACT.findall(sentence))
                if sentence and not (facts and facts <= stated):
                    sentences.setdefault(sentence, None)
                    stated |= facts
        return " ".join(sentences) or None

    persona = parts[0].scenario.persona
    fields = {
        "reason_for_call": " ".join(reasons),
        "known_info": union("known_info"),
        "unknown_info": union("unknown_info"),
        "task_instructions": union("task_instructions"),
    }
    return UserScenario(
        instruction=compose_instruction(fields, persona),
        persona=persona,
        **fields,
    )


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
    parts = order_parts(parts)
    actions = merge_actions(parts, tools)
    outputs = tuple(dict.fromkeys(o for t in parts for o in t.outputs))
    instruction = None
    if client is not None:
        instruction = llm_instruction(client, parts, actions, rng.randrange(2**31))
    scenario = merge_scenarios(parts, rng)
    extra: dict[str, Any] = {"recombined_from": [t.id for t in parts]}
    if instruction:
        extra["instruction_writer"] = "llm"
    elif scenario is not None:
        instruction = scenario.instruction
        extra["instruction_writer"] = "template_merge"
        extra["scenario"] = scenario.model_dump(exclude_none=True)
    else:
        instruction = join_instructions(parts)
        extra["instruction_writer"] = "template_join"
    return Proposal(
        instruction=instruction,
        actions=actions,
        outputs=outputs,
        user_id=parts[0].user_id,
        proposer="recombination",
        intent="+".join(str(t.provenance.get("intent") or "task") for t in parts),
        persona=parts[0].scenario.persona,
        extra=extra,
    )
