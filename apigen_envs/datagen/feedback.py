"""Feedback for the proposer: why the last attempt was rejected, as a short list it can act on.

Rule-stage failures are passed on verbatim (they are already specific). Committee rejections are summed
up from the failed criteria and the reviewers' comments, or by an LLM summariser when one is configured,
as the paper does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from apigen_envs.datagen.committee import Verdict
from apigen_envs.datagen.proposers import load_prompt
from apigen_envs.datagen.validate import StageResult
from apigen_envs.errors import LLMError
from apigen_envs.llm import LLMClient
from apigen_envs.task import Task

_MAX_REASONS = 8


def stage_feedback(result: StageResult) -> str:
    """Feedback text for a failed rule stage.

    Args:
        result: The failed stage.

    Returns:
        One line per reason, headed by the stage name.

    """
    reasons = list(result.reasons[:_MAX_REASONS])
    more = len(result.reasons) - len(reasons)
    lines = [f"Rejected at the {result.stage} check:"] + [f"- {r}" for r in reasons]
    if more > 0:
        lines.append(f"- ... and {more} more")
    return "\n".join(lines)


def _summariser_messages(verdict: Verdict, diff: Sequence[dict[str, Any]], task: Task | None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {}
    if task is not None:
        # The paper's summariser reads the blueprint with the reviews: comments alone lose the context.
        body["blueprint"] = {
            "instruction": task.instruction,
            "actions": [a.model_dump() for a in task.actions],
            "outputs": list(task.outputs),
        }
    body |= {"verdict": verdict.to_dict(), "diff": list(diff)[:20]}
    return [
        {"role": "system", "content": load_prompt("summariser")},
        {"role": "user", "content": json.dumps(body, ensure_ascii=False, default=str)[:12000]},
    ]


def _plain(verdict: Verdict) -> str:
    return "Rejected by the review committee:\n" + "\n".join(f"- {r}" for r in verdict.reasons[:_MAX_REASONS])


def _summary(text: str | None, plain: str) -> str:
    return f"Rejected by the review committee. Summary of the reviews:\n{text.strip()}" if text else plain


def review_feedback(
    verdict: Verdict,
    diff: Sequence[dict[str, Any]] = (),
    summariser: LLMClient | None = None,
    seed: int | None = None,
    task: Task | None = None,
) -> str:
    """Feedback text for a committee rejection.

    Args:
        verdict: The committee's verdict.
        diff: The DB diff (given to the summariser).
        summariser: An LLM that condenses the reviews; None sums them up without a model.
        seed: Seed for the summariser.
        task: The blueprint (given to the summariser with the reviews).

    Returns:
        The feedback (the plain summary when the summariser fails).

    """
    plain = _plain(verdict)
    if summariser is None:
        return plain
    try:
        text = summariser.complete(
            _summariser_messages(verdict, diff, task), seed=seed, temperature=0.0
        ).message.content
    except LLMError:
        return plain
    return _summary(text, plain)


async def areview_feedback(
    verdict: Verdict,
    diff: Sequence[dict[str, Any]] = (),
    summariser: LLMClient | None = None,
    seed: int | None = None,
    task: Task | None = None,
) -> str:
    """Async :func:`review_feedback`."""
    plain = _plain(verdict)
    if summariser is None:
        return plain
    try:
        completion = await summariser.acomplete(_summariser_messages(verdict, diff, task), seed=seed, temperature=0.0)
    except LLMError:
        return plain
    return _summary(completion.message.content, plain)
