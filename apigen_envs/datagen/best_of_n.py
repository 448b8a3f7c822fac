"""User-simulator stabilisation: best-of-N candidate turns chosen by a critic (APIGen-MT phase 2).

A simulated customer driven by a sampled LLM drifts: it invents an order number, reveals the whole task
at once, or says goodbye before the agent has acted. APIGen-MT reduces this by sampling several candidate
turns and letting a judge pick the one most faithful to the task. :class:`BestOfNUser` wraps any
:class:`~apigen_envs.protocols.UserSimulator`:

1. sample ``n`` candidate turns from the base simulator with ``n`` different seeds;
2. score each 0-10 with a critic against the task (consistency with the instruction, no invented facts,
   no premature stop, one detail at a time);
3. drop candidates the critic marks inconsistent; if all are dropped, sample a fresh set (up to
   ``max_rounds`` sets), and if every set fails, take the best-scoring candidate anyway and record that;
4. return the best remaining candidate; ties go to the lowest candidate index (the lowest seed offset),
   so the choice is deterministic given the seeds.

Two critics ship: :class:`LLMCritic` (a judge model answering strict JSON; unreadable output scores 0 and is
recorded as malformed) and :class:`RuleCritic`, a model-free critic for offline runs that checks the facts
in a turn (ids, numbers, emails) against the scenario and the conversation. Token usage of all candidate
and critic calls is summed onto the returned turn. Each decision is kept as a :class:`BestOfNChoice` in a
bounded history on the wrapper and passed to an optional callback.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from apigen_envs.llm import LLMClient, LLMRequest, scan_json
from apigen_envs.messages import AssistantMessage, Message, Usage, UserMessage
from apigen_envs.protocols import UserSimulator, UserTurn
from apigen_envs.simulators.llm_user import scenario_text
from apigen_envs.task import Task

SEED_STRIDE = 7919
"""Offset between candidate seeds (a prime, so candidate seeds of neighbouring turns rarely coincide)."""

CRITIC_SYSTEM_PROMPT = """\
You check one message written by a simulated customer who is talking to a customer-service agent. The \
customer has a fixed task (below) and must play it faithfully. Judge the proposed next customer message:

1. Consistency: it agrees with the task. It asks only for what the task asks for and never contradicts it.
2. No invented facts: every name, id, number, date, email or address in it appears in the task or earlier \
in the conversation.
3. No premature stop: a message marked [ENDS CONVERSATION] is acceptable only when the agent has already \
done everything the task asks for, or the task says to give up at this point.
4. One detail at a time: it gives only what the agent's latest message needs, instead of the whole task at \
once.
5. Natural: short and plain, like a real customer.

Answer with one JSON object and nothing else:
{"consistent": true or false, "score": integer from 0 (unusable) to 10 (perfect), "reason": "one short sentence"}
Set "consistent" to false when the message contradicts the task or invents a fact."""
"""The LLM critic's instructions (our own wording)."""

