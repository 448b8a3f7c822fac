"""Shared frozen snapshot and per-episode copy-on-write views.

The base database is validated once per process into frozen :class:`Record` objects held by a
:class:`Snapshot`. Every episode works on a :class:`DBView`: reads fall through to the snapshot, writes
land in a small overlay. Because unchanged rows are shared, comparing two views' :meth:`DBView.changes`
is the same as comparing whole databases, at a cost proportional to the changes, not the DB.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(dict[K, V]):
    """A dict that refuses mutation; used for mapping fields of frozen records.

    It stays a real ``dict`` subclass so JSON encoding, pickling and pydantic serialisation keep working.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("records are frozen: build a new one with Record.evolve()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


FrozenMap = Annotated[dict[K, V], AfterValidator(FrozenDict)]
"""Field type for a read-only mapping inside a :class:`Record` (``FrozenMap[str, Item]``)."""


class Record(BaseModel):
    """Base class of DB rows: frozen, nested collections are tuples or :data:`FrozenMap`."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    # Records never change, so their JSON text is computed once and reused by every env that shows them.
    _json_text: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Equality is by type and field values only: the private JSON cache must not make equal rows differ.
        if self is other:
            return True
        return type(other) is type(self) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.__dict__.values())))

    def json_text(self) -> str:
        """The record as JSON text (``json.dumps`` of its JSON dump), cached on the frozen record."""
        if self._json_text is None:
            self._json_text = json.dumps(self.model_dump(mode="json"), ensure_ascii=False)
        return self._json_text

    def evolve(self, **changes: Any) -> Self:
        """Return a copy with some fields replaced, validated (so dicts become frozen maps).

        Args:
            **changes: Field values to replace.

        Returns:
            The new record; ``self`` is untouched.

        """
        return type(self).model_validate({**self.__dict__, **changes})


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """A secondary index on a table: ``key(record)`` -> the records with that key.

    Attributes:
        table: The table name.
        name: The index name used with :meth:`TableView.lookup`.
        key: Extracts the (hashable) index key from a record.

    """

    table: str
    name: str
    key: Callable[[Any], Hashable]


_DELETED = object()


class Snapshot:
    """The immutable base database shared by every env of a domain in the process.

    Args:
        tables: Table name -> {primary key -> record}.
        primary_keys: Table name -> the record field holding its primary key.
        indexes: Secondary indexes, built lazily on first lookup.

    """

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, Record]],
        primary_keys: Mapping[str, str],
        indexes: tuple[IndexSpec, ...] = (),
    ) -> None:
        missing = set(tables) - set(primary_keys)
        if missing:
            raise ValueError(f"no primary key given for tables {sorted(missing)}")
        self.tables: Mapping[str, Mapping[str, Record]] = MappingProxyType(
            {name: MappingProxyType(dict(rows)) for name, rows in tables.items()}
        )
        self.primary_keys: Mapping[str, str] = MappingProxyType(dict(primary_keys))
        self._index_specs = {(spec.table, spec.name): spec for spec in indexes}
        # A cache, not state: built once on first use, identical for every reader.
        self._index_cache: dict[tuple[str, str], dict[Hashable, tuple[str, ...]]] = {}

    def view(self) -> DBView:
        """A fresh copy-on-write view of this snapshot (O(1))."""
        return DBView(self)

    def size(self) -> dict[str, int]:
        """Row counts per table."""
        return {name: len(rows) for name, rows in self.tables.items()}

    def index(self, table: str, name: str) -> dict[Hashable, tuple[str, ...]]:
        """The base-table index ``name`` on ``table`` (index key -> primary keys)."""
        cached = self._index_cache.get((table, name))
        if cached is None:
            spec = self._index_specs.get((table, name))
            if spec is None:
                raise KeyError(f"no index {name!r} on table {table!r}")
            built: dict[Hashable, list[str]] = {}
            for key, record in self.tables[table].items():
                built.setdefault(spec.key(record), []).append(key)
            cached = {k: tuple(v) for k, v in built.items()}
            self._index_cache[(table, name)] = cached
        return cached

    def index_key(self, table: str, name: str) -> Callable[[Any], Hashable]:
        """The key function of an index."""
        return self._index_specs[(table, name)].key

    def to_json(self) -> dict[str, dict[str, Any]]:
        """The whole DB as JSON-able dicts (for export; O(DB))."""
        return {
            name: {key: rec.model_dump(mode="json") for key, rec in rows.items()} for name, rows in self.tables.items()
        }


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

    def get(self, key: str) -> Any | None:
        """The record with this primary key, or None."""
        if self._overlay is not None and key in self._overlay:
            value = self._overlay[key]
            return None if value is _DELETED else value
        return self._base.get(key)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def put(self, record: Record, key: str | None = None) -> None:
        """Insert or replace a record (the key defaults to the table's primary-key field)."""
        if key is None:
            key = getattr(record, self._view.snapshot.primary_keys[self._name])
        if self._overlay is None:
            self._overlay = self._view._overlay.setdefault(self._name, {})
        self._overlay[key] = record

    def delete(self, key: str) -> None:
        """Remove a record; a missing key raises ``KeyError``."""
        if self.get(key) is None:
            raise KeyError(key)
        if self._overlay is None:
            self._overlay = self._view._overlay.setdefault(self._name, {})
        self._overlay[key] = _DELETED

    def keys(self) -> Iterator[str]:
        """Primary keys in snapshot order, then keys inserted by this view."""
        overlay = self._overlay or {}
        for key in self._base:
            if overlay.get(key) is not _DELETED:
                yield key
        for key, value in overlay.items():
            if key not in self._base and value is not _DELETED:
                yield key

    def values(self) -> Iterator[Any]:
        """Records in :meth:`keys` order."""
        for key in self.keys():
            yield self.get(key)

    def items(self) -> Iterator[tuple[str, Any]]:
        """(key, record) pairs in :meth:`keys` order."""
        for key in self.keys():
            yield key, self.get(key)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def lookup(self, index: str, value: Hashable) -> list[Any]:
        """Records whose index key equals ``value``, honouring this view's writes.

        Cost is O(matches + this view's writes to the table), independent of table size.
        """
        snapshot = self._view.snapshot
        base_keys = snapshot.index(self._name, index).get(value, ())
        overlay = self._overlay or {}
        found = [self._base[k] for k in base_keys if k not in overlay]
        if overlay:
            key_fn = snapshot.index_key(self._name, index)
            found.extend(v for v in overlay.values() if v is not _DELETED and key_fn(v) == value)
        return found


class DBView:
    """A copy-on-write view of a :class:`Snapshot`: the per-episode database.

    Tables are reachable as ``view["users"]`` or ``view.users``.
    """

    __slots__ = ("_overlay", "snapshot")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._overlay: dict[str, dict[str, Any]] = {}

    def __getitem__(self, table: str) -> TableView:
        return TableView(self, table)

    def __getattr__(self, table: str) -> TableView:
        if table.startswith("_"):
            raise AttributeError(table)
        try:
            return TableView(self, table)
        except KeyError as exc:
            raise AttributeError(str(exc)) from None

    def changes(self) -> dict[str, dict[str, Any]]:
        """Rows that differ from the snapshot: {table: {key: new record, or None if deleted}}.

        A row written back to its original value is not a change. Cost is O(writes).
        """
        out: dict[str, dict[str, Any]] = {}
        for name, rows in self._overlay.items():
            base = self.snapshot.tables[name]
            for key, value in rows.items():
                original = base.get(key)
                if value is _DELETED:
                    if original is not None:
                        out.setdefault(name, {})[key] = None
                elif value != original:
                    out.setdefault(name, {})[key] = value
        return out

    def changes_json(self) -> dict[str, dict[str, Any]]:
        """:meth:`changes` as JSON-able dicts, sorted for stable output."""
        return changes_to_json(self.changes())

    def fingerprint(self) -> str:
        """A hash identifying this view's state (equal views, equal fingerprints). O(writes)."""
        return fingerprint_changes(self.changes())

    def diff(self) -> list[dict[str, Any]]:
        """Changed rows with their before and after values, for reports."""
        return diff_rows(self.snapshot, self.changes())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Undo every write made inside the block when it raises (O(writes) to set up).

        Tools may fail half-way through a multi-row update; the env wraps each call in a transaction so
        a failed call leaves no partial writes.
        """
        saved = {name: dict(rows) for name, rows in self._overlay.items()}
        try:
            yield
        except BaseException:
            self._overlay = saved
            raise

    def fork(self) -> DBView:
        """An independent copy of this view (shares the snapshot and the immutable records)."""
        other = DBView(self.snapshot)
        other._overlay = {name: dict(rows) for name, rows in self._overlay.items()}
        return other


def changes_to_json(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Turn a :meth:`DBView.changes` result into sorted JSON-able dicts.

    Args:
        changes: {table: {key: record or None}}.

    Returns:
        The same structure with records dumped to plain dicts.

    """
    return {
        name: {key: (rec.model_dump(mode="json") if rec is not None else None) for key, rec in sorted(rows.items())}
        for name, rows in sorted(changes.items())
    }


def fingerprint_changes(changes: Mapping[str, Mapping[str, Any]]) -> str:
    """Stable hash of a changes mapping.

    Args:
        changes: {table: {key: record or None}}.

    Returns:
        A hex digest; the empty change set has a fixed digest.

    """
    blob = json.dumps(changes_to_json(changes), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def diff_rows(snapshot: Snapshot, changes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a changes mapping with their snapshot (before) and new (after) values, JSON-able.

    Args:
        snapshot: The base DB.
        changes: {table: {key: record or None}}.

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
                    "before": before.model_dump(mode="json") if before is not None else None,
                    "after": after.model_dump(mode="json") if after is not None else None,
                }
            )
    return rows
