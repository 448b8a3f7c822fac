"""The snapshot / copy-on-write view layer over plain JSON rows."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apigen_envs.db import (
    IndexSpec,
    Snapshot,
    canonical,
    changes_to_json,
    copy_row,
    dumps,
    fingerprint_changes,
    json_encoder,
    own,
    same_changes,
)


def make_rows(n: int = 5) -> dict[str, dict]:
    return {f"r{i}": {"id": f"r{i}", "value": i, "tags": {"t": i}, "log": [i]} for i in range(n)}


def make_snapshot(n: int = 5) -> Snapshot:
    return Snapshot({"rows": make_rows(n)}, (IndexSpec("rows", "parity", lambda r: r["value"] % 2),))


# ---------------------------------------------------------------------------------------------- snapshot
def test_snapshot_tables_are_read_only_and_indexes_name_real_tables():
    snap = make_snapshot()
    with pytest.raises(TypeError):
        snap.tables["rows"]["r0"] = {"id": "r0"}  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.tables["other"] = {}  # type: ignore[index]
    assert snap.size() == {"rows": 5}
    with pytest.raises(ValueError, match="unknown tables"):
        Snapshot({"rows": {}}, (IndexSpec("nope", "x", lambda r: r),))
    with pytest.raises(KeyError, match="no index"):
        snap.view().rows.lookup("missing", 1)
    with pytest.raises(KeyError, match="no table"):
        snap.view()["missing"]
    with pytest.raises(AttributeError):
        snap.view().missing  # noqa: B018


def test_to_json_and_content_hash():
    snap = make_snapshot()
    data = snap.to_json()
    assert data == {"rows": make_rows()}
    data["rows"]["r0"]["tags"]["t"] = 99  # a fresh copy: the snapshot does not see it
    assert snap.tables["rows"]["r0"]["tags"]["t"] == 0
    digest = snap.content_hash()
    assert digest == make_snapshot().content_hash()
    # The hash sees a write that bypassed the view (what the conformance check relies on)...
    snap.tables["rows"]["r0"]["tags"]["t"] = 5
    assert snap.content_hash() != digest
    snap.tables["rows"]["r0"]["tags"]["t"] = 0
    assert snap.content_hash() == digest
    # ...and a change of type alone.
    snap.tables["rows"]["r1"]["value"] = 1.0
    assert snap.content_hash() != digest


# ---------------------------------------------------------------------------------------------- reads and writes
def test_get_shares_rows_and_edit_copies_on_first_write():
    snap = make_snapshot()
    view = snap.view()
    assert view.rows.get("r1") is snap.tables["rows"]["r1"]
    assert view.rows.get("nope") is None and "nope" not in view.rows and 1 not in view.rows
    with pytest.raises(KeyError):
        view.rows["nope"]
    row = view.rows.edit("r1")
    assert row is not snap.tables["rows"]["r1"] and row == snap.tables["rows"]["r1"]
    row["value"] = 10
    own(row, "tags")["t"] = 10
    own(row, "log").append(10)
    # Edits are visible through the view, and only through it.
    assert view.rows["r1"] is row and view.rows.get("r1")["value"] == 10
    assert snap.tables["rows"]["r1"] == {"id": "r1", "value": 1, "tags": {"t": 1}, "log": [1]}
    assert snap.view().rows["r1"]["value"] == 1
    # A second edit of the same row in the same view is the same private copy.
    assert view.rows.edit("r1") is row
    with pytest.raises(KeyError):
        view.rows.edit("nope")


def test_edit_is_shallow_and_own_copies_only_the_path():
    snap = make_snapshot()
    view = snap.view()
    row = view.rows.edit("r1")
    base = snap.tables["rows"]["r1"]
    assert row["tags"] is base["tags"]  # nested containers are shared until owned
    tags = own(row, "tags")
    assert tags is row["tags"] and tags is not base["tags"] and row["log"] is base["log"]
    tags["t"] = 99
    assert base["tags"] == {"t": 1} and view.rows["r1"]["tags"] == {"t": 99}
    with pytest.raises(KeyError):
        own(row, "missing")
    deep = view.rows.edit("r2")
    deep["nested"] = {"a": [{"b": 1}]}
    own(deep, "nested", "a", 0)["b"] = 2
    assert deep["nested"]["a"][0]["b"] == 2


def test_put_delete_keys_and_len():
    snap = make_snapshot()
    view = snap.view()
    view.rows.put("new", {"id": "new", "value": 7})
    view.rows.put("r0", {"id": "r0", "value": -1})
    view.rows.delete("r2")
    with pytest.raises(KeyError):
        view.rows.delete("r2")
    with pytest.raises(KeyError):
        view.rows.edit("r2")
    with pytest.raises(KeyError):
        view.rows.delete("nope")
    assert "r2" not in view.rows and view.rows.get("r2") is None
    assert list(view.rows.keys()) == ["r0", "r1", "r3", "r4", "new"]
    assert list(view.rows) == list(view.rows.keys())
    assert [k for k, _ in view.rows.items()] == list(view.rows.keys())
    assert [r["id"] for r in view.rows.values()] == ["r0", "r1", "r3", "r4", "new"]
    assert len(view.rows) == 5 and len(snap.view().rows) == 5
    # A deleted row can be put back.
    view.rows.put("r2", {"id": "r2", "value": 2, "tags": {"t": 2}, "log": [2]})
    assert "r2" in view.rows and "r2" not in view.changes()["rows"]


def test_changes_fingerprint_and_diff():
    snap = make_snapshot()
    view = snap.view()
    assert view.changes() == {} and view.fingerprint() == snap.view().fingerprint()
    view.rows.edit("r1")["value"] = 10
    view.rows.put("new", {"id": "new", "value": 7})
    view.rows.delete("r2")
    changes = view.changes()
    assert set(changes["rows"]) == {"r1", "r2", "new"} and changes["rows"]["r2"] is None
    assert changes["rows"]["r1"]["value"] == 10
    assert view.fingerprint() != snap.view().fingerprint()
    assert view.fingerprint() == fingerprint_changes(changes)
    diff = {d["key"]: d for d in view.diff()}
    assert diff["r1"]["before"]["value"] == 1 and diff["r1"]["after"]["value"] == 10
    assert diff["r2"]["after"] is None and diff["new"]["before"] is None
    # An edited row put back to its original content is no longer a change; so is a read-only edit.
    view.rows.edit("r1")["value"] = 1
    view.rows.edit("r3")
    assert set(view.changes()["rows"]) == {"r2", "new"}
    # changes_json is a sorted fresh copy.
    as_json = view.changes_json()
    assert list(as_json["rows"]) == ["new", "r2"]
    as_json["rows"]["new"]["value"] = 0
    assert view.rows["new"]["value"] == 7
    assert changes_to_json(view.changes()) == view.changes_json()


@pytest.mark.parametrize(("old", "new"), [(50, 50.0), (1, True), (0, False), ("1", 1), ([1], (1,))])
def test_change_detection_is_strict_about_json_types(old, new):
    """``50`` and ``50.0`` are equal in Python but not in JSON; both peers' state hashes tell them apart."""
    snap = Snapshot({"rows": {"a": {"amount": old}}})
    view = snap.view()
    view.rows.edit("a")["amount"] = new
    if json.dumps(old) == json.dumps(new):  # a tuple dumps as a list: the same JSON, no change
        assert view.changes() == {}
        return
    assert view.changes() == {"rows": {"a": {"amount": new}}}
    assert view.fingerprint() != snap.view().fingerprint()
    other = snap.view()
    other.rows.edit("a")["amount"] = old
    assert other.changes() == {}
    assert not same_changes(view.changes(), {"rows": {"a": {"amount": old}}})
    assert same_changes(view.changes(), {"rows": {"a": {"amount": new}}})
    assert canonical({"amount": old}) != canonical({"amount": new})


