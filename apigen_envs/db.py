"""Shared snapshot and per-episode copy-on-write views over JSON rows.

A domain's database is a set of tables of **rows**: plain JSON values (dicts, lists, strings, numbers,
booleans, None) keyed by id, exactly as they appear in the data files and in tool results. Keeping rows
as JSON, rather than as typed objects, is what lets each semantics profile reproduce its peer exactly:
``50`` stays distinct from ``50.0``, keys a peer stores verbatim stay stored, and a tool can be written
in the peer's own mutate-in-place style.

The base database is loaded once per process into a :class:`Snapshot` shared by every env. Every
episode works on a :class:`DBView`: reads fall through to the snapshot, and :meth:`TableView.edit` hands
a tool a private copy of a row (copy on first write), so nothing an episode does reaches the snapshot
or another view. Rows read with :meth:`TableView.get` are the shared ones and must be treated as
read-only; the conformance check (:func:`apigen_envs.testing.check_domain`) and the fuzz tests compare
the snapshot's content before and after to enforce that contract.

Comparing two views' :meth:`DBView.changes` is the same as comparing whole databases (unchanged rows are
shared), at a cost proportional to the changes, not to the DB. Rows compare by their canonical JSON text,
so values equal in Python but different in JSON (``50`` and ``50.0``, ``1`` and ``True``) differ, as they
do in both peers' state hashes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import marshal
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii
from types import MappingProxyType
from typing import Any

Row = Any
"""A table row: a JSON value (normally a dict)."""


def copy_row(row: Row) -> Row:
    """A deep copy of a JSON row that shares nothing mutable with the original.

    ``marshal`` copies plain dicts, lists and scalars in C, several times faster than ``copy.deepcopy``;
    anything it cannot encode (a value a caller put in from Python) falls back to ``deepcopy``.
    """
    try:
        return marshal.loads(marshal.dumps(row))
    except ValueError:
        return copy.deepcopy(row)


def json_encoder(
    *,
    ensure_ascii: bool = True,
    sort_keys: bool = False,
    separators: tuple[str, str] = (", ", ": "),
    default: Callable[[Any], Any] | None = None,
) -> Callable[[Any], str]:
    """A function giving ``json.dumps(value, **options)`` for these options, calling the C encoder directly.

    ``json.dumps`` builds an encoder object on every call, which costs more than encoding a small row; this
    one is built once and keeps no state between calls, so it is safe to share between threads. It keeps no
    circular-reference bookkeeping: rows and parsed arguments cannot be cyclic, and a cycle still ends in
    an error (``RecursionError`` rather than ``ValueError``). Values JSON cannot encode raise ``TypeError``.

    Args:
        ensure_ascii: Escape non-ASCII characters.
        sort_keys: Write object keys sorted.
        separators: (item separator, key separator).
        default: Called for values JSON cannot encode (its result is encoded instead).

    Returns:
        The dumps function.

    """
    if c_make_encoder is None:  # pragma: no cover - CPython has the C encoder
        options = {"ensure_ascii": ensure_ascii, "sort_keys": sort_keys, "separators": separators, "default": default}
        return lambda value: json.dumps(value, **options)  # type: ignore[arg-type]
    strings = encode_basestring_ascii if ensure_ascii else encode_basestring
    encode = c_make_encoder(None, default, strings, None, separators[1], separators[0], sort_keys, False, True)

    def dumps(value: Any) -> str:
        if type(value) is str:
            return strings(value)  # type: ignore[no-any-return]
        return "".join(encode(value, 0))

    return dumps


dumps = json_encoder()
"""``json.dumps(value)`` with its defaults (ASCII-escaped, ``", "`` and ``": "``): the text both peers show
for tool results, at a fraction of the cost on small values."""

_canonical = json_encoder(sort_keys=True, separators=(",", ":"), default=str)


def canonical(value: Any) -> str:
    """The canonical JSON text of a value (sorted keys, no spaces): equal texts mean equal rows."""
    return _canonical(value)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A secondary index on a table: ``key(row)`` -> the rows with that key.

    Attributes:
        table: The table name.
        name: The index name used with :meth:`TableView.lookup`.
        key: Extracts the (hashable) index key from a row.

    """

    table: str
    name: str
    key: Callable[[Any], Hashable]


_DELETED = object()
_ABSENT = object()


