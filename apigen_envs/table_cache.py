"""An on-disk cache of validated database tables, keyed by the content of the files they came from.

Validating a database on load (every row through its record type) costs several times the ``json.load``
of the file. The validated, normalised tables are written once, in ``marshal`` form (which loads faster
than JSON), under the user's cache folder; a later load of byte-identical files, under the same record
types, semantics and package version, reads them back instead. Any change to a file changes its key, so the
cache can never serve stale rows; an unreadable or corrupt cache entry is ignored and rebuilt.

The folder is ``$APIGEN_TABLE_CACHE_DIR``, else ``tables`` under ``$APIGEN_CACHE_DIR``, else under
``$XDG_CACHE_HOME/apigen-envs``, else under ``~/.cache/apigen-envs``. ``APIGEN_TABLE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apigen_envs._version import __version__

Tables = dict[str, dict[str, Any]]


def cache_dir() -> Path:
    """Where validated tables are cached (``$APIGEN_TABLE_CACHE_DIR`` first, for a folder of their own)."""
    own = os.environ.get("APIGEN_TABLE_CACHE_DIR")
    if own:
        return Path(own)
    root = os.environ.get("APIGEN_CACHE_DIR")
    if root:
        return Path(root) / "tables"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "apigen-envs" / "tables"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|(?<=:)[0-9]{6,}(?=')")
_CLASS_MODULE = re.compile(r"<class '([\w.]+)\.\w+'>")


def schema_tag(models: Iterable[Any]) -> str:
    """A tag that changes whenever a record type does (part of every cache key).

    It holds each type's pydantic core schema (fields, types, constraints, nested types; object addresses and ids
    removed, as they differ between processes) and the source of the modules that define the types and their
    bases, so an edited validator invalidates the cache too. Cheaper than JSON schemas by ~30x.
    """
    parts: list[str] = []
    modules: set[str] = set()
    for model in models:
        text = _ADDRESS.sub("", repr(model.__pydantic_core_schema__))
        parts.append(text)
        modules.update(cls.__module__ for cls in model.__mro__)
        modules.update(_CLASS_MODULE.findall(text))  # nested record types, wherever they are defined
    sources: dict[str, bytes] = {}
    for name in modules:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and not name.startswith(("pydantic", "builtins")):
            try:
                sources[path] = Path(path).read_bytes()
            except OSError:
                sources[path] = b""
    digest = hashlib.blake2b(digest_size=20)
    for path in sorted(sources):
        digest.update(sources[path])
        digest.update(b"\0")
    return digest.hexdigest() + " " + json.dumps(parts)


def cached_tables(files: Sequence[Path], tag: str, build: Callable[[], Mapping[str, Mapping[str, Any]]]) -> Tables:
    """The tables ``build`` makes from ``files``, from the cache when these exact files were built before.

    Args:
        files: The files the tables are read from (their bytes are part of the key).
        tag: Everything else the result depends on (domain, record schemas, semantics options).
        build: Reads and validates the files; its errors propagate (nothing is cached then).

    Returns:
        The tables.

    """
    if os.environ.get("APIGEN_TABLE_CACHE", "1") == "0":
        return {name: dict(rows) for name, rows in build().items()}
    digest = hashlib.blake2b(digest_size=20)
    for part in (__version__, sys.version, tag):
        digest.update(part.encode())
        digest.update(b"\0")
    try:
        for path in files:
            digest.update(path.read_bytes())
            digest.update(b"\0")
    except OSError:
        return {name: dict(rows) for name, rows in build().items()}
    entry = cache_dir() / f"{digest.hexdigest()}.marshal"
    try:
        loaded = marshal.loads(entry.read_bytes())
        if isinstance(loaded, dict):
            return loaded
    except (OSError, ValueError, EOFError, TypeError):
        pass  # no entry yet, or a damaged one: rebuild it
    tables = {name: dict(rows) for name, rows in build().items()}
    _store(entry, tables)
    return tables


def _store(entry: Path, tables: Tables) -> None:
    try:
        blob = marshal.dumps(tables)
        entry.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half an entry, even with processes racing.
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(tmp, entry)
    except (OSError, ValueError):
        return  # a read-only or full disk only costs the speed-up
