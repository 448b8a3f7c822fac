"""The LLM review committee: N reviewers score a blueprint 0/1 per criterion; per-criterion majority vote.

Reviewers see the instruction, actions, outputs, the descriptions of the tools used and the DB diff the
actions make. A reply that cannot be read as a review counts as an abstention and is recorded as such,
so one broken reviewer neither accepts nor sinks a blueprint on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from apigen_envs.datagen.proposers import JsonMode, load_prompt, response_format
from apigen_envs.errors import LLMError
from apigen_envs.llm import LLMClient, LLMRequest, scan_json, undouble_braces
from apigen_envs.task import Task
from apigen_envs.tools import ToolSet

CRITERIA: tuple[str, ...] = ("correctness", "completeness", "satisfaction", "creativity")
"""Rubric criteria: actions correct and within policy; instruction complete, unambiguous and consistent with
the actions; outputs correct; non-trivial."""


@dataclass(frozen=True, slots=True)
class Review:
    """One reviewer's verdict.

    Attributes:
        reviewer: Index of the reviewer.
        scores: Criterion -> 0 or 1 (empty for an abstention).
        comment: The reviewer's explanation.
        abstained: True when the reply could not be read as a review.
        error: Why it was an abstention.
        model: The reviewer's model, when known.

    """

    reviewer: int
    scores: dict[str, int] = field(default_factory=dict)
    comment: str = ""
    abstained: bool = False
    error: str | None = None
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for provenance."""
        out: dict[str, Any] = {"reviewer": self.reviewer, "scores": self.scores, "comment": self.comment}
        if self.model is not None:
            out["model"] = self.model
        if self.abstained:
            out["abstained"] = True
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """The committee's decision.

    Attributes:
        accepted: Whether the voted average clears the threshold.
        score: Mean of the voted criteria (0..1).
        votes: Criterion -> voted 0/1.
        disagreement: Criterion -> share of valid reviewers in the minority.
        reviews: Every review, abstentions included.
        reasons: Failed criteria with the reviewers' comments (for feedback).

    """

    accepted: bool
    score: float
    votes: dict[str, int]
    disagreement: dict[str, float]
    reviews: tuple[Review, ...]
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for provenance."""
        return {
            "accepted": self.accepted,
            "score": round(self.score, 4),
            "votes": self.votes,
            "disagreement": {k: round(v, 4) for k, v in self.disagreement.items()},
            "abstentions": sum(r.abstained for r in self.reviews),
            "reviews": [r.to_dict() for r in self.reviews],
        }


_TRUTHY = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, "pass": 1, "fail": 0}


def _score(value: Any) -> int | None:
    """0/1 from what small models send for a score (1, "1", true, "yes", 1.0); None if unreadable."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return _TRUTHY.get(value.strip().lower())
    return None


def parse_review(text: str | None, reviewer: int, model: str | None = None) -> Review:
    """Read a reviewer's reply: the last JSON object with a ``scores`` mapping of 0/1 per criterion.

    Lenient about what small models send: scores as ``"1"``, ``true`` or ``"yes"``, the criteria at the
    top level instead of under ``scores``, extra keys; fenced JSON and doubled braces.

    Args:
        text: The reply.
        reviewer: The reviewer's index.
        model: The reviewer's model (recorded).

    Returns:
        The review, or an abstention saying what was wrong.

    """
    if not text or not text.strip():
        return Review(reviewer, abstained=True, error="empty reply", model=model)
    objects = [v for v, _, _ in scan_json(text) if isinstance(v, dict)] or [
        v for v, _, _ in scan_json(undouble_braces(text)) if isinstance(v, dict)
    ]
    found = [v["scores"] for v in objects if isinstance(v.get("scores"), dict)]
    found += [v for v in objects if all(c in v for c in CRITERIA)]
    if not found:
        return Review(reviewer, abstained=True, error="no JSON object with a 'scores' mapping", model=model)
    raw = found[-1]
    scores: dict[str, int] = {}
    for name in CRITERIA:
        value = _score(raw.get(name))
        if value is None:
            return Review(
                reviewer,
                abstained=True,
                error=f"criterion {name!r} must be 0 or 1, got {raw.get(name)!r}",
                model=model,
            )
        scores[name] = value
    holder = next((v for v in reversed(objects) if v.get("scores") is raw or v is raw), {})
    comment = holder.get("comment") or holder.get("reasoning") or ""
    return Review(reviewer, scores, str(comment), model=model)


REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "comment": {"type": "string"},
        "scores": {
            "type": "object",
            "properties": {c: {"type": "integer", "enum": [0, 1]} for c in CRITERIA},
            "required": list(CRITERIA),
            "additionalProperties": False,
        },
    },
    "required": ["comment", "scores"],
    "additionalProperties": False,
}
"""The JSON schema of a review (sent as ``response_format`` where the server enforces schemas)."""


def vote(reviews: Sequence[Review], threshold: float) -> Verdict:
    """Per-criterion majority vote over valid reviews; ties count as a fail.

    Args:
        reviews: All reviews.
        threshold: Minimum voted average (0..1) to accept.

    Returns:
        The verdict. With no valid review at all, the blueprint is rejected.

    """
    valid = [r for r in reviews if not r.abstained]
    if not valid:
        return Verdict(False, 0.0, {}, {}, tuple(reviews), ("no valid review: every reviewer abstained",))
    votes: dict[str, int] = {}
    disagreement: dict[str, float] = {}
    for name in CRITERIA:
        ones = sum(r.scores[name] for r in valid)
        votes[name] = 1 if ones * 2 > len(valid) else 0
        disagreement[name] = min(ones, len(valid) - ones) / len(valid)
    score = sum(votes.values()) / len(CRITERIA)
    reasons = []
    for name in CRITERIA:
        if not votes[name]:
            comments = "; ".join(r.comment for r in valid if not r.scores[name] and r.comment)
            reasons.append(f"{name} voted 0" + (f": {comments}" if comments else ""))
    accepted = score >= threshold
    return Verdict(accepted, score, votes, disagreement, tuple(reviews), tuple(reasons) if not accepted else ())


def review_prompt(task: Task, tools: ToolSet, diff: list[dict[str, Any]], diff_chars: int = 12000) -> str:
    """The user message a reviewer gets: the blueprint, the tools used and the DB diff.

    Args:
        task: The blueprint.
        tools: The domain's tools.
        diff: Changed rows with before/after values.
        diff_chars: Length cap of the diff's JSON.

    Returns:
        Markdown text.

    """
    used = []
    for name in dict.fromkeys(a.name for a in task.actions):
        if name in tools:
            used.append({"name": name, "description": tools[name].description})
    blueprint = {
        "instruction": task.instruction,
        "actions": [a.model_dump() for a in task.actions],
        "outputs": list(task.outputs),
    }
    return (
        "## Blueprint\n"
        + json.dumps(blueprint, ensure_ascii=False, indent=1)
        + "\n\n## Tools used\n"
        + json.dumps(used, ensure_ascii=False, indent=1)
        + "\n\n## DB changes made by the actions (before -> after)\n"
        + json.dumps(diff, ensure_ascii=False)[:diff_chars]
    )


def _model_name(client: Any) -> str | None:
    return getattr(getattr(client, "config", None), "model", None)


