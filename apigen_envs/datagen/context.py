"""Context sampling for blueprint proposals: the tool graph, and a user with their records, a tool walk,
a persona, policy clauses and few-shot examples.

The tool graph has an edge A -> B when an argument of B can be filled from A's output (``find_user_id`` ->
``get_user_details`` -> ``cancel_pending_order``). It is derived from the tool signatures: the fields a
tool returns against the id-like parameters of the others. Tools return plain JSON rows, so the fields
come from a per-domain hint table naming the record type each tool returns (the domain's row models), or
from a tool's return annotation when it names a model; the table also says what types cannot (a tool
returning a bare id string, pairs the policy forbids).
"""

from __future__ import annotations

import json
import random
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from apigen_envs.db import Snapshot, copy_row
from apigen_envs.domains.airline import models as airline_models
from apigen_envs.domains.mock import models as mock_models
from apigen_envs.domains.retail import models as retail_models
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

    """

    rows: Mapping[str, Any] = field(default_factory=dict)
    returns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    forbidden: frozenset[tuple[str, str]] = frozenset()
    skip: frozenset[str] = frozenset({"think", "transfer_to_human_agents", "calculate"})


_RETAIL_ORDER = retail_models.Order
_AIRLINE_RESERVATION = airline_models.Reservation
_MOCK_ACCOUNT = mock_models.Account

DOMAIN_HINTS: Mapping[str, GraphHints] = MappingProxyType(
    {
        "retail": GraphHints(
            rows=MappingProxyType(
                {
                    "cancel_pending_order": _RETAIL_ORDER,
                    "exchange_delivered_order_items": _RETAIL_ORDER,
                    "get_order_details": _RETAIL_ORDER,
                    "get_product_details": retail_models.Product,
                    "get_item_details": retail_models.Variant,
                    "get_user_details": retail_models.User,
                    "modify_pending_order_address": _RETAIL_ORDER,
                    "modify_pending_order_items": _RETAIL_ORDER,
                    "modify_pending_order_payment": _RETAIL_ORDER,
                    "modify_user_address": retail_models.User,
                    "return_delivered_order_items": _RETAIL_ORDER,
                }
            ),
            returns={
                "find_user_id_by_email": ("user_id",),
                "find_user_id_by_name_zip": ("user_id",),
                "list_all_product_types": ("product_id",),
            },
            forbidden=frozenset(
                {
                    ("cancel_pending_order", "modify_pending_order_items"),
                    ("cancel_pending_order", "return_delivered_order_items"),
                    ("return_delivered_order_items", "exchange_delivered_order_items"),
                    ("modify_pending_order_items", "cancel_pending_order"),
                }
            ),
        ),
        "airline": GraphHints(
            rows=MappingProxyType(
                {
                    "book_reservation": _AIRLINE_RESERVATION,
                    "cancel_reservation": _AIRLINE_RESERVATION,
                    "get_reservation_details": _AIRLINE_RESERVATION,
                    "get_user_details": airline_models.User,
                    "list_all_airports": list[airline_models.AirportCode],
                    "search_direct_flight": list[airline_models.DirectFlight],
                    "search_onestop_flight": list[list[airline_models.DirectFlight]],
                    "update_reservation_baggages": _AIRLINE_RESERVATION,
                    "update_reservation_flights": _AIRLINE_RESERVATION,
                    "update_reservation_passengers": _AIRLINE_RESERVATION,
                }
            ),
            forbidden=frozenset({("cancel_reservation", "update_reservation_flights")}),
        ),
        "mock": GraphHints(
            rows=MappingProxyType(
                {
                    "get_customer_details": mock_models.Customer,
                    "get_account_details": _MOCK_ACCOUNT,
                    "set_account_nickname": _MOCK_ACCOUNT,
                    "close_account": _MOCK_ACCOUNT,
                }
            ),
            returns={"find_customer_by_email": ("customer_id",)},
        ),
    }
)
"""Per-domain hint tables."""

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
)
"""Persona sketches (written for this project) mixed with the sampled user's identity."""


