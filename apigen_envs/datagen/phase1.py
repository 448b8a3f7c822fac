"""APIGen-MT phase 1: propose blueprints, validate them stage by stage, review, retry with feedback,
recombine, and save verified blueprints with per-stage statistics.

Every random choice comes from a ``random.Random`` seeded from ``(seed, attempt, retry)``, so a run with the
template proposer is reproducible bit for bit, and a run with an LLM sends reproducible seeds.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apigen_envs.datagen.committee import Committee, Verdict
from apigen_envs.datagen.context import Context, ContextSampler
from apigen_envs.datagen.feedback import review_feedback, stage_feedback
from apigen_envs.datagen.policy_checks import PolicyRule, rules_for
from apigen_envs.datagen.proposers import Proposal, ProposalError, Proposer
from apigen_envs.datagen.recombine import combine
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
        committee: ``"skipped (offline)"`` or the committee's size and threshold.
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
    committee: str = "skipped (offline)"
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able statistics."""
        return {
            "attempts": self.attempts,
            "proposals": self.proposals,
            "no_candidate": self.no_candidate,
            "stages": {s: {"reached": self.reached[s], "passed": self.passed[s]} for s in STAGES},
            "failures": dict(self.failures.most_common()),
            "accepted": self.accepted,
            "accepted_first_try": self.accepted_first_try,
            "retries": self.retries,
            "committee": self.committee,
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
            lines.append(f"{stage:<12} {reached:>8} {ok:>8} {pct:>7}")
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

    """

    n: int = 200
    seed: int = 0
    max_retries: int | None = None
    max_attempts: int | None = None
    recombine: int = 0
    recombine_parts: int = 2
    split_ratio: float = 0.8
    id_prefix: str | None = None

    def __post_init__(self) -> None:
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


class Phase1Pipeline:
    """Propose -> format -> execution -> policy -> triviality -> dedup -> committee, with feedback retries.

    Args:
        domain: The loaded domain.
        proposer: The proposer (template or LLM).
        committee: The review committee; None skips it (offline mode, recorded in provenance).
        summariser: Optional LLM turning committee reviews into feedback.
        recombiner: Optional LLM writing combined instructions (template join otherwise).
        rules: Policy rules (defaults to the domain's rule set).
        sampler: Context sampler (defaults to one over the domain).
        progress: Called after each attempt with (attempt, accepted so far).

    """

    def __init__(
        self,
        domain: Any,
        proposer: Proposer,
        committee: Committee | None = None,
        summariser: LLMClient | None = None,
        recombiner: LLMClient | None = None,
        rules: Sequence[PolicyRule] | None = None,
        sampler: ContextSampler | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.domain = domain
        self.proposer = proposer
        self.committee = committee
        self.summariser = summariser
        self.recombiner = recombiner
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
        snapshot, tools, semantics = self.domain.snapshot, self.domain.tools, self.domain.semantics
        results: list[StageResult] = []
        fmt = check_format(proposal, tools)
        results.append(fmt)
        if not fmt.passed:
            return Evaluation(None, tuple(results))
        execution, trace = check_execution(proposal, snapshot, tools, semantics)
        results.append(execution)
        diff = tuple(trace.final.diff())
        if not execution.passed:
            return Evaluation(None, tuple(results), diff=diff)
        task = draft_task(proposal, self.domain.name, task_id)
        for stage in (
            lambda: check_policy_stage(trace, self.rules, proposal),
            lambda: check_triviality(task, snapshot, tools, semantics),
            lambda: dedup.check(task),
        ):
            result = stage()
            results.append(result)
            if not result.passed:
                return Evaluation(task, tuple(results), diff=diff)
        verdict = None
        if self.committee is None:
            results.append(StageResult("committee", True, details={"skipped": "offline"}))
        else:
            verdict = self.committee.review(task, tools, list(diff), seed=seed)
            results.append(StageResult("committee", verdict.accepted, verdict.reasons, {"score": verdict.score}))
        return Evaluation(task, tuple(results), verdict, diff)

    def feedback(self, evaluation: Evaluation, seed: int) -> str:
        """Feedback text for a rejected evaluation."""
        failure = evaluation.failure
        if failure is None:
            return ""
        if failure.stage == "committee" and evaluation.verdict is not None:
            return review_feedback(evaluation.verdict, evaluation.diff, self.summariser, seed)
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
        prov: dict[str, Any] = {
            "generator": "apigen_envs.datagen.phase1",
            "proposer": proposal.proposer,
            "seed": seed,
            "attempt": attempt,
            "retries": retry,
            "intent": proposal.intent,
            "stages_passed": [r.stage for r in evaluation.results if r.passed],
            "policy_rules": [r.name for r in self.rules],
            "committee": evaluation.verdict.to_dict() if evaluation.verdict is not None else "skipped (offline)",
            "feedback": feedback,
            "changed_rows": len(evaluation.diff),
        }
        if proposal.proposer != "template":
            prov["context"] = context.summary()
        if proposal.reasoning:
            prov["reasoning"] = proposal.reasoning[:2000]
        for key in ("model", "template_id", "recombined_from", "instruction_writer"):
            if key in proposal.extra:
                prov[key] = proposal.extra[key]
        template = proposal.extra.get("template_provenance") or {}
        for key in ("family", "refusal"):
            if key in template:
                prov[key] = template[key]
        return prov

    def run(self, config: Phase1Config) -> Phase1Result:
        """Generate blueprints.

        Args:
            config: Run settings.

        Returns:
            The accepted blueprints (splits assigned) and statistics.

        """
        stats = Phase1Stats()
        if self.committee is not None:
            stats.committee = f"{self.committee.size} reviewers, threshold {self.committee.threshold}"
        spec = getattr(self.domain, "datagen", None)
        default = spec.retries if spec is not None else DEFAULT_RETRIES
        retries = config.max_retries if config.max_retries is not None else default
        max_attempts = config.max_attempts if config.max_attempts is not None else 4 * config.n
        prefix = config.id_prefix or self.domain.name
        dedup = Deduplicator(self.domain.tools)
        accepted: list[Task] = []
        attempt = 0
        while len(accepted) < config.n and attempt < max_attempts:
            context = self._context(random.Random(f"{config.seed}:{attempt}:context"), attempt)
            stats.attempts += 1
            feedback: list[str] = []
            for retry in range(retries + 1):
                rng = random.Random(f"{config.seed}:{attempt}:{retry}")
                if retry:
                    stats.retries += 1
                proposal = self.proposer.propose(context, rng, feedback[-1] if feedback else None)
                if isinstance(proposal, ProposalError):
                    if proposal.stage == "no_candidate":
                        stats.no_candidate += 1
                        feedback.append(proposal.reason)
                        continue
                    result = StageResult("format", False, (proposal.reason,))
                    stats.record([result])
                    feedback.append(stage_feedback(result))
                    continue
                task_id = f"{prefix}_{config.seed}_{len(accepted):05d}"
                evaluation = self.evaluate(proposal, dedup, seed=rng.randrange(2**31), task_id=task_id)
                stats.record(evaluation.results)
                if evaluation.accepted and evaluation.task is not None:
                    prov = self._provenance(proposal, evaluation, context, config.seed, attempt, retry, feedback)
                    task = evaluation.task.model_copy(update={"provenance": prov})
                    dedup.add(task)
                    accepted.append(task)
                    stats.accepted += 1
                    stats.accepted_first_try += retry == 0
                    break
                feedback.append(self.feedback(evaluation, rng.randrange(2**31)))
            attempt += 1
            if self.progress is not None:
                self.progress(attempt, len(accepted))
        combos = self.recombine(accepted, dedup, config, stats, prefix)
        tasks = assign_splits(accepted + combos, config.split_ratio, config.seed)
        return Phase1Result(tasks, stats)

    def recombine(
        self, accepted: Sequence[Task], dedup: Deduplicator, config: Phase1Config, stats: Phase1Stats, prefix: str
    ) -> list[Task]:
        """Try ``config.recombine`` combinations of accepted blueprints of the same user.

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
            proposal = combine(parts, self.domain.tools, rng, self.recombiner)
            task_id = f"{prefix}_{config.seed}_combo_{len(combos):05d}"
            evaluation = self.evaluate(proposal, dedup, seed=rng.randrange(2**31), task_id=task_id)
            stats.record(evaluation.results, recombined=True)
            if evaluation.accepted and evaluation.task is not None:
                empty = Context(self.domain.name, user, None, {}, (), None, ())
                prov = self._provenance(proposal, evaluation, empty, config.seed, k, 0, [])
                task = evaluation.task.model_copy(update={"provenance": prov})
                dedup.add(task)
                combos.append(task)
        return combos


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
