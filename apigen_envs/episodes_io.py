"""Reading and appending Episode JSONL files safely.

Writers append one line per finished episode and flush, so a killed process leaves at most one partial
last line; readers tolerate (and the resuming writer repairs) exactly that, and reject any other bad line
with the file name and line number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from apigen_envs.episode import Episode
from apigen_envs.errors import DataFileError


def _read_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, raw line, is unterminated tail) for the non-empty lines of a file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read ({exc})") from None
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            yield number, raw, number == len(lines) and not data.endswith(b"\n")


def iter_episodes(path: str | Path, *, allow_partial_tail: bool = True) -> Iterator[Episode]:
    """Yield the episodes of a JSONL file.

    Args:
        path: The file.
        allow_partial_tail: Skip an unterminated, unparsable last line (left by a killed writer).

    Raises:
        DataFileError: For a missing file or any other bad line, naming the file and line.
    """
    path = Path(path)
    for number, raw, is_tail in _read_lines(path):
        try:
            yield Episode.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            if is_tail and allow_partial_tail:
                return
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise DataFileError(f"{path}:{number}: not a valid episode ({reason})") from None


def load_episodes(paths: Iterable[str | Path]) -> list[Episode]:
    """Load all episodes from several JSONL files.

    Args:
        paths: The files.

    Returns:
        The episodes, file by file, in file order.
    """
    out: list[Episode] = []
    for path in paths:
        out.extend(iter_episodes(path))
    return out


def repair_tail(path: Path) -> int:
    """Cut an unterminated last line (a write interrupted by a kill) so appends start on a fresh line.

    Args:
        path: The JSONL file (missing is fine).

    Returns:
        How many bytes were removed.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(data) - keep


class EpisodeWriter:
    """Appends episodes to a JSONL file, one flushed (and fsynced) line each: O(1) per episode.

    Args:
        path: The output file; parent folders are created.
        fsync: Also fsync after each line (survives power loss, not only process kills).
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, episode: Episode) -> None:
        """Append one episode as a single line."""
        if self._fh is None:
            raise ValueError("writer is closed")
        line = episode.model_dump_json() + "\n"
        # One write call per line keeps a kill from interleaving two partial records.
        self._fh.write(line)
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_key(agent: str, model: object, episode_id: str) -> str:
    """The resume key of an episode: the same task trial by another agent or model is a different episode."""
    return f"{agent}|{model or ''}|{episode_id}"


def existing_ids(path: str | Path) -> set[str]:
    """Resume keys (see :func:`run_key`) already in a file; a missing file has none.

    Raises:
        DataFileError: When a line other than an unterminated tail is not an episode.
    """
    path = Path(path)
    if not path.exists():
        return set()
    keys = set()
    for number, raw, is_tail in _read_lines(path):
        try:
            record = json.loads(raw)
            keys.add(
                run_key(
                    record.get("agent", "unknown"),
                    record.get("agent_config", {}).get("model"),
                    str(record["episode_id"]),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            if is_tail:
                continue  # repair_tail() removes it before the next append
            raise DataFileError(f"{path}:{number}: not a valid episode line") from None
    return keys