class Snapshot:
    """The base database shared by every env of a domain in the process.

    Args:
        tables: Table name -> {key -> row}. The snapshot takes ownership: rows must not be modified
            afterwards, by the caller or by anyone reading them.
        indexes: Secondary indexes, built lazily on first lookup.

    """

    def __init__(self, tables: Mapping[str, Mapping[str, Row]], indexes: tuple[IndexSpec, ...] = ()) -> None:
        self.tables: Mapping[str, Mapping[str, Row]] = MappingProxyType(
            {name: MappingProxyType(dict(rows)) for name, rows in tables.items()}
        )
        unknown = {spec.table for spec in indexes} - set(self.tables)
        if unknown:
            raise ValueError(f"indexes name unknown tables {sorted(unknown)}")
        self._index_specs = {(spec.table, spec.name): spec for spec in indexes}
        # Caches, not state: built on first use, identical for every reader.
        self._index_cache: dict[tuple[str, str], dict[Hashable, tuple[str, ...]]] = {}
        self._rows_by_id: dict[int, Row] | None = None
        self._json_cache: dict[int, str] = {}
        self._field_cache: dict[int, dict[str, str]] = {}
        self._canonical_fields: dict[int, dict[str, str]] = {}
        self._canonical_cache: dict[tuple[str, str], str] = {}

    def view(self) -> DBView:
        """A fresh copy-on-write view of this snapshot (O(1))."""
        return DBView(self)

    def size(self) -> dict[str, int]:
        """Row counts per table."""
        return {name: len(rows) for name, rows in self.tables.items()}

    def index(self, table: str, name: str) -> dict[Hashable, tuple[str, ...]]:
        """The base-table index ``name`` on ``table`` (index key -> primary keys, in table order)."""
        cached = self._index_cache.get((table, name))
        if cached is None:
            spec = self._index_specs.get((table, name))
            if spec is None:
                raise KeyError(f"no index {name!r} on table {table!r}")
            built: dict[Hashable, list[str]] = {}
            for key, row in self.tables[table].items():
                built.setdefault(spec.key(row), []).append(key)
            cached = {k: tuple(v) for k, v in built.items()}
            self._index_cache[(table, name)] = cached
        return cached

    def index_key(self, table: str, name: str) -> Callable[[Any], Hashable]:
        """The key function of an index."""
        return self._index_specs[(table, name)].key

    def canonical_text(self, table: str, key: str) -> str | None:
        """The canonical JSON text of a base row (cached; rows never change), or None when there is no row."""
        text = self._canonical_cache.get((table, key))
        if text is None:
            row = self.tables[table].get(key)
            if row is None:
                return None
            text = self._canonical_cache[(table, key)] = canonical(row)
        return text

    def json_text(self, value: Any) -> str | None:
        """The ``json.dumps`` text of ``value`` when it is one of this snapshot's rows (cached), else None.

        Snapshot rows never change, so their text is computed once and shared by every env that shows them;
        any other value (an edited copy, a search result) returns None and is dumped by the caller.
        """
        rows = self._rows_by_id
        if rows is None:
            rows = self._rows_by_id = {id(row): row for table in self.tables.values() for row in table.values()}
        key = id(value)
        if rows.get(key) is not value:
            return None
        text = self._json_cache.get(key)
        if text is None:
            text = self._json_cache[key] = dumps(value)
        return text

    def edited_text(self, row: dict[str, Any], base: dict[str, Any]) -> str | None:
        """The ``json.dumps`` text of ``row``, an edited copy of the snapshot row ``base``.

        Fields still holding the snapshot's own value (the same object: snapshot values never change) reuse
        the text cached for them, so only what the episode changed is encoded; the text is the one
        ``json.dumps(row)`` writes. None when a key is not a string (the caller dumps the row itself).
        """
        fields = self._field_cache.get(id(base))
        if fields is None:
            if not all(type(key) is str for key in base):
                return None
            # Cached per snapshot row, kept alive by the snapshot (so its id stays its own).
            fields = self._field_cache[id(base)] = {key: f"{dumps(key)}: {dumps(value)}" for key, value in base.items()}
        parts = []
        for key, value in row.items():
            if value is base.get(key, _ABSENT):
                parts.append(fields[key])
            elif type(key) is str:
                parts.append(f"{dumps(key)}: {dumps(value)}")
            else:
                return None
        return "{" + ", ".join(parts) + "}"

    def edited_canonical(self, row: dict[str, Any], base: dict[str, Any]) -> str | None:
        """:func:`canonical` of ``row``, an edited copy of the snapshot row ``base`` (see :meth:`edited_text`).

        Sorted keys make a field's canonical text independent of its place, so the unchanged fields reuse
        the texts cached for them. None when a key is not a string (the caller encodes the row itself).
        """
        fields = self._canonical_fields.get(id(base))
        if fields is None:
            if not all(type(key) is str for key in base):
                return None
            fields = self._canonical_fields[id(base)] = {
                key: f"{_canonical(key)}:{_canonical(value)}" for key, value in base.items()
            }
        if not all(type(key) is str for key in row):
            return None
        parts = []
        for key in sorted(row):
            value = row[key]
            parts.append(fields[key] if value is base.get(key, _ABSENT) else f"{_canonical(key)}:{_canonical(value)}")
        return "{" + ",".join(parts) + "}"

    def to_json(self) -> dict[str, dict[str, Any]]:
        """The whole DB as fresh JSON data (for export and comparisons; O(DB))."""
        return {name: {key: copy_row(row) for key, row in rows.items()} for name, rows in self.tables.items()}

    def content_hash(self) -> str:
        """A hash of the whole DB's content (O(DB)); used to prove that nothing wrote to the snapshot."""
        digest = hashlib.blake2b(digest_size=16)
        for name, rows in self.tables.items():
            digest.update(name.encode())
            for key, row in rows.items():
                digest.update(key.encode())
                digest.update(canonical(row).encode())
        return digest.hexdigest()


