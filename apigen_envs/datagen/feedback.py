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


def review_feedback(
    verdict: Verdict,
    diff: Sequence[dict[str, Any]] = (),
    summariser: LLMClient | None = None,
    seed: int | None = None,
) -> str:
    """Feedback text for a committee rejection.

    Args:
        verdict: The committee's verdict.
        diff: The DB diff (given to the summariser).
        summariser: An LLM that condenses the reviews; None sums them up without a model.
        seed: Seed for the summariser.

    Returns:
        The feedback.

    """
    plain = "Rejected by the review committee:\n" + "\n".join(f"- {r}" for r in verdict.reasons[:_MAX_REASONS])
    if summariser is None:
        return plain
    messages = [
        {"role": "system", "content": load_prompt("summariser")},
        {
            "role": "user",
            "content": json.dumps(
                {"verdict": verdict.to_dict(), "diff": list(diff)[:20]}, ensure_ascii=False, default=str
            )[:12000],
        },
    ]
    try:
        text = summariser.complete(messages, seed=seed, temperature=0.0).message.content
    except LLMError:
        return plain
    return f"Rejected by the review committee. Summary of the reviews:\n{text.strip()}" if text else plain
