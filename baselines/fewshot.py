"""The few-shot agent: the function-calling agent with k example dialogues in its system prompt.

Examples come from a JSONL file, one dialogue per line, in any of these forms:

* an episode record (``{"messages": [...], "reward": ...}``, as the collector writes them), or any
  object with ``messages`` in OpenAI chat format;
* a ShareGPT / APIGen-MT record (``{"conversations": [{"from": "human"|"gpt"|"function_call"|
  "observation", "value": ...}]}``);
* a bare JSON list of OpenAI chat messages.

Records with a ``reward`` below 1 are skipped by default, so only successful dialogues are shown. The
examples are rendered as plain transcripts (customer, agent, tool calls, shortened tool results) rather
than as fake chat turns, so the model cannot confuse them with the live conversation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from apigen_envs.baselines.tool_calling import EMPTY_REPLY, PLAIN_LANGUAGE_NUDGE, ToolCallingAgent
from apigen_envs.domain import read_jsonl
from apigen_envs.errors import DataFileError
from apigen_envs.llm import LLMClient
from apigen_envs.protocols import AgentContext

_SHAREGPT_ROLES = MappingProxyType({"human": "Customer", "user": "Customer", "gpt": "Agent", "assistant": "Agent"})


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render_openai(messages: Sequence[Any], limit: int) -> list[str]:
    lines = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise ValueError("a message is not an object")
        role = m.get("role")
        content = m.get("content") if isinstance(m.get("content"), str) else ""
        if role == "user":
            lines.append(f"Customer: {content}")
        elif role == "assistant":
            if content and content.strip():
                lines.append(f"Agent: {content.strip()}")
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function", tc) if isinstance(tc, Mapping) else {}
                args = fn.get("arguments", {})
                args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                lines.append(f"Agent calls {fn.get('name')}({args_text})")
        elif role == "tool":
            lines.append(f"Result: {_short(content, limit)}")
        elif role not in ("system", None):
            raise ValueError(f"unknown role {role!r}")
    return lines


def _render_sharegpt(turns: Sequence[Any], limit: int) -> list[str]:
    lines = []
    for t in turns:
        if not isinstance(t, Mapping):
            raise ValueError("a conversation turn is not an object")
        who, value = t.get("from"), str(t.get("value", ""))
        if who in _SHAREGPT_ROLES:
            lines.append(f"{_SHAREGPT_ROLES[who]}: {value}")
        elif who == "function_call":
            lines.append(f"Agent calls: {value}")
        elif who == "observation":
            lines.append(f"Result: {_short(value, limit)}")
        elif who != "system":
            raise ValueError(f"unknown ShareGPT speaker {who!r}")
    return lines


def render_example(record: Any, *, max_result_chars: int = 300) -> str | None:
    """Render one example record as a transcript.

    Args:
        record: An episode/messages object, a ShareGPT record or a list of messages.
        max_result_chars: Tool results are shortened to this many characters.

    Returns:
        The transcript, or None for a failed episode (``reward`` < 1).

    Raises:
        ValueError: When the record has none of the supported forms.

    """
    if isinstance(record, list):
        lines = _render_openai(record, max_result_chars)
    elif isinstance(record, Mapping):
        reward = record.get("reward")
        if isinstance(reward, int | float) and reward < 1:
            return None
        if isinstance(record.get("messages"), list):
            lines = _render_openai(record["messages"], max_result_chars)
        elif isinstance(record.get("conversations"), list):
            lines = _render_sharegpt(record["conversations"], max_result_chars)
        else:
            raise ValueError("expected 'messages' or 'conversations'")
    else:
        raise ValueError(f"expected an object or a list, got {type(record).__name__}")
    if not lines:
        raise ValueError("the dialogue is empty")
    return "\n".join(lines)


def load_examples(path: str | Path, *, only_passed: bool = True, max_result_chars: int = 300) -> tuple[str, ...]:
    """Load and render example dialogues from a JSONL file.

    Args:
        path: The file.
        only_passed: Skip records whose ``reward`` is below 1.
        max_result_chars: Tool results are shortened to this many characters.

    Returns:
        The rendered transcripts.

    Raises:
        DataFileError: When the file is missing, a line is not valid JSON or not a dialogue, or no
            example is left.

    """
    path = Path(path)
    examples = []
    for number, record in enumerate(read_jsonl(path), start=1):
        try:
            if not only_passed and isinstance(record, Mapping):
                record = {k: v for k, v in record.items() if k != "reward"}
            text = render_example(record, max_result_chars=max_result_chars)
        except ValueError as exc:
            raise DataFileError(f"{path}: record {number} is not a dialogue ({exc})") from None
        if text is not None:
            examples.append(text)
    if not examples:
        raise DataFileError(f"{path}: no usable example dialogues")
    return tuple(examples)


class FewShotAgent(ToolCallingAgent):
    """A function-calling agent that shows k example dialogues in its system prompt.

    With a seed in the context, the k examples are drawn at random (reproducibly) per episode;
    without one, the first k are used.

    Args:
        client: The model client.
        examples: A JSONL path (see the module docstring) or already rendered transcripts.
        k: Number of examples per prompt.
        name: Name recorded on episodes.
        temperature: Sampling temperature.
        nudge: System note added after a tool result; None disables it.
        empty_reply: Text used when the model returns nothing.

    Raises:
        ValueError: When ``k`` < 1 or no examples are given.
        DataFileError: When the examples file is unusable.

    """

    def __init__(
        self,
        client: LLMClient,
        examples: str | Path | Sequence[str],
        *,
        k: int = 3,
        name: str = "few_shot",
        temperature: float | None = None,
        nudge: str | None = PLAIN_LANGUAGE_NUDGE,
        empty_reply: str = EMPTY_REPLY,
    ) -> None:
        super().__init__(client, name=name, temperature=temperature, nudge=nudge, empty_reply=empty_reply)
        if k < 1:
            raise ValueError("k must be >= 1")
        self.source = str(examples) if isinstance(examples, str | Path) else "<inline>"
        self.examples = load_examples(examples) if isinstance(examples, str | Path) else tuple(examples)
        if not self.examples:
            raise ValueError("FewShotAgent needs at least one example")
        self.k = k

    def public(self) -> dict[str, Any]:
        """Settings to record on episodes (no secrets)."""
        return super().public() | {"k": self.k, "examples": self.source, "num_examples": len(self.examples)}

    def pick(self, seed: int | None) -> tuple[str, ...]:
        """The examples shown for an episode seed."""
        k = min(self.k, len(self.examples))
        if seed is None:
            return self.examples[:k]
        return tuple(random.Random(seed).sample(self.examples, k))

    def system_prompt(self, context: AgentContext) -> str:
        """The policy followed by the chosen example dialogues."""
        shots = "\n\n".join(f"## Example {i}\n{text}" for i, text in enumerate(self.pick(context.seed), start=1))
        return (
            f"{context.system_prompt}\n\n# Example conversations\n\n"
            "These past conversations show how requests like the customer's were handled. "
            "They are examples only: the customers, ids and data in them are not the current ones.\n\n"
            f"{shots}"
        )
