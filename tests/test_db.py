from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from apigen_envs.db import FrozenMap, IndexSpec, Record, Snapshot


class Row(Record):
    id: str
    value: int
    tags: FrozenMap[str, int] = {}


def make_snapshot(n: int = 5) -> Snapshot:
    rows = {f"r{i}": Row(id=f"r{i}", value=i, tags={"t": i}) for i in range(n)}
    return Snapshot({"rows": rows}, {"rows": "id"}, (IndexSpec("rows", "parity", lambda r: r.value % 2),))


def test_records_are_frozen():
    row = Row(id="a", value=1, tags={"x": 1})
    with pytest.raises(ValidationError):
        row.value = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        row.tags["y"] = 2
    new = row.evolve(tags={**row.tags, "y": 2})
    assert row.tags == {"x": 1} and new.tags == {"x": 1, "y": 2}
    assert pickle.loads(pickle.dumps(new)) == new


def test_snapshot_tables_are_read_only():
    snap = make_snapshot()
    with pytest.raises(TypeError):
        snap.tables["rows"]["r0"] = Row(id="r0", value=9)  # type: ignore[index]


def test_view_reads_writes_changes_and_fingerprint():
    snap = make_snapshot()
    view = snap.view()
    assert view.changes() == {} and view.fingerprint() == snap.view().fingerprint()
    view.rows.put(view.rows["r1"].evolve(value=10))
    view.rows.put(Row(id="new", value=7))
    view.rows.delete("r2")
    assert view.rows["r1"].value == 10 and snap.tables["rows"]["r1"].value == 1
    assert "r2" not in view.rows and "new" in view.rows
    assert list(view.rows.keys()) == ["r0", "r1", "r3", "r4", "new"]
    assert len(view.rows) == 5
    changes = view.changes()
    assert set(changes["rows"]) == {"r1", "r2", "new"} and changes["rows"]["r2"] is None
    assert view.fingerprint() != snap.view().fingerprint()
    # writing the original value back is not a change
    view.rows.put(snap.tables["rows"]["r1"])
    assert "r1" not in view.changes()["rows"]
    diff = {d["key"]: d for d in view.diff()}
    assert diff["r2"]["after"] is None and diff["new"]["before"] is None


def test_lookup_honours_overlay():
    snap = make_snapshot()
    view = snap.view()
    assert {r.id for r in view.rows.lookup("parity", 1)} == {"r1", "r3"}
    view.rows.put(view.rows["r1"].evolve(value=2))
    view.rows.put(Row(id="odd", value=5))
    view.rows.delete("r3")
    assert {r.id for r in view.rows.lookup("parity", 1)} == {"odd"}
    assert {r.id for r in view.rows.lookup("parity", 0)} == {"r0", "r1", "r2", "r4"}


def test_transaction_rolls_back_partial_writes():
    view = make_snapshot().view()
    view.rows.put(Row(id="keep", value=1))
    with pytest.raises(RuntimeError), view.transaction():
        view.rows.put(Row(id="lost", value=2))
        view.rows.delete("r0")
        raise RuntimeError("boom")
    assert "lost" not in view.rows and "r0" in view.rows and "keep" in view.rows


def test_fork_is_independent():
    view = make_snapshot().view()
    view.rows.put(Row(id="a", value=1))
    other = view.fork()
    other.rows.put(Row(id="b", value=2))
    assert "b" not in view.rows and "a" in other.rows


ops = st.lists(
    st.tuples(st.sampled_from(["put", "delete"]), st.integers(0, 1), st.integers(0, 7), st.integers(-5, 5)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_view_writes_never_reach_snapshot_or_other_views(operations):
    snap = make_snapshot(6)
    before = {k: v for k, v in snap.tables["rows"].items()}
    views = [snap.view(), snap.view()]
    model = [dict(before), dict(before)]
    for op, which, key_i, value in operations:
        key = f"r{key_i}"
        view = views[which]
        if op == "put":
            view.rows.put(Row(id=key, value=value))
            model[which][key] = Row(id=key, value=value)
        elif key in model[which]:
            view.rows.delete(key)
            del model[which][key]
        else:
            with pytest.raises(KeyError):
                view.rows.delete(key)
    assert dict(snap.tables["rows"]) == before
    for view, expected in zip(views, model, strict=True):
        assert dict(view.rows.items()) == expected
        changed = {k for k in expected if before.get(k) != expected[k]} | (set(before) - set(expected))
        assert set(view.changes().get("rows", {})) == changed
    assert snap.view().changes() == {}