def test_same_changes_ignores_empty_tables_and_key_order():
    a = {"rows": {"x": {"a": 1, "b": [1, 2]}}, "empty": {}}
    b = {"rows": {"x": {"b": [1, 2], "a": 1}}}
    assert same_changes(a, b) and same_changes(b, a)
    reordered = fingerprint_changes({"rows": {"x": {"b": 2, "a": 1}}})
    assert fingerprint_changes({"rows": {"x": {"a": 1, "b": 2}}}) == reordered
    assert not same_changes(b, {"rows": {"x": None}})
    assert not same_changes(b, {"rows": {"y": {"a": 1, "b": [1, 2]}}})
    assert not same_changes(b, {"other": {"x": {"a": 1, "b": [1, 2]}}})


# ---------------------------------------------------------------------------------------------- lookups
def test_lookup_and_lookup_keys_honour_the_overlay():
    snap = make_snapshot()
    view = snap.view()
    assert view.rows.lookup_keys("parity", 1) == ["r1", "r3"]
    assert [r["id"] for r in view.rows.lookup("parity", 1)] == ["r1", "r3"]
    assert view.rows.lookup("parity", 1)[0] is snap.tables["rows"]["r1"]
    view.rows.edit("r1")["value"] = 2  # an in-place edit moves the row to the other index key
    view.rows.put("odd", {"id": "odd", "value": 5})
    view.rows.delete("r3")
    assert view.rows.lookup_keys("parity", 1) == ["odd"]
    assert view.rows.lookup_keys("parity", 0) == ["r0", "r1", "r2", "r4"]  # table order, not write order
    assert view.rows.lookup_keys("parity", 7) == []
    assert snap.view().rows.lookup_keys("parity", 1) == ["r1", "r3"]  # other views are not affected


