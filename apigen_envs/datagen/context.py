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
from collections.abc import Callable, Mapping, Sequence
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
            identify=("find_user_id_by_email", "find_user_id_by_name_zip"),
            profile="get_user_details",
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
            # Airline customers give their user id; the agent reads the profile first.
            identify=("get_user_details",),
            profile="get_user_details",
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
            identify=("find_customer_by_email",),
            profile="get_customer_details",
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


_RETAIL_STATUS: Mapping[str, str] = MappingProxyType(
    {
        "cancel_pending_order": "pending",
        "modify_pending_order_address": "pending",
        "modify_pending_order_items": "pending",
        "modify_pending_order_payment": "pending",
        "exchange_delivered_order_items": "delivered",
        "return_delivered_order_items": "delivered",
    }
)
"""Order status each retail write needs (the policy's rule; the records shown are chosen to fit it)."""

_VARIANT_WRITES = frozenset({"exchange_delivered_order_items", "modify_pending_order_items"})
_MAX_VARIANTS = 4
_MAX_FLIGHTS = 3


def _search_flights(tools: ToolSet, snapshot: Snapshot, origin: str, destination: str, date: str) -> list[Any]:
    """Run the domain's own ``search_direct_flight`` (a real search, so candidates are bookable)."""
    if "search_direct_flight" not in tools:
        return []
    try:
        found = tools.call(
            snapshot.view(), "search_direct_flight", {"origin": origin, "destination": destination, "date": date}
        )
    except Exception:  # noqa: BLE001 - a refused search just yields no candidates
        return []
    return list(found)[:_MAX_FLIGHTS] if isinstance(found, list) else []


def ground_retail(
    snapshot: Snapshot, tools: ToolSet, user: Mapping[str, Any], writes: Sequence[str], rng: random.Random, limit: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Retail orders whose status allows the chosen writes, and other variants of their items.

    Args:
        snapshot: The base DB.
        tools: The domain's tools.
        user: The user's row.
        writes: The walk's write tools.
        rng: Random source.
        limit: Orders to show at most.

    Returns:
        (records, candidates): orders by id; ``variants of <item_id>`` -> available other variants.

    """
    orders = snapshot.tables.get("orders", {})
    mine = [o for o in user.get("orders", ()) if o in orders]
    wanted = {_RETAIL_STATUS[w] for w in writes if w in _RETAIL_STATUS}
    fitting = [o for o in mine if orders[o].get("status") in wanted]
    rng.shuffle(fitting)
    rest = [o for o in mine if o not in fitting]
    rng.shuffle(rest)
    chosen = (fitting + rest)[: max(limit, len(wanted))]
    records = {"orders": {o: copy_row(orders[o]) for o in chosen}} if chosen else {}
    candidates: dict[str, Any] = {}
    if _VARIANT_WRITES & set(writes):
        products = snapshot.tables.get("products", {})
        for oid in [o for o in chosen if o in fitting][:1] or chosen[:1]:
            for item in list(orders[oid].get("items", ()))[:2]:
                product = products.get(item.get("product_id"))
                if product is None:
                    continue
                others = [
                    {"item_id": v["item_id"], "options": v["options"], "price": v["price"]}
                    for v in product.get("variants", {}).values()
                    if v.get("available") and v.get("item_id") != item.get("item_id")
                ]
                rng.shuffle(others)
                if others:
                    candidates[f"available variants of {item.get('name', 'item')} {item['item_id']}"] = others[
                        :_MAX_VARIANTS
                    ]
    return records, candidates


def ground_airline(
    snapshot: Snapshot, tools: ToolSet, user: Mapping[str, Any], writes: Sequence[str], rng: random.Random, limit: int
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Airline reservations for the chosen writes, and candidate flights from a real search.

    Args:
        snapshot: The base DB.
        tools: The domain's tools.
        user: The user's row.
        writes: The walk's write tools.
        rng: Random source.
        limit: Reservations to show at most.

    Returns:
        (records, candidates): reservations by id; ``flights <origin>-><destination> on <date>`` -> the
        search results.

    """
    reservations = snapshot.tables.get("reservations", {})
    mine = [r for r in user.get("reservations", ()) if r in reservations]
    if "update_reservation_flights" in writes:
        # Basic economy flights cannot be changed: show changeable reservations first.
        mine.sort(key=lambda r: reservations[r].get("cabin") == "basic_economy")
        head = [r for r in mine if reservations[r].get("cabin") != "basic_economy"]
        rng.shuffle(head)
        mine = head + [r for r in mine if r not in head]
    else:
        rng.shuffle(mine)
    chosen = mine[:limit]
    records = {"reservations": {r: copy_row(reservations[r]) for r in chosen}} if chosen else {}
    candidates: dict[str, Any] = {}
    legs: list[tuple[str, str, str]] = []
    flights = snapshot.tables.get("flights", {})
    if "update_reservation_flights" in writes and chosen:
        first = reservations[chosen[0]]["flights"][0]
        # Bookable dates of the same route (a change keeps the trip's endpoints).
        dates = sorted(
            {
                d
                for row in flights.values()
                if row.get("origin") == first["origin"] and row.get("destination") == first["destination"]
                for d, v in row.get("dates", {}).items()
                if v.get("status") == "available" and d != first["date"]
            }
        )
        if dates:
            legs.append((first["origin"], first["destination"], rng.choice(dates)))
    if "book_reservation" in writes:
        keys = sorted(flights)
        for _ in range(8):
            row = flights[rng.choice(keys)]
            dates = sorted(d for d, v in row.get("dates", {}).items() if v.get("status") == "available")
            if dates:
                legs.append((row["origin"], row["destination"], rng.choice(dates)))
                break
    for origin, destination, date in legs:
        found = _search_flights(tools, snapshot, origin, destination, date)
        if found:
            candidates[f"flights {origin}->{destination} on {date} (search_direct_flight)"] = found
    return records, candidates


Grounder = Callable[
    [Snapshot, ToolSet, Mapping[str, Any], Sequence[str], random.Random, int],
    tuple[dict[str, dict[str, Any]], dict[str, Any]],
]
"""Picks a user's records (and candidate records) that fit the chosen writes."""

GROUNDERS: Mapping[str, Grounder] = MappingProxyType({"retail": ground_retail, "airline": ground_airline})
"""Per-domain grounding (other domains show the records the user's fields point to)."""


def _domain_slot(domain: Any, name: str) -> Any:
    """A field of the domain's ``datagen`` slot, if the domain has one (hints may live there)."""
    return getattr(getattr(domain, "datagen", None), name, None)


class ContextSampler:
    """Samples proposal contexts from a domain.

    Args:
        domain: The loaded domain (snapshot, tools, policy, tasks).
        hints: The tool-graph hints (defaults to the domain's ``datagen.graph_hints`` if it has that slot,
            else its entry in :data:`DOMAIN_HINTS`).
        examples: Few-shot pool (defaults to the domain's ``train`` split: test tasks never leak into
            prompts).
        include_test_users: Also sample users that test-split tasks are about (off by default, so a
            generated set does not overlap the test split's users).

    """

    def __init__(
        self,
        domain: Any,
        hints: GraphHints | None = None,
        examples: Sequence[Task] | None = None,
        include_test_users: bool = False,
    ) -> None:
        self.domain = domain
        self.hints = hints or _domain_slot(domain, "graph_hints") or DOMAIN_HINTS.get(domain.name) or GraphHints()
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
        self._grounder = _domain_slot(domain, "grounder") or GROUNDERS.get(domain.name)

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
