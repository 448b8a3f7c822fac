"""APIGen-MT phase 1: propose blueprints, validate them stage by stage, review, retry with feedback,
recombine, and save verified blueprints with per-stage statistics.

Every random choice comes from a ``random.Random`` seeded from ``(seed, attempt, retry)``, so a run with the
template proposer is reproducible bit for bit, and a run with an LLM sends reproducible seeds.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_envs.datagen.committee import Committee, Verdict
from apigen_envs.datagen.context import Context, ContextSampler
from apigen_envs.datagen.feedback import areview_feedback, review_feedback, stage_feedback
from apigen_envs.datagen.policy_checks import PolicyRule, rules_for
from apigen_envs.datagen.proposers import (
    IterativeProposer,
    Proposal,
    ProposalError,
    Proposer,
    Round,
    payload_json,
)
from apigen_envs.datagen.recombine import combine
from apigen_envs.datagen.rewrite import InstructionRewriter, LLMRewriter, rewrite_proposal
from apigen_envs.datagen.validate import (
    STAGES,
    Deduplicator,
    StageResult,
    check_execution,
    check_format,
    check_policy_stage,
    check_triviality,
    draft_task,
)
from apigen_envs.llm import LLMClient
from apigen_envs.task import Task

DEFAULT_RETRIES = 3
"""Feedback rounds for a domain whose datagen slot does not say (the paper: 3 retail, 5 airline)."""


@dataclass
class Phase1Stats:
    """Counts per stage. Every proposal stops at its first failed stage, so for each stage
    ``reached == passed + failed`` and the next stage is reached by exactly the proposals that passed.

    Attributes:
        attempts: Contexts tried (each gets up to ``1 + retries`` proposals).
        proposals: Proposals validated (retries included).
        no_candidate: Template draws that found no usable record (not counted as proposals).
        reached: Stage -> proposals that reached it.
        passed: Stage -> proposals that passed it.
        failures: ``stage: reason head`` -> count.
        accepted: Simple blueprints accepted.
        accepted_first_try: Of those, accepted without feedback.
        retries: Retries made (proposals after the first of an attempt).
        committee: ``"skipped"`` or the committee's size, members and threshold.
        skipped: Stage -> proposals that reached it while it was switched off (a committee-less run).
        llm: Proposer and reviewer call counters: calls, prompt/completion tokens and wall milliseconds.
        stopped_by_time_limit: The run stopped starting attempts at ``Phase1Config.time_limit_s``.
        recombined_tried: Combinations validated.
        recombined_accepted: Combinations accepted.
        recombined_failures: ``stage: reason head`` -> count, for combinations.

    """

    attempts: int = 0
    proposals: int = 0
    no_candidate: int = 0
    reached: Counter[str] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    accepted_first_try: int = 0
    retries: int = 0
    committee: str = "skipped"
    stopped_by_time_limit: bool = False
    skipped: Counter[str] = field(default_factory=Counter)
    llm: Counter[str] = field(default_factory=Counter)
    recombined_tried: int = 0
    recombined_accepted: int = 0
    recombined_failures: Counter[str] = field(default_factory=Counter)

    def record(self, results: Sequence[StageResult], recombined: bool = False) -> None:
        """Count one validated proposal's stage results."""
        if recombined:
            self.recombined_tried += 1
            last = results[-1] if results else None
            if last is not None and not last.passed:
                self.recombined_failures[f"{last.stage}: {_head(last)}"] += 1
            else:
                self.recombined_accepted += 1
            return
        self.proposals += 1
        for result in results:
            if result.details.get("skipped"):
                self.skipped[result.stage] += 1
                continue
            self.reached[result.stage] += 1
            if result.passed:
                self.passed[result.stage] += 1
            else:
                self.failures[f"{result.stage}: {_head(result)}"] += 1

    def rates(self) -> dict[str, float]:
        """Acceptance rates: per attempt with feedback, per attempt without it, and per proposal."""
        attempts = max(self.attempts, 1)
        return {
            "with_feedback": self.accepted / attempts,
            "without_feedback": self.accepted_first_try / attempts,
            "per_proposal": self.accepted / max(self.proposals, 1),
        }

    def speed(self) -> dict[str, float]:
        """Measured generation speed of the proposer calls (completion tokens per wall second)."""
        seconds = self.llm["proposer_ms"] / 1000
        if not seconds:
            return {}
        return {"proposer_completion_tokens_per_s": round(self.llm["proposer_completion_tokens"] / seconds, 2)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able statistics."""
        return {
            "attempts": self.attempts,
            "proposals": self.proposals,
            "no_candidate": self.no_candidate,
            "stages": {
                s: {"reached": self.reached[s], "passed": self.passed[s]}
                | ({"skipped": self.skipped[s]} if self.skipped[s] else {})
                for s in STAGES
            },
            "failures": dict(self.failures.most_common()),
            "accepted": self.accepted,
            "accepted_first_try": self.accepted_first_try,
            "retries": self.retries,
            "committee": self.committee,
            "stopped_by_time_limit": self.stopped_by_time_limit,
            "llm": dict(self.llm) | self.speed(),
            "recombined": {
                "tried": self.recombined_tried,
                "accepted": self.recombined_accepted,
                "failures": dict(self.recombined_failures.most_common()),
            },
            "rates": {k: round(v, 4) for k, v in self.rates().items()},
        }

    def table(self) -> str:
        """A printable per-stage summary."""
        lines = [f"{'stage':<12} {'reached':>8} {'passed':>8} {'pass %':>7}"]
        for stage in STAGES:
            reached, ok = self.reached[stage], self.passed[stage]
            pct = f"{100 * ok / reached:6.1f}%" if reached else "     -"
            note = f"  (skipped for {self.skipped[stage]})" if self.skipped[stage] else ""
            lines.append(f"{stage:<12} {reached:>8} {ok:>8} {pct:>7}{note}")
        rates = self.rates()
        lines.append(
            f"attempts={self.attempts} proposals={self.proposals} retries={self.retries} "
            f"no_candidate={self.no_candidate} accepted={self.accepted} (first try {self.accepted_first_try})"
        )
        lines.append(
            f"acceptance per attempt: {rates['with_feedback']:.1%} with feedback, "
            f"{rates['without_feedback']:.1%} without; per proposal {rates['per_proposal']:.1%}"
        )
        lines.append(f"committee: {self.committee}")
        if self.llm["proposer_calls"]:
            lines.append(
                f"proposer: {self.llm['proposer_calls']} calls, {self.llm['proposer_prompt_tokens']} prompt + "
                f"{self.llm['proposer_completion_tokens']} completion tokens in {self.llm['proposer_ms'] / 1000:.0f} s "
                f"({self.speed().get('proposer_completion_tokens_per_s', 0):.1f} completion tok/s)"
            )
        lines.append(f"recombined: {self.recombined_accepted}/{self.recombined_tried} accepted")
        for reason, count in self.failures.most_common(8):
            lines.append(f"  {count:>5}  {reason}")
        return "\n".join(lines)


def _head(result: StageResult) -> str:
    """A reason with ids and numbers masked, so counts group similar failures."""
    import re

    text = result.reasons[0] if result.reasons else "failed"
    if text.startswith("["):
        return text[: text.index("]") + 1]
    return re.sub(r"[#'\"]?\w*\d[\w.-]*['\"]?", "<x>", text)[:90]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of validating one proposal.

    Attributes:
        task: The candidate task.
        results: Stage results up to the first failure.
        verdict: The committee's verdict, when it ran.
        diff: The DB diff of the gold actions.

    """

    task: Task | None
    results: tuple[StageResult, ...]
    verdict: Verdict | None = None
    diff: tuple[dict[str, Any], ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether every stage passed."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failure(self) -> StageResult | None:
        """The failed stage, if any."""
        return next((r for r in self.results if not r.passed), None)


@dataclass
class Phase1Config:
    """Settings of a phase-1 run.

    Attributes:
        n: Target number of accepted simple blueprints.
        seed: Base seed.
        max_retries: Feedback rounds per attempt (None: the domain's datagen slot says; 3 without one).
        max_attempts: Contexts to try at most (None: ``4 * n``).
        recombine: Combined tasks to try after the simple ones.
        recombine_parts: Blueprints per combination.
        split_ratio: Share of users whose blueprints go to the ``train`` split (the rest: ``test``).
        id_prefix: Task id prefix (defaults to the domain name).
        concurrency: Attempts in flight at once (their proposals and reviews run concurrently); with more
            than one, a run may accept up to ``concurrency - 1`` blueprints beyond ``n``.
        feedback: Show the proposer its earlier attempts and their feedback on a retry (off: each retry
            is a fresh proposal for the same context).
        time_limit_s: Start no new attempt after this many seconds (attempts in flight finish); None: no
            limit. Keeps slow local-model runs bounded while still writing their statistics.

    """

    n: int = 200
    seed: int = 0
    max_retries: int | None = None
    max_attempts: int | None = None
    recombine: int = 0
    recombine_parts: int = 2
    split_ratio: float = 0.8
    id_prefix: str | None = None
    concurrency: int = 1
    feedback: bool = True
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0.0 <= self.split_ratio <= 1.0:
            raise ValueError(f"split_ratio must be within [0, 1], got {self.split_ratio}")
        if self.recombine_parts < 2:
            raise ValueError("recombine_parts must be >= 2")


@dataclass
class Phase1Result:
    """What a run produced.

    Attributes:
        tasks: Accepted blueprints (simple, then recombined), with splits set.
        stats: The statistics.

    """

    tasks: list[Task]
    stats: Phase1Stats


@dataclass
class _Run:
    """Mutable state shared by the attempts of one run (one event loop, so no locks are needed)."""

    config: Phase1Config
    stats: Phase1Stats
    dedup: Deduplicator
    prefix: str
    retries: int
    limit: asyncio.Semaphore
    accepted: list[tuple[int, Task]] = field(default_factory=list)
    next_attempt: int = 0
    done: int = 0


class Phase1Pipeline:
    """Propose -> format -> execution -> policy -> triviality -> dedup -> committee, with feedback retries.

    Attempts run concurrently (``Phase1Config.concurrency``): each is a coroutine that proposes, validates,
    asks the committee (its members at once) and retries with feedback. Rule stages run in the event
    loop's thread between awaits, so the accepted set and the dedup index need no locks.

    Args:
        domain: The loaded domain.
        proposer: The proposer (template or LLM).
        committee: The review committee; None skips it (recorded as ``committee: skipped``).
        summariser: Optional LLM turning committee reviews into feedback (it sees the blueprint too).
        recombiner: Optional LLM (or :class:`~apigen_envs.datagen.rewrite.InstructionRewriter`) rewriting
            combined instructions in one customer's voice (template join otherwise).
        rules: Policy rules (defaults to the domain's rule set).
        sampler: Context sampler (defaults to one over the domain).
        progress: Called after each attempt with (attempts done, accepted so far).

    """

    def __init__(
        self,
        domain: Any,
        proposer: Proposer,
        committee: Committee | None = None,
        summariser: LLMClient | None = None,
        recombiner: LLMClient | InstructionRewriter | None = None,
        rules: Sequence[PolicyRule] | None = None,
        sampler: ContextSampler | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.domain = domain
        self.proposer = proposer
        self.committee = committee
        self.summariser = summariser
        if recombiner is not None and not isinstance(recombiner, InstructionRewriter):
            recombiner = LLMRewriter(recombiner)
        self.recombiner: InstructionRewriter | None = recombiner
        self.rules = tuple(rules) if rules is not None else rules_for(domain)
        self._sampler = sampler
        self.progress = progress

    @property
    def sampler(self) -> ContextSampler:
        """The context sampler (built on first use: template runs never need it)."""
        if self._sampler is None:
            self._sampler = ContextSampler(self.domain)
        return self._sampler

    # ------------------------------------------------------------------------------------ validation
    def _rule_stages(
        self, proposal: Proposal, dedup: Deduplicator, task_id: str
    ) -> tuple[Evaluation | None, Task | None, list[StageResult], tuple[dict[str, Any], ...]]:
        """Every stage before the committee; returns a finished evaluation when one of them failed."""
        snapshot, tools, semantics = self.domain.snapshot, self.domain.tools, self.domain.semantics
        results: list[StageResult] = []
        fmt = check_format(proposal, tools)
        results.append(fmt)
        if not fmt.passed:
            return Evaluation(None, tuple(results)), None, results, ()
        execution, trace = check_execution(proposal, snapshot, tools, semantics)
        results.append(execution)
        diff = tuple(trace.final.diff())
        if not execution.passed:
            return Evaluation(None, tuple(results), diff=diff), None, results, diff
        task = draft_task(proposal, self.domain.name, task_id)
        for stage in (
            lambda: check_policy_stage(trace, self.rules, proposal),
            lambda: check_triviality(task, snapshot, tools, semantics),
            lambda: dedup.check(task),
        ):
            result = stage()
            results.append(result)
            if not result.passed:
                return Evaluation(task, tuple(results), diff=diff), task, results, diff
        return None, task, results, diff

    def evaluate(
        self, proposal: Proposal, dedup: Deduplicator, seed: int = 0, task_id: str = "candidate"
    ) -> Evaluation:
        """Run every stage on one proposal, stopping at the first failure.

        Args:
            proposal: The proposal.
            dedup: The accepted-blueprint index.
            seed: Seed for the committee.
            task_id: Id of the candidate task.

        Returns:
            The evaluation.

        """
        done, task, results, diff = self._rule_stages(proposal, dedup, task_id)
        if done is not None or task is None or self.committee is None:
            return done or _skipped(task, results, diff)
        verdict = self.committee.review(task, self.domain.tools, list(diff), seed=seed)
        return _reviewed(task, results, diff, verdict)

    async def aevaluate(
        self,
        proposal: Proposal,
        dedup: Deduplicator,
        seed: int = 0,
        task_id: str = "candidate",
        limit: asyncio.Semaphore | None = None,
        stats: Phase1Stats | None = None,
    ) -> Evaluation:
        """Async :meth:`evaluate`: the committee's members are asked concurrently.

        Args:
            proposal: The proposal.
            dedup: The accepted-blueprint index.
            seed: Seed for the committee.
            task_id: Id of the candidate task.
            limit: Bounds the LLM requests in flight.
            stats: Where to count the committee's time.

        Returns:
            The evaluation.

        """
        done, task, results, diff = self._rule_stages(proposal, dedup, task_id)
        if done is not None or task is None or self.committee is None:
            return done or _skipped(task, results, diff)
        start = time.perf_counter()
        verdict = await self.committee.areview(task, self.domain.tools, list(diff), seed=seed, limit=limit)
        if stats is not None:
            stats.llm["committee_calls"] += self.committee.size
            stats.llm["committee_ms"] += round(1000 * (time.perf_counter() - start))
        return _reviewed(task, results, diff, verdict)

    def feedback(self, evaluation: Evaluation, seed: int) -> str:
        """Feedback text for a rejected evaluation."""
        failure = evaluation.failure
        if failure is None:
            return ""
        if failure.stage == "committee" and evaluation.verdict is not None:
            return review_feedback(evaluation.verdict, evaluation.diff, self.summariser, seed, evaluation.task)
        return stage_feedback(failure)

    async def afeedback(self, evaluation: Evaluation, seed: int) -> str:
        """Async :meth:`feedback` (the summariser, when there is one, is asked asynchronously)."""
        failure = evaluation.failure
        if failure is None:
            return ""
        if failure.stage == "committee" and evaluation.verdict is not None:
            return await areview_feedback(evaluation.verdict, evaluation.diff, self.summariser, seed, evaluation.task)
        return stage_feedback(failure)

    # ------------------------------------------------------------------------------------ run
    def _context(self, rng: random.Random, attempt: int) -> Context:
        intents: tuple[str, ...] = getattr(self.proposer, "intents", ())
        # Cycling intents keeps the blueprint mix balanced across a run.
        intent = intents[attempt % len(intents)] if intents else None
        if self.proposer.name == "template":
            return Context(self.domain.name, None, None, {}, (), None, (), intent=intent)
        return self.sampler.sample(rng, intent=intent)

    def _provenance(
        self,
        proposal: Proposal,
        evaluation: Evaluation,
        context: Context,
        seed: int,
        attempt: int,
        retry: int,
        feedback: list[str],
    ) -> dict[str, Any]:
        template_prov = proposal.extra.get("template_provenance") or {}
        family = proposal.extra.get("family") or template_prov.get("family") or context.family
        prov: dict[str, Any] = {
            "generator": "apigen_envs.datagen.phase1",
            "proposer": proposal.proposer,
            "family": family,
            "model": proposal.extra.get("model"),
            "seed": seed,
            "attempt": attempt,
            "attempts": retry + 1,
            "feedback_rounds": len(feedback),
            "retries": retry,
            "intent": proposal.intent,
            "stages_passed": [r.stage for r in evaluation.results if r.passed and not r.details.get("skipped")],
            "policy_rules": [r.name for r in self.rules],
            "committee": evaluation.verdict.to_dict() if evaluation.verdict is not None else "skipped",
            "feedback": feedback,
            "changed_rows": len(evaluation.diff),
        }
        if proposal.proposer != "template":
            prov["context"] = context.summary()
        if proposal.reasoning:
            prov["reasoning"] = proposal.reasoning[:2000]
        for key in ("template_id", "recombined_from", "instruction_writer", "repairs"):
            if key in proposal.extra:
                prov[key] = proposal.extra[key]
        template = proposal.extra.get("template_provenance") or {}
        for key in ("family", "refusal"):
            if key in template:
                prov[key] = template[key]
        return prov

    def run(self, config: Phase1Config) -> Phase1Result:
        """Generate blueprints (runs :meth:`arun` in a fresh event loop).

        Args:
            config: Run settings.

        Returns:
            The accepted blueprints (splits assigned) and statistics.

        """
        return asyncio.run(self.arun(config))

    async def arun(self, config: Phase1Config) -> Phase1Result:
        """Generate blueprints with up to ``config.concurrency`` attempts in flight.

        Args:
            config: Run settings.

        Returns:
            The accepted blueprints (splits assigned, ids numbered in attempt order) and statistics.

        """
        stats = Phase1Stats()
        if self.committee is not None:
            stats.committee = self.committee.describe()
        spec = getattr(self.domain, "datagen", None)
        default = spec.retries if spec is not None else DEFAULT_RETRIES
        retries = config.max_retries if config.max_retries is not None else default
        state = _Run(
            config=config,
            stats=stats,
            dedup=Deduplicator(self.domain.tools),
            prefix=config.id_prefix or self.domain.name,
            retries=retries,
            limit=asyncio.Semaphore(config.concurrency),
        )
        max_attempts = config.max_attempts if config.max_attempts is not None else 4 * config.n
        if self.proposer.name != "template":
            # A proposer shown few-shot blueprints must not hand one back: each example counts as accepted,
            # so a copy (same calls, or the same instruction about the same ids) fails the dedup stage.
            for example in self.sampler.examples:
                state.dedup.add(example)

        deadline = time.monotonic() + config.time_limit_s if config.time_limit_s is not None else None

        async def worker() -> None:
            while len(state.accepted) < config.n and state.next_attempt < max_attempts:
                if deadline is not None and time.monotonic() > deadline:
                    stats.stopped_by_time_limit = True
                    return
                attempt = state.next_attempt
                state.next_attempt += 1
                await self._attempt(state, attempt)
                state.done += 1
                if self.progress is not None:
                    self.progress(state.done, len(state.accepted))

        await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        state.accepted.sort(key=lambda pair: pair[0])
        # Ids follow attempt order, so a concurrent run numbers its blueprints as a sequential one would.
        accepted = [
            task.model_copy(update={"id": f"{state.prefix}_{config.seed}_{i:05d}"})
            for i, (_, task) in enumerate(state.accepted)
        ]
        combos = await self.arecombine(accepted, state.dedup, config, stats, state.prefix)
        tasks = assign_splits(accepted + combos, config.split_ratio, config.seed)
        return Phase1Result(tasks, stats)

    async def _propose(
        self, state: _Run, context: Context, rng: random.Random, rounds: list[Round], feedback: list[str]
    ) -> Proposal | ProposalError:
        if isinstance(self.proposer, IterativeProposer):
            start = time.perf_counter()
            async with state.limit:
                proposal = await self.proposer.apropose(context, rng, rounds if state.config.feedback else ())
            llm = state.stats.llm
            llm["proposer_calls"] += 1
            llm["proposer_ms"] += round(1000 * (time.perf_counter() - start))
            if isinstance(proposal, Proposal):
                usage = proposal.extra.get("usage") or {}
                llm["proposer_prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                llm["proposer_completion_tokens"] += int(usage.get("completion_tokens") or 0)
            return proposal
        last = feedback[-1] if feedback and state.config.feedback else None
        return self.proposer.propose(context, rng, last)

    async def _attempt(self, state: _Run, attempt: int) -> None:
        """One context: propose, validate, review, and retry with every earlier round as feedback."""
        config, stats = state.config, state.stats
        context = self._context(random.Random(f"{config.seed}:{attempt}:context"), attempt)
        stats.attempts += 1
        feedback: list[str] = []
        rounds: list[Round] = []
        for retry in range(state.retries + 1):
            rng = random.Random(f"{config.seed}:{attempt}:{retry}")
            if retry:
                stats.retries += 1
            proposal = await self._propose(state, context, rng, rounds, feedback)
            if isinstance(proposal, ProposalError):
                if proposal.stage == "no_candidate":
                    stats.no_candidate += 1
                    feedback.append(proposal.reason)
                    continue
                result = StageResult("format", False, (proposal.reason,))
                stats.record([result])
                feedback.append(stage_feedback(result))
                rounds.append(Round(proposal.raw, feedback[-1]))
                continue
            task_id = f"{state.prefix}_{config.seed}_{len(state.accepted):05d}"
            evaluation = await self.aevaluate(
                proposal, state.dedup, seed=rng.randrange(2**31), task_id=task_id, limit=state.limit, stats=stats
            )
            if evaluation.accepted and evaluation.task is not None:
                # Another attempt may have been accepted while this one was under review: check again.
                again = state.dedup.check(evaluation.task)
                if not again.passed:
                    upto = [r for r in evaluation.results if r.stage not in ("dedup", "committee")]
                    evaluation = Evaluation(evaluation.task, (*upto, again), evaluation.verdict, evaluation.diff)
            stats.record(evaluation.results)
            if evaluation.accepted and evaluation.task is not None:
                prov = self._provenance(proposal, evaluation, context, config.seed, attempt, retry, feedback)
                task = evaluation.task.model_copy(update={"provenance": prov})
                state.dedup.add(task)
                state.accepted.append((attempt, task))
                stats.accepted += 1
                stats.accepted_first_try += retry == 0
                return
            feedback.append(await self.afeedback(evaluation, rng.randrange(2**31)))
            rounds.append(Round(proposal.extra.get("reply") or payload_json(proposal), feedback[-1]))

    async def arecombine(
        self, accepted: Sequence[Task], dedup: Deduplicator, config: Phase1Config, stats: Phase1Stats, prefix: str
    ) -> list[Task]:
        """Try ``config.recombine`` combinations of accepted blueprints of the same user.

        The combination's actions and template instruction come from
        :func:`~apigen_envs.datagen.recombine.combine`; with a rewriter, a model then rewrites the
        instruction as one customer would say it (the paper's step), and the result is validated again.

        Args:
            accepted: The accepted simple blueprints.
            dedup: The accepted-blueprint index (combinations are added to it).
            config: Run settings.
            stats: Statistics to update.
            prefix: Task id prefix.

        Returns:
            The accepted combined blueprints.

        """
        if config.recombine <= 0:
            return []
        by_user: dict[str, list[Task]] = {}
        for task in accepted:
            if task.user_id is not None:
                by_user.setdefault(task.user_id, []).append(task)
        pools = sorted(u for u, ts in by_user.items() if len(ts) >= 2)
        rng = random.Random(f"{config.seed}:recombine")
        tried: set[frozenset[str]] = set()
        combos: list[Task] = []
        for k in range(config.recombine * 4):
            if stats.recombined_tried >= config.recombine or not pools:
                break
            user = rng.choice(pools)
            size = min(config.recombine_parts, len(by_user[user]))
            parts = rng.sample(by_user[user], size)
            key = frozenset(t.id for t in parts)
            if key in tried:
                continue
            tried.add(key)
            proposal = combine(parts, self.domain.tools, rng)
            if self.recombiner is not None:
                proposal = await rewrite_proposal(self.recombiner, parts, proposal, rng.randrange(2**31))
            task_id = f"{prefix}_{config.seed}_combo_{len(combos):05d}"
            evaluation = await self.aevaluate(proposal, dedup, seed=rng.randrange(2**31), task_id=task_id)
            stats.record(evaluation.results, recombined=True)
            if evaluation.accepted and evaluation.task is not None:
                empty = Context(self.domain.name, user, None, {}, (), None, ())
                prov = self._provenance(proposal, evaluation, empty, config.seed, k, 0, [])
                task = evaluation.task.model_copy(update={"provenance": prov})
                dedup.add(task)
                combos.append(task)
        return combos

    def recombine(
        self, accepted: Sequence[Task], dedup: Deduplicator, config: Phase1Config, stats: Phase1Stats, prefix: str
    ) -> list[Task]:
        """Synchronous :meth:`arecombine`."""
        return asyncio.run(self.arecombine(accepted, dedup, config, stats, prefix))


_SKIPPED = StageResult("committee", True, details={"skipped": True})
"""The committee stage of a run without a committee: not passed, not failed, counted as skipped."""


def _skipped(task: Task | None, results: list[StageResult], diff: tuple[dict[str, Any], ...]) -> Evaluation:
    """The evaluation of a candidate that passed every rule stage when there is no committee."""
    return Evaluation(task, (*results, _SKIPPED), None, diff)


def _reviewed(task: Task, results: list[StageResult], diff: tuple[dict[str, Any], ...], verdict: Verdict) -> Evaluation:
    """The evaluation of a candidate the committee reviewed."""
    stage = StageResult("committee", verdict.accepted, verdict.reasons, {"score": verdict.score})
    return Evaluation(task, (*results, stage), verdict, diff)


def assign_splits(tasks: Sequence[Task], train_ratio: float, seed: int) -> list[Task]:
    """Split by user, so no user's blueprints (or their recombinations) straddle train and test.

    Args:
        tasks: The blueprints.
        train_ratio: Share of users going to ``train``.
        seed: Shuffle seed.

    Returns:
        The tasks with ``split`` set, in the input order.

    """
    users = sorted({t.user_id or t.id for t in tasks})
    random.Random(f"{seed}:split").shuffle(users)
    n_train = round(train_ratio * len(users))
    train = set(users[:n_train])
    return [t.model_copy(update={"split": "train" if (t.user_id or t.id) in train else "test"}) for t in tasks]


def write_blueprints(tasks: Sequence[Task], stats: Phase1Stats, out: Path | str) -> tuple[Path, Path]:
    """Save blueprints (a JSON list for ``.json``, else JSONL) and the statistics next to them.

    Args:
        tasks: The blueprints.
        stats: The run's statistics.
        out: The blueprint file.

    Returns:
        (blueprint file, statistics file).

    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [t.model_dump(mode="json", exclude_defaults=False) for t in tasks]
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stats_path = path.with_name(path.stem + ".stats.json")
    stats_path.write_text(json.dumps(stats.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path, stats_path