_SCORE_RE = re.compile(r"\bscore\b\W{0,3}(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Tokens with a digit: order ids (#W123), account ids (acc_1001), amounts (120.50), dates, zip codes.
_CODE_RE = re.compile(r"#?[A-Za-z_]*\d[\w\-./]*")


@dataclass(frozen=True, slots=True)
class CriticVerdict:
    """A critic's judgement of one candidate turn.

    Attributes:
        score: 0 (unusable) to 10 (perfect).
        consistent: False when the turn contradicts the task or invents facts (the turn is rejected).
        reason: Why, in a few words.
        malformed: True when the critic's output could not be read (score is then 0).
        raw: The critic's raw output, kept for malformed verdicts.
        usage: Tokens spent by the critic.

    """

    score: float
    consistent: bool = True
    reason: str = ""
    malformed: bool = False
    raw: str | None = None
    usage: Usage | None = None


@runtime_checkable
class TurnCritic(Protocol):
    """Scores a candidate user turn against the task."""

    def judge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Judge one candidate."""
        ...

    async def ajudge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Async twin of :meth:`judge`."""
        ...


def _transcript(conversation: Sequence[Message]) -> str:
    lines = []
    for msg in conversation:
        if isinstance(msg, UserMessage) and msg.content.strip():
            lines.append(f"Customer: {msg.content.strip()}")
        elif isinstance(msg, AssistantMessage) and msg.content and msg.content.strip():
            lines.append(f"Agent: {msg.content.strip()}")
    return "\n".join(lines) if lines else "(the conversation has not started; this is the opening message)"


def _candidate_text(candidate: UserTurn) -> str:
    text = candidate.content.strip() or "(empty message)"
    if candidate.stop == "stop":
        text += "\n[ENDS CONVERSATION]"
    elif candidate.stop is not None:
        text += f"\n[ASKS FOR {candidate.stop.upper().replace('_', ' ')}]"
    return text


def parse_verdict(text: str | None) -> CriticVerdict:
    """Read a critic's reply: a JSON object with ``score`` (0-10), ``consistent`` and ``reason``.

    A ``Score: 7/10`` line is accepted when no JSON is found. Anything else (no score, a score outside
    0-10, a non-boolean ``consistent``) is malformed: score 0, ``malformed=True``, raw text kept.

    Args:
        text: The critic's output.

    Returns:
        The verdict (without usage).

    """
    raw = text or ""

    def malformed(why: str) -> CriticVerdict:
        return CriticVerdict(
            score=0.0, consistent=True, reason=f"malformed critic output: {why}", malformed=True, raw=raw
        )

    objects = [v for v, _, _ in scan_json(raw) if isinstance(v, dict) and "score" in v]
    if objects:
        data = objects[-1]
        score = data.get("score")
        if isinstance(score, str):
            try:
                score = float(score.strip())
            except ValueError:
                return malformed(f"score {data.get('score')!r} is not a number")
        if isinstance(score, bool) or not isinstance(score, int | float):
            return malformed(f"score {data.get('score')!r} is not a number")
        if not 0 <= score <= 10:
            return malformed(f"score {score} is outside 0-10")
        consistent = data.get("consistent", True)
        if isinstance(consistent, str) and consistent.strip().lower() in ("true", "false", "yes", "no"):
            consistent = consistent.strip().lower() in ("true", "yes")
        if not isinstance(consistent, bool):
            return malformed(f"'consistent' is {consistent!r}, not a boolean")
        return CriticVerdict(score=float(score), consistent=consistent, reason=str(data.get("reason", ""))[:500])
    match = _SCORE_RE.search(raw)
    if match is not None and float(match.group(1)) <= 10:
        inconsistent = re.search(r"\binconsistent\b", raw, re.IGNORECASE) is not None
        return CriticVerdict(score=float(match.group(1)), consistent=not inconsistent, reason=raw.strip()[:500])
    return malformed("no score found")


class LLMCritic:
    """A judge model scoring candidate turns (see :data:`CRITIC_SYSTEM_PROMPT`).

    Args:
        client: The judge's LLM client.
        temperature: Sampling temperature for the judge (0 for stable verdicts).
        json_mode: Ask the server for a JSON object (``response_format``); turn off for servers without it.
        system_prompt: Replaces the built-in instructions.

    """

    def __init__(
        self,
        client: LLMClient,
        *,
        temperature: float | None = 0.0,
        json_mode: bool = True,
        system_prompt: str = CRITIC_SYSTEM_PROMPT,
    ) -> None:
        self.client = client
        self.temperature = temperature
        self.json_mode = json_mode
        self.system_prompt = system_prompt

    def __repr__(self) -> str:
        return f"LLMCritic(client={self.client!r})"

    def request(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> LLMRequest:
        """The judge request for one candidate."""
        body = (
            f"{scenario_text(task)}\n\n# Conversation so far\n{_transcript(conversation)}\n\n"
            f"# Proposed next customer message\n{_candidate_text(candidate)}"
        )
        return LLMRequest(
            [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": body}],
            seed=seed,
            temperature=self.temperature,
            response_format={"type": "json_object"} if self.json_mode else None,
        )

    def judge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Score one candidate (raises LLMError when the judge's server fails)."""
        req = self.request(task, conversation, candidate, seed=seed)
        completion = self.client.complete(req)
        verdict = parse_verdict(completion.message.content)
        return _with_usage(verdict, completion.usage)

    async def ajudge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Async twin of :meth:`judge`."""
        req = self.request(task, conversation, candidate, seed=seed)
        completion = await self.client.acomplete(req)
        verdict = parse_verdict(completion.message.content)
        return _with_usage(verdict, completion.usage)


def _with_usage(verdict: CriticVerdict, usage: Usage) -> CriticVerdict:
    return CriticVerdict(verdict.score, verdict.consistent, verdict.reason, verdict.malformed, verdict.raw, usage)


def _canonical(token: str) -> str:
    token = token.lower().strip(".,;:!?)(\"'").lstrip("$#")
    number = token.replace(",", "")
    try:
        value = float(number)
    except ValueError:
        return token
    return f"{value:g}" if value.is_integer() or len(number) < 12 else number


def facts_in(text: str) -> set[str]:
    """The checkable facts in a text: emails and tokens with a digit (ids, amounts, dates), canonicalised.

    Amounts are compared as numbers (``$120.00`` equals ``120``); single digits are left out, as customers
    say "2 items" for "two items".

    Args:
        text: Any text.

    Returns:
        The canonical fact tokens.

    """
    found = {m.group(0).lower() for m in _EMAIL_RE.finditer(text)}
    stripped = _EMAIL_RE.sub(" ", text)
    for match in _CODE_RE.finditer(stripped.replace(",", "")):
        token = _canonical(match.group(0))
        if token and not (token.isdigit() and len(token) == 1):
            found.add(token)
    return found


@dataclass(frozen=True)
class RuleCritic:
    """A model-free critic for offline runs.

    Rules (each violation lowers the score from 10): facts in the turn (ids, amounts, emails) that appear
    neither in the scenario nor in the conversation are invented (the turn is inconsistent); stopping before
    the agent has called any tool on a task with gold actions is premature; an empty line that does not
    end the conversation is useless; revealing more than ``max_new_facts`` new facts at once, or a very
    long line, breaks gradual disclosure.

    Attributes:
        max_new_facts: New facts the customer may reveal in one turn without penalty.
        max_words: Words per turn before a length penalty.

    """

    max_new_facts: int = 2
    max_words: int = 80

    def judge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Score one candidate (deterministic; ``seed`` is ignored)."""
        s = task.scenario
        scenario = " ".join(
            v for v in (s.instruction, s.persona, s.reason_for_call, s.known_info, s.task_instructions) if v
        )
        said_by_agent = " ".join(m.content or "" for m in conversation if isinstance(m, AssistantMessage))
        said_by_user = " ".join(m.content for m in conversation if isinstance(m, UserMessage))
        known = facts_in(scenario) | facts_in(said_by_agent) | facts_in(said_by_user)
        mine = facts_in(candidate.content)
        invented = sorted(mine - known)
        new = mine - facts_in(said_by_user)
        score, reasons = 10.0, []
        if invented:
            score -= 4 * len(invented)
            reasons.append(f"invented facts: {', '.join(invented)}")
        if not candidate.content.strip() and candidate.stop is None:
            score = 0.0
            reasons.append("empty message")
        if candidate.stop == "stop":
            agent_acted = any(isinstance(m, AssistantMessage) and m.tool_calls for m in conversation)
            if not any(isinstance(m, AssistantMessage) for m in conversation):
                score = 0.0
                reasons.append("stops before the conversation started")
            elif task.actions and not agent_acted:
                score -= 6
                reasons.append("stops before the agent has acted")
        if len(new) > self.max_new_facts:
            score -= 2 * (len(new) - self.max_new_facts)
            reasons.append(f"reveals {len(new)} new details at once")
        if len(candidate.content.split()) > self.max_words:
            score -= 1
            reasons.append("too long")
        return CriticVerdict(
            score=max(0.0, min(10.0, score)), consistent=not invented, reason="; ".join(reasons) or "ok"
        )

    async def ajudge(
        self, task: Task, conversation: Sequence[Message], candidate: UserTurn, *, seed: int | None = None
    ) -> CriticVerdict:
        """Async twin of :meth:`judge`."""
        return self.judge(task, conversation, candidate, seed=seed)


# ---------------------------------------------------------------------------------------------- wrapper
@dataclass(frozen=True, slots=True)
class Candidate:
    """One sampled candidate with its verdict.

    Attributes:
        index: Position in sampling order (0-based across rounds).
        seed: The seed it was sampled with.
        turn: The candidate turn.
        verdict: The critic's verdict.

    """

    index: int
    seed: int | None
    turn: UserTurn
    verdict: CriticVerdict


@dataclass(frozen=True, slots=True)
class BestOfNChoice:
    """The record of one best-of-N decision.

    Attributes:
        task_id: The task.
        position: Number of messages in the conversation when the turn was chosen.
        candidates: All candidates, in sampling order.
        chosen: Index of the returned candidate.
        rounds: Candidate sets sampled.
        all_rejected: True when every candidate was inconsistent and the best one was used anyway.

    """

    task_id: str
    position: int
    candidates: tuple[Candidate, ...]
    chosen: int
    rounds: int
    all_rejected: bool

    @property
    def malformed(self) -> int:
        """How many critic outputs could not be read."""
        return sum(1 for c in self.candidates if c.verdict.malformed)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for logs)."""
        return {
            "task_id": self.task_id,
            "position": self.position,
            "chosen": self.chosen,
            "rounds": self.rounds,
            "all_rejected": self.all_rejected,
            "candidates": [
                {
                    "index": c.index,
                    "seed": c.seed,
                    "content": c.turn.content,
                    "stop": c.turn.stop,
                    "score": c.verdict.score,
                    "consistent": c.verdict.consistent,
                    "malformed": c.verdict.malformed,
                    "reason": c.verdict.reason,
                }
                for c in self.candidates
            ],
        }


def candidate_seed(seed: int | None, index: int) -> int | None:
    """The seed of candidate ``index``: candidate 0 keeps the turn's seed, so ``n=1`` equals the base user."""
    if index == 0:
        return seed
    return (seed or 0) + index * SEED_STRIDE


def pick(candidates: Sequence[Candidate]) -> tuple[Candidate, bool]:
    """The best candidate: highest score among the consistent ones, ties to the lowest index.

    Returns:
        ``(candidate, all_rejected)``; when no candidate is consistent the best of all is returned.

    """
    if not candidates:
        raise ValueError("no candidates to pick from")
    pool = [c for c in candidates if c.verdict.consistent]
    all_rejected = not pool
    best = max(pool or candidates, key=lambda c: (c.verdict.score, -c.index))
    return best, all_rejected


class BestOfNUser:
    """A :class:`~apigen_envs.protocols.UserSimulator` that returns the best of ``n`` candidate turns.

    Args:
        base: The simulator sampling candidates (an LLMUser at temperature > 0, typically).
        critic: A :class:`TurnCritic`, or an LLM client (wrapped in :class:`LLMCritic`).
        n: Candidates per set.
        max_rounds: Candidate sets to sample while every candidate is rejected as inconsistent.
        name: Name recorded on episodes.
        history_size: Decisions kept in :attr:`history` (oldest dropped first).
        on_choice: Called with every :class:`BestOfNChoice`.

    Raises:
        ValueError: For ``n < 1``, ``max_rounds < 1`` or a critic of the wrong kind.

    """

    def __init__(
        self,
        base: UserSimulator,
        critic: TurnCritic | LLMClient,
        n: int = 4,
        *,
        max_rounds: int = 2,
        name: str | None = None,
        history_size: int = 1000,
        on_choice: Callable[[BestOfNChoice], None] | None = None,
    ) -> None:
        if n < 1 or max_rounds < 1:
            raise ValueError("n and max_rounds must be >= 1")
        if isinstance(critic, TurnCritic):
            self.critic: TurnCritic = critic
        elif isinstance(critic, LLMClient):
            self.critic = LLMCritic(critic)
        else:
            raise ValueError(f"critic must be a TurnCritic or an LLMClient, got {type(critic).__name__}")
        self.base = base
        self.n = n
        self.max_rounds = max_rounds
        self.name = name or f"best_of_{n}({getattr(base, 'name', type(base).__name__)})"
        self.on_choice = on_choice
        self.history: deque[BestOfNChoice] = deque(maxlen=history_size)

    def __repr__(self) -> str:
        return f"BestOfNUser(base={self.base!r}, critic={self.critic!r}, n={self.n})"

    def public(self) -> dict[str, Any]:
        """Settings to record on episodes."""
        base = self.base.public() if hasattr(self.base, "public") else {"name": getattr(self.base, "name", None)}
        return {
            "name": self.name,
            "strategy": "best_of_n",
            "n": self.n,
            "max_rounds": self.max_rounds,
            "critic": type(self.critic).__name__,
            "base": base,
        }

    # ------------------------------------------------------------------ protocol
    def respond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """The best of ``n`` candidate turns (see the module docstring).

        Raises:
            LLMError: When the base simulator or the critic's server fails.

        """
        candidates: list[Candidate] = []
        for round_ in range(self.max_rounds):
            start = round_ * self.n
            turns = [
                (i, candidate_seed(seed, i), self.base.respond(task, conversation, seed=candidate_seed(seed, i)))
                for i in range(start, start + self.n)
            ]
            verdicts = self._judge_unique(
                [t for _, _, t in turns], lambda turn: self.critic.judge(task, conversation, turn, seed=seed)
            )
            candidates += [Candidate(i, s, t, v) for (i, s, t), v in zip(turns, verdicts, strict=True)]
            if any(v.consistent for v in verdicts):
                break
        return self._finish(task, conversation, candidates)

    async def arespond(self, task: Task, conversation: Sequence[Message], *, seed: int | None = None) -> UserTurn:
        """Async twin of :meth:`respond`: candidates and verdicts of one set are requested concurrently."""
        candidates: list[Candidate] = []
        for round_ in range(self.max_rounds):
            indices = range(round_ * self.n, (round_ + 1) * self.n)
            seeds = [candidate_seed(seed, i) for i in indices]
            turns = await asyncio.gather(*(self.base.arespond(task, conversation, seed=s) for s in seeds))
            unique = _unique(turns)
            judged = await asyncio.gather(
                *(self.critic.ajudge(task, conversation, turn, seed=seed) for turn in unique.values())
            )
            by_key = dict(zip(unique.keys(), judged, strict=True))
            verdicts = [_share(by_key, turn, first) for turn, first in _firsts(turns)]
            candidates += [Candidate(i, s, t, v) for i, s, t, v in zip(indices, seeds, turns, verdicts, strict=True)]
            if any(v.consistent for v in verdicts):
                break
        return self._finish(task, conversation, candidates)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _judge_unique(turns: Sequence[UserTurn], judge: Callable[[UserTurn], CriticVerdict]) -> list[CriticVerdict]:
        # Identical candidates (common at low temperature) are judged once; the usage is counted once too.
        by_key = {key: judge(turn) for key, turn in _unique(turns).items()}
        return [_share(by_key, turn, first) for turn, first in _firsts(turns)]

    def _finish(self, task: Task, conversation: Sequence[Message], candidates: list[Candidate]) -> UserTurn:
        best, all_rejected = pick(candidates)
        usage = Usage()
        for c in candidates:
            if c.turn.usage is not None:
                usage = usage + c.turn.usage
            if c.verdict.usage is not None:
                usage = usage + c.verdict.usage
        choice = BestOfNChoice(
            task_id=task.id,
            position=len(conversation),
            candidates=tuple(candidates),
            chosen=best.index,
            rounds=(len(candidates) + self.n - 1) // self.n,
            all_rejected=all_rejected,
        )
        self.history.append(choice)
        if self.on_choice is not None:
            self.on_choice(choice)
        return UserTurn(
            content=best.turn.content, stop=best.turn.stop, usage=usage, meta={"best_of_n": choice.to_dict()}
        )


def _key(turn: UserTurn) -> tuple[str, str | None]:
    return turn.content.strip(), turn.stop


def _unique(turns: Sequence[UserTurn]) -> dict[tuple[str, str | None], UserTurn]:
    out: dict[tuple[str, str | None], UserTurn] = {}
    for turn in turns:
        out.setdefault(_key(turn), turn)
    return out


def _firsts(turns: Sequence[UserTurn]) -> list[tuple[UserTurn, bool]]:
    """Each turn with whether it is the first of its kind (later copies carry no critic usage)."""
    seen: set[tuple[str, str | None]] = set()
    out = []
    for turn in turns:
        key = _key(turn)
        out.append((turn, key not in seen))
        seen.add(key)
    return out


def _share(by_key: dict[tuple[str, str | None], CriticVerdict], turn: UserTurn, first: bool) -> CriticVerdict:
    verdict = by_key[_key(turn)]
    if first or verdict.usage is None:
        return verdict
    return CriticVerdict(verdict.score, verdict.consistent, verdict.reason, verdict.malformed, verdict.raw, None)


def dump_choices(choices: Sequence[BestOfNChoice]) -> str:
    """The decisions as JSON lines (for a side log next to the trajectories)."""
    return "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in choices)
