"""Context sampling for blueprint proposals: the tool graph, and a user with their records, a tool walk,
a persona, policy clauses and few-shot examples.

The tool graph has an edge A -> B when an argument of B can be filled from A's output (``find_user_id`` ->
``get_user_details`` -> ``cancel_pending_order``). It is derived from the tool signatures: the fields a
tool returns against the id-like parameters of the others. Tools return plain JSON rows, so the fields
come from the domain's hint table (``Domain.datagen.graph_hints``) naming the record type each tool
returns (the domain's row models), or
from a tool's return annotation when it names a model; the table also says what types cannot (a tool
returning a bare id string, pairs the policy forbids).
"""

from __future__ import annotations

import json
import random
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from apigen_envs.db import Snapshot, copy_row
from apigen_envs.task import Task
from apigen_envs.tools import Tool, ToolSet


@dataclass(frozen=True, slots=True)
class GraphHints:
    """What the signatures cannot tell about a domain's tools.

    Attributes:
        rows: Tool -> the type of the JSON it returns (a row model such as ``Order``, or ``list[...]`` of
            one); its fields are what the tool's output provides.
        returns: Tool -> fields its (plain text) output provides, e.g. a lookup returning a user id.
        forbidden: (A, B) pairs the policy does not allow in sequence.
        skip: Tools left out of the graph (thinking, hand-off).
        identify: Tools a conversation starts with to identify the customer (``find_user_id_by_email``);
            walks start at one of them. Empty: walks start at the graph's entry points.
        profile: The tool reading the customer's profile after identification (``get_user_details``).

    """

    rows: Mapping[str, Any] = field(default_factory=dict)
    returns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    forbidden: frozenset[tuple[str, str]] = frozenset()
    skip: frozenset[str] = frozenset({"think", "transfer_to_human_agents", "calculate"})
    identify: tuple[str, ...] = ()
    profile: str | None = None


_ID_PARAM = re.compile(r"(_id|_ids|^id|^zip|^email|_number|^flights|^date)$")


def _fields_of(tp: Any, depth: int = 0) -> set[str]:
    """Field names reachable in a return type (records, lists/tuples of them, mapping values)."""
    if depth > 4 or tp is None:
        return set()
    origin = typing.get_origin(tp)
    if origin is not None:
        out: set[str] = set()
        for arg in typing.get_args(tp):
            out |= _fields_of(arg, depth + 1)
        return out
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        out = set()
        for name, info in tp.model_fields.items():
            out.add(name)
            # A list of references names its target in the plural: orders / account_ids -> order_id.
            if name.endswith("_ids"):
                out.add(name[:-1])
            elif name.endswith("s"):
                out.add(f"{name[:-1]}_id")
            out |= _fields_of(info.annotation, depth + 1)
        return out
    return set()


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("_ids") else name


def tool_outputs(tool: Tool, hints: GraphHints) -> frozenset[str]:
    """Field names a tool's output provides (from the hints' row type, its return annotation and the hints'
    plain fields).

    Args:
        tool: The tool.
        hints: The domain hints.

    Returns:
        The field names.

    """
    try:
        hint = typing.get_type_hints(tool.fn).get("return")
    except (NameError, TypeError):
        hint = None
    found = _fields_of(hints.rows.get(tool.name)) | _fields_of(hint) | set(hints.returns.get(tool.name, ()))
    return frozenset(found)


def tool_inputs(tool: Tool) -> frozenset[str]:
    """The id-like parameters of a tool (the ones another tool's output can fill)."""
    params = tool.schema["function"]["parameters"].get("properties", {})
    return frozenset(_singular(p) for p in params if _ID_PARAM.search(p))


