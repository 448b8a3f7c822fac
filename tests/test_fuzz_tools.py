"""Fuzz every tool of every domain: only tool errors or valid results, never a crash or a snapshot change.

Rows read through a view are the snapshot's own (shared) dicts, so a tool that mutates a row it did not
``edit`` would change every later episode: the snapshot's content hash is compared before and after, in
every semantics profile (the peers' profiles meet ill-typed arguments with Python's own errors, which the
agent sees; they must still never write through to the snapshot).
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apigen_envs import load_domain
from apigen_envs.errors import ToolCallError, ToolError
from apigen_envs.tools import execute, render_result


def _strings_of(value, out, limit=400):
    if len(out) >= limit:
        return
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            out.add(str(k))
            _strings_of(v, out, limit)
    elif isinstance(value, list):
        for v in value:
            _strings_of(v, out, limit)


def realistic_strings(domain) -> list[str]:
    pool: set[str] = set()
    for rows in domain.snapshot.tables.values():
        for _, record in itertools.islice(rows.items(), 40):
            _strings_of(record, pool)
    return sorted(pool)


def values_for(domain):
    real = st.sampled_from(realistic_strings(domain))
    scalars = st.one_of(
        real,
        st.text(max_size=30),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.one_of(real, st.text(max_size=8)), inner, max_size=4)
        ),
        max_leaves=8,
    )


CASES = [(d, t.name) for d in ("mock", "retail", "airline") for t in load_domain(d).tools]


@pytest.mark.parametrize(("domain_name", "tool_name"), CASES)
def test_fuzz_tool(domain_name, tool_name):
    domain = load_domain(domain_name)
    tool = domain.tools[tool_name]
    params = list(tool.schema["function"]["parameters"].get("properties", {}))
    values = values_for(domain)
    arguments = st.fixed_dictionaries({}, optional={p: values for p in params + ["unexpected"]})
    digest = domain.snapshot.content_hash()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(arguments)
    def run(args):
        view = domain.snapshot.view()
        try:
            with view.transaction():
                result = domain.tools.call(view, tool_name, args)
        except (ToolError, ToolCallError) as exc:
            assert str(exc)  # a message the agent can read
            assert view.changes() == {}  # a refused call leaves nothing behind
            return
        json.loads(render_result(result)) if not isinstance(result, str) else None

    run()
    assert domain.snapshot.content_hash() == digest
    assert domain.snapshot.view().changes() == {}


# The embedded airline tasks call get_flight_status, which tau-bench v1 lacks: its profile gets the extras.
PEER_PROFILES = ("tau2", "tau-bench+extra_tools")
PEER_CASES = [
    (d, profile, t.name)
    for d in ("retail", "airline")
    for profile in PEER_PROFILES
    for t in load_domain(d, semantics=profile).tools
]


@pytest.mark.parametrize(("domain_name", "profile", "tool_name"), PEER_CASES)
def test_fuzz_tool_peer_profiles_never_write_through(domain_name, profile, tool_name):
    domain = load_domain(domain_name, semantics=profile)
    tool = domain.tools[tool_name]
    params = list(tool.schema["function"]["parameters"].get("properties", {}))
    arguments = st.fixed_dictionaries({}, optional={p: values_for(domain) for p in params + ["unexpected"]})
    digest = domain.snapshot.content_hash()

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(arguments)
    def run(args):
        view = domain.snapshot.view()
        outcome = execute(domain.tools, view, tool_name, args, atomic=domain.semantics.atomic_calls)
        # The peers' calling convention: every exception is an observation, never an environment bug.
        assert outcome.bug is None and isinstance(outcome.content, str)
        if outcome.error:
            assert outcome.content.startswith("Error: ") or outcome.content.startswith("Unknown action")

    run()
    assert domain.snapshot.content_hash() == digest
