"""Domain policy rules as Python predicates over an execution trace.

Tools refuse only what the peer's tools refuse (see :mod:`apigen_envs.semantics`), and the peers leave
the policy to the agent: a tool books six passengers, removes checked bags or changes the flights of a
basic economy reservation when asked. These predicates are where the policy lives for blueprints: every
rule a tool used to enforce (and the peers' tools enforce under one profile but not the other) is here,
so the policy stage rejects a blueprint that breaks it whatever the semantics profile. They also catch
what no tool could see, mostly across actions ("B is invalid given A's change"): a write before the user
was identified, a return and a cancellation of the same order, a certificate for an ineligible user.
Each violation names the rule it breaks, so the feedback to the proposer is specific.

Rows are plain JSON dicts (see :mod:`apigen_envs.db`); the predicates read them and never write.

This module is the generic half (rules, violations, row helpers); each domain supplies its predicates
through its datagen slot (:class:`~apigen_envs.domain.DatagenSpec`; the built-in ones live in
``domains/<name>/policy_rules.py``), so a third-party domain brings its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from apigen_envs.datagen.trace import ExecutionTrace


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule.

    Attributes:
        rule: The rule's name.
        message: What exactly is wrong.
        step: Index of the offending action, when one is to blame.

    """

    rule: str
    message: str
    step: int | None = None

    def __str__(self) -> str:
        where = f" (action {self.step})" if self.step is not None else ""
        return f"[{self.rule}]{where} {self.message}"


Check = Callable[[ExecutionTrace], Iterable[Violation]]


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """A named policy predicate.

    Attributes:
        name: Short identifier shown in failures.
        description: The policy clause in one sentence.
        check: Yields the violations found in a trace.

    """

    name: str
    description: str
    check: Check


def check_policy(trace: ExecutionTrace, rules: Iterable[PolicyRule]) -> list[Violation]:
    """Run every rule over a trace.

    Args:
        trace: The executed blueprint.
        rules: The domain's rules.

    Returns:
        All violations, in rule order.

    """
    return [v for rule in rules for v in rule.check(trace)]


def get_row(view: Any, table: str, key: Any) -> Any:
    """The row ``key`` of ``table`` in a view, or None (a missing table, key or a non-string key)."""
    if not isinstance(key, str):
        return None
    try:
        return view[table].get(key)
    except KeyError:
        return None


def dict_items(value: Any) -> list[dict[str, Any]]:
    """The dict elements of a list argument (anything else in it is the format stage's problem)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


_BUILT_IN_RULES = MappingProxyType({"RETAIL_RULES": "retail", "AIRLINE_RULES": "airline", "MOCK_RULES": "mock"})


def rules_for(domain: Any) -> tuple[PolicyRule, ...]:
    """The policy rules a domain supplies through its datagen slot (none when it supplies none).

    Args:
        domain: A :class:`~apigen_envs.domain.Domain`, or the name of a built-in domain.

    Returns:
        The rules.

    """
    spec = getattr(domain, "datagen", None) if not isinstance(domain, str) else builtin_datagen(domain)
    rules = spec.rules() if spec is not None else None
    return tuple(rules or ())


def builtin_datagen(name: str) -> Any:
    """The datagen spec of a built-in domain (``apigen_envs.domains.<name>.DATAGEN``), or None."""
    import importlib

    try:
        module = importlib.import_module(f"apigen_envs.domains.{name}")
    except ImportError:
        return None
    return getattr(module, "DATAGEN", None)


def __getattr__(name: str) -> Any:
    # The built-in rule sets moved into their domains; the old names still resolve, lazily.
    if name in _BUILT_IN_RULES:
        return rules_for(_BUILT_IN_RULES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