@dataclass(frozen=True, slots=True)
class ToolGraph:
    """Data-dependency graph over a domain's tools (inspectable: :meth:`to_dict`, :meth:`to_dot`).

    Attributes:
        nodes: Tool names in the graph.
        edges: (A, B, shared fields): B's arguments can come from A's output.
        writers: The tools that change the DB.

    """

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, tuple[str, ...]], ...]
    writers: frozenset[str]

    @classmethod
    def build(cls, tools: ToolSet, hints: GraphHints | None = None) -> ToolGraph:
        """Derive the graph from a ToolSet.

        Args:
            tools: The domain's tools.
            hints: The domain's hint table (defaults to none).

        Returns:
            The graph.

        """
        hints = hints or GraphHints()
        usable = [t for t in tools if t.name not in hints.skip]
        outputs = {t.name: tool_outputs(t, hints) for t in usable}
        inputs = {t.name: tool_inputs(t) for t in usable}
        edges = []
        for a in usable:
            for b in usable:
                if a.name == b.name or (a.name, b.name) in hints.forbidden:
                    continue
                shared = sorted(outputs[a.name] & inputs[b.name])
                if shared:
                    edges.append((a.name, b.name, tuple(shared)))
        return cls(tuple(t.name for t in usable), tuple(edges), frozenset(t.name for t in usable if t.mutates))

    def successors(self, name: str) -> tuple[str, ...]:
        """Tools whose arguments ``name``'s output can fill."""
        return tuple(b for a, b, _ in self.edges if a == name)

    def predecessors(self, name: str) -> tuple[str, ...]:
        """Tools whose output can fill ``name``'s arguments."""
        return tuple(a for a, b, _ in self.edges if b == name)

    def entry_points(self) -> tuple[str, ...]:
        """Read tools a conversation can start from (no id needs to be known from another tool)."""
        return tuple(n for n in self.nodes if n not in self.writers and not self.predecessors(n)) or tuple(
            n for n in self.nodes if n not in self.writers
        )

    def path_to(self, sources: Sequence[str], target: str) -> tuple[str, ...]:
        """The shortest edge path from any of ``sources`` to ``target`` (excluding the source; empty if none).

        Args:
            sources: Tools already in the walk.
            target: The tool to reach.

        Returns:
            The tools after the source, ending with ``target``; empty when unreachable.

        """
        frontier = [(s, ()) for s in sources]
        seen = set(sources)
        while frontier:
            nxt: list[tuple[str, tuple[str, ...]]] = []
            for node, path in frontier:
                for succ in self.successors(node):
                    if succ == target:
                        return (*path, succ)
                    if succ not in seen and succ not in self.writers:
                        seen.add(succ)
                        nxt.append((succ, (*path, succ)))
            frontier = nxt
        return ()

    def write_walk(
        self, rng: random.Random, hints: GraphHints, writes: int = 1, allowed: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """A walk that starts by identifying the customer and reaches ``writes`` writer tools.

        The walk is: one identification tool (``hints.identify``), the profile read, then for each chosen
        writer the shortest read path to it from what the walk has visited. A writer the graph cannot
        reach is still appended: it is the goal, and its arguments can come from the records shown.

        Args:
            rng: Random source.
            hints: The domain hints (identification and profile tools, forbidden pairs).
            writes: Writer tools to reach.
            allowed: Writers to choose from (defaults to all of the graph's writers).

        Returns:
            The tools, in order, without repeats.

        """
        starts = [t for t in hints.identify if t in self.nodes] or list(self.entry_points())
        if not starts:
            return ()
        walk = [rng.choice(starts)]
        if hints.profile and hints.profile in self.nodes and hints.profile not in walk:
            walk.append(hints.profile)
        pool = sorted(allowed if allowed is not None else self.writers)
        chosen: list[str] = []
        rng.shuffle(pool)
        for writer in pool:
            if len(chosen) >= writes:
                break
            if any((c, writer) in hints.forbidden or (writer, c) in hints.forbidden for c in chosen):
                continue
            chosen.append(writer)
        for writer in chosen:
            path = self.path_to(walk, writer) or (writer,)
            walk.extend(n for n in path if n not in walk)
        return tuple(walk)

    def random_walk(self, rng: random.Random, length: int, write_weight: float = 3.0) -> tuple[str, ...]:
        """A walk along edges, preferring writers (read tools are left to the conversation phase).

        Args:
            rng: Random source.
            length: Maximum number of tools.
            write_weight: How much more likely a writer is picked than a reader at each step.

        Returns:
            The tools visited, in order, without repeats.

        """
        if not self.nodes:
            return ()
        starts = self.entry_points()
        walk = [rng.choice(starts)]
        while len(walk) < length:
            options = [n for n in self.successors(walk[-1]) if n not in walk]
            if not options:
                # Jump back to any visited tool that still has unexplored successors.
                options = [n for w in walk for n in self.successors(w) if n not in walk]
            if not options:
                break
            weights = [write_weight if n in self.writers else 1.0 for n in options]
            walk.append(rng.choices(options, weights=weights)[0])
        return tuple(walk)

    def to_dict(self) -> dict[str, Any]:
        """The graph as JSON-able data."""
        return {
            "nodes": list(self.nodes),
            "writers": sorted(self.writers),
            "edges": [{"from": a, "to": b, "via": list(v)} for a, b, v in self.edges],
        }

    def to_dot(self) -> str:
        """The graph in Graphviz DOT format (writers drawn as boxes)."""
        lines = ["digraph tools {"]
        for n in self.nodes:
            lines.append(f'  "{n}" [shape={"box" if n in self.writers else "ellipse"}];')
        for a, b, via in self.edges:
            lines.append(f'  "{a}" -> "{b}" [label="{",".join(via)}"];')
        lines.append("}")
        return "\n".join(lines)


PERSONAS: tuple[str, ...] = (
    "polite and patient, answers questions fully",
    "in a hurry, gives short answers and wants things done quickly",
    "careful about money, asks what each change will cost",
    "a little confused, sometimes needs a question repeated",
    "friendly and chatty, but sticks to the facts they know",
    "firm and direct, knows exactly what they want",
    "skeptical, double-checks what the agent says",
    "anxious about making a mistake, asks the agent to confirm each detail",
    "formal and precise, spells out every detail in full sentences",
    "curt and a bit annoyed after a bad experience, but not rude",
    "indecisive, weighs options aloud before choosing",
    "elderly and unhurried, not comfortable with technical words",
    "busy parent calling between errands, answers one thing at a time",
    "persistent, pushes back once when told no before accepting it",
    "gives information only when asked for it, never volunteers details",
    "cheerful and trusting, accepts the agent's suggestions readily",
)
"""Persona sketches (written for this project) mixed with the sampled user's identity."""

FAMILIES: Mapping[str, str] = MappingProxyType(
    {
        "direct": "One clear request about one record; the customer knows what they want.",
        "lookup": "The customer describes the target by a property the agent must resolve with tools "
        "(the cheapest option, the most recent order, the same item in another colour, a flight under a "
        "budget) instead of naming ids.",
        "conditional": "The customer's wish depends on something the agent must look up: 'if ... then ..., "
        "otherwise ...'. The actions follow the branch the records make true.",
        "hidden_fact": "The customer does not know or forgets a fact the agent needs (an order id, a "
        "reservation number) and the agent must find it with the tools; the instruction says what the "
        "customer does not know.",
        "change_of_mind": "The customer first asks for one thing, then changes their mind before it is "
        "done; the actions are only the final choice.",
        "multi_intent": "Two or more requests about different records in one conversation, each with its "
        "own write action.",
        "refusal": "The customer pushes for something the policy forbids; the right outcome is no write: "
        "the actions are reads only and the outputs hold the fact the agent must state.",
        "transfer": "The customer needs something only a human agent can do under the policy; the actions "
        "end with transfer_to_human_agents.",
    }
)
"""Task families the LLM proposer is asked for (the family is recorded in provenance)."""

FAMILY_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "direct": 3.0,
        "lookup": 2.0,
        "conditional": 2.0,
        "hidden_fact": 1.5,
        "change_of_mind": 1.0,
        "multi_intent": 2.0,
        "refusal": 1.0,
        "transfer": 0.5,
    }
)
"""How often each family is drawn (simple families first: a small model follows them best)."""