def test_lookup_keys_finds_rows_that_do_not_hold_their_key():
    """tau-bench v1 user rows have no ``user_id`` field: the key is only known to the table."""
    users = Snapshot(
        {"users": {"ana_1": {"email": "Ana@x.com"}, "ben_2": {"email": "ben@x.com"}}},
        (IndexSpec("users", "email", lambda u: u["email"].lower()),),
    )
    view = users.view()
    assert view.users.lookup_keys("email", "ana@x.com") == ["ana_1"]
    view.users.put("cy_3", {"email": "ANA@x.com"})
    assert view.users.lookup_keys("email", "ana@x.com") == ["ana_1", "cy_3"]


# ---------------------------------------------------------------------------------------------- transactions
def test_transaction_rolls_back_in_place_edits_puts_and_deletes():
    snap = make_snapshot()
    view = snap.view()
    kept = view.rows.edit("r0")
    kept["value"] = 100
    view.rows.put("keep", {"id": "keep", "value": 1})
    with pytest.raises(RuntimeError, match="boom"), view.transaction():
        own(view.rows.edit("r0"), "tags")["t"] = -1  # edited before the block: restored to its pre-block content
        own(view.rows.edit("r1"), "log").append(-1)  # first edited in the block: dropped again
        view.rows.put("lost", {"id": "lost", "value": 2})
        view.rows.put("keep", {"id": "keep", "value": 2})
        view.rows.delete("r2")
        raise RuntimeError("boom")
    assert view.rows["r0"] == {"id": "r0", "value": 100, "tags": {"t": 0}, "log": [0]}
    assert view.rows["r1"] is snap.tables["rows"]["r1"] and view.rows["r1"]["log"] == [1]
    assert "lost" not in view.rows and "r2" in view.rows and view.rows["keep"]["value"] == 1
    assert set(view.changes()["rows"]) == {"r0", "keep"}
    assert snap.content_hash() == make_snapshot().content_hash()


