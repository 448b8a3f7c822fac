"""Semantics profiles: whose tool behaviour, reward and output matching an episode follows.

A score means the same as a peer's only when the tools, the final-state check and the output matching
are the peer's. Each profile names one such set of rules:

* ``tau-bench``: tau-bench v1 (Sierra, 2024). Tools are called with whatever arguments the agent sent
  (no schema validation; Python's own errors when a name is missing or unknown), refuse exactly what
  v1's tools refuse with v1's error texts, store agent-supplied values verbatim, and keep any partial
  write a failing call made. Required outputs count only in the agent's plain replies (text turns
  without tool calls), lower-cased, commas removed.
* ``tau2``: tau2-bench. The same calling convention, with tau2's tool logic, error texts and record
  normalisation (values pass through tau2's record types where tau2 builds records). Required outputs
  count in any assistant text, including text sent beside a tool call.
* ``apigen``: our default for the embedded data: tau2's tool logic and output matching, plus named
  improvements, each a flag below (atomic calls, schema-validated arguments, fixes of peer defects,
  extra read tools).

In every profile an episode that neither side ended (``max_turns``) scores 0, as both peers score it,
and a tool enforces only what the peer's tool enforces: the policy is the agent's to follow. Options a
profile does not use are off in it unless asked for explicitly (``with_options``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from apigen_envs.tools import CallConvention

SemanticsName = Literal["apigen", "tau2", "tau-bench"]
"""The profile names (recorded on every Episode)."""

OutputMatching = Literal["replies", "any_text"]
"""Where required outputs may appear: plain replies only (tau-bench) or any assistant text (tau2)."""


@dataclass(frozen=True, slots=True)
class Semantics:
    """One semantics profile with its options.

    Attributes:
        name: The profile name.
        tools_of: Whose tool logic, tool list and error texts to follow (``"tau2"`` or ``"tau-bench"``).
        output_matching: Where required outputs may appear.
        atomic_calls: A tool call that fails leaves no partial write (both peers keep partial writes).
        validate_arguments: Arguments are validated against the tool's schema before the call, with a
            clear error for a wrong type (both peers call the function with what the agent sent).
        fix_peer_defects: Fix defects of the peer's tools that no policy asks for: tau2's item-swap price
            copied from the last new item, tau2/tau-bench's one-stop search date arithmetic, the fixed
            limit of three new ids per episode (see each domain's tools module for the list).
        extra_tools: Offer read tools the peer lacks (retail ``get_item_details`` and ``think`` beside
            tau2's list; airline ``get_flight_status`` beside tau-bench's).
        seat_accounting: Airline: give seats back when a reservation is cancelled or its flights change
            (neither peer does). Off by default in every profile.
        user_nudges: LLM user simulators may nudge an agent that proposed an action, got a confirmation
            and did not act (neither peer does).

    """

    name: SemanticsName
    tools_of: Literal["tau2", "tau-bench"]
    output_matching: OutputMatching
    atomic_calls: bool = False
    validate_arguments: bool = False
    fix_peer_defects: bool = False
    extra_tools: bool = False
    seat_accounting: bool = False
    user_nudges: bool = False

    @classmethod
    def named(cls, name: str) -> Semantics:
        """The profile of this name with its default options.

        Raises:
            ValueError: For an unknown name.

        """
        try:
            return PROFILES[name]
        except KeyError:
            raise ValueError(f"unknown semantics {name!r}; choose from {sorted(PROFILES)}") from None

    def with_options(self, **options: bool) -> Semantics:
        """A copy with some options changed (e.g. ``seat_accounting=True``).

        Raises:
            ValueError: For an unknown option.

        """
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ValueError(f"unknown semantics options {sorted(unknown)}; options: {list(_OPTIONS)}")
        return dataclasses.replace(self, **options)

    @property
    def label(self) -> str:
        """The name, plus every option that differs from the named profile (``tau2+seat_accounting``)."""
        base = PROFILES[self.name]
        changed = [("" if getattr(self, f) else "no_") + f for f in _OPTIONS if getattr(self, f) != getattr(base, f)]
        return "+".join([self.name, *changed])

    def describe(self) -> dict[str, Any]:
        """Every field, for reports and episode configs."""
        return dataclasses.asdict(self)


_OPTIONS = ("atomic_calls", "validate_arguments", "fix_peer_defects", "extra_tools", "seat_accounting", "user_nudges")

PROFILES: Mapping[str, Semantics] = MappingProxyType(
    {
        "tau-bench": Semantics(name="tau-bench", tools_of="tau-bench", output_matching="replies"),
        "tau2": Semantics(name="tau2", tools_of="tau2", output_matching="any_text"),
        "apigen": Semantics(
            name="apigen",
            tools_of="tau2",
            output_matching="any_text",
            atomic_calls=True,
            validate_arguments=True,
            fix_peer_defects=True,
            extra_tools=True,
            user_nudges=True,
        ),
    }
)
"""Every profile by name, with its default options."""


def resolve(semantics: Semantics | str | None, default: str) -> Semantics:
    """A profile from a profile, a name or a label (``"tau2+seat_accounting"``), else the default name.

    Raises:
        ValueError: For an unknown name or option.

    """
    if isinstance(semantics, Semantics):
        return semantics
    if not semantics:
        return Semantics.named(default)
    name, *options = str(semantics).split("+")
    profile = Semantics.named(name)
    flags: dict[str, bool] = {}
    for option in options:
        flags[option.removeprefix("no_")] = not option.startswith("no_")
    return profile.with_options(**flags) if flags else profile


_V1_DUPLICATE = "tau_bench.envs.{domain}.tools.{name}.{label}() got multiple values for keyword argument 'data'"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def call_convention(semantics: Semantics, domain: str, tau2_toolkit: str) -> CallConvention:
    """How calls reach a domain's tools under a profile: schema validation, or the peer's own call errors.

    Args:
        semantics: The profile.
        domain: The peer's domain package name (``retail``, ``airline``), as its error texts print it.
        tau2_toolkit: tau2's toolkit class of the domain (``RetailTools``), as its error texts print it.

    Returns:
        The convention for the domain's ToolSet.

    """
    if semantics.validate_arguments:
        return CallConvention(validate=True)
    if semantics.tools_of == "tau-bench":
        return CallConvention(
            validate=False,
            label=lambda name: f"{_camel(name)}.invoke",
            # Python names the function with its module when a call passes a keyword twice.
            reserved=MappingProxyType({"data": _V1_DUPLICATE.replace("{domain}", domain)}),
            unknown_tool=lambda name: f"Unknown action {name}",
            python_errors=True,
        )
    return CallConvention(
        validate=False,
        label=lambda name: f"{tau2_toolkit}.{name}",
        # tau2 passes the arguments on through Environment.make_tool_call(self, tool_name, requestor=..., **kw).
        reserved=MappingProxyType(
            {
                "self": "Environment.make_tool_call() got multiple values for argument 'self'",
                "tool_name": "Environment.make_tool_call() got multiple values for argument 'tool_name'",
                "requestor": "tau2.environment.environment.Environment.make_tool_call() got multiple values for "
                "keyword argument 'requestor'",
            }
        ),
        unknown_tool=lambda name: f"Error: Tool '{name}' not found.",
        python_errors=True,
    )