@dataclass(frozen=True, slots=True)
class SamplerWeights:
    """How much of each kind of context one proposal gets, redrawn per proposal as in the paper.

    Attributes:
        tools: Write tools the walk reaches (after identification).
        write_weight: Preference for writer tools in the walk (kept for walks without identification).
        policy: Number of policy clauses (0: the full policy is given, as it is by default).
        records: Number of related records shown.
        persona: Whether a persona is given.
        examples: Number of few-shot examples.

    """

    tools: int
    write_weight: float
    policy: int
    records: int
    persona: bool
    examples: int

    @classmethod
    def draw(cls, rng: random.Random) -> SamplerWeights:
        """Draw a random mix."""
        return cls(
            tools=rng.choice((1, 1, 1, 2)),
            write_weight=rng.choice((2.0, 4.0, 8.0)),
            policy=0,
            records=rng.randint(1, 2),
            persona=rng.random() < 0.8,
            examples=rng.randint(0, 1),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a proposer sees for one blueprint.

    Attributes:
        domain: Domain name.
        user_id: The sampled user.
        user: The user's record as JSON data.
        records: Related records ({table: {key: JSON}}), chosen to fit the walk's writes.
        tools: The sampled tool walk (identification first, then the reads leading to the writes).
        persona: The persona text, if any.
        policy: The policy's clauses (all of them).
        examples: Few-shot blueprints (train split only).
        intent: A template intent, when the proposer uses templates.
        weights: The sampler weights used.
        policy_text: The full policy text given to the proposer.
        family: The task family asked for (see :data:`FAMILIES`).
        candidates: Records the writes can use, by label (variants of the user's items, flights from a
            real search), as JSON data.

    """

    domain: str
    user_id: str | None
    user: dict[str, Any] | None
    records: dict[str, dict[str, Any]]
    tools: tuple[str, ...]
    persona: str | None
    policy: tuple[str, ...]
    examples: tuple[Task, ...] = ()
    intent: str | None = None
    weights: SamplerWeights | None = None
    policy_text: str = ""
    family: str | None = None
    candidates: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A compact JSON-able record of what was sampled (for provenance)."""
        return {
            "user_id": self.user_id,
            "tools": list(self.tools),
            "persona": self.persona,
            "policy": "full" if self.policy_text else f"{len(self.policy)} clauses",
            "records": {t: sorted(rows) for t, rows in self.records.items()},
            "candidates": sorted(self.candidates),
            "examples": [t.id for t in self.examples],
            "intent": self.intent,
            "family": self.family,
        }


_USER_TABLES = ("users", "customers")


def user_table(snapshot: Snapshot) -> str | None:
    """The table holding the domain's users, if any."""
    return next((t for t in _USER_TABLES if t in snapshot.tables), None)


def policy_clauses(policy: str) -> tuple[str, ...]:
    """Split a markdown policy into clauses (bullets and paragraphs, headings dropped)."""
    clauses = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*] )", policy):
        text = " ".join(block.split()).lstrip("-* ").strip()
        if text and not text.startswith("#"):
            clauses.append(text)
    return tuple(clauses)


