"""Fuzz every tool of every domain: only tool errors or valid results, never a crash or a snapshot change."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apigen_envs import load_domain
from apigen_envs.errors import ToolCallError, ToolError


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
            _strings_of(record.model_dump(mode="json"), pool)
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
    snapshot_sizes = domain.snapshot.size()

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
        from apigen_envs.tools import render_result

        json.loads(render_result(result)) if not isinstance(result, str) else None

    run()
    assert domain.snapshot.size() == snapshot_sizes
    assert domain.snapshot.view().changes() == {}
