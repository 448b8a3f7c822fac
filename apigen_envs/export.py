"""Dataset export: Episodes to training formats, and back.

Three formats, each with a pydantic model that every record is validated against on write (a bad record
raises :class:`ExportError` naming the episode and the problem) and on read:

* **ShareGPT / APIGen-MT-5k** (:class:`ShareGPTRecord`): ``{"conversations": [{"from": ..., "value": ...}],
  "tools": "<JSON string>", "system": "<policy>"}`` as Salesforce/APIGen-MT-5k publishes it. ``from`` is
  ``human`` (customer), ``gpt`` (agent text), ``function_call`` (the value is a JSON string
  ``{"name": ..., "arguments": {...}}``) or ``observation`` (the tool's output text). ``tools`` is a JSON
  string holding a list of flat function schemas ``{"name", "description", "parameters"}``. APIGen-MT-5k
  agents make one call per turn; for an assistant turn with several calls we write one ``function_call``
  whose value is a JSON *list* of calls, followed by one ``observation`` whose value is a JSON list of the
  results in call order (the parallel-call convention of ShareGPT-style trainers), so turns still
  alternate. Agent text sent together with calls becomes a ``gpt`` entry right before the
  ``function_call``.
* **OpenAI chat messages** (:class:`OpenAIRecord`) for SFT: ``{"messages": [...], "tools": [...]}`` with
  the system prompt first, assistant ``tool_calls`` whose ``arguments`` are JSON strings, and ``tool``
  messages answering them by ``tool_call_id``. The messages are the message types' own ``to_openai()``
  output, the one wire format agents and trainers see.
* **Hugging Face datasets** (:func:`export_hf`): either of the above as a ``datasets.Dataset`` saved to a
  parquet file (needs the ``hf`` extra: ``datasets>=2.19``). Columns holding free-form JSON (tool schemas)
  are stored as JSON strings so the Arrow schema stays flat and stable across domains.

Which tool results were errors is a field of the tool message (``ToolMessage.error``), never guessed from
the text. Neither wire format has a place for it, so records carry it next to the messages: ``tool_errors``,
the 0-based positions (in order of appearance) of the tool results that were errors, written when there
are any. Loaders read each format back into typed messages (:meth:`ShareGPTRecord.to_messages`,
:meth:`OpenAIRecord.to_messages`), and :func:`replay_fingerprint` re-runs a record's tool calls in a fresh
env, so an exported file can be checked against the final state its trajectory recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from apigen_envs.domain import Domain, read_json, read_jsonl
from apigen_envs.episode import Episode
from apigen_envs.errors import ApigenError, DataFileError
from apigen_envs.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    message_from_openai,
)

ShareGPTRole = Literal["human", "gpt", "function_call", "observation"]
"""Speaker tags of the ShareGPT / APIGen-MT-5k format."""


class ExportError(ApigenError, ValueError):
    """A record cannot be exported (or read back) in the requested format; the message says why."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def flat_tool_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A tool schema as a flat ``{"name", "description", "parameters"}`` dict (APIGen-MT-5k style).

    Args:
        schema: An OpenAI ``{"type": "function", "function": {...}}`` schema or an already flat one.

    Returns:
        The flat schema.

    """
    fn = schema.get("function", schema) if isinstance(schema.get("function"), Mapping) else schema
    out: dict[str, Any] = {"name": fn.get("name"), "description": fn.get("description", "")}
    out["parameters"] = fn.get("parameters", {"type": "object", "properties": {}})
    return out


def openai_tool_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A tool schema in OpenAI form ``{"type": "function", "function": {...}}`` (from either form)."""
    return {"type": "function", "function": flat_tool_schema(schema)}


def _tool_names(schemas: Iterable[Mapping[str, Any]]) -> set[str]:
    names = set()
    for schema in schemas:
        name = flat_tool_schema(schema).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("every tool schema needs a non-empty 'name'")
        names.add(name)
    return names