def related_records(
    snapshot: Snapshot, user: Mapping[str, Any], limit: int, rng: random.Random
) -> dict[str, dict[str, Any]]:
    """Records a user's fields point to (order ids, reservation ids, account ids), at most ``limit``.

    Cost is O(the user's references), not O(DB).
    """
    refs: list[tuple[str, str]] = []
    for value in user.values():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            for table, rows in snapshot.tables.items():
                if value[0] in rows:
                    refs.extend((table, v) for v in value if v in rows)
                    break
    rng.shuffle(refs)
    out: dict[str, dict[str, Any]] = {}
    for table, key in refs[:limit]:
        out.setdefault(table, {})[key] = copy_row(snapshot.tables[table][key])
    return out


Grounder = Callable[
    [Snapshot, ToolSet, Mapping[str, Any], Sequence[str], random.Random, int],
    tuple[dict[str, dict[str, Any]], dict[str, Any]],
]
"""Picks a user's records (and candidate records) that fit the chosen writes."""


def _domain_slot(domain: Any, name: str) -> Any:
    """A field of the domain's ``datagen`` slot (import paths resolved), None when it has none."""
    spec = getattr(domain, "datagen", None)
    return spec.resolve(name) if spec is not None else None


class ContextSampler:
    """Samples proposal contexts from a domain.

    Args:
        domain: The loaded domain (snapshot, tools, policy, tasks).
        hints: The tool-graph hints (defaults to the domain's ``datagen.graph_hints``; none: walks start at
            the graph's entry points).
        examples: Few-shot pool (defaults to the domain's ``train`` split: test tasks never leak into
            prompts).
        include_test_users: Also sample users that test-split tasks are about (off by default, so a
            generated set does not overlap the test split's users).
        user_ids: Sample only these users (blueprints for chosen customers); None: every allowed user.

    """

    def __init__(
        self,
        domain: Any,
        hints: GraphHints | None = None,
        examples: Sequence[Task] | None = None,
        include_test_users: bool = False,
        user_ids: Sequence[str] | None = None,
    ) -> None:
        self.domain = domain
        self.hints = hints or _domain_slot(domain, "graph_hints") or GraphHints()
        self.graph = ToolGraph.build(domain.tools, self.hints)
        self.clauses = policy_clauses(domain.policy)
        splits = getattr(domain, "splits", {}) or {}
        if examples is None:
            examples = domain.task_list("train") if "train" in splits else ()
        self.examples = tuple(examples)
        table = user_table(domain.snapshot)
        self._user_table = table
        users = tuple(domain.snapshot.tables[table]) if table else ()
        self.excluded_users: frozenset[str] = frozenset()
        if not include_test_users and "test" in splits:
            self.excluded_users = frozenset(
                t.user_id for t in domain.task_list("test") if t.user_id is not None and t.user_id in users
            )
        self._user_ids = tuple(u for u in users if u not in self.excluded_users) or users
        if user_ids is not None:
            unknown = sorted(set(user_ids) - set(users))
            if unknown:
                raise ValueError(f"unknown users for the context sampler: {unknown[:5]}")
            self._user_ids = tuple(user_ids)
        self._grounder = _domain_slot(domain, "grounder")

    def sample(
        self, rng: random.Random, intent: str | None = None, user_id: str | None = None, family: str | None = None
    ) -> Context:
        """Draw one context.

        Args:
            rng: Random source (the only source of randomness: same seed, same context).
            intent: A template intent to carry along.
            user_id: Force this user instead of a random one.
            family: Force this task family instead of a weighted draw.

        Returns:
            The context.

        """
        weights = SamplerWeights.draw(rng)
        snapshot = self.domain.snapshot
        family = family or rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]
        writes = 2 if family == "multi_intent" else weights.tools
        uid = user_id or (rng.choice(self._user_ids) if self._user_ids else None)
        user = snapshot.tables[self._user_table].get(uid) if (self._user_table and uid) else None
        tools = self.graph.write_walk(rng, self.hints, writes)
        chosen_writes = [t for t in tools if t in self.graph.writers]
        candidates: dict[str, Any] = {}
        if user is not None and self._grounder is not None:
            records, candidates = self._grounder(snapshot, self.domain.tools, user, chosen_writes, rng, weights.records)
        elif user is not None:
            records = related_records(snapshot, user, weights.records, rng)
        else:
            records = {}
        persona = None
        if weights.persona and user is not None:
            name = user.get("name")
            full = f"{name['first_name']} {name['last_name']}" if isinstance(name, dict) else str(name or uid)
            persona = f"{full}: {rng.choice(PERSONAS)}"
        examples = tuple(rng.sample(self.examples, min(weights.examples, len(self.examples))))
        return Context(
            domain=self.domain.name,
            user_id=uid,
            user=copy_row(user) if user is not None else None,
            records=records,
            tools=tools,
            persona=persona,
            policy=self.clauses,
            examples=examples,
            intent=intent,
            weights=weights,
            policy_text=self.domain.policy,
            family=family,
            candidates=candidates,
        )