@dataclass(frozen=True, slots=True)
class SamplerWeights:
    """How much of each kind of context one proposal gets, redrawn per proposal as in the paper.

    Attributes:
        tools: Length of the tool walk.
        write_weight: Preference for writer tools in the walk.
        policy: Number of policy clauses.
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
            tools=rng.randint(2, 4),
            write_weight=rng.choice((2.0, 4.0, 8.0)),
            policy=rng.randint(2, 6),
            records=rng.randint(1, 4),
            persona=rng.random() < 0.8,
            examples=rng.randint(0, 2),
        )


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a proposer sees for one blueprint.

    Attributes:
        domain: Domain name.
        user_id: The sampled user.
        user: The user's record as JSON data.
        records: Related records ({table: {key: JSON}}).
        tools: The sampled tool walk.
        persona: The persona text, if any.
        policy: The sampled policy clauses.
        examples: Few-shot blueprints.
        intent: A template intent, when the proposer uses templates.
        weights: The sampler weights used.

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

    def summary(self) -> dict[str, Any]:
        """A compact JSON-able record of what was sampled (for provenance)."""
        return {
            "user_id": self.user_id,
            "tools": list(self.tools),
            "persona": self.persona,
            "policy_clauses": len(self.policy),
            "records": {t: sorted(rows) for t, rows in self.records.items()},
            "examples": [t.id for t in self.examples],
            "intent": self.intent,
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


class ContextSampler:
    """Samples proposal contexts from a domain.

    Args:
        domain: The loaded domain (snapshot, tools, policy, tasks).
        hints: The tool-graph hints (defaults to the domain's entry in :data:`DOMAIN_HINTS`).
        examples: Few-shot pool (defaults to the domain's tasks).

    """

    def __init__(self, domain: Any, hints: GraphHints | None = None, examples: Sequence[Task] | None = None) -> None:
        self.domain = domain
        self.graph = ToolGraph.build(domain.tools, hints or DOMAIN_HINTS.get(domain.name))
        self.clauses = policy_clauses(domain.policy)
        self.examples = tuple(examples if examples is not None else domain.task_list())
        table = user_table(domain.snapshot)
        self._user_table = table
        self._user_ids = tuple(domain.snapshot.tables[table]) if table else ()

    def sample(self, rng: random.Random, intent: str | None = None, user_id: str | None = None) -> Context:
        """Draw one context.

        Args:
            rng: Random source (the only source of randomness: same seed, same context).
            intent: A template intent to carry along.
            user_id: Force this user instead of a random one.

        Returns:
            The context.

        """
        weights = SamplerWeights.draw(rng)
        snapshot = self.domain.snapshot
        uid = user_id or (rng.choice(self._user_ids) if self._user_ids else None)
        user = snapshot.tables[self._user_table].get(uid) if (self._user_table and uid) else None
        records = related_records(snapshot, user, weights.records, rng) if user is not None else {}
        tools = self.graph.random_walk(rng, weights.tools, weights.write_weight)
        # Clauses naming a sampled tool's verb (cancel, exchange...) are preferred; others fill up.
        verbs = {w for t in tools for w in t.split("_") if len(w) > 3}
        relevant = [c for c in self.clauses if any(v in c.lower() for v in verbs)]
        rest = [c for c in self.clauses if c not in relevant]
        rng.shuffle(relevant)
        rng.shuffle(rest)
        policy = tuple((relevant + rest)[: weights.policy])
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
            policy=policy,
            examples=examples,
            intent=intent,
            weights=weights,
        )


def render_context(context: Context, tools: ToolSet) -> str:
    """The context as prompt text for an LLM proposer.

    Args:
        context: The sampled context.
        tools: The domain's tools (for the schemas of the sampled tools).

    Returns:
        Markdown text.

    """
    parts = [f"## Domain\n{context.domain}"]
    sampled = [tools[n].schema for n in context.tools if n in tools]
    reads = [t.schema for t in tools if not t.mutates and t.name not in context.tools and not t.terminal]
    parts.append("## Focus tools (the blueprint should use some of these)\n" + json.dumps(sampled, indent=1))
    parts.append("## Other read tools\n" + ", ".join(s["function"]["name"] for s in reads))
    if context.user is not None:
        parts.append(f"## User ({context.user_id})\n" + json.dumps(context.user, ensure_ascii=False))
    for table, rows in context.records.items():
        parts.append(f"## Related {table}\n" + json.dumps(rows, ensure_ascii=False))
    if context.persona:
        parts.append(f"## Persona\n{context.persona}")
    if context.policy:
        parts.append("## Policy clauses that apply\n" + "\n".join(f"- {c}" for c in context.policy))
    for i, example in enumerate(context.examples, 1):
        ex = {
            "instruction": example.instruction,
            "actions": [a.model_dump() for a in example.actions],
            "outputs": list(example.outputs),
        }
        parts.append(f"## Example {i}\n" + json.dumps(ex, ensure_ascii=False))
    return "\n\n".join(parts)