class Committee:
    """N LLM reviewers and a majority vote.

    Reviewers are a list of clients (one per member: several models make a real committee) or one client
    asked ``size`` times with different seeds. :meth:`areview` asks every member concurrently.

    Args:
        clients: One client per reviewer, or one client sampled ``size`` times with different seeds.
        size: Number of reviewers when a single client is given.
        threshold: Minimum voted average to accept (default 3/4).
        temperature: Sampling temperature of the reviewers.
        policy: The domain policy shown to reviewers.
        system_prompt: Overrides the shipped ``reviewer.md``.
        json_mode: How to ask the server for JSON (see :data:`~apigen_envs.datagen.proposers.JsonMode`).
        diff_chars: Length cap of the DB diff shown (keeps prompts small for local models).
        models: Names recorded for each member (default: each client's configured model).

    """

    def __init__(
        self,
        clients: LLMClient | Sequence[LLMClient],
        size: int = 3,
        threshold: float = 0.75,
        temperature: float = 0.7,
        policy: str = "",
        system_prompt: str | None = None,
        *,
        json_mode: JsonMode = "off",
        diff_chars: int = 12000,
        models: Sequence[str | None] | None = None,
    ) -> None:
        if isinstance(clients, Sequence):
            if not clients:
                raise ValueError("a committee needs at least one reviewer")
            self.clients: tuple[LLMClient, ...] = tuple(clients)
        else:
            if size < 1:
                raise ValueError(f"committee size must be >= 1, got {size}")
            self.clients = (clients,) * size
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if models is not None and len(models) != len(self.clients):
            raise ValueError(f"{len(models)} model names for {len(self.clients)} reviewers")
        self.threshold = threshold
        self.temperature = temperature
        base = system_prompt or load_prompt("reviewer")
        # Policy first, as in the proposer's system prompt: a prompt cache reuses the shared prefix.
        self.system_prompt = (f"# Domain policy\n\n{policy}\n\n" if policy else "") + base
        self.json_mode: JsonMode = json_mode
        self.diff_chars = diff_chars
        self.models: tuple[str | None, ...] = (
            tuple(models) if models is not None else tuple(map(_model_name, self.clients))
        )

    @property
    def size(self) -> int:
        """Number of reviewers."""
        return len(self.clients)

    def describe(self) -> str:
        """Size, members and threshold, for statistics."""
        names = sorted({m or "?" for m in self.models})
        return f"{self.size} reviewers ({', '.join(names)}), threshold {self.threshold}"

    def _requests(self, task: Task, tools: ToolSet, diff: list[dict[str, Any]], seed: int) -> list[LLMRequest]:
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": review_prompt(task, tools, diff, self.diff_chars)},
        ]
        fmt = response_format(REVIEW_SCHEMA, self.json_mode, "review")
        return [
            LLMRequest(messages, seed=seed + i, temperature=self.temperature, response_format=fmt)
            for i in range(self.size)
        ]

    def review(self, task: Task, tools: ToolSet, diff: list[dict[str, Any]], seed: int = 0) -> Verdict:
        """Collect every reviewer's scores (one after another) and vote.

        Args:
            task: The blueprint.
            tools: The domain's tools.
            diff: The DB diff of the gold actions.
            seed: Base seed; reviewer ``i`` uses ``seed + i``.

        Returns:
            The verdict.

        """
        reviews = []
        for i, (client, request) in enumerate(zip(self.clients, self._requests(task, tools, diff, seed), strict=True)):
            try:
                completion = client.complete(request)
            except LLMError as exc:
                reviews.append(Review(i, abstained=True, error=f"LLM call failed: {exc}", model=self.models[i]))
                continue
            reviews.append(parse_review(completion.message.content, i, self.models[i]))
        return vote(reviews, self.threshold)

    async def areview(
        self,
        task: Task,
        tools: ToolSet,
        diff: list[dict[str, Any]],
        seed: int = 0,
        limit: asyncio.Semaphore | None = None,
    ) -> Verdict:
        """Async :meth:`review`: every member is asked at once (bounded by ``limit`` if given).

        Args:
            task: The blueprint.
            tools: The domain's tools.
            diff: The DB diff of the gold actions.
            seed: Base seed; reviewer ``i`` uses ``seed + i``.
            limit: A semaphore shared with the rest of the run, bounding requests in flight.

        Returns:
            The verdict.

        """

        async def ask(i: int, client: LLMClient, request: LLMRequest) -> Review:
            try:
                if limit is None:
                    completion = await client.acomplete(request)
                else:
                    async with limit:
                        completion = await client.acomplete(request)
            except LLMError as exc:
                return Review(i, abstained=True, error=f"LLM call failed: {exc}", model=self.models[i])
            return parse_review(completion.message.content, i, self.models[i])

        requests = self._requests(task, tools, diff, seed)
        reviews = await asyncio.gather(
            *(ask(i, c, r) for i, (c, r) in enumerate(zip(self.clients, requests, strict=True)))
        )
        return vote(list(reviews), self.threshold)