def render_context(context: Context, tools: ToolSet, include_policy: bool = True) -> str:
    """The context as prompt text for an LLM proposer.

    Args:
        context: The sampled context.
        tools: The domain's tools (kept for callers; the signatures are in the proposer's system prompt).
        include_policy: Put the policy in this text (an LLM proposer puts it in its system prompt
            instead, so the server's prompt cache reuses it across proposals).

    Returns:
        Markdown text.

    """
    parts = [f"## Domain\n{context.domain}"]
    if context.family and context.family in FAMILIES:
        parts.append(f"## Task family: {context.family}\n{FAMILIES[context.family]}")
    # Names only: the proposer's system prompt lists every tool's signature (cached by the server).
    parts.append("## Tool path (identify the customer, then reach the write tools)\n" + " -> ".join(context.tools))
    if context.user is not None:
        parts.append(f"## User ({context.user_id})\n" + json.dumps(context.user, ensure_ascii=False))
    for table, rows in context.records.items():
        parts.append(f"## The user's {table}\n" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows.values()))
    for label, value in context.candidates.items():
        parts.append(f"## Candidates: {label}\n" + json.dumps(value, ensure_ascii=False))
    if context.persona:
        parts.append(f"## Persona\n{context.persona}")
    if include_policy:
        if context.policy_text:
            parts.append("## Policy\n" + context.policy_text)
        elif context.policy:
            parts.append("## Policy clauses that apply\n" + "\n".join(f"- {c}" for c in context.policy))
    for i, example in enumerate(context.examples, 1):
        ex = {
            "instruction": example.instruction,
            "actions": [a.model_dump() for a in example.actions],
            "outputs": list(example.outputs),
        }
        parts.append(f"## Example {i} (another user)\n" + json.dumps(ex, ensure_ascii=False))
    return "\n\n".join(parts)