def test_transaction_keeps_writes_of_a_block_that_succeeds_and_does_not_nest():
    view = make_snapshot().view()
    with view.transaction():
        view.rows.edit("r0")["value"] = 9
        view.rows.delete("r1")
    assert view.rows["r0"]["value"] == 9 and "r1" not in view.rows
    with pytest.raises(RuntimeError, match="do not nest"), view.transaction(), view.transaction():
        pass
    # After a failed (or nested) block the view takes transactions again.
    with pytest.raises(KeyError), view.transaction():
        view.rows.edit("r0")["value"] = 10
        view.rows.edit("nope")
    assert view.rows["r0"]["value"] == 9


# ---------------------------------------------------------------------------------------------- fork and copies
def test_fork_is_independent_including_edited_rows():
    snap = make_snapshot()
    view = snap.view()
    view.rows.edit("r0")["value"] = 1
    view.rows.put("a", {"id": "a", "value": 1})
    view.rows.delete("r4")
    other = view.fork()
    assert other.changes_json() == view.changes_json()
    other.rows.edit("r0")["value"] = 2  # the fork's copy of an edited row is its own
    other.rows.edit("a")["value"] = 2
    other.rows.put("b", {"id": "b", "value": 2})
    view.rows.edit("r1")["value"] = 3
    assert view.rows["r0"]["value"] == 1 and view.rows["a"]["value"] == 1 and "b" not in view.rows
    assert "a" in other.rows and other.rows["r1"]["value"] == 1 and "r4" not in other.rows
    assert snap.tables["rows"]["r0"]["value"] == 0


def test_copy_row_shares_nothing_mutable():
    row = {"a": [1, {"b": 2}], "c": {"d": [3]}, "e": None, "f": 1.5, "g": True}
    copied = copy_row(row)
    assert copied == row and copied is not row
    copied["a"][1]["b"] = 0
    copied["c"]["d"].append(4)
    assert row == {"a": [1, {"b": 2}], "c": {"d": [3]}, "e": None, "f": 1.5, "g": True}

    class Custom:  # not encodable by marshal: falls back to deepcopy
        def __init__(self) -> None:
            self.items = [1]

    odd = {"x": Custom()}
    other = copy_row(odd)
    assert other["x"] is not odd["x"] and other["x"].items == [1]


# ---------------------------------------------------------------------------------------------- property test
_KEYS = st.integers(0, 7).map(lambda i: f"r{i}")
_VALUES = st.one_of(st.integers(-3, 3), st.integers(-3, 3).map(float), st.booleans(), st.none())
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 1), _KEYS, _VALUES),
        st.tuples(st.just("append"), st.integers(0, 1), _KEYS, _VALUES),
        st.tuples(st.just("put"), st.integers(0, 1), _KEYS, _VALUES),
        st.tuples(st.just("delete"), st.integers(0, 1), _KEYS, _VALUES),
        st.tuples(st.just("failed_txn"), st.integers(0, 1), _KEYS, _VALUES),
        st.tuples(st.just("fork"), st.integers(0, 1), _KEYS, _VALUES),
    ),
    max_size=40,
)