def _call_object(value: Any, names: set[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"a function call must be an object with 'name' and 'arguments', got {value!r:.80}")
    name, arguments = value.get("name"), value.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ValueError("a function call needs a non-empty 'name'")
    if names and name not in names:
        raise ValueError(f"function call to {name!r}, which is not among the record's tools")
    if not isinstance(arguments, Mapping):
        raise ValueError(f"arguments of {name!r} must be a JSON object")
    return {"name": name, "arguments": dict(arguments)}


# ---------------------------------------------------------------------------------------------- ShareGPT
class ShareGPTTurn(BaseModel):
    """One entry of ``conversations``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: ShareGPTRole = Field(alias="from")
    value: str


class ShareGPTRecord(BaseModel):
    """One conversation in ShareGPT / APIGen-MT-5k form (see the module docstring).

    Validation checks that the conversation opens with the customer, that every ``function_call`` value is
    a JSON call (or list of calls) to a tool listed in ``tools`` and is answered by exactly one
    ``observation`` (a JSON list of as many results for a list of calls), and that no observation appears
    without a call.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    conversations: list[ShareGPTTurn] = Field(min_length=1)
    tools: str
    system: str = ""
    tool_errors: list[int] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _tools_json(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"'tools' must be a JSON string of a list of schemas ({exc.msg})") from None
        if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
            raise ValueError("'tools' must be a JSON string of a list of schema objects")
        _tool_names(parsed)
        return value

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tools as flat schema dicts."""
        return [flat_tool_schema(t) for t in json.loads(self.tools)]

    @model_validator(mode="after")
    def _structure(self) -> ShareGPTRecord:
        names = _tool_names(json.loads(self.tools))
        turns = self.conversations
        if turns[0].from_ != "human":
            raise ValueError(f"the conversation must open with a 'human' turn, not {turns[0].from_!r}")
        pending: int | None = None  # calls of the last function_call still waiting for their observation
        for index, turn in enumerate(turns):
            if pending is not None and turn.from_ != "observation":
                raise ValueError(f"turn {index}: the function_call before it has no observation")
            if turn.from_ == "function_call":
                pending = len(_parse_calls(turn.value, names, index))
            elif turn.from_ == "observation":
                if pending is None:
                    raise ValueError(f"turn {index}: observation without a function_call before it")
                if pending > 1:
                    results = _json_or_none(turn.value)
                    if not isinstance(results, list) or len(results) != pending:
                        raise ValueError(f"turn {index}: expected a JSON list of {pending} results")
                pending = None
        if pending is not None:
            raise ValueError("the last function_call has no observation")
        return self

    def to_messages(self) -> list[Message]:
        """The conversation as typed messages (call ids ``call_<turn>_<i>`` are generated)."""
        out: list[Message] = []
        names = _tool_names(json.loads(self.tools))
        calls: tuple[ToolCall, ...] = ()
        text: str | None = None
        errors = set(self.tool_errors)
        results_seen = 0
        for index, turn in enumerate(self.conversations):
            if turn.from_ == "human":
                out.append(UserMessage(content=turn.value))
            elif turn.from_ == "gpt":
                if text is not None:
                    out.append(AssistantMessage(content=text))
                text = turn.value
                nxt = self.conversations[index + 1].from_ if index + 1 < len(self.conversations) else None
                if nxt != "function_call":
                    out.append(AssistantMessage(content=text))
                    text = None
            elif turn.from_ == "function_call":
                parsed = _parse_calls(turn.value, names, index)
                calls = tuple(
                    ToolCall(id=f"call_{index}_{i}", name=c["name"], arguments=c["arguments"])
                    for i, c in enumerate(parsed)
                )
                out.append(AssistantMessage(content=text, tool_calls=calls))
                text = None
            else:
                results = [turn.value] if len(calls) == 1 else [_as_text(r) for r in json.loads(turn.value)]
                for call, result in zip(calls, results, strict=True):
                    error = results_seen in errors
                    results_seen += 1
                    out.append(ToolMessage(tool_call_id=call.id, name=call.name, content=result, error=error))
        return out

    def dump(self) -> dict[str, Any]:
        """The record as written to disk (``from`` spelled as in the format; ``tool_errors`` only when set)."""
        return self.model_dump(by_alias=True, exclude={"tool_errors"} if not self.tool_errors else None)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _parse_calls(value: str, names: set[str], index: int) -> list[dict[str, Any]]:
    parsed = _json_or_none(value)
    if parsed is None:
        raise ValueError(f"turn {index}: function_call value is not valid JSON")
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise ValueError(f"turn {index}: function_call holds an empty list")
    try:
        return [_call_object(item, names) for item in items]
    except ValueError as exc:
        raise ValueError(f"turn {index}: {exc}") from None


def _call_groups(messages: Sequence[Message]) -> list[tuple[Message, list[ToolMessage]]]:
    """Each message with, for assistant messages, the tool results that answer its calls."""
    results: dict[str, ToolMessage] = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    out: list[tuple[Message, list[ToolMessage]]] = []
    for msg in messages:
        if isinstance(msg, ToolMessage):
            continue
        answered = (
            [results[c.id] for c in msg.tool_calls if c.id in results] if isinstance(msg, AssistantMessage) else []
        )
        out.append((msg, answered))
    return out


def _arguments_dict(call: ToolCall) -> dict[str, Any]:
    if isinstance(call.arguments, dict):
        return call.arguments
    parsed = _json_or_none(call.arguments)
    if not isinstance(parsed, dict):
        raise ExportError(f"call {call.id} to {call.name!r} has arguments that are not a JSON object")
    return parsed


def to_sharegpt(episode: Episode) -> ShareGPTRecord:
    """Convert an episode to a validated ShareGPT / APIGen-MT-5k record.

    Calls that never ran (after a terminal tool ended the episode) are left out.

    Args:
        episode: The episode.

    Returns:
        The record.

    Raises:
        ExportError: When the episode cannot form a valid record (e.g. it has no user turn).

    """
    turns: list[dict[str, str]] = []
    errors: list[int] = []
    results = 0
    for msg, answered in _call_groups(episode.messages):
        if isinstance(msg, UserMessage):
            turns.append({"from": "human", "value": msg.content})
        elif isinstance(msg, AssistantMessage):
            if msg.content and msg.content.strip():
                turns.append({"from": "gpt", "value": msg.content})
            by_id = {c.id: c for c in msg.tool_calls}
            calls = [by_id[r.tool_call_id] for r in answered]
            if not calls:
                continue
            objects = [{"name": c.name, "arguments": _arguments_dict(c)} for c in calls]
            single = len(objects) == 1
            turns.append(
                {"from": "function_call", "value": json.dumps(objects[0] if single else objects, ensure_ascii=False)}
            )
            value = answered[0].content if single else json.dumps([r.content for r in answered], ensure_ascii=False)
            turns.append({"from": "observation", "value": value})
            errors.extend(results + i for i, r in enumerate(answered) if r.error)
            results += len(answered)
    tools = json.dumps([flat_tool_schema(t) for t in episode.tools], ensure_ascii=False)
    try:
        return ShareGPTRecord.model_validate(
            {"conversations": turns, "tools": tools, "system": episode.system_prompt or "", "tool_errors": errors}
        )
    except ValidationError as exc:
        raise ExportError(f"episode {episode.episode_id}: not a valid ShareGPT record ({_first_error(exc)})") from None


# ---------------------------------------------------------------------------------------------- OpenAI
class OpenAIFunctionCall(BaseModel):
    """The ``function`` part of an OpenAI tool call (arguments as a JSON object string)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    arguments: str

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        if not isinstance(_json_or_none(value), dict):
            raise ValueError("arguments must be a JSON object string")
        return value


class OpenAIToolCall(BaseModel):
    """One item of an assistant message's ``tool_calls``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: OpenAIFunctionCall


class OpenAIMessage(BaseModel):
    """A chat message in OpenAI form, checked per role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _per_role(self) -> OpenAIMessage:
        if self.role in ("system", "user") and (self.content is None or self.tool_calls or self.tool_call_id):
            raise ValueError(f"a {self.role} message needs text content and nothing else")
        if self.role == "tool" and (not self.tool_call_id or self.content is None):
            raise ValueError("a tool message needs tool_call_id and content")
        if self.role == "assistant" and not self.tool_calls and not (self.content and self.content.strip()):
            raise ValueError("an assistant message needs content or tool_calls")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages carry tool_calls")
        return self


class OpenAIRecord(BaseModel):
    """One SFT example: ``{"messages": [...], "tools": [...]}``.

    Validation checks that every tool message answers an earlier, unanswered call, that every call is
    answered, that calls name tools in ``tools``, and that there is at least one user and one assistant
    message.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    messages: list[OpenAIMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_errors: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _structure(self) -> OpenAIRecord:
        names = _tool_names(self.tools)
        open_calls: dict[str, str] = {}
        roles = {m.role for m in self.messages}
        if "user" not in roles or "assistant" not in roles:
            raise ValueError("a record needs at least one user and one assistant message")
        for index, msg in enumerate(self.messages):
            if msg.role == "system" and index != 0:
                raise ValueError(f"message {index}: the system message must come first")
            if msg.role == "assistant" and msg.tool_calls:
                for call in msg.tool_calls:
                    if names and call.function.name not in names:
                        raise ValueError(f"message {index}: call to {call.function.name!r}, which is not a listed tool")
                    if call.id in open_calls:
                        raise ValueError(f"message {index}: duplicate tool call id {call.id!r}")
                    open_calls[call.id] = call.function.name
            elif msg.role == "tool":
                if msg.tool_call_id not in open_calls:
                    raise ValueError(f"message {index}: tool result for unknown or answered call {msg.tool_call_id!r}")
                del open_calls[msg.tool_call_id]
            elif open_calls:
                raise ValueError(f"message {index}: tool calls {sorted(open_calls)} have no result")
        if open_calls:
            raise ValueError(f"tool calls {sorted(open_calls)} have no result")
        return self

    def to_messages(self) -> list[Message]:
        """The conversation as typed messages (the system message is left out; see :attr:`system`)."""
        out: list[Message] = []
        errors = set(self.tool_errors)
        results_seen = 0
        for msg in self.messages:
            if msg.role == "system":
                continue
            data = msg.model_dump(exclude_none=True)
            if msg.role == "tool":
                data["error"] = results_seen in errors
                data.setdefault("name", "")
                results_seen += 1
            out.append(message_from_openai(data))
        return out

    @property
    def system(self) -> str | None:
        """The system prompt, when the first message is one."""
        first = self.messages[0]
        return first.content if first.role == "system" else None

    def dump(self) -> dict[str, Any]:
        """The record as written to disk (``tool_errors`` only when set)."""
        return self.model_dump(exclude_none=True, exclude={"tool_errors"} if not self.tool_errors else None)


def to_openai(episode: Episode, *, include_system: bool = True) -> OpenAIRecord:
    """Convert an episode to a validated OpenAI chat-messages record.

    Args:
        episode: The episode.
        include_system: Put the episode's system prompt first.

    Returns:
        The record.

    Raises:
        ExportError: When the episode cannot form a valid record.

    """
    messages: list[dict[str, Any]] = []
    if include_system and episode.system_prompt:
        messages.append(SystemMessage(content=episode.system_prompt).to_openai())
    errors: list[int] = []
    results = 0
    for msg, answered in _call_groups(episode.messages):
        if isinstance(msg, AssistantMessage):
            ran = {r.tool_call_id for r in answered}
            calls = tuple(c for c in msg.tool_calls if c.id in ran)
            for call in calls:
                _arguments_dict(call)  # raw-text arguments that are not an object cannot be exported
            if not calls and not (msg.content and msg.content.strip()):
                continue  # only calls that never ran: nothing to learn from
            messages.append(msg.model_copy(update={"tool_calls": calls}).to_openai())
            messages.extend(r.to_openai() for r in answered)
            errors.extend(results + i for i, r in enumerate(answered) if r.error)
            results += len(answered)
        elif isinstance(msg, UserMessage):
            messages.append(msg.to_openai())
    try:
        return OpenAIRecord.model_validate(
            {"messages": messages, "tools": [openai_tool_schema(t) for t in episode.tools], "tool_errors": errors}
        )
    except ValidationError as exc:
        raise ExportError(f"episode {episode.episode_id}: not a valid OpenAI record ({_first_error(exc)})") from None


# ---------------------------------------------------------------------------------------------- writing
ExportFormat = Literal["sharegpt", "openai"]
"""Record formats (the HF export stores either)."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        path: The output file.
        written: Records written.
        skipped: Reason -> number of episodes left out.

    """

    path: Path
    written: int
    skipped: dict[str, int] = field(default_factory=dict)


def _meta(episode: Episode) -> dict[str, Any]:
    return {
        "episode_id": episode.episode_id,
        "domain": episode.domain,
        "task_id": episode.task_id,
        "trial": episode.trial,
        "reward": episode.reward,
        "fingerprint": episode.reward_info.fingerprint if episode.reward_info else None,
        "termination": episode.termination,
        "agent": episode.agent,
        "model": episode.agent_config.get("model"),
    }


def build_records(
    episodes: Iterable[Episode],
    fmt: ExportFormat,
    *,
    only_passed: bool = True,
    include_system: bool = True,
    include_meta: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Convert episodes into validated records of one format.

    Args:
        episodes: The episodes.
        fmt: ``"sharegpt"`` or ``"openai"``.
        only_passed: Leave out episodes the verifier did not pass (and infrastructure failures).
        include_system: OpenAI format only: start with the system prompt.
        include_meta: Add a ``meta`` object (episode id, task id, reward, final-state fingerprint...).

    Returns:
        (records as dicts, skip reason -> count).

    Raises:
        ExportError: When an episode cannot be converted, naming it.

    """
    if fmt not in ("sharegpt", "openai"):
        raise ExportError(f"unknown export format {fmt!r}; use 'sharegpt' or 'openai'")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for episode in episodes:
        if only_passed and (episode.is_infra_failure or not episode.passed):
            reason = "infra_failure" if episode.is_infra_failure else "not_passed"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        record = to_sharegpt(episode) if fmt == "sharegpt" else to_openai(episode, include_system=include_system)
        row = record.dump()
        if include_meta:
            row["meta"] = _meta(episode)
        rows.append(row)
    return rows, skipped


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    if path.suffix == ".json":
        # APIGen-MT-5k ships one JSON list; JSONL is the default elsewhere (streamable, appendable).
        _write_text_atomic(path, json.dumps(list(rows), ensure_ascii=False, indent=1) + "\n")
    else:
        _write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def export_sharegpt(episodes: Iterable[Episode], path: str | Path, **kwargs: Any) -> ExportSummary:
    """Write episodes as ShareGPT / APIGen-MT-5k records (``.json``: one list; otherwise JSONL).

    Args:
        episodes: The episodes.
        path: The output file.
        **kwargs: ``only_passed``, ``include_meta`` (see :func:`build_records`).

    Returns:
        The summary.

    """
    rows, skipped = build_records(episodes, "sharegpt", **kwargs)
    _write_rows(rows, Path(path))
    return ExportSummary(Path(path), len(rows), skipped)


def export_openai(episodes: Iterable[Episode], path: str | Path, **kwargs: Any) -> ExportSummary:
    """Write episodes as OpenAI chat-messages records (``.json``: one list; otherwise JSONL).

    Args:
        episodes: The episodes.
        path: The output file.
        **kwargs: ``only_passed``, ``include_system``, ``include_meta`` (see :func:`build_records`).

    Returns:
        The summary.

    """
    rows, skipped = build_records(episodes, "openai", **kwargs)
    _write_rows(rows, Path(path))
    return ExportSummary(Path(path), len(rows), skipped)


def _hf_row(row: Mapping[str, Any], fmt: ExportFormat) -> dict[str, Any]:
    """Flatten a record for Arrow: free-form JSON (tool schemas, meta) becomes JSON strings."""
    out = dict(row)
    out["tool_errors"] = list(row.get("tool_errors", ()))  # every row has the column: one Arrow schema
    if fmt == "openai":
        out["messages"] = [
            {
                "role": m["role"],
                "content": m.get("content"),
                "tool_calls": m.get("tool_calls"),
                "tool_call_id": m.get("tool_call_id"),
                "name": m.get("name"),
            }
            for m in row["messages"]
        ]
        out["tools"] = json.dumps(row["tools"], ensure_ascii=False)
    if "meta" in out:
        out["meta"] = json.dumps(out["meta"], ensure_ascii=False, default=str)
    return out


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ExportError(
            "the Hugging Face export needs the 'datasets' package: pip install 'apigen-envs[hf]'"
        ) from None
    return datasets


def check_hf_path(path: str | Path) -> None:
    """Refuse an output name that says another format (``x.json`` would get Parquet bytes).

    Raises:
        ExportError: When the file name does not end in ``.parquet``.

    """
    if Path(path).suffix.lower() != ".parquet":
        raise ExportError(
            f"{path}: --format hf writes a Parquet file; name it *.parquet (for JSON use --format sharegpt or "
            "openai with a .json or .jsonl name)"
        )


def export_hf(episodes: Iterable[Episode], path: str | Path, fmt: ExportFormat = "sharegpt", **kwargs: Any) -> Any:
    """Build a Hugging Face ``datasets.Dataset`` from episodes and save it as a parquet file.

    For ``fmt="openai"`` the ``tools`` column holds a JSON string (schemas differ per domain, which would
    otherwise make the Arrow schema unstable); :func:`load_hf` turns it back into a list.

    Args:
        episodes: The episodes.
        path: The parquet file to write.
        fmt: Record format of the rows.
        **kwargs: ``only_passed``, ``include_system``, ``include_meta`` (see :func:`build_records`).

    Returns:
        The ``datasets.Dataset`` (also saved to ``path``).

    Raises:
        ExportError: When ``datasets`` is missing or a record is invalid.

    """
    check_hf_path(path)
    datasets = _import_datasets()
    rows, _ = build_records(episodes, fmt, **kwargs)
    if not rows:
        raise ExportError("no episodes to export (all were filtered out)")
    dataset = datasets.Dataset.from_list([_hf_row(r, fmt) for r in rows])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return dataset


# ---------------------------------------------------------------------------------------------- reading
def _read_rows(path: Path) -> list[Any]:
    raw = read_jsonl(path) if path.suffix != ".json" else read_json(path)
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise DataFileError(f"{path}: expected a JSON list or JSON lines of records")
    return raw


def validate_sharegpt(row: Any, where: str = "record") -> ShareGPTRecord:
    """Validate one raw ShareGPT record.

    Raises:
        ExportError: Naming ``where`` and the first problem.

    """
    try:
        return ShareGPTRecord.model_validate(row)
    except ValidationError as exc:
        raise ExportError(f"{where}: not a valid ShareGPT record ({_first_error(exc)})") from None


def validate_openai(row: Any, where: str = "record") -> OpenAIRecord:
    """Validate one raw OpenAI chat-messages record.

    Raises:
        ExportError: Naming ``where`` and the first problem.

    """
    try:
        return OpenAIRecord.model_validate(row)
    except ValidationError as exc:
        raise ExportError(f"{where}: not a valid OpenAI record ({_first_error(exc)})") from None


def load_sharegpt(path: str | Path) -> list[ShareGPTRecord]:
    """Read a ShareGPT / APIGen-MT-5k file (JSON list or JSONL), validating every record."""
    path = Path(path)
    return [validate_sharegpt(row, f"{path}: record #{i}") for i, row in enumerate(_read_rows(path))]


def load_openai(path: str | Path) -> list[OpenAIRecord]:
    """Read an OpenAI chat-messages file (JSON list or JSONL), validating every record."""
    path = Path(path)
    return [validate_openai(row, f"{path}: record #{i}") for i, row in enumerate(_read_rows(path))]


def load_hf(path: str | Path) -> list[ShareGPTRecord | OpenAIRecord]:
    """Read a parquet file written by :func:`export_hf` back into validated records.

    Raises:
        ExportError: When ``datasets`` is missing or a row is invalid.
        DataFileError: When the file cannot be read.

    """
    _import_datasets()
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    import pyarrow.parquet as pq  # a dependency of datasets; reading directly skips the HF cache

    try:
        rows = pq.read_table(str(path)).to_pylist()
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{path}: not a readable parquet file ({exc})") from None
    out: list[ShareGPTRecord | OpenAIRecord] = []
    for i, row in enumerate(rows):
        row = dict(row)
        if isinstance(row.get("meta"), str):
            row["meta"] = json.loads(row["meta"])
        if "conversations" in row:
            out.append(validate_sharegpt(row, f"{path}: row {i}"))
            continue
        if isinstance(row.get("tools"), str):
            row["tools"] = json.loads(row["tools"])
        row["messages"] = [{k: v for k, v in m.items() if v is not None} for m in row.get("messages") or []]
        out.append(validate_openai(row, f"{path}: row {i}"))
    return out


def record_to_episode(
    record: ShareGPTRecord | OpenAIRecord,
    *,
    domain: str | None = None,
    task_id: str | None = None,
    index: int = 0,
) -> Episode:
    """Rebuild a (partial) Episode from an exported record, for tools that read Episodes.

    Identity comes from the record's ``meta`` (written with ``include_meta=True``) unless given; the
    reward is the exported one (exports hold verified trajectories), but no reward breakdown is rebuilt.

    Args:
        record: The record.
        domain: Domain name (default: from meta, else ``"unknown"``).
        task_id: Task id (default: from meta, else ``"record<index>"``).
        index: Position of the record, for the default ids.

    Returns:
        The episode.

    """
    meta = (record.model_extra or {}).get("meta") or {}
    domain = domain or meta.get("domain") or "unknown"
    task_id = task_id or meta.get("task_id") or f"record{index}"
    if isinstance(record, ShareGPTRecord):
        tools = [openai_tool_schema(t) for t in record.tool_schemas()]
        system = record.system or None
    else:
        tools = [openai_tool_schema(t) for t in record.tools]
        system = record.system
    return Episode(
        episode_id=meta.get("episode_id") or f"{domain}/{task_id}/{meta.get('trial', 0)}",
        domain=domain,
        task_id=task_id,
        trial=int(meta.get("trial", 0)),
        system_prompt=system,
        tools=tools,
        messages=record.to_messages(),
        reward=float(meta.get("reward", 1.0)),
        termination=meta.get("termination") or "user_stop",
        agent=meta.get("agent") or "unknown",
        agent_config={"model": meta["model"]} if meta.get("model") else {},
    )


def replay_fingerprint(domain: Domain, task_id: str, messages: Sequence[Message]) -> str:
    """Re-run a conversation's tool calls in a fresh env on a task and return the final-state fingerprint.

    Only assistant turns with tool calls are stepped (their text, if any, rides along); the user simulator
    is asked for nothing but the opening message.

    Args:
        domain: The domain.
        task_id: The task the conversation belongs to.
        messages: The conversation (e.g. from :meth:`ShareGPTRecord.to_messages`).

    Returns:
        The fingerprint of the env's DB changes after the calls.

    """
    from apigen_envs.env import ToolUseEnv
    from apigen_envs.simulators.scripted_user import ScriptedUser

    env = ToolUseEnv(domain, user=ScriptedUser(lines=("(replay)",)), task_ids=[task_id], max_turns=10_000)
    env.reset(options={"task_id": task_id})
    for msg in messages:
        if env.done:
            break
        if isinstance(msg, AssistantMessage) and msg.tool_calls:
            env.step(AssistantMessage(tool_calls=msg.tool_calls))
    return env.view.fingerprint()