class TableView:
    """One table as seen through a :class:`DBView` (created on access; holds no data of its own)."""

    __slots__ = ("_base", "_name", "_overlay", "_view")

    def __init__(self, view: DBView, name: str) -> None:
        try:
            self._base = view.snapshot.tables[name]
        except KeyError:
            raise KeyError(f"no table {name!r}; tables: {sorted(view.snapshot.tables)}") from None
        self._name = name
        self._view = view
        self._overlay = view._overlay.get(name)

    def get(self, key: str) -> Row | None:
        """The row with this key, or None. Treat it as read-only; use :meth:`edit` to change it."""
        if self._overlay is not None and key in self._overlay:
            value = self._overlay[key]
            return None if value is _DELETED else value
        return self._base.get(key)

    def __getitem__(self, key: str) -> Row:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        # Like a dict: an unhashable key raises TypeError (the peers' tools surface that error to the agent).
        return self.get(key) is not None  # type: ignore[arg-type]

    def _overlay_for_write(self) -> dict[str, Any]:
        if self._overlay is None:
            self._overlay = self._view._overlay.setdefault(self._name, {})
        return self._overlay

    def edit(self, key: str) -> Row:
        """The row with this key as a mutable copy owned by this view (copy on first write).

        The copy is shallow: set its fields freely, but change nested lists and dicts only through
        :func:`own`, which copies each container on the way down (the snapshot shares the rest). Later
        reads through this view see the edits. The first edit of a row costs one shallow copy; further edits
        of the same row in the same view are free.

        Raises:
            KeyError: When there is no such row.

        """
        overlay = self._overlay_for_write()
        value = overlay.get(key, _ABSENT)
        if value is _DELETED or (value is _ABSENT and key not in self._base):
            raise KeyError(key)
        view = self._view
        txn = view._txn
        if value is _ABSENT:
            if txn is not None:
                txn.setdefault((self._name, key), _ABSENT)
            base = self._base[key]
            value = overlay[key] = base.copy()
        elif txn is not None and (self._name, key) not in txn:
            # The pre-transaction row is kept aside untouched; the block edits a copy of it.
            txn[(self._name, key)] = value
            base = self._base.get(key)
            value = overlay[key] = value.copy()
        else:
            return value
        if type(value) is dict and type(base) is dict:
            # Which snapshot row this copy came from, so its text can reuse the unchanged fields' texts.
            view._bases[id(value)] = (value, base)
        return value

    def put(self, key: str, row: Row) -> None:
        """Insert or replace the row at ``key``; this view takes ownership of ``row``."""
        overlay = self._overlay_for_write()
        txn = self._view._txn
        if txn is not None:
            txn.setdefault((self._name, key), overlay.get(key, _ABSENT))
        overlay[key] = row

    def delete(self, key: str) -> None:
        """Remove a row; a missing key raises ``KeyError``."""
        if self.get(key) is None:
            raise KeyError(key)
        self.put(key, _DELETED)

    def keys(self) -> Iterator[str]:
        """Keys in snapshot order, then keys inserted by this view."""
        overlay = self._overlay or {}
        for key in self._base:
            if overlay.get(key) is not _DELETED:
                yield key
        for key, value in overlay.items():
            if key not in self._base and value is not _DELETED:
                yield key

    def values(self) -> Iterator[Row]:
        """Rows in :meth:`keys` order."""
        for key in self.keys():
            yield self.get(key)

    def items(self) -> Iterator[tuple[str, Row]]:
        """(key, row) pairs in :meth:`keys` order."""
        for key in self.keys():
            yield key, self.get(key)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        overlay = self._overlay
        if not overlay:
            return len(self._base)
        return sum(1 for _ in self.keys())

    def lookup_keys(self, index: str, value: Hashable) -> list[str]:
        """Keys of the rows whose index key equals ``value``, in table order, honouring this view's writes.

        Cost is O(matches + this view's writes to the table), independent of table size.
        """
        snapshot = self._view.snapshot
        base_keys = snapshot.index(self._name, index).get(value, ())
        overlay = self._overlay
        if not overlay:
            return list(base_keys)
        key_fn = snapshot.index_key(self._name, index)
        found = [k for k in base_keys if k not in overlay]
        found.extend(k for k, v in overlay.items() if v is not _DELETED and key_fn(v) == value)
        if len(found) > 1:
            order = {k: i for i, k in enumerate(self.keys())}
            found.sort(key=order.__getitem__)
        return found

    def lookup(self, index: str, value: Hashable) -> list[Row]:
        """Rows whose index key equals ``value``, in table order (see :meth:`lookup_keys`)."""
        return [self.get(k) for k in self.lookup_keys(index, value)]