def _write(view, model, op: str, key: str, value) -> None:
    """Apply one write to a view and to its plain-dict model."""
    if op == "edit":
        if key in model:
            view.rows.edit(key)["value"] = value
            model[key]["value"] = value
        else:
            with pytest.raises(KeyError):
                view.rows.edit(key)
    elif op == "append":
        if key in model:
            own(view.rows.edit(key), "log").append(value)
            model[key]["log"].append(value)
    elif op == "put":
        view.rows.put(key, {"id": key, "value": value, "tags": {}, "log": []})
        model[key] = {"id": key, "value": value, "tags": {}, "log": []}
    elif key in model:
        view.rows.delete(key)
        del model[key]
    else:
        with pytest.raises(KeyError):
            view.rows.delete(key)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_view_writes_never_reach_snapshot_or_other_views(operations):
    snap = make_snapshot(6)
    digest = snap.content_hash()
    before = copy.deepcopy(dict(snap.tables["rows"]))
    views = [snap.view(), snap.view()]
    models = [copy.deepcopy(before), copy.deepcopy(before)]
    for op, which, key, value in operations:
        view, model = views[which], models[which]
        if op == "failed_txn":
            # Writes inside a failing block vanish, whatever they were.
            with pytest.raises(ValueError), view.transaction():
                _write(view, copy.deepcopy(model), "edit" if key in model else "put", key, value)
                _write(view, copy.deepcopy(model), "append", key, value)
                raise ValueError
        elif op == "fork":
            views[1 - which], models[1 - which] = view.fork(), copy.deepcopy(model)
        else:
            _write(view, model, op, key, value)
    assert snap.content_hash() == digest
    assert canonical(dict(snap.tables["rows"])) == canonical(before)
    for view, model in zip(views, models, strict=True):
        assert canonical(dict(view.rows.items())) == canonical(model)
        changed = {k for k in model if k not in before or canonical(before[k]) != canonical(model[k])}
        changed |= set(before) - set(model)
        assert set(view.changes().get("rows", {})) == changed
        assert same_changes(view.changes(), {"rows": {k: model.get(k) for k in changed}})
    assert snap.view().changes() == {}


# ---------------------------------------------------------------------------------------------- JSON texts
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(value=_JSON)
def test_json_encoders_write_what_json_dumps_writes(value):
    assert dumps(value) == json.dumps(value)
    assert json_encoder(ensure_ascii=False)(value) == json.dumps(value, ensure_ascii=False)
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@settings(max_examples=200, deadline=None)
@given(
    row=st.dictionaries(st.text(max_size=4), _JSON, min_size=1, max_size=6),
    edits=st.lists(st.tuples(st.sampled_from(["set", "own", "delete", "add"]), st.integers(0, 10), _JSON), max_size=4),
)
def test_an_edited_row_shows_the_text_json_dumps_writes(row, edits):
    snap = Snapshot({"t": {"k": row}})
    view = snap.view()
    edited = view.t.edit("k")
    for kind, at, value in edits:
        keys = list(edited)
        key = keys[at % len(keys)] if keys else "x"
        if kind == "set" and keys:
            edited[key] = value
        elif kind == "own" and keys and isinstance(edited[key], list | dict):
            container = own(edited, key)
            if isinstance(container, list):
                container.append(value)
            else:
                container["new"] = value
        elif kind == "delete" and keys:
            del edited[key]
        else:
            edited[f"added{at}"] = value
    assert view.json_text(edited) == json.dumps(edited)
    assert view.json_text(view.t.edit("k")) == json.dumps(edited)  # a second edit is the same row
    assert view.change_texts().get("t", {}).get("k", canonical(row)) == canonical(edited)
    assert snap.edited_canonical(edited, snap.tables["t"]["k"]) == canonical(edited)
    assert snap.tables["t"]["k"] == row  # the snapshot row is untouched


def test_json_text_of_rows_it_did_not_edit_is_left_to_the_caller():
    snap = make_snapshot()
    view = snap.view()
    assert view.json_text(snap.tables["rows"]["r0"]) == json.dumps(snap.tables["rows"]["r0"])
    fresh = {"id": "r9", "value": 9}
    view.rows.put("r9", fresh)
    assert view.json_text(fresh) is None
    assert view.json_text(dict(view.rows.edit("r1"))) is None  # a copy of an edited row is not the row


def test_edited_text_falls_back_for_keys_json_would_convert():
    snap = Snapshot({"t": {"k": {"a": 1}}})
    view = snap.view()
    row = view.t.edit("k")
    row[1] = "one"  # type: ignore[index]
    assert view.json_text(row) is None


def test_a_table_read_as_an_attribute_is_the_same_view_each_time():
    view = make_snapshot().view()
    assert view.rows is view.rows is view["rows"]
    with pytest.raises(AttributeError):
        view.nothing  # noqa: B018
