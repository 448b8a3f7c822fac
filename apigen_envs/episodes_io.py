"""Reading and appending Episode JSONL files safely.

Writers append one line per finished episode and flush, so a killed process leaves at most one partial
last line; readers tolerate (and the resuming writer repairs) exactly that, and reject any other bad line
with the file name and line number. A last line that is complete but lacks its newline (the kill fell
between the record and the newline) is kept and counted; a truncated one is moved to a ``.corrupt`` side
file, with a :class:`TruncatedLineWarning`, and its episode is run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from apigen_envs.episode import Episode, RunSettings
from apigen_envs.errors import DataFileError, EpisodeWriteError
from apigen_envs.text import model_json

# Deep enough for any Episode (messages hold arguments at most MAX_ARGUMENT_DEPTH deep), shallow enough to
# recurse into safely when a record has to be repaired before it can be written.
_MAX_RECORD_DEPTH = 200


class TruncatedLineWarning(UserWarning):
    """An unterminated, unparsable last line (an interrupted write) was skipped or set aside."""


def corrupt_path(path: str | Path) -> Path:
    """The side file that receives truncated last lines of ``path`` (``episodes.jsonl.corrupt``)."""
    path = Path(path)
    return path.with_name(path.name + ".corrupt")


def _record_key(raw: bytes) -> str | None:
    """The resume key of a line (see :func:`run_key`), or None when the line is not a whole episode record."""
    try:
        record = json.loads(raw)
        return run_key(
            record.get("agent", "unknown"),
            record.get("agent_config", {}).get("model"),
            str(record["episode_id"]),
        )
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return None


def _is_complete_record(raw: bytes) -> bool:
    """Whether a line is a whole episode record (what resume counts as done)."""
    return _record_key(raw) is not None


ConflictPolicy = Literal["error", "new_file"]
"""What a resumed run does with a file written under other settings: raise, or write to a new file."""


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
                warnings.warn(
                    f"{path}:{number}: skipped a truncated last line ({len(raw)} bytes, an interrupted write)",
                    TruncatedLineWarning,
                    stacklevel=2,
                )
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
    """Make an unterminated last line (a write interrupted by a kill) safe to append after.

    A last line that is a complete record only lacks its newline: the newline is added and the record kept
    (resume counts it as done). A truncated one is appended to :func:`corrupt_path` and cut from the file,
    with a :class:`TruncatedLineWarning`, so its episode runs again and nothing is lost without a word.

    Args:
        path: The JSONL file (missing is fine).

    Returns:
        How many bytes were removed from ``path`` (0 when a complete last line only got its newline).
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    if _is_complete_record(tail):
        with path.open("ab") as fh:
            fh.write(b"\n")
        return 0
    if tail.strip():
        side = corrupt_path(path)
        # The side file is written (and synced) before the cut, so a kill in between only duplicates the bytes.
        with side.open("ab") as fh:
            fh.write(tail + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        warnings.warn(
            f"{path}: set aside a truncated last line ({len(tail)} bytes, an interrupted write) in {side}; "
            "its episode runs again",
            TruncatedLineWarning,
            stacklevel=2,
        )
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(tail)


def episode_line(episode: Episode) -> bytes:
    """One episode as a JSONL line (UTF-8, newline-terminated).

    Text that entered through messages is already encodable; anything else a record may carry (an error
    text, a user-simulator trace) is repaired here rather than lost: lone surrogates become U+FFFD.

    Raises:
        EpisodeWriteError: When the record cannot be serialised even after repair.
    """
    try:
        return model_json(episode, _MAX_RECORD_DEPTH) + b"\n"
    except ValueError as exc:
        raise EpisodeWriteError(f"episode {episode.episode_id!r} cannot be serialised ({exc})") from None


class EpisodeWriter:
    """Appends episodes to a JSONL file, one flushed (and fsynced) line each: O(1) per episode.

    A failed write (an unserialisable record, a full disk) raises :class:`EpisodeWriteError` and leaves the
    file as it was before the call, so the caller can record the failure and go on with other episodes.

    Args:
        path: The output file; parent folders are created.
        fsync: Also fsync after each line (survives power loss, not only process kills).
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        # Unbuffered: a failed write leaves nothing pending that a later flush could add after the cut.
        self._fh: Any = self.path.open("ab", buffering=0)
        self._fsync = fsync

    def write(self, episode: Episode) -> None:
        """Append one episode as a single line.

        Raises:
            EpisodeWriteError: When the episode could not be written (the file is unchanged).
            ValueError: When the writer is closed.
        """
        self.write_line(episode_line(episode), episode.episode_id)

    def write_line(self, line: bytes, episode_id: str) -> None:
        """Append one episode already serialised by :func:`episode_line` (a multi-process run's workers do that).

        Args:
            line: The newline-terminated JSON line.
            episode_id: The episode's id, for the error message.

        Raises:
            EpisodeWriteError: When the line could not be written (the file is unchanged).
            ValueError: When the writer is closed.
        """
        self._append(line, f"episode {episode_id!r}")

    def write_lines(self, lines: Sequence[bytes], episode_ids: Sequence[str]) -> None:
        """Append several serialised episodes with one write call: all of them, or none.

        A collector finishing many episodes in one event-loop pass writes them together (one system call
        instead of one per episode). A kill mid-write leaves at most a truncated last line, which the next
        open sets aside (:func:`repair_tail`).

        Args:
            lines: Newline-terminated JSON lines from :func:`episode_line`.
            episode_ids: Their episodes' ids, for the error message.

        Raises:
            EpisodeWriteError: When the lines could not be written (the file is unchanged).
            ValueError: When the writer is closed.
        """
        if lines:
            what = f"episode {episode_ids[0]!r}" if len(lines) == 1 else f"{len(lines)} episodes"
            self._append(b"".join(lines), what)

    def _append(self, data: bytes, what: str) -> None:
        if self._fh is None:
            raise ValueError("writer is closed")
        start = self._fh.tell()
        try:
            # One write call per batch keeps a kill from interleaving two partial records.
            written = self._fh.write(data)
            while written < len(data):
                written += self._fh.write(data[written:])
            if self._fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), start)  # no partial line for the next write to follow
            raise EpisodeWriteError(f"{what} was not written to {self.path}: {exc}") from exc

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


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw JSON record) for each episode line of a file (missing: none); no full validation.

    Raises:
        DataFileError: When a line other than an unterminated tail is not an episode record.
    """
    if not path.exists():
        return
    for number, raw, is_tail in _read_lines(path):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "episode_id" not in record:
                raise TypeError("not an episode object")
            if not isinstance(record.get("agent_config", {}), dict):
                raise TypeError("agent_config is not an object")
        except (ValueError, RecursionError, TypeError):
            if is_tail:
                continue  # a truncated last line: repair_tail() sets it aside and the episode runs again
            raise DataFileError(f"{path}:{number}: not a valid episode line") from None
        yield number, record


def existing_ids(path: str | Path) -> set[str]:
    """Resume keys (see :func:`run_key`) already in a file; a missing file has none.

    Raises:
        DataFileError: When a line other than an unterminated tail is not an episode.
    """
    return {
        run_key(record.get("agent", "unknown"), record.get("agent_config", {}).get("model"), str(record["episode_id"]))
        for _, record in _records(Path(path))
    }


class ResumeConflictError(DataFileError):
    """An episodes file holds a run with other settings; appending to it would merge two different runs."""


def _conflict(path: Path, number: int, record: dict[str, object], settings: RunSettings) -> str | None:
    """Why the episode on line ``number`` belongs to another run, or None when it belongs to this one."""
    theirs = record.get("run_settings")
    if not isinstance(theirs, dict):
        return (
            f"{path}:{number}: episode {record.get('episode_id')!r} was written without run settings (by an "
            "older version, play, or another tool), so it cannot be told apart from this run's"
        )
    ours = settings.model_dump()
    for name, value in ours.items():
        if theirs.get(name) != value:
            return (
                f"{path}:{number}: the file holds a run with {name}={theirs.get(name)!r}, this run has {name}={value!r}"
            )
    return None


def resumed_ids(path: str | Path, settings: RunSettings) -> set[str]:
    """Episode ids already in a file written by a run with ``settings`` (what resuming it skips).

    Args:
        path: The episodes file (missing is fine: nothing done yet).
        settings: The settings of the run about to append.

    Returns:
        The episode ids in the file.

    Raises:
        ResumeConflictError: When an episode was written under other settings; the message names the first
            differing field.
        DataFileError: When a line other than an unterminated tail is not an episode.

    """
    path = Path(path)
    ids = set()
    for number, record in _records(path):
        problem = _conflict(path, number, record, settings)
        if problem is not None:
            raise ResumeConflictError(f"{problem}; write to another file (or ask for a new file on conflict)")
        ids.add(str(record["episode_id"]))
    return ids


def resume_output(
    path: str | Path, settings: RunSettings, on_conflict: ConflictPolicy = "error"
) -> tuple[Path, set[str]]:
    """Where a run with ``settings`` appends, and the episode ids already there.

    Args:
        path: The requested episodes file.
        settings: The run's settings.
        on_conflict: ``"error"``: a file of another run raises. ``"new_file"``: the run goes to the first of
            ``name-2.jsonl``, ``name-3.jsonl``, ... that is missing or holds a run with the same settings
            (so rerunning the same command resumes there).

    Returns:
        (the file to append to, the episode ids it already holds).

    Raises:
        ResumeConflictError: On a conflict with ``on_conflict="error"``.
        ValueError: For an unknown ``on_conflict``.

    """
    if on_conflict not in ("error", "new_file"):
        raise ValueError(f"on_conflict must be 'error' or 'new_file', got {on_conflict!r}")
    path = Path(path)
    try:
        return path, resumed_ids(path, settings)
    except ResumeConflictError:
        if on_conflict == "error":
            raise
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        try:
            return candidate, resumed_ids(candidate, settings)
        except ResumeConflictError:
            number += 1