class DBView:
    """A copy-on-write view of a :class:`Snapshot`: the per-episode database.

    Tables are reachable as ``view["users"]`` or ``view.users``.
    """

    # ``__dict__`` holds the tables reached as attributes, so only a table's first ``view.name`` goes
    # through ``__getattr__`` (each miss raises and catches an AttributeError first, which costs more than
    # the lookup itself).
    __slots__ = ("__dict__", "_bases", "_overlay", "_tables", "_txn", "snapshot")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._overlay: dict[str, dict[str, Any]] = {}
        self._txn: dict[tuple[str, str], Any] | None = None
        # One TableView per table, made on first access: tools touch a table several times per call.
        self._tables: dict[str, TableView] = {}
        # id(edited copy) -> (the copy, the snapshot row it was copied from); see json_text.
        self._bases: dict[int, tuple[Row, Row]] = {}

    def __getitem__(self, table: str) -> TableView:
        view = self._tables.get(table)
        if view is None:
            view = self._tables[table] = TableView(self, table)
        return view

    def __getattr__(self, table: str) -> TableView:
        if table.startswith("_"):
            raise AttributeError(table)
        try:
            view = self[table]
        except KeyError as exc:
            raise AttributeError(str(exc)) from None
        self.__dict__[table] = view
        return view

    def json_text(self, value: Any) -> str | None:
        """The ``json.dumps`` text of a row this view shows, from cached texts where it can, else None.

        A snapshot row's text is cached whole; a row this view edited reuses the cached texts of the
        fields it did not change (see :meth:`Snapshot.edited_text`). Anything else (a new row, a search
        result) is None, for the caller to dump.
        """
        text = self.snapshot.json_text(value)
        if text is not None:
            return text
        entry = self._bases.get(id(value))
        if entry is None or entry[0] is not value:
            return None
        return self.snapshot.edited_text(value, entry[1])

    def changes(self) -> dict[str, dict[str, Any]]:
        """Rows that differ from the snapshot: {table: {key: new row, or None if deleted}}.

        A row written back to its original content is not a change. Cost is O(writes).
        """
        texts = self.change_texts()
        return {name: {key: self[name].get(key) for key in rows} for name, rows in texts.items()}

    def change_texts(self) -> dict[str, dict[str, str | None]]:
        """:meth:`changes` as canonical JSON texts: {table: {key: text, or None if deleted}}.

        What scoring compares: two views hold the same state exactly when these are equal. Each changed row
        is dumped once; the snapshot's texts are cached. Cost is O(writes).
        """
        out: dict[str, dict[str, str | None]] = {}
        snapshot = self.snapshot
        for name, rows in self._overlay.items():
            base = snapshot.tables[name]
            for key, value in rows.items():
                original = base.get(key)
                if value is _DELETED:
                    if original is not None:
                        out.setdefault(name, {})[key] = None
                elif value is not original:
                    entry = self._bases.get(id(value))
                    text = None
                    if entry is not None and entry[0] is value:
                        text = snapshot.edited_canonical(value, entry[1])
                    if text is None:
                        text = canonical(value)
                    if original is None or text != snapshot.canonical_text(name, key):
                        out.setdefault(name, {})[key] = text
        return out

    def changes_json(self) -> dict[str, dict[str, Any]]:
        """:meth:`changes` as fresh JSON data, tables and keys sorted for stable output."""
        return changes_to_json(self.changes())

    def fingerprint(self) -> str:
        """A hash identifying this view's state (equal views, equal fingerprints). O(writes)."""
        return fingerprint_texts(self.change_texts())

    def diff(self) -> list[dict[str, Any]]:
        """Changed rows with their before and after values, for reports."""
        return diff_rows(self.snapshot, self.changes())

    def transaction(self) -> _Transaction:
        """A context manager that undoes every write made inside the block when it raises (O(rows written)).

        Tools may fail half-way through a multi-row update; profiles with atomic calls wrap each call in a
        transaction so a failed call leaves no partial writes. Transactions do not nest.
        """
        return _Transaction(self)

    def fork(self) -> DBView:
        """An independent copy of this view (shares the snapshot; edited rows are copied)."""
        other = DBView(self.snapshot)
        other._overlay = {
            name: {key: value if value is _DELETED else copy_row(value) for key, value in rows.items()}
            for name, rows in self._overlay.items()
        }
        return other


