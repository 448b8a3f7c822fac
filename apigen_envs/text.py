r"""Encodable text: what a model or a client sends is made valid Unicode once, where it enters.

JSON can carry lone UTF-16 surrogates (the escape ``"\ud83d"`` without its pair). Python decodes them into
``str`` values that cannot be encoded as UTF-8, so the first write of such text (an Episode line, an HTTP
response, a tool that encodes its input) raises ``UnicodeEncodeError``. :func:`clean_text` and
:func:`clean_json` join surrogate pairs and replace every lone surrogate with U+FFFD; clean input (nearly
all of it) is returned unchanged after one fast check. :func:`json_depth` measures nesting, so input nested
deeply enough to exhaust the interpreter's recursion limit can be refused before anything recurses into it.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
from pydantic import BaseModel

REPLACEMENT = "\ufffd"
"""What a lone surrogate becomes."""


class TooDeepError(ValueError):
    """A JSON value nests deeper than allowed.

    Attributes:
        limit: The depth allowed.

    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels")
        self.limit = limit


def clean_text(text: str) -> str:
    """The text with surrogate pairs joined and lone surrogates replaced by U+FFFD.

    Args:
        text: Any str.

    Returns:
        ``text`` itself when it encodes as UTF-8 (the usual case), else a repaired copy.

    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass turns every code point back into its 16-bit units; decoding them joins
        # valid pairs into one character and replaces each unit left alone.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean_json(value: Any, max_depth: int | None = None) -> Any:
    """A JSON-like value (dicts, lists, str, numbers) with every string and key made encodable.

    Containers are copied only when something inside them changed, so clean input comes back as the very
    same object.

    Args:
        value: The value (tuples are treated like lists and come back as lists when changed).
        max_depth: Refuse values whose containers nest deeper than this (None: no limit, but then the
            caller must know the value is shallow enough to recurse into).

    Returns:
        The cleaned value.

    Raises:
        TooDeepError: When ``max_depth`` is given and exceeded.

    """
    if _is_clean(value, 0, max_depth if max_depth is not None else _NO_LIMIT):
        return value
    return _clean(value, 0, max_depth)


_NO_LIMIT = 1 << 30


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_clean(value: Any, depth: int, limit: int) -> bool:
    """Fast check that ``value`` needs no repair and is within the depth (False when unsure).

    Written out for dicts and lists of str (what JSON arguments are) with ``type() is`` tests: about four
    times faster than the rebuilding walk, which then only runs on values that need it.
    """
    kind = type(value)
    if kind is str:
        return value.isascii() or _encodes(value)
    if kind is dict:
        if depth >= limit:
            return False
        for key, item in value.items():
            if type(key) is str and not (key.isascii() or _encodes(key)):
                return False
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _encodes(item)):
                    return False
            elif (kind is dict or kind is list or kind is tuple) and not _is_clean(item, depth + 1, limit):
                return False
        return True
    if kind is list or kind is tuple:
        if depth >= limit:
            return False
        for item in value:
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _encodes(item)):
                    return False
            elif (kind is dict or kind is list or kind is tuple) and not _is_clean(item, depth + 1, limit):
                return False
        return True
    return not isinstance(value, str | dict | list | tuple)  # subclasses take the slow path


def _clean(value: Any, depth: int, limit: int | None) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        depth += 1
        if limit is not None and depth > limit:
            raise TooDeepError(limit)
        out: dict[Any, Any] | None = None
        for i, (key, item) in enumerate(value.items()):
            new_key = clean_text(key) if isinstance(key, str) else key
            new_item = _clean(item, depth, limit)
            if out is None and (new_key is not key or new_item is not item):
                out = dict(list(value.items())[:i])
            if out is not None:
                out[new_key] = new_item
        return value if out is None else out
    if isinstance(value, list | tuple):
        depth += 1
        if limit is not None and depth > limit:
            raise TooDeepError(limit)
        items: list[Any] | None = None
        for i, item in enumerate(value):
            new_item = _clean(item, depth, limit)
            if items is None and new_item is not item:
                items = list(value[:i])
            if items is not None:
                items.append(new_item)
        return value if items is None else items
    return value


def json_depth(value: Any, limit: int) -> int:
    """How deeply the containers of a JSON-like value nest, counting stops once past ``limit``.

    Iterative, so it is safe on values too deep to recurse into.

    Args:
        value: The value.
        limit: Stop measuring (and return ``limit + 1``) once this depth is passed.

    Returns:
        The depth (0 for a scalar, 1 for a flat list or dict), at most ``limit + 1``.

    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def may_nest_deeper(text: str | bytes, limit: int) -> bool:
    """Cheap pre-check: False when JSON text cannot possibly nest deeper than ``limit``.

    Args:
        text: JSON text.
        limit: The depth of interest.

    Returns:
        Whether the text holds more than ``limit`` opening brackets (a necessary condition).

    """
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") > limit
    return text.count("[") + text.count("{") > limit


def json_bytes(value: Any) -> bytes:
    r"""A JSON value (a request or reply body) as compact UTF-8 JSON bytes.

    The fast path is pydantic's Rust encoder. A lone surrogate, which it refuses, goes out through ``json``
    as its ``\uXXXX`` escape instead: the receiver gets the text exactly as it was, and deciding what to do
    with it stays the receiver's business (unlike :func:`model_json`, which repairs our own records).

    Raises:
        TypeError: When the value is not JSON-able.
    """
    try:
        return pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError:
        return json.dumps(value, separators=(",", ":")).encode()


def model_json(model: BaseModel, max_depth: int = 200) -> bytes:
    """A pydantic model as UTF-8 JSON, repairing unencodable text rather than failing.

    The fast path is pydantic's own serialiser; only a record that holds a lone surrogate somewhere (in a
    field no entry point cleaned) takes the slow path through :func:`clean_json`.

    Args:
        model: The record.
        max_depth: Nesting allowed on the slow path.

    Returns:
        The JSON bytes.

    Raises:
        ValueError: When the record cannot be serialised even after repair (too deep, not JSON-able).

    """
    try:
        # The serialiser's own bytes: model_dump_json() would decode them to str, to be encoded again here.
        return model.__pydantic_serializer__.to_json(model)
    except (ValueError, UnicodeError):
        pass  # PydanticSerializationError (a ValueError) on text that is not encodable; repaired below
    try:
        value = clean_json(model.model_dump(mode="json"), max_depth)
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, UnicodeError, RecursionError) as exc:
        raise ValueError(f"{type(model).__name__} cannot be serialised: {exc}") from None
