"""Variety and difficulty figures of a blueprint set, comparable across sets (ours, tau2's, tau-bench's).

Every figure reads only a task's instruction, persona, gold actions and outputs, plus the domain's tools
(which tools write) and users table (which words are names), so any loaded domain can be measured, in
any layout. Instructions are masked before their words are counted: e-mail addresses, every token with a
digit (ids, amounts, dates, zip codes) and the first and last names of the DB's users and passengers,
and the section labels the structured instructions share (``Persona:``, ``Known info:`` ...) are left
out. The 3-gram ratio and the near-duplicate share fall as a set grows, so both are means over random
samples of a fixed size (20 and 50 tasks, 10 seeds), which keeps sets of different sizes comparable.

Command line (the same figures ``apigen-envs blueprints --stats`` prints)::

    python -m apigen_envs.datagen.set_stats --domain retail --compare ../shared/peers/tau2/retail
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apigen_envs.messages import AssistantMessage
from apigen_envs.task import Task
from apigen_envs.verify import Verifier, replay

RATIO_SAMPLE = 20
"""Tasks per sample for the distinct 3-gram ratio."""
DUP_SAMPLE = 50
"""Tasks per sample for the near-duplicate share."""
SEEDS = 10
"""Samples per figure."""
DUP_JACCARD = 0.6
"""Masked 3-gram Jaccard similarity from which two instructions are near-duplicates."""
TRANSFER_TOOL = "transfer_to_human_agents"

_LABELS = re.compile(r"^\s*(persona|reason for call|known info|unknown info|task instructions)\s*:\s*$", re.I | re.M)
_EMAIL = re.compile(r"\S+@\S+")
_DIGITS = re.compile(r"[#\w.:/-]*\d[#\w.:/-]*")
_TOKEN = re.compile(r"<\w+>|[a-z]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_CONDITION = re.compile(r"\b(if|unless|otherwise|in case)\b", re.I)
# "If asked for X, say Y" hands over a fact and "if the agent asks you to confirm, say yes" is the confirm
# line: neither makes the customer's goal depend on anything, so neither counts as a condition.
_ANSWER_ONLY = re.compile(
    r"\bif\b[^.]*\b(ask|asks|asked|wants to know|needs)\b[^.]*,\s*(just\s+)?(say|tell|give|provide|answer|mention|"
    r"share|spell|confirm|agree|reply)\b",
    re.I,
)
_CONFIRM_LINE = re.compile(r"\bif\b[^.]*\bconfirm[^.]*,\s*(just\s+)?(say|answer|reply)\s+(yes|so)\b", re.I)
_BUDGET = re.compile(
    r"\$\s?\d|\b\d+(?:\.\d+)?\s*(dollars|usd|bucks)\b|\bbudget\b|\bcheap(er|est)?\b|"
    r"\b(more|less|pricier) than\b[^.]*\d|\bexpensive\b|\bafford\b|\bspend\b|\blowest (price|fare)\b",
    re.I,
)


def name_words(snapshot: Any) -> frozenset[str]:
    """First and last names of the users (and their saved passengers) of a DB, lower-cased.

    Args:
        snapshot: A :class:`~apigen_envs.db.Snapshot` (any object with a ``tables`` mapping works).

    Returns:
        The name words; empty when the DB has no ``users`` table.

    """
    users = getattr(snapshot, "tables", {}).get("users")
    words: set[str] = set()
    if users is None:
        return frozenset()
    for row in users.values():
        people = [row.get("name"), *row.get("saved_passengers", ())] if isinstance(row, dict) else []
        for person in people:
            if isinstance(person, dict):
                words.update(str(person.get(k, "")).lower() for k in ("first_name", "last_name"))
            elif isinstance(person, str):
                words.update(w.lower() for w in person.split())
    words.discard("")
    return frozenset(words)


def mask(text: str, names: frozenset[str] = frozenset()) -> str:
    """An instruction with section labels removed and e-mails, digit tokens and names masked.

    Args:
        text: The instruction.
        names: Lower-cased name words to mask (capitalised occurrences only, so "Rose" the name is masked
            and "rose gold" is not).

    Returns:
        The masked text.

    """
    text = _LABELS.sub(" ", text)
    text = _EMAIL.sub(" <email> ", text)
    text = _DIGITS.sub(" <id> ", text)
    if names:
        text = re.sub(r"\b[A-Z][a-z]+\b", lambda m: "<name>" if m.group(0).lower() in names else m.group(0), text)
    return text


def trigrams(text: str) -> list[tuple[str, ...]]:
    """Word 3-grams of an (already masked) text, lower-cased, punctuation dropped."""
    tokens = _TOKEN.findall(text.lower())
    return [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]


def distinct_ratio(grams: Sequence[Sequence[tuple[str, ...]]], size: int = RATIO_SAMPLE, seeds: int = SEEDS) -> float:
    """Mean over random samples of ``size`` texts of distinct 3-grams / all 3-grams.

    Args:
        grams: Per text, its 3-grams.
        size: Texts per sample (all of them when fewer).
        seeds: Samples (seeds 0 .. seeds-1).

    Returns:
        The ratio in [0, 1] (0 for an empty set).

    """
    values = []
    for seed in range(seeds):
        picked = _sample(grams, size, seed)
        every = [g for text in picked for g in text]
        if every:
            values.append(len(set(every)) / len(every))
    return statistics.fmean(values) if values else 0.0


def near_duplicate_share(
    grams: Sequence[Sequence[tuple[str, ...]]],
    size: int = DUP_SAMPLE,
    seeds: int = SEEDS,
    threshold: float = DUP_JACCARD,
) -> float:
    """Mean over random samples of ``size`` texts of the share of texts with a near-duplicate in the sample.

    Args:
        grams: Per text, its 3-grams.
        size: Texts per sample (all of them when fewer).
        seeds: Samples.
        threshold: Jaccard similarity of 3-gram sets from which two texts are near-duplicates.

    Returns:
        The share in [0, 1].

    """
    values = []
    for seed in range(seeds):
        picked = [set(g) for g in _sample(grams, size, seed)]
        if len(picked) < 2:
            continue
        dup = 0
        for i, a in enumerate(picked):
            if any(j != i and jaccard(a, b) >= threshold for j, b in enumerate(picked)):
                dup += 1
        values.append(dup / len(picked))
    return statistics.fmean(values) if values else 0.0


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _sample(items: Sequence[Any], size: int, seed: int) -> list[Any]:
    if len(items) <= size:
        return list(items)
    return random.Random(seed).sample(list(items), size)


def has_condition(instruction: str) -> bool:
    """Whether an instruction makes the goal depend on something: an "if / unless / otherwise" sentence that
    is neither the confirm line nor an "if asked for X, say Y" hand-over of a fact.
    """
    for sentence in _SENTENCE.split(_LABELS.sub(" ", instruction)):
        if _CONDITION.search(sentence) and not (_ANSWER_ONLY.search(sentence) or _CONFIRM_LINE.search(sentence)):
            return True
    return False


def has_budget(instruction: str) -> bool:
    """Whether an instruction states a budget or a price condition (an amount, "cheapest", "budget" ...)."""
    return bool(_BUDGET.search(_LABELS.sub(" ", instruction)))


def order_id_given(task: Task) -> bool:
    """Whether an order id of the gold actions appears in the instruction (with or without its ``#``)."""
    text = task.instruction.lower()
    ids = {str(a.arguments["order_id"]).lower() for a in task.actions if "order_id" in a.arguments}
    return any(i in text or i.lstrip("#") in text for i in ids if i.lstrip("#"))


def persona_sentences(tasks: Iterable[Task], names: frozenset[str] = frozenset()) -> int:
    """Distinct sentences (names and ids masked) across the tasks' persona fields."""
    found: set[str] = set()
    for task in tasks:
        if task.scenario.persona:
            for sentence in _SENTENCE.split(mask(task.scenario.persona, names)):
                if sentence.strip():
                    found.add(" ".join(sentence.lower().split()))
    return len(found)


@dataclass(frozen=True, slots=True)
class SetStats:
    """The figures of one blueprint set (shares in [0, 1]).

    Attributes:
        label: What was measured (a path or "ours").
        domain: The domain name.
        tasks: Tasks measured.
        trigram_ratio: Mean masked distinct 3-gram ratio over samples of 20 tasks.
        near_duplicates: Mean share of tasks with a near-duplicate within samples of 50 tasks.
        conditional: Share with a real condition.
        multi_intent: Share with >= 2 writes, or a write and a required output.
        three_writes: Share with >= 3 writes.
        refusals: Share whose gold makes no write (the right outcome is no change).
        refusal_family: Share recorded as refusals of a named rule (provenance ``refusal``); None for a set
            without family provenance (peer sets), since their refusals cannot be told from questions.
        transfers: Tasks whose gold hands over to a human.
        budget: Share stating a budget or price condition.
        order_id_given: Share naming an order id of its gold actions (None for a domain without orders).
        persona_sentences: Distinct persona sentences.
        noop_passes: Share the do-nothing agent passes (scored by the domain's verifier).
        oracle_passes: Share the gold replay (with the required outputs said) passes.
        policy_rules: Policy predicates the domain's datagen supplies (None: the domain has none, so its
            blueprints' policy stage checks nothing).

    """

    label: str
    domain: str
    tasks: int
    trigram_ratio: float
    near_duplicates: float
    conditional: float
    multi_intent: float
    three_writes: float
    refusals: float
    refusal_family: float | None
    transfers: int
    budget: float
    order_id_given: float | None
    persona_sentences: int
    noop_passes: float
    oracle_passes: float
    policy_rules: int | None


def measure(domain: Any, tasks: Sequence[Task] | None = None, label: str = "ours", score: bool = True) -> SetStats:
    """Measure a blueprint set of a domain.

    Args:
        domain: A loaded :class:`~apigen_envs.domain.Domain` (tools, snapshot, verifier).
        tasks: The tasks (default: all of the domain's).
        label: Name shown in the table.
        score: Also score the do-nothing agent and the gold replay (cheap: no episode is run).

    Returns:
        The figures.

    """
    tasks = list(domain.task_list() if tasks is None else tasks)
    names = name_words(domain.snapshot)
    grams = [trigrams(mask(t.instruction, names)) for t in tasks]
    writes = [_writes(t, domain.tools) for t in tasks]
    n = max(len(tasks), 1)
    has_orders = "orders" in getattr(domain.snapshot, "tables", {})
    noop = oracle = 0.0
    if score and tasks:
        # A fresh verifier: the domain's caches gold by task id, and a set being measured may reuse ids.
        verifier = Verifier(domain.snapshot, domain.tools, domain.semantics)
        noop = sum(_noop_passes(domain, verifier, t) for t in tasks) / n
        oracle = sum(_oracle_passes(domain, verifier, t) for t in tasks) / n
    datagen = getattr(domain, "datagen", None)
    rules = datagen.rules() if datagen is not None else None
    return SetStats(
        label=label,
        domain=domain.name,
        tasks=len(tasks),
        trigram_ratio=distinct_ratio(grams),
        near_duplicates=near_duplicate_share(grams),
        conditional=sum(has_condition(t.instruction) for t in tasks) / n,
        multi_intent=sum(w >= 2 or (w >= 1 and bool(t.outputs)) for t, w in zip(tasks, writes, strict=True)) / n,
        three_writes=sum(w >= 3 for w in writes) / n,
        refusals=sum(w == 0 for w in writes) / n,
        refusal_family=(
            sum("refusal" in t.provenance for t in tasks) / n if any("family" in t.provenance for t in tasks) else None
        ),
        transfers=sum(any(a.name == TRANSFER_TOOL for a in t.actions) for t in tasks),
        budget=sum(has_budget(t.instruction) for t in tasks) / n,
        order_id_given=sum(order_id_given(t) for t in tasks) / n if has_orders else None,
        persona_sentences=persona_sentences(tasks, names),
        noop_passes=noop,
        oracle_passes=oracle,
        policy_rules=len(rules) if rules else None,
    )


def _writes(task: Task, tools: Any) -> int:
    return sum(1 for a in task.actions if a.name in tools and tools[a.name].mutates and a.name != TRANSFER_TOOL)


def _noop_passes(domain: Any, verifier: Verifier, task: Task) -> bool:
    reply = [AssistantMessage(content="I'm sorry, I can't help with that.")]
    return verifier.score(task, domain.snapshot.view(), reply, "user_stop").reward > 0


def _oracle_passes(domain: Any, verifier: Verifier, task: Task) -> bool:
    view = domain.snapshot.view()
    replay(domain.tools, view, task.actions, atomic=domain.semantics.atomic_calls)
    said = [AssistantMessage(content=f"Done. {', '.join(task.outputs)}.")]
    return verifier.score(task, view, said, "user_stop").reward > 0


_ROWS: tuple[tuple[str, str], ...] = (
    ("tasks", "tasks"),
    ("trigram_ratio", "distinct instruction 3-grams / all (ids, emails, names masked; 20-task samples)"),
    ("near_duplicates", "near-duplicate instructions (masked 3-gram Jaccard >= 0.6; 50-task samples)"),
    ("conditional", 'tasks with a real condition ("if ... then", besides the confirm line)'),
    ("multi_intent", "multi-intent (>= 2 writes, or a write and a required output)"),
    ("three_writes", "tasks with >= 3 writes"),
    ("refusals", "refusal tasks (the right outcome is no write)"),
    ("refusal_family", "refusals of a named policy rule (share of all tasks; needs family provenance)"),
    ("transfers", "transfer-to-human tasks"),
    ("budget", "budget or price conditions"),
    ("order_id_given", "order id handed to the customer in the instruction"),
    ("persona_sentences", "distinct persona sentences"),
    ("noop_passes", "do-nothing agent passes"),
    ("oracle_passes", "gold replay (oracle) passes"),
    ("policy_rules", "policy predicates checked in phase 1"),
)
_COUNTS = ("tasks", "transfers", "persona_sentences")


def _cell(stats: SetStats, key: str) -> str:
    value = getattr(stats, key)
    if key == "policy_rules":
        return "none (unchecked)" if value is None else str(value)
    if value is None:
        return "–"
    if key in _COUNTS:
        return str(value)
    if key == "trigram_ratio":
        return f"{value:.2f}"
    return f"{100 * value:.1f}%" if 0 < value < 0.1 else f"{100 * value:.0f}%"


def table(columns: Sequence[SetStats]) -> str:
    """A markdown table with one column per measured set.

    Args:
        columns: The sets' figures.

    Returns:
        The table.

    """
    head = "| | " + " | ".join(f"{c.domain} {c.label}" for c in columns) + " |"
    lines = [head, "|---|" + "---|" * len(columns)]
    for key, text in _ROWS:
        lines.append(f"| {text} | " + " | ".join(_cell(c, key) for c in columns) + " |")
    return "\n".join(lines)


def compare(domain: Any, tasks: Sequence[Task] | None, reference: str | Path | None, label: str = "ours") -> str:
    """The table for a set beside the same figures for a reference set in another data directory.

    Args:
        domain: The domain the set belongs to.
        tasks: The set (default: the domain's tasks).
        reference: A data directory (tau2 or tau-bench layout) of the same domain, or None.
        label: Name of the measured set.

    Returns:
        The markdown table.

    """
    columns = [measure(domain, tasks, label)]
    if reference is not None:
        from apigen_envs.registry import load_domain

        other = load_domain(domain.name, reference)
        columns.append(measure(other, None, str(other.semantics.name)))
    return table(columns)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table for a domain's set (default: its embedded tasks), optionally beside a reference."""
    from apigen_envs.domain import load_tasks
    from apigen_envs.registry import load_domain

    parser = argparse.ArgumentParser(prog="python -m apigen_envs.datagen.set_stats", description=__doc__)
    parser.add_argument("--domain", default="retail")
    parser.add_argument("--data-dir", default=None, help="the domain's data directory (default: embedded)")
    parser.add_argument("--tasks", type=Path, default=None, help="a blueprint file (.json or .jsonl) to measure")
    parser.add_argument("--compare", default=None, help="reference data directory (e.g. tau2's retail/)")
    args = parser.parse_args(argv)
    domain = load_domain(args.domain, args.data_dir)
    tasks = load_tasks(args.tasks, domain.name) if args.tasks else None
    print(compare(domain, tasks, args.compare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