class _Transaction:
    """The context manager of :meth:`DBView.transaction` (a class: cheaper per call than a generator)."""

    __slots__ = ("_view",)

    def __init__(self, view: DBView) -> None:
        self._view = view

    def __enter__(self) -> None:
        view = self._view
        if view._txn is not None:
            raise RuntimeError("transactions do not nest")
        view._txn = {}

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        view = self._view
        saved, view._txn = view._txn, None
        if kind is not None and saved:
            for (name, key), value in saved.items():
                rows = view._overlay.setdefault(name, {})
                if value is _ABSENT:
                    rows.pop(key, None)
                else:
                    rows[key] = value
        return False  # the exception, if any, goes on


def own(row: Any, *path: Any) -> Any:
    """The container at ``path`` inside an edited row, made the row's own so it may be changed in place.

    Rows from :meth:`TableView.edit` are shallow copies: their nested lists and dicts may still be the
    snapshot's (or another episode's). ``own(order, "payment_history").append(p)`` replaces each container
    on the path with a shallow copy first, so only this row sees the change. Cost: one shallow copy per
    level. A missing key raises ``KeyError``, as indexing the row would.

    Args:
        row: A row returned by :meth:`TableView.edit` (or a container already owned).
        *path: Keys (or list indexes) leading to the container.

    Returns:
        The container at the end of the path, now private to ``row``.

    """
    node = row
    for key in path:
        child = node[key].copy()
        node[key] = child
        node = child
    return node


def changes_to_json(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Turn a :meth:`DBView.changes` result into fresh JSON data with sorted tables and keys.

    Args:
        changes: {table: {key: row or None}}.

    Returns:
        The same structure, copied (safe to keep after the view changes again).

    """
    return {
        name: {key: (copy_row(row) if row is not None else None) for key, row in sorted(rows.items())}
        for name, rows in sorted(changes.items())
    }


def fingerprint_texts(texts: Mapping[str, Mapping[str, str | None]]) -> str:
    """Stable hash of :meth:`DBView.change_texts` output (the empty change set has a fixed digest)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(texts):
        for key in sorted(texts[name]):
            text = texts[name][key]
            digest.update(f"{len(name)}:{name}{len(key)}:{key}".encode())
            digest.update(b"-" if text is None else text.encode())
            digest.update(b"\0")
    return digest.hexdigest()


def fingerprint_changes(changes: Mapping[str, Mapping[str, Any]]) -> str:
    """Stable hash of a changes mapping (types count: ``50`` and ``50.0`` hash differently).

    Args:
        changes: {table: {key: row or None}}.

    Returns:
        A hex digest; the empty change set has a fixed digest.

    """
    return fingerprint_texts(
        {
            name: {key: None if row is None else canonical(row) for key, row in rows.items()}
            for name, rows in changes.items()
        }
    )


def same_changes(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether two changes mappings describe the same final state (canonical JSON equality)."""
    if {k for k, v in a.items() if v} != {k for k, v in b.items() if v}:
        return False
    for name, rows in a.items():
        other = b.get(name, {})
        if rows.keys() != other.keys():
            return False
        for key, row in rows.items():
            if row is not other[key] and canonical(row) != canonical(other[key]):
                return False
    return True


def diff_rows(snapshot: Snapshot, changes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a changes mapping with their snapshot (before) and new (after) values, as fresh JSON.

    Args:
        snapshot: The base DB.
        changes: {table: {key: row or None}}.

    Returns:
        Dicts with table, key, before and after, sorted by table and key.
    """
    rows = []
    for name, changed in sorted(changes.items()):
        base = snapshot.tables[name]
        for key, after in sorted(changed.items()):
            before = base.get(key)
            rows.append(
                {
                    "table": name,
                    "key": key,
                    "before": copy_row(before) if before is not None else None,
                    "after": copy_row(after) if after is not None else None,
                }
            )
    return rows
